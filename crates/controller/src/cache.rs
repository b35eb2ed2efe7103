//! Reflector stores of what the controller reads on every pass (docs/development/ARCHITECTURE.md,
//! "Reads"): all PersistentVolumes and PersistentVolumeClaims, and in the module namespace the
//! Pods, Services, EndpointSlices, Secrets, Leases and Ingresses; VolumeSnapshots and their
//! contents when the snapshot API is served.
//!
//! A pass first observes through the stores; when that observation asks for a write, it observes
//! again through the API and decides on the fresh state, so a write never rests on a stale read
//! (and every write still carries a resourceVersion or uid precondition). A pass that only finds
//! everything in place — the steady state of a serving export — costs no API read at all.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use svdm_api::names;

use crate::error::Result;

/// Where an observation reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The stores (falls back to the API while they are not synced).
    Cache,
    /// The API server, for a decision that writes.
    Live,
}

/// The VolumeSnapshot and VolumeSnapshotContent API resources.
pub fn vs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

pub fn vsc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

/// The controller's stores. Each is synced once its watch has listed everything.
#[derive(Clone)]
pub struct Caches {
    pub pvs: Store<PersistentVolume>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub secrets: Store<Secret>,
    pub leases: Store<Lease>,
    pub ingresses: Store<Ingress>,
    /// `None` where the snapshot API is not served.
    pub snapshots: Option<Store<DynamicObject>>,
    pub contents: Option<Store<DynamicObject>>,
}

/// The watch streams that keep [`Caches`] current. The controller polls the ones that trigger
/// reconciles (their objects say which DataExport they belong to); the rest run on their own.
pub struct Feeds {
    pub pvs: BoxStream<PersistentVolume>,
    pub pvcs: BoxStream<PersistentVolumeClaim>,
    pub pods: BoxStream<Pod>,
    pub services: BoxStream<Service>,
    pub slices: BoxStream<EndpointSlice>,
    pub ingresses: BoxStream<Ingress>,
    /// Leases (renewed every few seconds by every exporter: they must not trigger passes),
    /// Secrets and the snapshot objects: stores only.
    pub background: Vec<futures::future::BoxFuture<'static, ()>>,
}

pub type BoxStream<K> = futures::stream::BoxStream<'static, Result<K, watcher::Error>>;

fn feed<K>(api: Api<K>, wc: watcher::Config) -> (Store<K>, BoxStream<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, wc).default_backoff())
        .touched_objects()
        .boxed();
    (reader, stream)
}

fn drain<K, S>(stream: S, what: &'static str) -> futures::future::BoxFuture<'static, ()>
where
    K: Send + 'static,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    Box::pin(stream.for_each(move |e| async move {
        if let Err(e) = e {
            log::debug!("{what} watch: {e}");
        }
    }))
}

fn dynamic_feed(
    api: Api<DynamicObject>,
    ar: &ApiResource,
    what: &'static str,
) -> (
    Store<DynamicObject>,
    futures::future::BoxFuture<'static, ()>,
) {
    let writer = Writer::new(ar.clone());
    let reader = writer.as_reader();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    (reader, drain(stream, what))
}

