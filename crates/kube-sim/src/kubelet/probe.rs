//! Readiness probes as the kubelet runs them: `httpGet` (HTTP or HTTPS without certificate verification;
//! 200–399 is success) and `tcpSocket` (a connection is success).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

/// A probe resolved against the pod: where to connect and what to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
        tls: bool,
        headers: Vec<(String, String)>,
    },
    Tcp {
        addr: SocketAddr,
    },
    /// exec and grpc probes are not simulated; they count as success.
    Unsupported,
}

fn port(p: &IntOrString, container: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

fn addr(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

pub fn resolve(probe: &Probe, container: &Container, pod_ip: &str) -> Option<Check> {
    if let Some(h) = &probe.http_get {
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let port = port(&h.port, container)?;
        let headers = h
            .http_headers
            .iter()
            .flatten()
            .map(|hh| (hh.name.clone(), hh.value.clone()))
            .collect();
        return Some(Check::Http {
            addr: addr(&host, port)?,
            host,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            tls: h.scheme.as_deref() == Some("HTTPS"),
            headers,
        });
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return Some(Check::Tcp {
            addr: addr(&host, port(&t.port, container)?)?,
        });
    }
    Some(Check::Unsupported)
}

fn http_status<S: Read + Write>(
    mut stream: S,
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {line:?}")))
}

/// One TLS client context for every HTTPS probe. Building one per probe loads the system CA
/// bundle each time (the builder's default verify paths) although probes never verify: with a
/// few hundred pods that was most of the simulator's CPU.
fn probe_connector() -> Result<&'static SslConnector, String> {
    static CONNECTOR: std::sync::OnceLock<Result<SslConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut builder =
                SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
            builder.set_verify(SslVerifyMode::NONE);
            Ok(builder.build())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Run one check (blocking). `Ok(())` means the probe succeeded.
pub fn run(check: &Check, timeout: Duration) -> Result<(), String> {
    match check {
        Check::Unsupported => Ok(()),
        Check::Tcp { addr } => TcpStream::connect_timeout(addr, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Check::Http {
            addr,
            host,
            path,
            tls,
            headers,
        } => {
            let stream = TcpStream::connect_timeout(addr, timeout).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            stream
                .set_write_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            let code = if *tls {
                let mut config = probe_connector()?.configure().map_err(|e| e.to_string())?;
                config.set_verify_hostname(false);
                let tls_stream = config.connect(host, stream).map_err(|e| e.to_string())?;
                http_status(tls_stream, host, path, headers)
            } else {
                http_status(stream, host, path, headers)
            }
            .map_err(|e| e.to_string())?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn http_probe_reads_status_code() -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                if let Ok((mut s, _)) = listener.accept() {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    );
                }
            }
        });
        let check = Check::Http {
            addr,
            host: "127.0.0.1".into(),
            path: "/readyz".into(),
            tls: false,
            headers: vec![],
        };
        assert_eq!(run(&check, Duration::from_secs(2)), Ok(()));
        assert!(run(&check, Duration::from_secs(2)).is_err());
        server.join().map_err(|_| "server panicked".to_string())?;
        Ok(())
    }

    #[test]
    fn resolves_named_ports() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "https", "containerPort": 8443}]
        }))
        .expect("valid container");
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
        }))
        .expect("valid probe");
        let check = resolve(&probe, &container, "127.0.1.10");
        assert!(
            matches!(check, Some(Check::Http { tls: true, addr, .. }) if addr.port() == 8443 && addr.ip().to_string() == "127.0.1.10")
        );
    }
}
