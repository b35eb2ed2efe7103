//! TLS behaviour: certificate reload through a Kubernetes-style `..data` symlink swap without dropping a
//! running transfer; HTTP/1.1 only; TLS 1.2 minimum; client certificates optional.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Lays out a Secret volume as the kubelet does: files behind `..data -> ..<timestamp>`.
fn secret_volume(dir: &Path, generation: &str, pki: &Pki) {
    let gen_dir = dir.join(generation);
    std::fs::create_dir_all(&gen_dir).unwrap_or_default();
    write(&gen_dir.join("tls.crt"), &pki.server.cert_pem);
    write(&gen_dir.join("tls.key"), &pki.server.key_pem);
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    symlink(generation, &tmp_link).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp_link, dir.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn certificate_reload_keeps_running_transfers() {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
    write(&vol.path().join("big"), &big);
    let secret = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first = server_pki();
    secret_volume(secret.path(), "..gen1", &first);
    let mut opts = Opts::fs(vol.path());
    opts.tls = Some((
        secret.path().join("tls.crt"),
        secret.path().join("tls.key"),
        first.ca.cert_pem.clone(),
    ));
    let ex = Exporter::start(opts);
    let old = ex.client();

    // Start a download and read only part of it.
    let mut stream = old.connect();
    stream
        .write_all(
            b"GET /api/v1/files/big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_default();
    let mut got = vec![0u8; 65536];
    let n = stream.read(&mut got).unwrap_or(0);
    got.truncate(n);

    // Rotate to a certificate from a different CA.
    let second = server_pki();
    secret_volume(secret.path(), "..gen2", &second);
    let new = Client::new(&second.ca.cert_pem, ex.addr, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tcp = std::net::TcpStream::connect(ex.addr).unwrap_or_else(|e| panic!("{e}"));
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
            .unwrap_or_else(|e| panic!("{e}"));
        let ca = openssl::x509::X509::from_pem(second.ca.cert_pem.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        b.cert_store_mut().add_cert(ca).unwrap_or_default();
        if b.build().connect("localhost", tcp).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(new.get("/api/v1/files/big").body.len(), big.len());
    assert!(ex.log_text().contains("TLS certificate reloaded"));

    // The transfer that started under the old certificate completes.
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("old transfer broken: {e}"));
    got.extend_from_slice(&rest);
    let resp = parse_response(&got, false);
    assert_eq!(resp.status, 200);
    assert_eq!(sha256_hex(&resp.body), sha256_hex(&big));

    // A broken update keeps the current certificate in service.
    let gen3 = secret.path().join("..gen3");
    std::fs::create_dir_all(&gen3).unwrap_or_default();
    write(&gen3.join("tls.crt"), "garbage");
    write(&gen3.join("tls.key"), "garbage");
    let tmp_link = secret.path().join("..data_tmp");
    symlink("..gen3", &tmp_link).unwrap_or_default();
    std::fs::rename(&tmp_link, secret.path().join("..data")).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(new.req("HEAD", "/api/v1/files/big", &[]).status, 200);
}

#[test]
fn protocol_settings() {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f"), "x");
    let ex = Exporter::start(Opts::fs(vol.path()));
    let ca = openssl::x509::X509::from_pem(ex.ca_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    // h2 is offered by the client but not selected: bulk streams are faster on HTTP/1.1.
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .unwrap_or_else(|e| panic!("{e}"));
    b.cert_store_mut().add_cert(ca.clone()).unwrap_or_default();
    b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap_or_default();
    let s = b
        .build()
        .connect(
            "localhost",
            std::net::TcpStream::connect(ex.addr).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(s.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    // TLS 1.1 is refused.
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .unwrap_or_else(|e| panic!("{e}"));
    b.cert_store_mut().add_cert(ca).unwrap_or_default();
    b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_1))
        .unwrap_or_default();
    b.set_min_proto_version(None).unwrap_or_default();
    b.set_security_level(0);
    let r = b.build().connect(
        "localhost",
        std::net::TcpStream::connect(ex.addr).unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(r.is_err(), "TLS 1.1 must be refused");
}

#[test]
fn missing_client_ca_does_not_take_the_export_down() {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f"), "x");
    write(&vol.path().join("empty-ca.crt"), "");
    for ca in [
        vol.path().join("missing-ca.crt"),
        vol.path().join("empty-ca.crt"),
    ] {
        let mut opts = Opts::fs(vol.path());
        opts.args = vec!["--client-ca".into(), ca.to_string_lossy().into_owned()];
        let ex = Exporter::start(opts);
        assert_eq!(ex.client().get("/api/v1/files/f").text(), "x");
        assert!(
            ex.log_text()
                .contains("client certificates are not accepted")
        );
    }
}
