//! kube-proxy and cluster DNS, for this node's pods only.
//!
//! Each Service whose selector matches a Running pod on this node gets a loopback address, hosts
//! lines for `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local`, and a TCP forwarder per port to the
//! ready pods' `podIP:targetPort`. The address is the Service's real ClusterIP when the cluster's
//! service range is on loopback (e2e/testenv.sh uses 127.0.240.0/20): kube-proxy's job exactly, and
//! what the API server dials for a webhook registered by Service reference. Otherwise it comes from
//! `<service-ip-prefix>.N` (default `127.0.2.N`): a ClusterIP off loopback is never dialled, this
//! machine only talks to 127.0.0.0/8.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::Sim;
use crate::hosts::{self, Entry};

/// What one Service should look like on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The Service's ClusterIP, when it is a loopback address this machine can serve.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Service port -> endpoints.
    pub ports: BTreeMap<u16, Vec<SocketAddr>>,
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn target_port(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<u16> {
    match target {
        None => u16::try_from(port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// The Services this node serves, from all Services and this node's pods.
pub fn desired(services: &[Arc<Service>], pods: &[Arc<Pod>]) -> Vec<DesiredService> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let matching: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(ns.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            })
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
            .collect();
        if matching.is_empty() {
            continue;
        }
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut ports = BTreeMap::new();
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            let endpoints = matching
                .iter()
                .filter(|p| publish_not_ready || pod_ready(p))
                .filter_map(|p| {
                    let ip: Ipv4Addr = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
                    // Never forward anywhere but loopback.
                    ip.is_loopback().then_some(())?;
                    Some(SocketAddr::from((
                        ip,
                        target_port(port.target_port.as_ref(), port.port, p)?,
                    )))
                })
                .collect();
            ports.insert(service_port, endpoints);
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(Ipv4Addr::is_loopback);
        out.push(DesiredService {
            uid: svc.uid().unwrap_or_default(),
            namespace: ns,
            name: svc.name_any(),
            cluster_ip,
            ports,
        });
    }
    out
}

struct Listener {
    endpoints: watch::Sender<Vec<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Listener {
    fn abort(&self) {
        self.task.abort();
    }
}

struct Forward {
    ip: Ipv4Addr,
    names: Vec<String>,
    listeners: BTreeMap<u16, Listener>,
}

pub struct Proxy {
    sim: Arc<Sim>,
    prefix: [u8; 3],
    forwards: Mutex<BTreeMap<String, Forward>>,
}

async fn serve(listener: TcpListener, endpoints: watch::Receiver<Vec<SocketAddr>>) {
    let mut next = 0usize;
    loop {
        let (mut inbound, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let eps = endpoints.borrow().clone();
        if eps.is_empty() {
            continue; // No ready endpoint: refuse, as kube-proxy does.
        }
        let target = eps[next % eps.len()];
        next = next.wrapping_add(1);
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => log::debug!("proxy: cannot reach {target}: {e}"),
            }
        });
    }
}

impl Proxy {
    pub fn new(sim: Arc<Sim>, prefix: [u8; 3]) -> Self {
        Self {
            sim,
            prefix,
            forwards: Mutex::new(BTreeMap::new()),
        }
    }

    fn entries(forwards: &BTreeMap<String, Forward>) -> Vec<Entry> {
        let mut entries: Vec<Entry> = forwards
            .values()
            .map(|f| Entry {
                ip: f.ip,
                names: f.names.clone(),
            })
            .collect();
        entries.sort();
        entries
    }

