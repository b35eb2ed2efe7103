//! The kubelet stand-in for pods bound to this node.
//!
//! - Pods with a container whose image the simulator runs (`--exporter-image`, `--image`) run that
//!   container's program as a local process (see [`worker`]); everything else is reported
//!   Running/Ready and held so until deleted.
//! - Every pod gets an address from a pool (`<pod-ip-prefix>.N`, default `198.18.1.N`) in the simulated
//!   cluster network, which is local to this machine (see [`crate::SIM_NETWORK`]) yet, unlike loopback,
//!   accepted by the API server as an EndpointSlice address; the exporter binds it itself.
//! - Deletion: stop the process (SIGTERM, grace period, SIGKILL), then delete the pod with grace 0, the
//!   kubelet's final step.

pub mod expand;
pub mod probe;
pub mod volumes;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Sim;
use crate::error::{Error, Result, is_not_found};

/// A pool of addresses `<prefix>.10` … `<prefix>.254` over one or more prefixes, one per pod uid.
pub struct IpPool {
    prefixes: Vec<[u8; 3]>,
    used: Mutex<BTreeMap<String, Ipv4Addr>>,
}

impl IpPool {
    pub fn new(prefixes: Vec<[u8; 3]>) -> Self {
        Self {
            prefixes,
            used: Mutex::new(BTreeMap::new()),
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[3] >= 10 && o[3] <= 254 && self.prefixes.iter().any(|p| p[..] == o[..3])
    }

    /// The pod's address: the one it already has when that is in the pool and free, else the lowest free.
    pub fn allocate(&self, uid: &str, current: Option<&str>) -> Result<Ipv4Addr> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| Error::NotReady("ip pool poisoned".into()))?;
        if let Some(ip) = used.get(uid) {
            return Ok(*ip);
        }
        let taken: std::collections::BTreeSet<Ipv4Addr> = used.values().copied().collect();
        let wanted = current
            .and_then(|c| c.parse::<Ipv4Addr>().ok())
            .filter(|ip| self.contains(*ip) && !taken.contains(ip));
        let ip = wanted
            .or_else(|| {
                self.prefixes
                    .iter()
                    .flat_map(|p| (10..=254).map(move |n| Ipv4Addr::new(p[0], p[1], p[2], n)))
                    .find(|ip| !taken.contains(ip))
            })
            .ok_or_else(|| Error::NotReady("pod address pool exhausted".into()))?;
        used.insert(uid.to_string(), ip);
        Ok(ip)
    }

    pub fn release(&self, uid: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(uid);
        }
    }

    fn uids(&self) -> Vec<String> {
        self.used
            .lock()
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// What a status report says about the one container the simulator really runs.
pub struct ContainerReport {
    pub name: String,
    pub state: Value,
    pub ready: bool,
    pub restart_count: i32,
    pub last_state: Option<Value>,
}

/// A pod status patch: `report` describes the exporter container; all other containers are running and
/// ready since `started`. Without a report every container is.
pub fn pod_status(
    pod: &Pod,
    ip: &str,
    phase: &str,
    started: &str,
    report: Option<ContainerReport>,
) -> Value {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut all_ready = true;
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let container_id = format!("sim://{}/{}", pod.uid().unwrap_or_default(), c.name);
            match report.as_ref().filter(|r| r.name == c.name) {
                Some(r) => {
                    all_ready &= r.ready;
                    let mut s = json!({
                        "name": c.name, "image": image, "imageID": "", "containerID": container_id,
                        "ready": r.ready, "started": r.state.get("running").is_some(),
                        "restartCount": r.restart_count, "state": r.state
                    });
                    if let Some(last) = &r.last_state {
                        s["lastState"] = last.clone();
                    }
                    s
                }
                None => json!({
                    "name": c.name, "image": image, "imageID": "", "containerID": container_id,
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": started}}
                }),
            }
        })
        .collect();
    let ready = if phase == "Running" && all_ready {
        "True"
    } else {
        "False"
    };
    let now = Timestamp::now().to_string();
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": now});
    json!({
        "status": {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
            "conditions": [
                cond("PodReadyToStartContainers", "True"),
                cond("Initialized", "True"),
                cond("ContainersReady", ready),
                cond("Ready", ready)
            ],
            "containerStatuses": statuses
        }
    })
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status.and_then(|s| s.pod_ip.as_ref()).is_some()
}

