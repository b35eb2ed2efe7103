//! The real HTTPS server on 127.0.0.1: a review over TLS, TLS 1.2 as the floor, and certificate
//! reload through a Secret-style `..data` symlink swap.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use openssl::ssl::SslVersion;
use serde_json::{Value, json};
use svdm_pki::CertPair;
use svdm_webhook::facts::StaticFacts;
use svdm_webhook::server::{AppState, serve};
use svdm_webhook::tls::ServingCert;
use svdm_webhook::validate::{ClusterView, Lookup, PvcFacts, Settings};

/// Writes a Secret-volume layout: `..vN/{tls.crt,tls.key}`, `..data -> ..vN`,
/// `tls.crt -> ..data/tls.crt`; a later call swaps `..data` atomically as kubelet does.
fn write_secret(dir: &Path, version: u32, leaf: &CertPair) {
    let v = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&v).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(v.join("tls.crt"), &leaf.cert_pem).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(v.join("tls.key"), &leaf.key_pem).unwrap_or_else(|e| panic!("{e}"));
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, dir.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn state() -> web::Data<AppState> {
    web::Data::new(AppState {
        settings: Settings {
            default_ttl: Duration::from_secs(120),
            max_ttl: Duration::from_secs(86400),
            publish_configured: true,
        },
        facts: Arc::new(StaticFacts {
            view: Some(ClusterView {
                pvc: Lookup::Found(PvcFacts {
                    name: "data".into(),
                    phase: Some("Pending".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_over_https_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (ca1, leaf1) = common::pair();
    write_secret(dir.path(), 1, &leaf1);
    let cert = ServingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let server = serve(listener, &cert, state(), 1).unwrap_or_else(|e| panic!("{e}"));
    let handle = server.handle();
    tokio::spawn(server);
    tokio::spawn(cert.clone().watch(Duration::from_millis(100)));

    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "tls-1",
            "kind": {"group": "storage.deckhouse.io", "version": "v1alpha1", "kind": "DataExport"},
            "resource": {"group": "storage.deckhouse.io", "version": "v1alpha1", "resource": "dataexports"},
            "name": "de", "namespace": "ns", "operation": "CREATE", "userInfo": {},
            "object": {
                "apiVersion": "storage.deckhouse.io/v1alpha1", "kind": "DataExport",
                "metadata": {"name": "de", "namespace": "ns"},
                "spec": {"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": "5m"},
            },
        }
    })
    .to_string();

    let ca1_pem = ca1.cert_pem.clone();
    let body = review.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        common::https(port, &ca1_pem, None, "POST", "/validate-dataexport", &body)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["response"]["uid"], "tls-1");
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("PVC data is Pending, not Bound")),
        "{v}"
    );

    // TLS 1.1 and older are refused.
    let ca1_pem = ca1.cert_pem.clone();
    let old = tokio::task::spawn_blocking(move || {
        common::https(
            port,
            &ca1_pem,
            Some(SslVersion::TLS1_1),
            "GET",
            "/healthz",
            "",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(old.is_err(), "a TLS 1.1 handshake succeeded: {old:?}");

    // Rotate: the Secret volume swaps ..data to a certificate from a new CA.
    let (ca2, leaf2) = common::pair();
    write_secret(dir.path(), 2, &leaf2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ca2_pem = ca2.cert_pem.clone();
        let r = tokio::task::spawn_blocking(move || {
            common::https(port, &ca2_pem, None, "GET", "/healthz", "")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        match r {
            Ok((200, _)) => break,
            other if Instant::now() > deadline => panic!("new certificate not served: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // The old CA no longer verifies the served certificate.
    let ca1_pem = ca1.cert_pem.clone();
    let r = tokio::task::spawn_blocking(move || {
        common::https(port, &ca1_pem, None, "GET", "/healthz", "")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.is_err(), "old CA still verifies: {r:?}");

    // A broken update (certificate without matching key) keeps the current certificate.
    std::fs::write(dir.path().join("..v2/tls.key"), common::pair().1.key_pem)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cert.reload().is_err());
    let ca2_pem = ca2.cert_pem.clone();
    let r = tokio::task::spawn_blocking(move || {
        common::https(port, &ca2_pem, None, "GET", "/healthz", "")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.map(|(s, _)| s), Ok(200));

    handle.stop(true).await;
}

#[test]
fn unusable_files_fail_at_load() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_, leaf) = common::pair();
    let (_, other) = common::pair();
    let c = dir.path().join("c.pem");
    let k = dir.path().join("k.pem");
    assert!(ServingCert::load(&c, &k).is_err());
    std::fs::write(&c, &leaf.cert_pem).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&k, &other.key_pem).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ServingCert::load(&c, &k).is_err(),
        "mismatched key accepted"
    );
    std::fs::write(&k, "garbage").unwrap_or_else(|e| panic!("{e}"));
    assert!(ServingCert::load(&c, &k).is_err());
    std::fs::write(&k, &leaf.key_pem).unwrap_or_else(|e| panic!("{e}"));
    assert!(ServingCert::load(&c, &k).is_ok());
}