    async fn sync(&self, wanted: Vec<DesiredService>) {
        let mut forwards = self.forwards.lock().await;
        let before = Self::entries(&forwards);
        let wanted_uids: BTreeSet<String> = wanted.iter().map(|d| d.uid.clone()).collect();
        forwards.retain(|uid, f| {
            let keep = wanted_uids.contains(uid);
            if !keep {
                log::info!(
                    "proxy: {} removed",
                    f.names.first().map(String::as_str).unwrap_or("")
                );
                f.listeners.values().for_each(Listener::abort);
            }
            keep
        });
        for d in wanted {
            if !forwards.contains_key(&d.uid) {
                let taken: BTreeSet<Ipv4Addr> = forwards.values().map(|f| f.ip).collect();
                let Some(ip) = d.cluster_ip.or_else(|| {
                    (10..=254)
                        .map(|n| Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], n))
                        .find(|ip| !taken.contains(ip))
                }) else {
                    log::warn!("proxy: service address pool exhausted");
                    continue;
                };
                let base = format!("{}.{}.svc", d.name, d.namespace);
                let names = vec![base.clone(), format!("{base}.cluster.local")];
                log::info!("proxy: {base} -> {ip}");
                forwards.insert(
                    d.uid.clone(),
                    Forward {
                        ip,
                        names,
                        listeners: BTreeMap::new(),
                    },
                );
            }
            let Some(f) = forwards.get_mut(&d.uid) else {
                continue;
            };
            f.listeners.retain(|port, l| {
                let keep = d.ports.contains_key(port);
                if !keep {
                    l.abort();
                }
                keep
            });
            for (port, endpoints) in d.ports {
                if let Some(l) = f.listeners.get(&port) {
                    l.endpoints.send_if_modified(|current| {
                        let changed = *current != endpoints;
                        if changed {
                            *current = endpoints.clone();
                        }
                        changed
                    });
                    continue;
                }
                match TcpListener::bind((f.ip, port)).await {
                    Ok(listener) => {
                        let (tx, rx) = watch::channel(endpoints);
                        f.listeners.insert(
                            port,
                            Listener {
                                endpoints: tx,
                                task: tokio::spawn(serve(listener, rx)),
                            },
                        );
                    }
                    Err(e) => log::warn!("proxy: cannot listen on {}:{port}: {e}", f.ip),
                }
            }
        }
        let after = Self::entries(&forwards);
        if after != before {
            self.write_hosts(&after).await;
        }
    }

    async fn write_hosts(&self, entries: &[Entry]) {
        let path = self.sim.config.hosts_file.clone();
        let node = self.sim.config.node_name.clone();
        let entries = entries.to_vec();
        match tokio::task::spawn_blocking(move || hosts::apply(&path, &node, &entries)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("proxy: cannot update hosts file: {e}"),
            Err(e) => log::warn!("proxy: hosts update panicked: {e}"),
        }
    }

    /// Stop forwarding and remove this node's hosts block.
    pub async fn shutdown(&self) {
        let mut forwards = self.forwards.lock().await;
        for f in forwards.values() {
            f.listeners.values().for_each(Listener::abort);
        }
        forwards.clear();
        self.write_hosts(&[]).await;
    }
}

fn mirror<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let drive = stream.for_each(|event| async move {
        if let Err(e) = event {
            log::debug!("proxy watch: {e}");
        }
    });
    (reader, drive)
}

pub async fn run(proxy: Arc<Proxy>) {
    let client = proxy.sim.client.clone();
    let selector = format!("spec.nodeName={}", proxy.sim.config.node_name);
    let (services, drive_services) = mirror(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, drive_pods) = mirror(
        Api::<Pod>::all(client),
        watcher::Config::default().fields(&selector),
    );
    // Start from a clean block: entries from a crashed run would point at nothing.
    proxy.write_hosts(&[]).await;
    let sync = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let wanted = desired(&services.state(), &pods.state());
            proxy.sync(wanted).await;
        }
    };
    futures::join!(drive_services, drive_pods, sync);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).expect("valid service"))
    }

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"app": "exp"}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "https", "containerPort": 8443}]}]},
                "status": {"phase": "Running", "podIP": ip,
                           "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .expect("valid pod"),
        )
    }

    #[test]
    fn services_get_ready_loopback_endpoints() {
        let services = vec![
            svc(
                json!({"metadata": {"name": "exp", "namespace": "ns", "uid": "s1"},
                       "spec": {"selector": {"app": "exp"}, "clusterIP": "127.0.240.7",
                                "ports": [{"port": 443, "targetPort": "https"}]}}),
            ),
            svc(
                json!({"metadata": {"name": "other", "namespace": "ns", "uid": "s2"},
                       "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}}),
            ),
            svc(
                json!({"metadata": {"name": "headless", "namespace": "ns", "uid": "s3"},
                       "spec": {"ports": [{"port": 80}]}}),
            ),
        ];
        let pods = vec![
            pod("a", "127.0.1.10", true),
            pod("b", "127.0.1.11", false),
            pod("c", "10.0.0.9", true),
        ];
        let d = desired(&services, &pods);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "exp");
        assert_eq!(d[0].cluster_ip, Some(Ipv4Addr::new(127, 0, 240, 7)));
        let eps = d[0].ports.get(&443).cloned().unwrap_or_default();
        assert_eq!(
            eps,
            vec!["127.0.1.10:8443".parse::<SocketAddr>().expect("addr")]
        );
    }

    #[test]
    fn cluster_ips_off_loopback_are_never_served() {
        let services = vec![svc(
            json!({"metadata": {"name": "exp", "namespace": "ns", "uid": "s1"},
                   "spec": {"selector": {"app": "exp"}, "clusterIP": "10.0.0.7", "ports": [{"port": 443}]}}),
        )];
        let d = desired(&services, &[pod("a", "127.0.1.10", true)]);
        assert_eq!(d[0].cluster_ip, None);
    }
}
