//! `svdm-kube-sim`: a simulated Kubernetes node and CSI storage for the local control plane.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use svdm_kube_sim::{Config, ImageRun, Program, parse_pod_prefix, parse_service_prefix};

/// Simulated node, CSI storage and kube-proxy/DNS for the local control plane (dev only).
#[derive(Parser, Debug)]
#[command(name = "svdm-kube-sim", version)]
struct Cli {
    /// Kubeconfig of the control plane (admin). Defaults to $KUBECONFIG.
    #[arg(long, env = "SIM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Node to register and serve. Run several instances with distinct names, data dirs and prefixes.
    #[arg(long, env = "SIM_NODE_NAME", default_value = "sim-node-1")]
    node_name: String,
    /// Where volumes, snapshots, pod files and logs live.
    #[arg(long, env = "SIM_DATA_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.run/kube-sim"))]
    data_dir: PathBuf,
    /// Create the CSIDriver, StorageClasses `svdm-sim`/`svdm-sim-wffc` and VolumeSnapshotClass when absent.
    #[arg(long, env = "SIM_INSTALL_CLASSES", default_value_t = true, action = clap::ArgAction::Set)]
    install_classes: bool,
    /// Container image that marks exporter pods (run as local processes).
    #[arg(long, env = "SIM_EXPORTER_IMAGE", requires = "exporter_binary")]
    exporter_image: Option<String>,
    /// Binary run for exporter pods, with the container's arguments.
    #[arg(long, env = "SIM_EXPORTER_BINARY", requires = "exporter_image")]
    exporter_binary: Option<PathBuf>,
    /// More images to run as local processes, `IMAGE=PATH` (repeatable): PATH is the binary that
    /// stands in for the image's entry point, or a directory whose file named like the container's
    /// `command[0]` runs (an image holding several binaries).
    #[arg(long = "image", value_parser = ImageRun::parse)]
    images: Vec<ImageRun>,
    /// Pods get addresses <prefix>.10-254 of the simulated cluster network 198.18.0.0/15 (routed to
    /// `lo` by e2e/sim-network.sh); several comma-separated prefixes for more than 245 pods.
    #[arg(long, env = "SIM_POD_IP_PREFIX", default_value = "198.18.1", value_delimiter = ',', value_parser = parse_pod_prefix)]
    pod_ip_prefix: Vec<[u8; 3]>,
    /// Pods the Node accepts (capacity `pods`), as the kubelet's --max-pods.
    #[arg(long, env = "SIM_MAX_PODS", default_value_t = 110)]
    max_pods: u32,
    /// Services whose ClusterIP is not local to this machine get addresses <prefix>.10-254.
    #[arg(long, env = "SIM_SERVICE_IP_PREFIX", default_value = "127.0.2", value_parser = parse_service_prefix)]
    service_ip_prefix: [u8; 3],
    /// Also forward Services whose endpoints are on no node, such as `default/kubernetes` (the API
    /// server). Give it to one node of the cluster only.
    #[arg(long, env = "SIM_PROXY_NODELESS")]
    proxy_nodeless: bool,
    /// Milliseconds an endpoint change takes to reach the forwarders (a slow kube-proxy, for tests).
    #[arg(long, env = "SIM_PROXY_DELAY_MS", default_value_t = 0)]
    proxy_delay_ms: u64,
    /// The hosts file that carries Service names.
    #[arg(long, default_value = "/etc/hosts")]
    hosts_file: PathBuf,
    /// Taints to register the Node with, `key[=value]:Effect`, comma-separated (as the kubelet's flag).
    #[arg(long, value_delimiter = ',', value_parser = svdm_kube_sim::node::parse_taint)]
    register_with_taints: Vec<serde_json::Value>,
    /// Provision only for StorageClasses whose allowedTopologies name nodes, and serve only static PVs
    /// with node affinity: for a private node that must not take the shared node's volumes.
    #[arg(long)]
    pinned_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,kube=warn"))
        .init();
    let cli = Cli::parse();
    let mut images = cli.images;
    if let (Some(image), Some(binary)) = (cli.exporter_image, cli.exporter_binary) {
        images.push(ImageRun {
            image,
            program: Program::Binary(binary),
        });
    }
    let config = Config {
        node_name: cli.node_name,
        data_dir: cli.data_dir,
        kubeconfig: cli.kubeconfig,
        install_classes: cli.install_classes,
        images,
        pod_ip_prefixes: cli.pod_ip_prefix,
        max_pods: cli.max_pods,
        service_ip_prefix: cli.service_ip_prefix,
        hosts_file: cli.hosts_file,
        taints: cli.register_with_taints,
        pinned_only: cli.pinned_only,
        proxy_nodeless: cli.proxy_nodeless,
        proxy_delay: std::time::Duration::from_millis(cli.proxy_delay_ms),
    };
    svdm_kube_sim::run(config).await?;
    Ok(())
}
