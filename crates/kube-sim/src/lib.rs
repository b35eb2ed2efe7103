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
//! | [`proxy`], [`hosts`] | kube-proxy + DNS: Services to forwarders, by their EndpointSlices |
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

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
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
    /// Images whose containers run as local processes; pods of any other image are only reported
    /// Running.
    pub images: Vec<ImageRun>,
    /// Pod addresses come from `<prefix>.10-254` of each prefix in turn.
    pub pod_ip_prefixes: Vec<[u8; 3]>,
    /// The Node's `pods` capacity (the kubelet's `--max-pods`).
    pub max_pods: u32,
    pub service_ip_prefix: [u8; 3],
    pub hosts_file: PathBuf,
    /// Taints the Node is registered with (`--register-with-taints`).
    pub taints: Vec<serde_json::Value>,
    /// Serve only StorageClasses and static PVs pinned to nodes (a private node sharing the cluster).
    pub pinned_only: bool,
    /// Also forward Services whose endpoints are on no node (`default/kubernetes`: the API server).
    /// Exactly one node of a cluster does, since one address can have only one listener here.
    pub proxy_nodeless: bool,
    /// How long an endpoint change takes to reach the forwarders: a slow kube-proxy, for tests.
    pub proxy_delay: std::time::Duration,
}

/// What stands in for one container image: the program(s) it would contain, on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRun {
    pub image: String,
    pub program: Program,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// One binary runs whatever the container's `command` names (an image with one entry point).
    Binary(PathBuf),
    /// The image holds several binaries: the file name of the container's `command[0]` is looked up
    /// in this directory (`/svdm-webhook` → `<dir>/svdm-webhook`).
    Dir(PathBuf),
}

impl ImageRun {
    /// `IMAGE=PATH` (`--image`): a directory maps to [`Program::Dir`], anything else to
    /// [`Program::Binary`]. Image references never contain `=`, paths may: split at the first.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (image, path) = s
            .split_once('=')
            .filter(|(i, p)| !i.is_empty() && !p.is_empty())
            .ok_or_else(|| format!("expected IMAGE=PATH, got {s:?}"))?;
        let path = PathBuf::from(path);
        let program = if path.is_dir() {
            Program::Dir(path)
        } else {
            Program::Binary(path)
        };
        Ok(Self {
            image: image.to_string(),
            program,
        })
    }
}

impl Config {
    /// The first container of `pod` that the simulator runs as a process, and the program for it.
    /// A [`Program::Dir`] image whose container names no command, or a command whose file name is
    /// not in the directory, is not runnable: the pod is then only reported, as for foreign images.
    pub fn runnable_container(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Option<(usize, PathBuf)> {
        let containers = &pod.spec.as_ref()?.containers;
        containers.iter().enumerate().find_map(|(i, c)| {
            let run = self
                .images
                .iter()
                .find(|r| c.image.as_deref() == Some(r.image.as_str()))?;
            match &run.program {
                Program::Binary(path) => Some((i, path.clone())),
                Program::Dir(dir) => {
                    let name = Path::new(c.command.as_ref()?.first()?).file_name()?;
                    let path = dir.join(name);
                    path.is_file().then_some((i, path))
                }
            }
        })
    }

    /// Whether `exe` (a process's `/proc/<pid>/exe`) is one of the programs this simulator starts:
    /// only those are killed as leftovers of a crashed run.
    pub fn runs_program(&self, exe: &Path) -> bool {
        self.images.iter().any(|r| match &r.program {
            Program::Binary(path) => std::fs::canonicalize(path).ok().as_deref() == Some(exe),
            Program::Dir(dir) => std::fs::canonicalize(dir).ok().as_deref() == exe.parent(),
        })
    }
}

/// The simulated cluster network: addresses the API server accepts in EndpointSlices (it refuses
/// loopback there) that are still local to this machine, because the route
/// `local 198.18.0.0/15 dev lo` (e2e/sim-network.sh, run by e2e/setup.sh) delivers all of them to
/// `lo`. 198.18.0.0/15 is reserved for network benchmarks (RFC 2544) and never routed on the internet.
/// The control plane takes 198.18.0.0/24 (the API server listens on 198.18.0.1); pods take /24
/// prefixes above it.
pub const SIM_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);

/// Whether this machine answers `ip` itself: loopback, or the simulated cluster network. Nothing
/// in the simulation ever dials anything else.
pub fn is_local(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback() || (o[0] == 198 && o[1] & 0xfe == 18)
}

fn octets(s: &str) -> Result<[u8; 3], String> {
    let parts: Vec<u8> = s
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    match parts.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(format!("{s:?} is not a /24 prefix like 198.18.1")),
    }
}

/// Parse a pod address prefix such as `198.18.1`: a /24 of the simulated cluster network, outside
/// the control plane's 198.18.0.0/24 (pod addresses must be valid EndpointSlice addresses).
pub fn parse_pod_prefix(s: &str) -> Result<[u8; 3], String> {
    let p = octets(s)?;
    let ip = Ipv4Addr::new(p[0], p[1], p[2], 0);
    if ip.is_loopback() || !is_local(ip) || p[..] == [198, 18, 0] {
        return Err(format!(
            "{s:?} is not a pod prefix of the simulated cluster network (198.18.1 to 198.19.255; \
             loopback addresses cannot be EndpointSlice endpoints)"
        ));
    }
    Ok(p)
}

/// Parse a Service address prefix such as `127.0.2` (loopback or the simulated cluster network),
/// used for Services whose ClusterIP this machine cannot serve.
pub fn parse_service_prefix(s: &str) -> Result<[u8; 3], String> {
    let p = octets(s)?;
    if !is_local(Ipv4Addr::new(p[0], p[1], p[2], 0)) {
        return Err(format!(
            "{s:?} is neither loopback nor in the simulated cluster network 198.18.0.0/15"
        ));
    }
    Ok(p)
}