impl Caches {
    /// The stores and the streams that fill them. `snapshots` says whether the snapshot API is
    /// served.
    pub fn start(client: &Client, snapshots: bool) -> (Caches, Feeds) {
        let ns = names::MODULE_NAMESPACE;
        let all = watcher::Config::default;
        let (pvs, pvs_feed) = feed(Api::<PersistentVolume>::all(client.clone()), all());
        let (pvcs, pvcs_feed) = feed(Api::<PersistentVolumeClaim>::all(client.clone()), all());
        let (pods, pods_feed) = feed(Api::<Pod>::namespaced(client.clone(), ns), all());
        let (services, services_feed) = feed(Api::<Service>::namespaced(client.clone(), ns), all());
        let (slices, slices_feed) =
            feed(Api::<EndpointSlice>::namespaced(client.clone(), ns), all());
        let (ingresses, ingresses_feed) =
            feed(Api::<Ingress>::namespaced(client.clone(), ns), all());
        let (secrets, secrets_feed) = feed(Api::<Secret>::namespaced(client.clone(), ns), all());
        let (leases, leases_feed) = feed(Api::<Lease>::namespaced(client.clone(), ns), all());
        let mut background = vec![drain(secrets_feed, "secret"), drain(leases_feed, "lease")];
        let (snapshots, contents) = if snapshots {
            let vs = vs_resource();
            let vsc = vsc_resource();
            let (s, s_feed) =
                dynamic_feed(Api::all_with(client.clone(), &vs), &vs, "volumesnapshot");
            let (c, c_feed) = dynamic_feed(
                Api::all_with(client.clone(), &vsc),
                &vsc,
                "volumesnapshotcontent",
            );
            background.push(s_feed);
            background.push(c_feed);
            (Some(s), Some(c))
        } else {
            (None, None)
        };
        (
            Caches {
                pvs,
                pvcs,
                pods,
                services,
                slices,
                secrets,
                leases,
                ingresses,
                snapshots,
                contents,
            },
            Feeds {
                pvs: pvs_feed,
                pvcs: pvcs_feed,
                pods: pods_feed,
                services: services_feed,
                slices: slices_feed,
                ingresses: ingresses_feed,
                background,
            },
        )
    }

    /// Waits until every store has listed its objects once.
    pub async fn synced(&self) {
        let _ = futures::join!(
            self.pvs.wait_until_ready(),
            self.pvcs.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.leases.wait_until_ready(),
            self.ingresses.wait_until_ready(),
        );
        if let Some(s) = &self.snapshots {
            let _ = s.wait_until_ready().await;
        }
        if let Some(c) = &self.contents {
            let _ = c.wait_until_ready().await;
        }
    }
}

fn cached<K>(store: Option<&Store<K>>, read: Read, r: ObjectRef<K>) -> Option<Option<Arc<K>>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    (read == Read::Cache)
        .then_some(store)
        .flatten()
        .map(|s| s.get(&r))
}

/// A namespaced object, from the store or from the API.
pub async fn get<K>(
    client: &Client,
    store: Option<&Store<K>>,
    read: Read,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<K>>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(hit) = cached(store, read, ObjectRef::new(name).within(ns)) {
        return Ok(hit);
    }
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// A cluster-scoped object, from the store or from the API.
pub async fn get_cluster<K>(
    client: &Client,
    store: Option<&Store<K>>,
    read: Read,
    name: &str,
) -> Result<Option<Arc<K>>>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(hit) = cached(store, read, ObjectRef::new(name)) {
        return Ok(hit);
    }
    let api: Api<K> = Api::all(client.clone());
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// The objects with `label` = `value` in `ns` (every namespace when `None`), from the store or
/// from the API with a label selector.
pub async fn labelled<K>(
    client: &Client,
    store: Option<&Store<K>>,
    read: Read,
    ns: Option<&str>,
    label: &str,
    value: &str,
) -> Result<Vec<Arc<K>>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if read == Read::Cache
        && let Some(s) = store
    {
        return Ok(s
            .state()
            .into_iter()
            .filter(|o| ns.is_none_or(|ns| o.namespace().as_deref() == Some(ns)))
            .filter(|o| o.labels().get(label).map(String::as_str) == Some(value))
            .collect());
    }
    let lp = ListParams::default().labels(&format!("{label}={value}"));
    let items = Api::<K>::all(client.clone()).list(&lp).await?.items;
    Ok(items
        .into_iter()
        .filter(|o| ns.is_none_or(|ns| o.namespace().as_deref() == Some(ns)))
        .map(Arc::new)
        .collect())
}

/// A snapshot object, from its store or from the API.
pub async fn get_dynamic(
    client: &Client,
    store: Option<&Store<DynamicObject>>,
    ar: &ApiResource,
    read: Read,
    ns: Option<&str>,
    name: &str,
) -> Result<Option<Arc<DynamicObject>>> {
    if read == Read::Cache
        && let Some(s) = store
    {
        let r = ObjectRef::new_with(name, ar.clone());
        let r = match ns {
            Some(ns) => r.within(ns),
            None => r,
        };
        return Ok(s.get(&r));
    }
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    Ok(api.get_opt(name).await?.map(Arc::new))
}
