//! kube-proxy and cluster DNS, as this node plays them.
//!
//! Routing follows the objects kube-proxy follows: Services and their EndpointSlices (written by
//! kube-controller-manager's endpointslice controller from pods, and by the API server for
//! `default/kubernetes`), never pods. A Service is forwarded on its ClusterIP when that address is
//! local to this machine (the local control plane's service range is on loopback), else on an
//! address `<service-ip-prefix>.N`; its names go into the hosts file as cluster DNS would answer
//! them. One address can have one listener only, so each Service is forwarded by the node that
//! holds one of its endpoints (and Services whose endpoints are on no node, by the node started
//! with `--proxy-nodeless`). See the crate README for what this does not model.
//!
//! The forwarder is a plain TCP relay, so it must not add latency of its own: both sockets run with
//! `TCP_NODELAY`. Without it, a response that reaches the relay in two reads (a TLS record with the
//! headers, then one with the body) left it as two writes, and Nagle's algorithm held the second
//! until the client acknowledged the first, which the client delays (delayed ACK): tens of
//! milliseconds on every small request (`bench/proxy.sh` measures it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::Sim;
use crate::hosts::{self, Entry};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Relay buffer per direction. Larger copies were measured slower, for small requests and bulk
/// downloads alike (`bench/proxy.sh` prints a 64 KiB row next to it).
const RELAY_BUFFER: usize = 8 * 1024;
/// How long events are gathered before one sync (a burst of watch events makes one pass).
const COALESCE: Duration = Duration::from_millis(20);
/// A full sync at least this often, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(5);

/// What one Service should look like on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The Service's ClusterIP, when it is an address this machine can serve.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Service port -> ready endpoints.
    pub ports: BTreeMap<u16, Vec<SocketAddr>>,
}

/// Which Services this node forwards.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub node: &'a str,
    /// Also Services whose endpoints name no node (the API server's).
    pub nodeless: bool,
}

fn same_port_name(a: Option<&str>, b: Option<&str>) -> bool {
    a.unwrap_or_default() == b.unwrap_or_default()
}

fn slices_of<'a>(svc: &Service, slices: &'a [Arc<EndpointSlice>]) -> Vec<&'a EndpointSlice> {
    let ns = svc.namespace();
    let name = svc.name_any();
    slices
        .iter()
        .map(Arc::as_ref)
        .filter(|s| {
            s.namespace() == ns
                && s.metadata.deletion_timestamp.is_none()
                && s.address_type == "IPv4"
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
        })
        .collect()
}

/// The Services this node forwards, from all Services and all EndpointSlices.
///
/// An endpoint counts when its `ready` condition is not false (the API's reading of a missing
/// condition) and its address is local to this machine; every other address is dropped, so the
/// simulation never dials off this machine.
pub fn desired(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    scope: Scope<'_>,
) -> Vec<DesiredService> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName")
            || spec.cluster_ip.as_deref().is_none_or(|ip| ip == "None")
        {
            continue;
        }
        let own = slices_of(svc, slices);
        let ours = own
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .any(|e| match e.node_name.as_deref() {
                Some(node) => node == scope.node,
                None => scope.nodeless,
            });
        if !ours {
            continue;
        }
        let mut ports = BTreeMap::new();
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            let mut endpoints = BTreeSet::new();
            for slice in &own {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                    .find(|p| same_port_name(p.name.as_deref(), port.name.as_deref()))
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                for ep in slice.endpoints.iter().flatten() {
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for addr in &ep.addresses {
                        if let Ok(ip) = addr.parse::<Ipv4Addr>()
                            && crate::is_local(ip)
                        {
                            endpoints.insert(SocketAddr::from((ip, target)));
                        }
                    }
                }
            }
            ports.insert(service_port, endpoints.into_iter().collect());
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| crate::is_local(*ip));
        out.push(DesiredService {
            uid: svc.uid().unwrap_or_default(),
            namespace: svc.namespace().unwrap_or_default(),
            name: svc.name_any(),
            cluster_ip,
            ports,
        });
    }
    out
}

