//! `svdm-kube-sim`: the parts of a Kubernetes node that cannot run on this machine, played against a real
//! control plane (kube-apiserver, controller-manager, scheduler, snapshot-controller).
//!
//! | module | plays |
//! |---|---|
//! | [`node`] | kubelet registration: the Node, its status heartbeat and its Lease |
//! | [`classes`] | the CSI driver's install objects: CSIDriver, StorageClasses, VolumeSnapshotClass, CSINode |
//! | [`provisioner`] | external-provisioner + CSI controller: volumes and PVs, deletion, restores |
//! | [`snapshotter`] | csi-snapshotter sidecar: VolumeSnapshotContents of our driver |
//! | [`kubelet`] | pods: exporter pods as local processes, other pods held Running |
//! | [`proxy`], [`hosts`] | kube-proxy + DNS: Service names to loopback forwarders |
//! | [`storage`] | the disks: directories and loop devices under the data directory |
//!
//! The one shortcut: a container sees host paths, not its mount namespace. Arguments of an exporter
//! container that name a `mountPath`/`devicePath` (the whole token, or the value after `=`) are rewritten
//! to the host path of that volume (see [`kubelet::expand::map_arg`]). See the crate README.

#![forbid(unsafe_code)]

pub mod classes;
pub mod error;
pub mod hosts;
pub mod kubelet;
pub mod node;
pub mod provisioner;
pub mod proxy;
pub mod quantity;
pub mod snapshot_api;
pub mod snapshotter;
pub mod storage;

use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};

use crate::error::{Error, Result};

/// The simulated CSI driver.
pub const DRIVER: &str = "local.csi.svdm.dev";
pub const STORAGE_CLASS: &str = "svdm-sim";
pub const STORAGE_CLASS_WFFC: &str = "svdm-sim-wffc";
pub const SNAPSHOT_CLASS: &str = "svdm-sim";
/// PV annotations recording where the data lives, so a restarted simulator finds it again.
pub const ANN_PATH: &str = "sim.svdm.dev/path";
pub const ANN_LOOP: &str = "sim.svdm.dev/loop-device";
pub const ANN_NODE: &str = "sim.svdm.dev/node";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub install_classes: bool,
    pub exporter_image: Option<String>,
    pub exporter_binary: Option<PathBuf>,
    pub pod_ip_prefix: [u8; 3],
    pub service_ip_prefix: [u8; 3],
    pub hosts_file: PathBuf,
    /// Taints the Node is registered with (`--register-with-taints`).
    pub taints: Vec<serde_json::Value>,
    /// Serve only StorageClasses and static PVs pinned to nodes (a private node sharing the cluster).
    pub pinned_only: bool,
}

/// Parse `127.0.1` into octets; only loopback prefixes are accepted.
pub fn parse_prefix(s: &str) -> Result<[u8; 3], String> {
    let parts: Vec<u8> = s
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    match parts.as_slice() {
        [127, b, c] => Ok([127, *b, *c]),
        _ => Err(format!("{s:?} is not a loopback /24 prefix like 127.0.1")),
    }
}

/// Everything the loops share.
pub struct Sim {
    pub client: Client,
    pub config: Config,
    pub store: storage::Store,
    pub recorder: Recorder,
    /// The API server entry of the simulator's kubeconfig, handed to exporter processes.
    pub cluster: Option<serde_json::Value>,
}

async fn connect(config: &Config) -> Result<(Client, Option<serde_json::Value>)> {
    let path = config
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from));
    let Some(path) = path else {
        return Ok((Client::try_default().await?, None));
    };
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .map(serde_json::to_value)
        .transpose()?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok((Client::try_from(client_config)?, cluster))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
    }
}

/// Run the simulated node until SIGINT/SIGTERM, then stop its processes and remove its hosts entries.
pub async fn run(config: Config) -> Result<()> {
    let (client, cluster) = connect(&config).await?;
    let store = storage::Store::open(&config.data_dir)?;
    if config.exporter_image.is_some() != config.exporter_binary.is_some() {
        return Err(Error::Unsupported(
            "--exporter-image and --exporter-binary go together".into(),
        ));
    }
    let reporter = Reporter {
        controller: "svdm-kube-sim".into(),
        instance: Some(config.node_name.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let sim = Arc::new(Sim {
        client: client.clone(),
        config: config.clone(),
        store,
        recorder,
        cluster,
    });

    if config.install_classes {
        classes::install_driver_and_classes(&client).await?;
    }
    let node_uid = node::register(&client, &config.node_name, &config.taints).await?;
    classes::register_csinode(&client, &config.node_name, &node_uid).await?;
    log::info!(
        "node {} up; data in {}",
        config.node_name,
        sim.store.root().display()
    );

    let kubelet = Arc::new(kubelet::Kubelet::new(sim.clone(), config.pod_ip_prefix));
    let proxy = Arc::new(proxy::Proxy::new(sim.clone(), config.service_ip_prefix));
    let mut tasks = vec![
        tokio::spawn(node::heartbeat(
            client.clone(),
            config.node_name.clone(),
            node_uid,
            config.taints.clone(),
        )),
        tokio::spawn(provisioner::run(sim.clone())),
        tokio::spawn(snapshotter::run(sim.clone())),
        tokio::spawn(kubelet::run(kubelet.clone())),
        tokio::spawn(proxy::run(proxy.clone())),
    ];
    // The loops run forever; one that ends has crashed, and a node missing a part must not pass for
    // healthy: stop everything and fail.
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        (ended, index, _) = futures::future::select_all(tasks.iter_mut()) => {
            Some(format!("loop {index} ended unexpectedly: {ended:?}"))
        }
    };
    for task in &tasks {
        task.abort();
    }
    kubelet.shutdown().await;
    proxy.shutdown().await;
    log::info!("node {} stopped", config.node_name);
    match failed {
        Some(why) => Err(Error::Crashed(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_prefix;

    #[test]
    fn prefixes_must_be_loopback() {
        assert_eq!(parse_prefix("127.0.1"), Ok([127, 0, 1]));
        assert!(parse_prefix("10.0.0").is_err());
        assert!(parse_prefix("127.0").is_err());
        assert!(parse_prefix("127.0.300").is_err());
    }
}
