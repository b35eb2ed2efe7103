//! The storage-volume-data-manager controller: reconciles DataExports.
//!
//! Layout: [`handover`] and [`snapshot`] are pure state machines over observed cluster state;
//! [`pvc_io`], [`snapshot_io`] and [`exporter`] observe and apply one step at a time;
//! [`reconcile`] decides intent (export, return, expire, delete) and writes the status computed
//! by [`status`]; [`objects`] builds every object the controller creates.

pub mod admin;
pub mod cache;
pub mod config;
pub mod context;
pub mod decide;
pub mod error;
pub mod exporter;
pub mod handover;
pub mod kubeio;
pub mod leader;
pub mod limits;
pub mod metrics;
pub mod node_loss;
pub mod objects;
pub mod orphans;
pub mod pvc_io;
pub mod reconcile;
pub mod route;
pub mod snapshot;
pub mod snapshot_io;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use svdm_api::{DataExport, names};

pub use config::{Args, Settings};
pub use context::Context;
pub use error::Error;
pub use metrics::Metrics;

type Guarded = DeserializeGuard<DataExport>;

/// Maps an object the module owns (in the module namespace, or a PV: nothing users can write)
/// through its owner annotations to its DataExport.
fn owner_ref<K: Resource>(o: &K) -> Option<ObjectRef<Guarded>> {
    let a = o.meta().annotations.as_ref()?;
    let ns = a.get(names::ANN_OWNER_NAMESPACE)?;
    let name = a.get(names::ANN_OWNER_NAME)?;
    Some(ObjectRef::new(name).within(ns))
}

/// Module-namespace objects map through their owner annotations; anything else does not map.
fn module_owner_ref<K: Resource>(o: K) -> Option<ObjectRef<Guarded>> {
    (o.meta().namespace.as_deref() == Some(names::MODULE_NAMESPACE))
        .then(|| owner_ref(&o))
        .flatten()
}

/// A PVC in a user's namespace maps to the DataExport that our record on its PV names (the
/// PVC's own annotations are the user's to write and are not asked); export PVCs and restored
/// PVCs in the module namespace map through their owner annotations.
fn pvc_owner_ref(
    pvs: &Store<PersistentVolume>,
    pvc: PersistentVolumeClaim,
) -> Option<ObjectRef<Guarded>> {
    if pvc.namespace().as_deref() == Some(names::MODULE_NAMESPACE) {
        return owner_ref(&pvc);
    }
    let volume = pvc
        .spec
        .as_ref()?
        .volume_name
        .clone()
        .filter(|v| !v.is_empty())?;
    let pv = pvs.get(&ObjectRef::new(&volume))?;
    let a = pv.annotations();
    (a.get(names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE) == pvc.namespace().as_ref()
        && a.get(names::ANN_PV_ORIGINAL_CLAIM_NAME) == Some(&pvc.name_any()))
    .then(|| owner_ref(pv.as_ref()))
    .flatten()
}

/// An EndpointSlice maps to the DataExport of the Service it belongs to.
fn slice_owner_ref(services: &Store<Service>, slice: EndpointSlice) -> Option<ObjectRef<Guarded>> {
    let svc = slice.labels().get("kubernetes.io/service-name")?;
    let svc = services.get(&ObjectRef::new(svc).within(names::MODULE_NAMESPACE))?;
    owner_ref(svc.as_ref())
}

/// Runs the controller and the orphan sweep until a shutdown signal.
pub async fn run_controller(ctx: Arc<Context>, concurrency: u16, selector: &str) {
    let client = ctx.client.clone();
    let des: Api<DataExport> = Api::all(client.clone());
    if let Err(e) = des.list(&ListParams::default().limit(1)).await {
        log::error!("DataExports cannot be listed ({e}); is the CRD installed and RBAC in place?");
    }
    let snapshots = snapshot_io::api_available(&ctx).await;
    let (caches, feeds) = cache::Caches::start(&client, snapshots);
    let background = futures::future::join_all(feeds.background);
    let mut main_wc = watcher::Config::default().any_semantic();
    if !selector.trim().is_empty() {
        main_wc = main_wc.labels(selector.trim());
    }
    let pvs = caches.pvs.clone();
    let services = caches.services.clone();
    let controller = Controller::new(Api::<Guarded>::all(client.clone()), main_wc)
        .watches_stream(feeds.pods, module_owner_ref)
        .watches_stream(feeds.services, module_owner_ref)
        .watches_stream(feeds.ingresses, module_owner_ref)
        .watches_stream(feeds.slices, move |s| slice_owner_ref(&services, s))
        .watches_stream(feeds.pvcs, move |p| pvc_owner_ref(&pvs, p))
        .watches_stream(feeds.pvs, |pv| {
            pv.labels()
                .contains_key(names::LABEL_PV_EXPORTED)
                .then(|| owner_ref(&pv))
                .flatten()
        })
        .with_config(ControllerConfig::default().concurrency(concurrency));
    let exports = controller.store();
    let run = controller
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                log::debug!("controller: {e}");
            }
        });
    // Until the stores have listed everything the passes read live; the sweep waits for them.
    let setup = {
        let ctx = ctx.clone();
        async move {
            caches.synced().await;
            let _ = exports.wait_until_ready().await;
            ctx.set_caches(caches);
            ctx.metrics.ready.store(true, Ordering::Relaxed);
            log::info!("stores synced; reading from them");
            orphans::run(ctx, exports).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = setup => {}
        _ = background => {}
    }
    ctx.metrics.ready.store(false, Ordering::Relaxed);
}

/// Leader identity: the pod name (or host name) plus the process id, so two processes on one
/// host never share an identity.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "svdm-controller".to_owned());
    format!("{host}_{}", std::process::id())
}

/// The whole program after argument parsing.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::from_args(&args)?;
    // The CA must be readable before anything is reconciled.
    for p in [&settings.exporter_ca_cert, &settings.exporter_ca_key] {
        std::fs::metadata(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
    }
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    {
        let m = metrics.clone();
        let addr = args.metrics_address.clone();
        let admin_client = client.clone();
        // actix-web runs its own single-threaded runtime, on a thread of its own.
        std::thread::spawn(move || {
            let served =
                actix_web::rt::System::new().block_on(admin::serve(addr, m, Some(admin_client)));
            if let Err(e) = served {
                log::error!("admin endpoint failed: {e}");
            }
        });
    }
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics));
    if args.leader_election {
        let elector = leader::Elector::new(
            client,
            &args.leader_election_namespace,
            &args.leader_election_name,
            &identity(),
        );
        elector.acquire().await;
        tokio::select! {
            _ = run_controller(ctx, 32, &args.dataexport_label_selector) => {}
            _ = elector.keep() => {
                log::error!("leadership lost; exiting so a fresh process can compete again");
                std::process::exit(1);
            }
        }
    } else {
        run_controller(ctx, 32, &args.dataexport_label_selector).await;
    }
    Ok(())
}
