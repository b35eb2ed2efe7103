//! The `svdm-webhook` binary as deployed: configured through `SVDM_*` environment variables,
//! talking to the REAL API server of `e2e/testenv.sh` through `KUBECONFIG`, ready once its caches
//! loaded, and deciding a review over HTTPS.
//!
//! Skipped with a note without `TESTENV_KUBECONFIG`, failing instead when `CI` is set.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        // Only the child this test started, by its pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_serves_reviews_from_env_configuration() {
    let Some(kubeconfig) =
        svdm_testenv::require_kubeconfig("binary_serves_reviews_from_env_configuration")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (ca, leaf) = common::pair();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key, &leaf.key_pem).unwrap_or_else(|e| panic!("{e}"));
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));

    let child = Command::new(env!("CARGO_BIN_EXE_svdm-webhook"))
        .env("KUBECONFIG", &kubeconfig)
        .env("SVDM_TLS_CERT", &cert)
        .env("SVDM_TLS_KEY", &key)
        .env("SVDM_ADDRESS", "127.0.0.1")
        .env("SVDM_PORT", port.to_string())
        .env("SVDM_MAX_TTL", "1h")
        .env("SVDM_LOG_LEVEL", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Kill(child);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("svdm-webhook exited early: {status}");
        }
        match common::https(port, &ca.cert_pem, None, "GET", "/readyz", "") {
            Ok((200, _)) => break,
            other => {
                assert!(Instant::now() < deadline, "never ready: {other:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let (status, _) = common::https(port, &ca.cert_pem, None, "GET", "/healthz", "")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);

    let review = |ttl: &str| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "bin-1",
                "kind": {"group": "storage.deckhouse.io", "version": "v1alpha1", "kind": "DataExport"},
                "resource": {"group": "storage.deckhouse.io", "version": "v1alpha1", "resource": "dataexports"},
                "name": "de", "namespace": "svdm-no-such-namespace", "operation": "CREATE", "userInfo": {},
                "object": {
                    "apiVersion": "storage.deckhouse.io/v1alpha1", "kind": "DataExport",
                    "metadata": {"name": "de", "namespace": "svdm-no-such-namespace"},
                    "spec": {"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": ttl},
                },
            }
        })
        .to_string()
    };
    let answer = |body: String| -> Value {
        let (status, body) = common::https(
            port,
            &ca.cert_pem,
            None,
            "POST",
            "/validate-dataexport",
            &body,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    // The max ttl came from SVDM_MAX_TTL.
    let v = answer(review("2h"));
    assert_eq!(v["response"]["uid"], "bin-1");
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds the maximum of 1h")),
        "{v}"
    );
    // A live GET against the API server reports the missing PVC.
    let v = answer(review("30m"));
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(
                "PersistentVolumeClaim data not found in namespace svdm-no-such-namespace"
            )),
        "{v}"
    );

    // SIGTERM (what the kubelet sends) stops it cleanly.
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 15s after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}
