//! The storage-volume-data-manager controller: reconciles DataExports.
//!
//! Layout: [`handover`] and [`snapshot`] are pure state machines over observed cluster state;
//! [`pvc_io`], [`snapshot_io`] and [`exporter`] observe and apply one step at a time;
//! [`reconcile`] decides intent (export, return, expire, delete) and writes the status computed
//! by [`status`]; [`objects`] builds every object the controller creates.

pub mod config;
pub mod context;
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
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource};
use svdm_api::{DataExport, names};

pub use config::{Args, Settings};
pub use context::Context;
pub use error::Error;
pub use metrics::Metrics;

type Guarded = DeserializeGuard<DataExport>;

/// Maps an object carrying our owner annotations to its DataExport.
fn owner_ref<K: Resource>(o: K) -> Option<ObjectRef<Guarded>> {
    let a = o.meta().annotations.as_ref()?;
    let ns = a.get(names::ANN_OWNER_NAMESPACE)?;
    let name = a.get(names::ANN_OWNER_NAME)?;
    Some(ObjectRef::new(name).within(ns))
}

/// Runs the controller and the orphan sweep until a shutdown signal.
pub async fn run_controller(ctx: Arc<Context>, concurrency: u16, selector: &str) {
    let client = ctx.client.clone();
    let des: Api<DataExport> = Api::all(client.clone());
    if let Err(e) = des.list(&ListParams::default().limit(1)).await {
        log::error!("DataExports cannot be listed ({e}); is the CRD installed and RBAC in place?");
    }
    let sweeper = tokio::spawn(orphans::run(ctx.clone()));
    ctx.metrics.ready.store(true, Ordering::Relaxed);

    let module = names::MODULE_NAMESPACE;
    let managed = watcher::Config::default().labels(&format!("{}=true", names::LABEL_MANAGED));
    let exported = watcher::Config::default().labels(&format!("{}=true", names::LABEL_PV_EXPORTED));
    let mut main_wc = watcher::Config::default().any_semantic();
    if !selector.trim().is_empty() {
        main_wc = main_wc.labels(selector.trim());
    }
    Controller::new(Api::<Guarded>::all(client.clone()), main_wc)
        .watches(
            Api::<Pod>::namespaced(client.clone(), module),
            managed.clone(),
            owner_ref,
        )
        .watches(
            Api::<Lease>::namespaced(client.clone(), module),
            managed.clone(),
            owner_ref,
        )
        .watches(
            Api::<Service>::namespaced(client.clone(), module),
            managed.clone(),
            owner_ref,
        )
        .watches(
            Api::<Ingress>::namespaced(client.clone(), module),
            managed.clone(),
            owner_ref,
        )
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            managed,
            owner_ref,
        )
        .watches(Api::<PersistentVolume>::all(client), exported, owner_ref)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                log::debug!("controller: {e}");
            }
        })
        .await;
    sweeper.abort();
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
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                log::error!("metrics endpoint failed: {e}");
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
