//! Cluster state for the rules: watch caches of Pods, DataExports and exported PVs, plus one
//! bounded live GET of the target (PVC or VolumeSnapshot) per CREATE, so a target created a moment
//! before its DataExport is never reported missing because a cache lags.
//!
//! RBAC the webhook needs: `get` on persistentvolumeclaims and
//! volumesnapshots.snapshot.storage.k8s.io; `list`/`watch` on pods, persistentvolumes and
//! dataexports.storage.deckhouse.io.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, PodStatus,
};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use svdm_api::{DataExport, TargetKind, names};

use crate::validate::{
    ClusterView, ExportFacts, Lookup, PodFacts, PvFacts, PvcFacts, SnapshotFacts, TargetQuery,
};

/// Where the server gets cluster facts from; the HTTP tests use an in-memory implementation.
pub trait FactSource: Send + Sync + 'static {
    /// True once every cache has loaded its initial list.
    fn ready(&self) -> bool;
    /// The facts one review needs, or `None` when they cannot be had (caches not loaded yet).
    fn view(&self, query: TargetQuery) -> BoxFuture<'_, Option<ClusterView>>;
    /// PVs labelled exported, for the Pod webhook; `None` while the caches are not loaded.
    fn exported_pvs(&self) -> Option<Vec<PvFacts>>;
}

/// A fixed view, for tests and for running without a cluster.
#[derive(Clone, Debug, Default)]
pub struct StaticFacts {
    pub view: Option<ClusterView>,
}

impl FactSource for StaticFacts {
    fn ready(&self) -> bool {
        self.view.is_some()
    }

    fn view(&self, _query: TargetQuery) -> BoxFuture<'_, Option<ClusterView>> {
        futures::future::ready(self.view.clone()).boxed()
    }

    fn exported_pvs(&self) -> Option<Vec<PvFacts>> {
        self.view.as_ref().map(|v| v.exported_pvs.clone())
    }
}

/// Cluster facts from watch caches and bounded live GETs.
#[derive(Clone)]
pub struct KubeFacts {
    client: Client,
    pods: Store<Pod>,
    exports: Store<DynamicObject>,
    exported_pvs: Store<PartialObjectMeta<PersistentVolume>>,
    ready: Arc<AtomicBool>,
    get_timeout: Duration,
}

/// The VolumeSnapshot resource (`snapshot.storage.k8s.io/v1`).
fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(TargetKind::VolumeSnapshot.group(), "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

impl KubeFacts {
    /// Builds the caches. The returned future drives the watches and must be polled (spawned)
    /// for as long as the webhook serves; it ends only if every watch ends.
    pub fn start(client: Client, get_timeout: Duration) -> (Self, impl Future<Output = ()>) {
        let (pods, pods_writer) = reflector::store::<Pod>();
        let export_ar = ApiResource::erase::<DataExport>(&());
        let exports_writer = reflector::store::Writer::<DynamicObject>::new(export_ar.clone());
        let exports = exports_writer.as_reader();
        let (exported_pvs, pvs_writer) = reflector::store::<PartialObjectMeta<PersistentVolume>>();

        let pod_stream = reflector::reflector(
            pods_writer,
            watcher(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            )
            .modify(strip_pod)
            .default_backoff(),
        );
        let export_stream = reflector::reflector(
            exports_writer,
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &export_ar),
                watcher::Config::default().any_semantic(),
            )
            .modify(strip_export)
            .default_backoff(),
        );
        let pv_stream = reflector::reflector(
            pvs_writer,
            watcher(
                Api::<PartialObjectMeta<PersistentVolume>>::all(client.clone()),
                watcher::Config::default()
                    .any_semantic()
                    .labels(&format!("{}=true", names::LABEL_PV_EXPORTED)),
            )
            .modify(|pv| {
                pv.metadata.managed_fields = None;
            })
            .default_backoff(),
        );

        let ready = Arc::new(AtomicBool::new(false));
        let facts = KubeFacts {
            client,
            pods: pods.clone(),
            exports: exports.clone(),
            exported_pvs: exported_pvs.clone(),
            ready: ready.clone(),
            get_timeout,
        };

        let drive = async move {
            let readiness = async move {
                let synced = futures::future::try_join3(
                    pods.wait_until_ready(),
                    exports.wait_until_ready(),
                    exported_pvs.wait_until_ready(),
                )
                .await;
                if synced.is_ok() {
                    log::info!("caches of pods, dataexports and exported PVs loaded; ready");
                    ready.store(true, Ordering::Release);
                }
            };
            let watch = |name: &'static str, s: futures::stream::BoxStream<'static, Result<(), watcher::Error>>| {
                s.for_each(move |r| {
                    if let Err(e) = r {
                        log::warn!("watch of {name} failed (retrying): {e}");
                    }
                    futures::future::ready(())
                })
            };
            futures::join!(
                readiness,
                watch("pods", pod_stream.map(|r| r.map(|_| ())).boxed()),
                watch("dataexports", export_stream.map(|r| r.map(|_| ())).boxed()),
                watch(
                    "persistentvolumes",
                    pv_stream.map(|r| r.map(|_| ())).boxed()
                ),
            );
        };
        (facts, drive)
    }

    async fn get_pvc(&self, ns: &str, name: &str) -> Lookup<PvcFacts> {
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns);
        match tokio::time::timeout(self.get_timeout, api.get(name)).await {
            Err(_) => Lookup::Failed(format!(
                "the API server did not answer within {}s",
                self.get_timeout.as_secs()
            )),
            Ok(Ok(pvc)) => Lookup::Found(pvc_facts(&pvc)),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Lookup::NotFound,
            Ok(Err(e)) => Lookup::Failed(format!("reading the PVC failed: {e}")),
        }
    }

    async fn get_snapshot(&self, ns: &str, name: &str) -> Lookup<SnapshotFacts> {
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &snapshot_resource());
        match tokio::time::timeout(self.get_timeout, api.get(name)).await {
            Err(_) => Lookup::Failed(format!(
                "the API server did not answer within {}s",
                self.get_timeout.as_secs()
            )),
            Ok(Ok(snap)) => Lookup::Found(snapshot_facts(&snap)),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                // A missing object names itself in the details; a missing API does not.
                if s.details.as_ref().is_some_and(|d| !d.name.is_empty()) {
                    Lookup::NotFound
                } else {
                    Lookup::Failed(
                        "the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not available in this cluster"
                            .to_owned(),
                    )
                }
            }
            Ok(Err(e)) => Lookup::Failed(format!("reading the VolumeSnapshot failed: {e}")),
        }
    }
}