/// Fails with what to do when the simulated cluster network is not routed to this machine.
pub fn check_sim_network(prefix: [u8; 3]) -> Result<()> {
    let ip = Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1);
    std::net::TcpListener::bind((ip, 0)).map(drop).map_err(|e| {
        Error::NotReady(format!(
            "cannot bind {ip} ({e}): the simulated cluster network {}/{} is not local here; \
             run e2e/sim-network.sh as root (ip route add local 198.18.0.0/15 dev lo)",
            SIM_NETWORK.0, SIM_NETWORK.1
        ))
    })
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
    for prefix in &config.pod_ip_prefixes {
        check_sim_network(*prefix)?;
    }
    let (client, cluster) = connect(&config).await?;
    let store = storage::Store::open(&config.data_dir)?;
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

    let kubelet = Arc::new(kubelet::Kubelet::new(
        sim.clone(),
        config.pod_ip_prefixes.clone(),
    ));
    let proxy = Arc::new(proxy::Proxy::new(sim.clone(), config.service_ip_prefix));
    let mut tasks = vec![
        tokio::spawn(node::heartbeat(
            client.clone(),
            config.node_name.clone(),
            node_uid,
            config.taints.clone(),
            config.max_pods,
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
    use super::*;

    #[test]
    fn pod_prefixes_are_in_the_sim_network_outside_the_control_plane() {
        assert_eq!(parse_pod_prefix("198.18.1"), Ok([198, 18, 1]));
        assert_eq!(parse_pod_prefix("198.19.255"), Ok([198, 19, 255]));
        assert!(
            parse_pod_prefix("198.18.0").is_err(),
            "the API server's /24"
        );
        assert!(
            parse_pod_prefix("127.0.1").is_err(),
            "loopback is no endpoint"
        );
        assert!(parse_pod_prefix("198.20.1").is_err());
        assert!(parse_pod_prefix("10.0.0").is_err());
        assert!(parse_pod_prefix("198.18").is_err());
        assert!(parse_pod_prefix("198.18.300").is_err());
    }

    #[test]
    fn service_prefixes_are_local() {
        assert_eq!(parse_service_prefix("127.0.2"), Ok([127, 0, 2]));
        assert_eq!(parse_service_prefix("198.19.7"), Ok([198, 19, 7]));
        assert!(parse_service_prefix("10.96.0").is_err());
    }

    #[test]
    fn only_loopback_and_the_sim_network_are_local() {
        assert!(is_local(Ipv4Addr::new(127, 0, 240, 1)));
        assert!(is_local(Ipv4Addr::new(198, 18, 0, 1)));
        assert!(is_local(Ipv4Addr::new(198, 19, 200, 3)));
        assert!(!is_local(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!is_local(Ipv4Addr::new(198, 17, 0, 1)));
        assert!(!is_local(Ipv4Addr::new(10, 0, 0, 1)));
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;
    use serde_json::json;

    fn config(images: Vec<ImageRun>) -> Config {
        Config {
            node_name: "n".into(),
            data_dir: PathBuf::from("/nonexistent"),
            kubeconfig: None,
            install_classes: false,
            images,
            pod_ip_prefixes: vec![[198, 18, 1]],
            max_pods: 110,
            service_ip_prefix: [127, 0, 2],
            hosts_file: PathBuf::from("/nonexistent"),
            taints: vec![],
            pinned_only: false,
            proxy_nodeless: false,
            proxy_delay: std::time::Duration::ZERO,
        }
    }

    fn pod(containers: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}),
        )
        .expect("valid pod")
    }

    #[test]
    fn image_run_parses_binaries_and_directories() -> std::result::Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir_arg = format!("reg/ctl@sha256:1={}", dir.path().display());
        assert_eq!(
            ImageRun::parse(&dir_arg)?.program,
            Program::Dir(dir.path().to_path_buf())
        );
        assert_eq!(
            ImageRun::parse("reg/exp:dev=/bin/true")?,
            ImageRun {
                image: "reg/exp:dev".into(),
                program: Program::Binary("/bin/true".into())
            }
        );
        assert!(ImageRun::parse("no-path").is_err());
        assert!(ImageRun::parse("=/bin/true").is_err());
        Ok(())
    }

    #[test]
    fn runnable_container_resolves_the_command_in_a_directory() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("svdm-webhook"), b"")?;
        let cfg = config(vec![
            ImageRun {
                image: "ctl".into(),
                program: Program::Dir(dir.path().to_path_buf()),
            },
            ImageRun {
                image: "exp".into(),
                program: Program::Binary("/bin/exp".into()),
            },
        ]);
        let webhook = pod(json!([
            {"name": "side", "image": "other"},
            {"name": "webhook", "image": "ctl", "command": ["/svdm-webhook"]}
        ]));
        assert_eq!(
            cfg.runnable_container(&webhook),
            Some((1, dir.path().join("svdm-webhook")))
        );
        // A binary the image does not hold, or no command at all: reported only, never run.
        let missing = pod(json!([{"name": "c", "image": "ctl", "command": ["/svdm-other"]}]));
        assert_eq!(cfg.runnable_container(&missing), None);
        let bare = pod(json!([{"name": "c", "image": "ctl"}]));
        assert_eq!(cfg.runnable_container(&bare), None);
        let exporter = pod(json!([{"name": "e", "image": "exp", "command": ["/anything"]}]));
        assert_eq!(
            cfg.runnable_container(&exporter),
            Some((0, PathBuf::from("/bin/exp")))
        );
        assert_eq!(
            cfg.runnable_container(&pod(json!([{"name": "x", "image": "foreign"}]))),
            None
        );
        Ok(())
    }
}