struct Listener {
    endpoints: watch::Sender<Vec<SocketAddr>>,
    /// The endpoints last asked for (they reach `endpoints` after the configured delay).
    wanted: Vec<SocketAddr>,
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
    /// Addresses whose bind failed once (already warned about).
    bind_failed: Mutex<BTreeSet<(Ipv4Addr, u16)>>,
}

/// How a relay treats its two sockets. [`Relay::KUBE_PROXY`] is what the forwarders use; the
/// others exist so `bench/proxy.sh` can show what each part costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relay {
    pub nodelay: bool,
    pub buffer: usize,
}

impl Relay {
    /// What the forwarders do: `TCP_NODELAY` on both sockets, 8 KiB copies.
    pub const KUBE_PROXY: Relay = Relay {
        nodelay: true,
        buffer: RELAY_BUFFER,
    };
    /// The forwarder before the fix: Nagle's algorithm on, tokio's 8 KiB default copies.
    pub const NAGLE_8K: Relay = Relay {
        nodelay: false,
        buffer: 8 * 1024,
    };

    /// Relays one accepted connection to `target`.
    pub async fn run(self, inbound: TcpStream, target: SocketAddr) {
        let mut inbound = inbound;
        let _ = inbound.set_nodelay(self.nodelay);
        match TcpStream::connect(target).await {
            Ok(mut outbound) => {
                let _ = outbound.set_nodelay(self.nodelay);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut inbound,
                    &mut outbound,
                    self.buffer,
                    self.buffer,
                )
                .await;
            }
            Err(e) => log::debug!("proxy: cannot reach {target}: {e}"),
        }
    }
}

/// Accepts connections on `listener` and relays each to the next endpoint, round robin. With no
/// endpoint the connection is closed at once (a real node rejects it too).
pub async fn serve(listener: TcpListener, endpoints: watch::Receiver<Vec<SocketAddr>>) {
    serve_with(listener, endpoints, Relay::KUBE_PROXY).await
}