impl FactSource for KubeFacts {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn view(&self, query: TargetQuery) -> BoxFuture<'_, Option<ClusterView>> {
        async move {
            if !self.ready() {
                return None;
            }
            let ns = query.namespace.as_str();
            let mut view = ClusterView::default();
            match query.kind {
                TargetKind::PersistentVolumeClaim => {
                    view.pvc = self.get_pvc(ns, &query.name).await;
                    view.pods = self
                        .pods
                        .state()
                        .iter()
                        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
                        .map(|p| pod_facts(p))
                        .collect();
                    view.exported_pvs = self
                        .exported_pvs
                        .state()
                        .iter()
                        .map(|pv| pv_facts(pv))
                        .collect();
                }
                TargetKind::VolumeSnapshot => {
                    view.snapshot = self.get_snapshot(ns, &query.name).await;
                }
            }
            view.exports = self
                .exports
                .state()
                .iter()
                .filter(|e| e.metadata.namespace.as_deref() == Some(ns))
                .map(|e| export_facts(e))
                .collect();
            Some(view)
        }
        .boxed()
    }

    fn exported_pvs(&self) -> Option<Vec<PvFacts>> {
        self.ready().then(|| {
            self.exported_pvs
                .state()
                .iter()
                .map(|pv| pv_facts(pv))
                .collect()
        })
    }
}

/// Keeps only what [`pod_facts`] reads, so a cluster-wide pod cache stays small.
fn strip_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        let volumes = spec.volumes.take().map(|vs| {
            vs.into_iter()
                .filter(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
                .map(|mut v| {
                    if let Some(e) = v.ephemeral.as_mut() {
                        e.volume_claim_template = None;
                    }
                    v
                })
                .collect()
        });
        *spec = PodSpec {
            volumes,
            ..Default::default()
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    pod.status = Some(PodStatus {
        phase,
        ..Default::default()
    });
}

/// Keeps the target, phase and conditions of a cached DataExport.
fn strip_export(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    obj.metadata.annotations = None;
    obj.metadata.labels = None;
    let target = obj.data.pointer("/spec/targetRef").cloned();
    let phase = obj.data.pointer("/status/phase").cloned();
    let conditions = obj.data.pointer("/status/conditions").cloned();
    obj.data = json!({
        "spec": {"targetRef": target},
        "status": {"phase": phase, "conditions": conditions},
    });
}

pub fn pvc_facts(pvc: &PersistentVolumeClaim) -> PvcFacts {
    PvcFacts {
        name: pvc.name_any(),
        phase: pvc.status.as_ref().and_then(|s| s.phase.clone()),
        volume_name: pvc.spec.as_ref().and_then(|s| s.volume_name.clone()),
        deleting: pvc.metadata.deletion_timestamp.is_some(),
        finalizers: pvc.finalizers().to_vec(),
        owner_namespace: pvc.annotations().get(names::ANN_OWNER_NAMESPACE).cloned(),
        owner_name: pvc.annotations().get(names::ANN_OWNER_NAME).cloned(),
    }
}

pub fn pod_facts(pod: &Pod) -> PodFacts {
    let name = pod.name_any();
    let claims = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(pvc) = &v.persistent_volume_claim {
                Some(pvc.claim_name.clone())
            } else {
                // A generic ephemeral volume's PVC is named `<pod>-<volume>`.
                v.ephemeral.as_ref().map(|_| format!("{name}-{}", v.name))
            }
        })
        .collect();
    PodFacts {
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
        claims,
        name,
    }
}

