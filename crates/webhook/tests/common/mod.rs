//! Helpers shared by the HTTPS tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use svdm_pki::{CertPair, LeafSpec, Usage};

/// A throw-away CA and a serving certificate for 127.0.0.1 and localhost.
pub fn pair() -> (CertPair, CertPair) {
    let ca = svdm_pki::generate_ca("svdm-webhook-test-ca", Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("{e}"));
    let leaf = svdm_pki::issue(
        &ca,
        &LeafSpec {
            common_name: "svdm-webhook",
            organizations: &[],
            dns_names: &["localhost".to_owned()],
            ip_addresses: &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            usage: Usage::Server,
            validity: Duration::from_secs(3600),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (ca, leaf)
}

/// One HTTP/1.1 request over TLS trusting only `ca`; returns (status, body).
pub fn https(
    port: u16,
    ca: &str,
    max_version: Option<SslVersion>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    let ca = X509::from_pem(ca.as_bytes()).map_err(|e| e.to_string())?;
    b.cert_store_mut().add_cert(ca).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    b.set_max_proto_version(max_version)
        .map_err(|e| e.to_string())?;
    let connector = b.build();
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .configure()
        .map_err(|e| e.to_string())?
        .verify_hostname(false)
        .connect("127.0.0.1", tcp)
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A close_notify-less shutdown is fine here: the body is length-delimited.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