/// [`serve`] with a chosen relay.
pub async fn serve_with(
    listener: TcpListener,
    endpoints: watch::Receiver<Vec<SocketAddr>>,
    relay: Relay,
) {
    let mut next = 0usize;
    loop {
        let (inbound, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let target = {
            let eps = endpoints.borrow();
            if eps.is_empty() {
                continue;
            }
            eps[next % eps.len()]
        };
        next = next.wrapping_add(1);
        tokio::spawn(relay.run(inbound, target));
    }
}

impl Proxy {
    pub fn new(sim: Arc<Sim>, prefix: [u8; 3]) -> Self {
        Self {
            sim,
            prefix,
            forwards: Mutex::new(BTreeMap::new()),
            bind_failed: Mutex::new(BTreeSet::new()),
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

    /// Hands `endpoints` to a listener now, or after the configured delay (a slow kube-proxy).
    fn publish(&self, tx: &watch::Sender<Vec<SocketAddr>>, endpoints: Vec<SocketAddr>) {
        let delay = self.sim.config.proxy_delay;
        let apply = move |tx: &watch::Sender<Vec<SocketAddr>>| {
            tx.send_if_modified(|current| {
                let changed = *current != endpoints;
                if changed {
                    *current = endpoints.clone();
                }
                changed
            });
        };
        if delay.is_zero() {
            apply(tx);
        } else {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                apply(&tx);
            });
        }
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
                if let Some(l) = f.listeners.get_mut(&port) {
                    if l.wanted != endpoints {
                        l.wanted = endpoints.clone();
                        self.publish(&l.endpoints, endpoints);
                    }
                    continue;
                }
                match TcpListener::bind((f.ip, port)).await {
                    Ok(listener) => {
                        self.bind_failed.lock().await.remove(&(f.ip, port));
                        let (tx, rx) = watch::channel(Vec::new());
                        self.publish(&tx, endpoints.clone());
                        f.listeners.insert(
                            port,
                            Listener {
                                endpoints: tx,
                                wanted: endpoints,
                                task: tokio::spawn(serve(listener, rx)),
                            },
                        );
                    }
                    // Another node of this machine may forward it (a Service with endpoints on
                    // two nodes); say so once, keep trying on later passes.
                    Err(e) => {
                        if self.bind_failed.lock().await.insert((f.ip, port)) {
                            log::warn!("proxy: cannot listen on {}:{port}: {e}", f.ip);
                        }
                    }
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

fn mirror<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, impl std::future::Future<Output = ()>)
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
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let drive = stream.for_each(move |event| {
        let changed = changed.clone();
        async move {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => log::debug!("proxy watch: {e}"),
            }
        }
    });
    (reader, drive)
}

pub async fn run(proxy: Arc<Proxy>) {
    let client = proxy.sim.client.clone();
    let changed = Arc::new(Notify::new());
    let (services, drive_services) = mirror(Api::<Service>::all(client.clone()), changed.clone());
    let (slices, drive_slices) = mirror(Api::<EndpointSlice>::all(client), changed.clone());
    // Start from a clean block: entries from a crashed run would point at nothing.
    proxy.write_hosts(&[]).await;
    let sync = async {
        let scope = Scope {
            node: &proxy.sim.config.node_name,
            nodeless: proxy.sim.config.proxy_nodeless,
        };
        loop {
            let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
            tokio::time::sleep(COALESCE).await;
            let wanted = desired(&services.state(), &slices.state(), scope);
            proxy.sync(wanted).await;
        }
    };
    futures::join!(drive_services, drive_slices, sync);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).expect("valid service"))
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).expect("valid endpointslice"))
    }

    fn exporter_service(uid: &str, name: &str, ip: &str) -> Arc<Service> {
        svc(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": uid},
                   "spec": {"selector": {"app": name}, "clusterIP": ip,
                            "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}),
        )
    }

    fn endpoint(ip: &str, node: Option<&str>, ready: Option<bool>) -> serde_json::Value {
        let mut ep = json!({"addresses": [ip]});
        if let Some(n) = node {
            ep["nodeName"] = json!(n);
        }
        if let Some(r) = ready {
            ep["conditions"] = json!({"ready": r});
        }
        ep
    }

    fn slice_for(
        service: &str,
        port: u16,
        endpoints: Vec<serde_json::Value>,
    ) -> Arc<EndpointSlice> {
        slice(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
    }

    const HERE: Scope<'static> = Scope {
        node: "n1",
        nodeless: false,
    };

    fn eps(d: &DesiredService, port: u16) -> Vec<SocketAddr> {
        d.ports.get(&port).cloned().unwrap_or_default()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn routes_come_from_endpointslices_ready_endpoints_only() {
        let services = vec![exporter_service("s1", "exp", "127.0.240.7")];
        let slices = vec![slice_for(
            "exp",
            8443,
            vec![
                endpoint("198.18.1.10", Some("n1"), Some(true)),
                endpoint("198.18.1.11", Some("n1"), Some(false)),
                // A missing condition reads as ready (the API's documented meaning).
                endpoint("198.18.1.12", Some("n1"), None),
                // Never dialled: not on this machine.
                endpoint("10.0.0.9", Some("n1"), Some(true)),
            ],
        )];
        let d = desired(&services, &slices, HERE);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].cluster_ip, Some(Ipv4Addr::new(127, 0, 240, 7)));
        assert_eq!(
            eps(&d[0], 443),
            vec![addr("198.18.1.10:8443"), addr("198.18.1.12:8443")]
        );
    }

    #[test]
    fn a_service_without_endpointslices_is_not_forwarded_whatever_its_pods() {
        // The proxy never looks at pods: until the endpointslice controller writes a slice there
        // is no route, exactly as on a real node.
        let services = vec![exporter_service("s1", "exp", "127.0.240.7")];
        assert!(desired(&services, &[], HERE).is_empty());
    }

    #[test]
    fn a_service_is_forwarded_by_the_node_of_its_endpoints() {
        let services = vec![exporter_service("s1", "exp", "127.0.240.7")];
        let slices = vec![slice_for(
            "exp",
            8443,
            vec![endpoint("198.18.2.10", Some("n2"), Some(true))],
        )];
        assert!(desired(&services, &slices, HERE).is_empty());
        let other = Scope {
            node: "n2",
            nodeless: false,
        };
        assert_eq!(desired(&services, &slices, other).len(), 1);
        // Not ready yet, but on this node: the listener exists and refuses, as a node would.
        let not_ready = vec![slice_for(
            "exp",
            8443,
            vec![endpoint("198.18.1.10", Some("n1"), Some(false))],
        )];
        let d = desired(&services, &not_ready, HERE);
        assert_eq!(d.len(), 1);
        assert!(eps(&d[0], 443).is_empty());
    }

    #[test]
    fn the_api_server_service_is_forwarded_by_the_nodeless_node() {
        let services = vec![svc(json!({
            "metadata": {"name": "kubernetes", "namespace": "ns", "uid": "k"},
            "spec": {"clusterIP": "127.0.240.1", "ports": [{"name": "https", "port": 443}]}
        }))];
        let slices = vec![slice_for(
            "kubernetes",
            6443,
            vec![endpoint("198.18.0.1", None, Some(true))],
        )];
        assert!(desired(&services, &slices, HERE).is_empty());
        let d = desired(
            &services,
            &slices,
            Scope {
                node: "n1",
                nodeless: true,
            },
        );
        assert_eq!(eps(&d[0], 443), vec![addr("198.18.0.1:6443")]);
    }

    #[test]
    fn ports_match_by_name_and_foreign_slices_do_not_count() {
        let services = vec![svc(json!({
            "metadata": {"name": "exp", "namespace": "ns", "uid": "s1"},
            "spec": {"selector": {"app": "exp"}, "clusterIP": "127.0.240.7",
                     "ports": [{"name": "https", "port": 443}, {"name": "metrics", "port": 9090}]}
        }))];
        let two_ports = slice(json!({
            "metadata": {"name": "exp-1", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "exp"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9443}, {"name": "https", "port": 8443}],
            "endpoints": [endpoint("198.18.1.10", Some("n1"), Some(true))]
        }));
        let other_namespace = slice(json!({
            "metadata": {"name": "exp-2", "namespace": "elsewhere",
                         "labels": {"kubernetes.io/service-name": "exp"}},
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": 1}],
            "endpoints": [endpoint("198.18.1.99", Some("n1"), Some(true))]
        }));
        let d = desired(&services, &[two_ports, other_namespace], HERE);
        assert_eq!(eps(&d[0], 443), vec![addr("198.18.1.10:8443")]);
        assert_eq!(eps(&d[0], 9090), vec![addr("198.18.1.10:9443")]);
    }

    #[test]
    fn headless_external_and_foreign_cluster_ips() {
        let slices = vec![
            slice_for(
                "headless",
                80,
                vec![endpoint("198.18.1.10", Some("n1"), None)],
            ),
            slice_for("far", 80, vec![endpoint("198.18.1.10", Some("n1"), None)]),
        ];
        let services = vec![
            svc(
                json!({"metadata": {"name": "headless", "namespace": "ns", "uid": "h"},
                       "spec": {"clusterIP": "None", "ports": [{"name": "https", "port": 80}]}}),
            ),
            svc(
                json!({"metadata": {"name": "far", "namespace": "ns", "uid": "f"},
                       "spec": {"clusterIP": "10.96.0.7", "ports": [{"name": "https", "port": 80}]}}),
            ),
        ];
        let d = desired(&services, &slices, HERE);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "far");
        assert_eq!(
            d[0].cluster_ip, None,
            "an address off this machine is never served"
        );
    }

    async fn echo_backend() -> std::io::Result<SocketAddr> {
        let backend = TcpListener::bind("127.0.0.1:0").await?;
        let addr = backend.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Ok(addr)
    }

    #[tokio::test]
    async fn the_forwarder_relays_to_its_endpoints_and_refuses_without_one() -> std::io::Result<()>
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = echo_backend().await?;
        let front = TcpListener::bind("127.0.0.1:0").await?;
        let front_addr = front.local_addr()?;
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(serve(front, rx));

        // No endpoint: the connection is closed without a byte.
        let mut c = TcpStream::connect(front_addr).await?;
        let mut buf = [0u8; 4];
        assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0);

        tx.send_replace(vec![backend]);
        let mut c = TcpStream::connect(front_addr).await?;
        c.write_all(b"ping").await?;
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }
}