pub fn pv_facts(pv: &PartialObjectMeta<PersistentVolume>) -> PvFacts {
    PvFacts {
        name: pv.name_any(),
        labels: pv.labels().clone(),
        annotations: pv.annotations().clone(),
    }
}

fn str_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether a DataExport has expired, in either contract: phase `Expired`, the legacy `Expired=True`
/// condition, or `Ready=False` with reason `Expired`.
fn is_expired(data: &Value) -> bool {
    if str_at(data, "/status/phase").as_deref() == Some("Expired") {
        return true;
    }
    data.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
                (field("type") == names::legacy::CONDITION_EXPIRED && field("status") == "True")
                    || (field("type") == "Ready"
                        && field("status") == "False"
                        && field("reason") == "Expired")
            })
        })
}

pub fn export_facts(obj: &DynamicObject) -> ExportFacts {
    ExportFacts {
        name: obj.name_any(),
        target_kind: str_at(&obj.data, "/spec/targetRef/kind").unwrap_or_default(),
        target_name: str_at(&obj.data, "/spec/targetRef/name").unwrap_or_default(),
        phase: str_at(&obj.data, "/status/phase"),
        expired: is_expired(&obj.data),
        deleting: obj.metadata.deletion_timestamp.is_some(),
    }
}

pub fn snapshot_facts(obj: &DynamicObject) -> SnapshotFacts {
    SnapshotFacts {
        name: obj.name_any(),
        ready_to_use: obj
            .data
            .pointer("/status/readyToUse")
            .and_then(Value::as_bool),
        error: str_at(&obj.data, "/status/error/message"),
        deleting: obj.metadata.deletion_timestamp.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(data: Value) -> DynamicObject {
        let mut obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "storage.deckhouse.io/v1alpha1",
            "kind": "DataExport",
            "metadata": {"name": "de", "namespace": "ns", "managedFields": [{"manager": "x"}]},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        obj.data = data;
        obj
    }

    #[test]
    fn pods_list_direct_and_ephemeral_claims_and_strip_keeps_them() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ns", "annotations": {"big": "x"}},
            "spec": {
                "containers": [{"name": "c", "image": "i"}],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                ],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let before = pod_facts(&pod);
        strip_pod(&mut pod);
        let after = pod_facts(&pod);
        assert_eq!(before, after);
        assert_eq!(after.claims, vec!["data", "web-0-scratch"]);
        assert_eq!(after.phase.as_deref(), Some("Running"));
        assert!(pod.metadata.annotations.is_none());
        assert!(pod.spec.as_ref().is_some_and(|s| s.containers.is_empty()));
    }

    #[test]
    fn export_expiry_in_both_contracts() {
        let target = json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}});
        let cases = [
            (json!({"phase": "Ready"}), false),
            (json!({"phase": "Expired"}), true),
            (
                json!({"conditions": [{"type": "Expired", "status": "True"}]}),
                true,
            ),
            (
                json!({"conditions": [{"type": "Expired", "status": "False"}]}),
                false,
            ),
            (
                json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Expired"}]}),
                true,
            ),
            (
                json!({"conditions": [{"type": "Ready", "status": "False", "reason": "TargetInUse"}]}),
                false,
            ),
        ];
        for (status, expired) in cases {
            let mut obj = dynamic(json!({"spec": target, "status": status}));
            strip_export(&mut obj);
            let f = export_facts(&obj);
            assert_eq!(f.expired, expired, "{status}");
            assert_eq!(f.target_name, "data");
            assert_eq!(f.target_kind, "PersistentVolumeClaim");
            assert!(obj.metadata.managed_fields.is_none());
        }
    }

    #[test]
    fn snapshot_readiness_and_error() {
        let mut snap =
            dynamic(json!({"status": {"readyToUse": false, "error": {"message": "boom"}}}));
        snap.metadata.name = Some("snap".into());
        let f = snapshot_facts(&snap);
        assert_eq!(f.ready_to_use, Some(false));
        assert_eq!(f.error.as_deref(), Some("boom"));
        let f = snapshot_facts(&dynamic(json!({})));
        assert_eq!(f.ready_to_use, None);
    }

    #[test]
    fn pvc_facts_read_phase_volume_and_finalizers() {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {
                "name": "data",
                "finalizers": [names::FINALIZER_PVC_PROTECTION],
                "annotations": {names::ANN_OWNER_NAMESPACE: "ns", names::ANN_OWNER_NAME: "de"},
            },
            "spec": {"volumeName": "pv-1"},
            "status": {"phase": "Lost"},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let f = pvc_facts(&pvc);
        assert_eq!(f.phase.as_deref(), Some("Lost"));
        assert_eq!(f.volume_name.as_deref(), Some("pv-1"));
        assert_eq!(f.finalizers, vec![names::FINALIZER_PVC_PROTECTION]);
        assert!(!f.deleting);
        assert_eq!(f.owner_name.as_deref(), Some("de"));
        assert_eq!(f.owner_namespace.as_deref(), Some("ns"));
    }
}