struct Worker {
    stop: oneshot::Sender<Duration>,
    task: JoinHandle<()>,
}

pub struct Kubelet {
    sim: Arc<Sim>,
    pub ips: IpPool,
    workers: tokio::sync::Mutex<HashMap<String, Worker>>,
}

impl Kubelet {
    pub fn new(sim: Arc<Sim>, prefixes: Vec<[u8; 3]>) -> Self {
        Self {
            sim,
            ips: IpPool::new(prefixes),
            workers: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn stop_worker(&self, uid: &str, grace: Duration) {
        let worker = self.workers.lock().await.remove(uid);
        if let Some(w) = worker {
            let _ = w.stop.send(grace);
            let _ = w.task.await;
        }
    }

    /// Stop every exporter process (simulator shutdown), each with its pod's grace period capped at 10 s.
    pub async fn shutdown(&self) {
        let workers: Vec<(String, Worker)> = self.workers.lock().await.drain().collect();
        let stops = workers.into_iter().map(|(uid, w)| async move {
            log::info!("stopping pod {uid}");
            let _ = w.stop.send(Duration::from_secs(10));
            let _ = w.task.await;
        });
        futures::future::join_all(stops).await;
    }

    /// Stop processes and free addresses of pods that vanished without passing through deletion (force
    /// deletes, or deletes while the simulator was down).
    async fn sweep(&self, store: &Store<Pod>) {
        let live: std::collections::HashSet<String> =
            store.state().iter().filter_map(|p| p.uid()).collect();
        let gone: Vec<String> = self
            .workers
            .lock()
            .await
            .keys()
            .filter(|u| !live.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            log::info!("pod {uid} vanished; stopping its process");
            self.stop_worker(&uid, Duration::ZERO).await;
        }
        for uid in self.ips.uids() {
            if !live.contains(&uid) {
                self.ips.release(&uid);
            }
        }
        // Pod directories of pods that no longer exist, including processes a crashed run left behind.
        let pods_dir = self.sim.store.root().join("pods");
        for entry in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid) && !self.workers.lock().await.contains_key(&uid) {
                worker::kill_leftover(&entry.path(), &self.sim.config);
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

async fn reconcile(pod: Arc<Pod>, k: Arc<Kubelet>) -> Result<Action> {
    let sim = &k.sim;
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(sim.config.node_name.as_str())
    {
        return Ok(Action::await_change());
    }
    let Some(uid) = pod.uid() else {
        return Ok(Action::await_change());
    };
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(sim.client.clone(), &ns);

    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        k.stop_worker(&uid, Duration::from_secs(grace.max(0) as u64))
            .await;
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => log::info!("pod {ns}/{} terminated", pod.name_any()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        k.ips.release(&uid);
        let dir = sim.store.root().join("pods").join(&uid);
        worker::kill_leftover(&dir, &sim.config);
        let _ = std::fs::remove_dir_all(dir);
        return Ok(Action::await_change());
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Ok(Action::await_change());
    }
    let current_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let ip = k.ips.allocate(&uid, current_ip.as_deref())?.to_string();

    if let Some((index, program)) = sim.config.runnable_container(&pod) {
        let mut workers = k.workers.lock().await;
        if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(uid) {
            let (stop, stop_rx) = oneshot::channel();
            let mut pod_with_ip = (*pod).clone();
            pod_with_ip
                .status
                .get_or_insert_with(Default::default)
                .pod_ip = Some(ip.clone());
            let container = pod
                .spec
                .as_ref()
                .map(|s| s.containers[index].clone())
                .unwrap_or_default();
            let args = worker::Args {
                sim: sim.clone(),
                program,
                pod: pod_with_ip,
                container,
                ip,
            };
            let task = tokio::spawn(worker::run(args, stop_rx));
            slot.insert(Worker { stop, task });
        }
        return Ok(Action::await_change());
    }

    if !is_ready(&pod) || current_ip.as_deref() != Some(ip.as_str()) {
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| Timestamp::now().to_string());
        let status = pod_status(&pod, &ip, "Running", &started, None);
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await?;
        log::info!("pod {ns}/{} running at {ip}", pod.name_any());
    }
    Ok(Action::await_change())
}

fn error_policy(pod: Arc<Pod>, err: &Error, _k: Arc<Kubelet>) -> Action {
    log::warn!(
        "kubelet: pod {}/{}: {err}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    );
    Action::requeue(Duration::from_secs(3))
}

pub async fn run(k: Arc<Kubelet>) {
    let sim = &k.sim;
    let api: Api<Pod> = Api::all(sim.client.clone());
    let selector = format!("spec.nodeName={}", sim.config.node_name);
    // Learn the addresses pods already have before handing out new ones.
    match api
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
    {
        Ok(list) => {
            for pod in &list.items {
                if let (Some(uid), Some(ip)) = (
                    pod.uid(),
                    pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
                ) {
                    let _ = k.ips.allocate(&uid, Some(ip));
                }
            }
        }
        Err(e) => log::warn!("cannot list this node's pods: {e}"),
    }
    let controller = Controller::new(api, watcher::Config::default().fields(&selector));
    let store = controller.store();
    let sweeper = {
        let k = k.clone();
        async move {
            // Judge nothing gone before the first complete list of this node's pods.
            if store.wait_until_ready().await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                k.sweep(&store).await;
            }
        }
    };
    let controller = controller
        .run(reconcile, error_policy, k.clone())
        .for_each(|_| async {});
    futures::join!(controller, sweeper);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_reuses_and_avoids_collisions() -> Result<()> {
        let pool = IpPool::new(vec![[127, 0, 1]]);
        assert_eq!(pool.allocate("a", None)?, Ipv4Addr::new(127, 0, 1, 10));
        assert_eq!(
            pool.allocate("b", Some("127.0.1.20"))?,
            Ipv4Addr::new(127, 0, 1, 20)
        );
        // A claimed address already taken by another pod is not reused.
        assert_eq!(
            pool.allocate("c", Some("127.0.1.20"))?,
            Ipv4Addr::new(127, 0, 1, 11)
        );
        // Foreign addresses are ignored.
        assert_eq!(
            pool.allocate("d", Some("10.0.0.5"))?,
            Ipv4Addr::new(127, 0, 1, 12)
        );
        assert_eq!(pool.allocate("a", None)?, Ipv4Addr::new(127, 0, 1, 10));
        pool.release("a");
        assert_eq!(pool.allocate("e", None)?, Ipv4Addr::new(127, 0, 1, 10));
        Ok(())
    }

    #[test]
    fn ip_pool_spans_its_prefixes_in_order() -> Result<()> {
        let pool = IpPool::new(vec![[127, 0, 41], [127, 0, 42]]);
        for i in 0..245 {
            pool.allocate(&format!("p{i}"), None)?;
        }
        assert_eq!(pool.allocate("next", None)?, Ipv4Addr::new(127, 0, 42, 10));
        assert_eq!(
            pool.allocate("kept", Some("127.0.42.99"))?,
            Ipv4Addr::new(127, 0, 42, 99)
        );
        for i in 0..243 {
            pool.allocate(&format!("q{i}"), None)?;
        }
        assert!(pool.allocate("overflow", None).is_err());
        Ok(())
    }

    #[test]
    fn status_reports_exporter_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "exporter", "image": "x"}, {"name": "side", "image": "y"}]}
        }))
        .expect("valid pod");
        let report = ContainerReport {
            name: "exporter".into(),
            state: json!({"running": {"startedAt": "t"}}),
            ready: false,
            restart_count: 2,
            last_state: None,
        };
        let st = pod_status(&pod, "127.0.1.10", "Running", "t", Some(report));
        assert_eq!(st["status"]["podIP"], "127.0.1.10");
        assert_eq!(st["status"]["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(st["status"]["containerStatuses"][1]["ready"], true);
        let ready = st["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        assert_eq!(ready.map(|r| r["status"].clone()), Some(json!("False")));
    }
}
