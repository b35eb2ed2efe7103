//! The Node object and its heartbeats: status conditions and a Lease in `kube-node-lease`, as the kubelet
//! keeps them. When the simulator stops, the heartbeats stop and the controller-manager's node lifecycle
//! controller marks the Node NotReady, which is how tests simulate a node going away.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::error::{Result, is_conflict};

pub const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;

/// The Node as the kubelet registers it (spec and metadata; status is patched separately).
pub fn node_object(name: &str, taints: &[Value]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "sim.svdm.dev/node": "true"
            }
        },
        "spec": {"taints": taints}
    })
}

/// Parse `key=value:Effect` or `key:Effect` (the kubelet's `--register-with-taints` syntax).
pub fn parse_taint(s: &str) -> Result<Value, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {s:?}: expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("taint {s:?}: unknown effect {effect:?}"));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(format!("taint {s:?}: empty key"));
    }
    Ok(json!({"key": key, "value": value, "effect": effect}))
}

/// The Node status the simulator reports: capacity, addresses, version info and healthy conditions.
pub fn node_status(
    name: &str,
    kubelet_version: &str,
    since: Timestamp,
    now: Timestamp,
    max_pods: u32,
) -> Value {
    let resources = json!({
        "cpu": "2",
        "memory": "24Gi",
        "pods": max_pods.to_string(),
        "ephemeral-storage": "100Gi",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0"
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now.to_string(), "lastTransitionTime": since.to_string()
        })
    };
    json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "svdm-kube-sim",
                "kernelVersion": "simulated",
                "containerRuntimeVersion": format!("svdm-kube-sim://{}", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": kubelet_version,
                "machineID": name,
                "systemUUID": name,
                "bootID": since.as_second().to_string()
            },
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "svdm-kube-sim is posting ready status")
            ]
        }
    })
}

/// Register the Node (idempotent) and report it Ready once. Returns the Node's uid.
pub async fn register(client: &Client, name: &str, taints: &[Value]) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(node_object(name, taints))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => log::info!("registered node {name}"),
        Err(e) if is_conflict(&e) => {
            // Re-assert our labels on an existing Node (a previous run, or someone else's object).
            nodes
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(node_object(name, taints)),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let node = nodes.get(name).await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

fn lease_object(name: &str, node_uid: &str, now: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_time(now)
        }
    })
}

/// `MicroTime` wire format.
fn micro_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn beat(
    client: &Client,
    name: &str,
    node_uid: &mut String,
    version: &str,
    since: Timestamp,
    taints: &[Value],
    max_pods: u32,
) -> Result<()> {
    let now = Timestamp::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let patched = nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(node_status(name, version, since, now, max_pods)),
        )
        .await;
    if let Err(e) = patched {
        if !crate::error::is_not_found(&e) {
            return Err(e.into());
        }
        // Someone deleted the Node: register it again, as a restarted kubelet would.
        log::warn!("node {name} was deleted; registering it again");
        *node_uid = register(client, name, taints).await?;
        crate::classes::register_csinode(client, name, node_uid).await?;
        return Ok(());
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renew = json!({"spec": {"holderIdentity": name, "renewTime": micro_time(now)}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(renew))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if crate::error::is_not_found(&e) => {
            let lease: Lease = serde_json::from_value(lease_object(name, node_uid, now))?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Keep the Node Ready forever (until the task is dropped).
pub async fn heartbeat(
    client: Client,
    name: String,
    mut node_uid: String,
    taints: Vec<Value>,
    max_pods: u32,
) {
    let version = match client.apiserver_version().await {
        Ok(info) => info.git_version,
        Err(e) => {
            log::warn!("cannot read the API server version ({e}); reporting v1.36.0");
            "v1.36.0".to_string()
        }
    };
    let since = Timestamp::now();
    loop {
        if let Err(e) = beat(
            &client,
            &name,
            &mut node_uid,
            &version,
            since,
            &taints,
            max_pods,
        )
        .await
        {
            log::warn!("node {name} heartbeat failed: {e}");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_capacity() {
        let now = Timestamp::UNIX_EPOCH;
        let status = node_status("n1", "v1.36.3", now, now, 300);
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": status["status"]}))
                .expect("valid node status");
        let st = node.status.expect("status");
        assert_eq!(
            st.capacity
                .as_ref()
                .and_then(|c| c.get("memory"))
                .map(|q| q.0.as_str()),
            Some("24Gi")
        );
        let ready = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(micro_time(now), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn taints_parse_like_the_kubelet_flag() {
        assert_eq!(
            parse_taint("sim.svdm.dev/test=a:NoSchedule"),
            Ok(json!({"key": "sim.svdm.dev/test", "value": "a", "effect": "NoSchedule"}))
        );
        assert_eq!(
            parse_taint("k:NoExecute"),
            Ok(json!({"key": "k", "value": "", "effect": "NoExecute"}))
        );
        assert!(parse_taint("k=v").is_err());
        assert!(parse_taint("k=v:Sometimes").is_err());
    }
}
