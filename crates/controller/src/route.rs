//! Whether a client that knows only `status.url` and `status.ca` can reach the exporter now, which
//! is what `Ready=True` promises: the real `d8` downloads at once after Ready and does not retry
//! (`docs/development/ARCHITECTURE.md`, "Ready means downloadable").
//!
//! Two checks, both needed:
//! 1. the exporter Service's EndpointSlice (written by kube-controller-manager's endpointslice
//!    controller) lists the current exporter pod as a ready endpoint — what kube-proxy on every
//!    node programs its rules from;
//! 2. a probe through `status.url` itself: the name resolves to the Service, the connection goes
//!    through the Service's proxying, the TLS handshake verifies the exporter's certificate against
//!    `status.ca` for the URL's host, and the exporter answers HTTP. That is the client's own path
//!    from the controller's node; other nodes' kube-proxies program the same EndpointSlice in
//!    about the same time, which no check from one node can prove.
//!
//! The probe is an unauthenticated `GET /api/v1/files/`: the exporter answers it (401, or 400 on
//! a Block export) without an API call and without counting it as activity.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use svdm_api::names;

use crate::cache;
use crate::context::Context;
use crate::error::Result;

/// How long one probe may take (connect, handshake and answer together).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `slices` list the pod `pod_uid` as a ready endpoint.
pub fn endpoint_ready(slices: &[EndpointSlice], pod_uid: &str) -> bool {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .any(|e| {
            e.target_ref
                .as_ref()
                .is_some_and(|t| t.uid.as_deref() == Some(pod_uid))
                && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                && !e.addresses.is_empty()
        })
}

/// `https://host[:port]/…` → `(host, port)`.
pub fn https_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority.to_owned(), 443)),
    }
}

/// Whether an HTTP status line came from a working exporter: any answer below 500. (401 without
/// credentials, 400 for the files API of a Block export; a 5xx means it is not serving.)
pub fn answered(status_line: &str) -> bool {
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return false;
    };
    version.starts_with("HTTP/1.") && code.parse::<u16>().is_ok_and(|c| (100..500).contains(&c))
}

fn connector(ca_pem: &str) -> std::result::Result<SslConnector, String> {
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for cert in X509::stack_from_pem(ca_pem.as_bytes()).map_err(|e| format!("status.ca: {e}"))? {
        store.add_cert(cert).map_err(|e| e.to_string())?;
    }
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    b.set_cert_store(store.build());
    Ok(b.build())
}

/// One probe of `url` trusting only `ca_pem`, as a client would (blocking; run off the runtime).
pub fn probe(url: &str, ca_pem: &str, timeout: Duration) -> std::result::Result<(), String> {
    let (host, port) = https_host_port(url).ok_or_else(|| format!("{url} is not an https URL"))?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let tcp = TcpStream::connect_timeout(addr, timeout)
        .map_err(|e| format!("cannot connect to {host} ({addr}): {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut tls = connector(ca_pem)?
        .connect(&host, tcp)
        .map_err(|e| format!("TLS with {host} ({addr}) failed: {e}"))?;
    let request =
        format!("GET /api/v1/files/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("{host}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = tls.read(&mut buf).map_err(|e| format!("{host}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    if answered(line) {
        Ok(())
    } else if line.is_empty() {
        Err(format!(
            "{host} ({addr}) closed the connection without an answer"
        ))
    } else {
        Err(format!("{host} ({addr}) answered {line:?}"))
    }
}

/// `Ok(None)` when a client can reach the exporter through `url` now, else what it still waits for.
pub async fn check(
    ctx: &Context,
    service: &str,
    pod_uid: &str,
    url: &str,
    ca_pem: &str,
) -> Result<Option<String>> {
    let slices: Vec<EndpointSlice> = cache::labelled(
        &ctx.client,
        ctx.caches().map(|c| &c.slices),
        cache::Read::Cache,
        Some(names::MODULE_NAMESPACE),
        "kubernetes.io/service-name",
        service,
    )
    .await?
    .into_iter()
    .map(std::sync::Arc::unwrap_or_clone)
    .collect();
    if !endpoint_ready(&slices, pod_uid) {
        return Ok(Some(format!(
            "waiting for the exporter's Service {service} to list the pod as a ready endpoint"
        )));
    }
    let (url, ca) = (url.to_owned(), ca_pem.to_owned());
    let outcome = tokio::task::spawn_blocking(move || probe(&url, &ca, PROBE_TIMEOUT)).await;
    Ok(match outcome {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(format!(
            "the exporter does not answer through its Service yet: {why}"
        )),
        Err(e) => Some(format!("the probe of the exporter's Service failed: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": endpoints
        }))
        .expect("valid slice")
    }

    #[test]
    fn only_the_current_pod_ready_counts() {
        let ep = |uid: &str, ready: Option<bool>| {
            let mut e =
                json!({"addresses": ["198.18.1.10"], "targetRef": {"kind": "Pod", "uid": uid}});
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r});
            }
            e
        };
        let cases = [
            (json!([ep("p1", Some(true))]), true),
            (json!([ep("p1", Some(false))]), false),
            // Readiness not reported yet is not readiness.
            (json!([ep("p1", None)]), false),
            // An earlier exporter pod's endpoint says nothing about this one.
            (json!([ep("old", Some(true))]), false),
            (json!([]), false),
        ];
        for (endpoints, want) in cases {
            assert_eq!(
                endpoint_ready(&[slice(endpoints.clone())], "p1"),
                want,
                "{endpoints}"
            );
        }
        assert!(!endpoint_ready(&[], "p1"));
    }

    #[test]
    fn urls_give_host_and_port() {
        let cases = [
            ("https://e.ns.svc/", Some(("e.ns.svc", 443))),
            ("https://e.ns.svc", Some(("e.ns.svc", 443))),
            ("https://10.0.0.1:8085/", Some(("10.0.0.1", 8085))),
            ("http://e.ns.svc/", None),
            ("https:///", None),
            ("https://:443/", None),
            ("https://h:x/", None),
        ];
        for (url, want) in cases {
            assert_eq!(
                https_host_port(url),
                want.map(|(h, p)| (h.to_owned(), p)),
                "{url}"
            );
        }
    }

    #[test]
    fn any_answer_below_500_is_a_working_exporter() {
        let cases = [
            ("HTTP/1.1 401 Unauthorized", true),
            ("HTTP/1.1 400 Bad Request", true),
            ("HTTP/1.1 200 OK", true),
            ("HTTP/1.1 503 Service Unavailable", false),
            ("HTTP/1.1 502 Bad Gateway", false),
            ("", false),
            ("garbage", false),
            ("SSH-2.0-OpenSSH", false),
        ];
        for (line, want) in cases {
            assert_eq!(answered(line), want, "{line:?}");
        }
    }
}
