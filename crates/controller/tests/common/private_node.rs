//! A simulated node of a test's own (the `svdm-kube-sim` binary next to the controller's): a
//! private name, a NoSchedule taint only the test controller's exporter pods tolerate
//! ([`PrivateNode::tolerations`]), `--pinned-only` with a StorageClass pinned to it, pod and
//! Service prefixes of its own and its own block in /etc/hosts, so it never meets the shared
//! `sim-node-1` or another test's node.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{delete_pv, wait_for};

/// A binary built next to the controller (the workspace's target directory).
pub fn sibling_binary(name: &str) -> PathBuf {
    let ctl = Path::new(env!("CARGO_BIN_EXE_svdm-controller"));
    let p = ctl
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    assert!(
        p.exists(),
        "{} not found: build it first (cargo build -p svdm-kube-sim -p svdm-exporter)",
        p.display()
    );
    p
}

pub struct PrivateNode {
    pub name: String,
    /// The StorageClass whose volumes only this node provisions.
    pub class: String,
    pub log: PathBuf,
    taint: String,
    child: tokio::process::Child,
}

impl PrivateNode {
    /// Starts the node, waits for it to be Ready and creates its pinned class. `pod_prefix` must
    /// be a /24 of the simulated network no other test uses (198.18.N), `service_prefix` likewise
    /// (127.0.N); `extra` goes to the simulator's command line.
    pub async fn start(
        client: &Client,
        kubeconfig: &str,
        name: &str,
        dir: &Path,
        prefixes: (&str, &str),
        extra: &[&str],
    ) -> PrivateNode {
        std::fs::create_dir_all(dir).expect("sim dir");
        let log = dir.join("sim.log");
        let out = std::fs::File::create(&log).expect("sim log");
        let err = out.try_clone().expect("sim log");
        let taint = format!("sim.svdm.dev/{name}");
        let child = tokio::process::Command::new(sibling_binary("svdm-kube-sim"))
            .args(["--kubeconfig", kubeconfig])
            .args(["--node-name", name])
            .args(["--pod-ip-prefix", prefixes.0])
            .args(["--service-ip-prefix", prefixes.1])
            .args([
                "--register-with-taints",
                &format!("{taint}={name}:NoSchedule"),
                "--pinned-only",
            ])
            .args(["--exporter-image", super::EXPORTER_IMAGE])
            .arg("--exporter-binary")
            .arg(sibling_binary("svdm-exporter"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start svdm-kube-sim");
        let node = PrivateNode {
            name: name.to_owned(),
            class: format!("{name}-pinned"),
            log,
            taint,
            child,
        };
        let sc: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": node.class},
            "provisioner": "local.csi.svdm.dev",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowedTopologies": [{"matchLabelExpressions": [
                {"key": "kubernetes.io/hostname", "values": [name]}
            ]}],
        }))
        .expect("class");
        Api::<StorageClass>::all(client.clone())
            .create(&PostParams::default(), &sc)
            .await
            .expect("create class");
        let nodes: Api<Node> = Api::all(client.clone());
        wait_for("private node Ready", 60, || async {
            node_is_ready(&nodes, name).await?.then_some(())
        })
        .await;
        node
    }

    /// `--exporter-tolerations-json` for a controller whose exporters run on this node.
    pub fn tolerations(&self) -> String {
        json!([{"key": self.taint, "operator": "Exists", "effect": "NoSchedule"}]).to_string()
    }

    /// SIGTERM (the simulator then stops its exporter processes) and wait: the node is gone.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// The node stopped and gone: its Node object, the PVs it served (nobody would reclaim
    /// them) and its class deleted.
    pub async fn remove(mut self, client: &Client) {
        self.stop().await;
        let _ = Api::<Node>::all(client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        if let Ok(list) = pvs.list(&ListParams::default()).await {
            for pv in list
                .items
                .iter()
                .filter(|pv| pv.annotations().get("sim.svdm.dev/node") == Some(&self.name))
            {
                delete_pv(client, &pv.name_any()).await;
            }
        }
        let _ = Api::<StorageClass>::all(client.clone())
            .delete(&self.class, &DeleteParams::default())
            .await;
    }

    /// The last lines of the simulator's log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }
}

pub async fn node_is_ready(nodes: &Api<Node>, node: &str) -> Option<bool> {
    let n = nodes.get_opt(node).await.ok()??;
    Some(
        n.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
    )
}
