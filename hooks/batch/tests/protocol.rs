//! The binary over the batch-hook protocol: what addon-operator runs.

use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_svdm-hooks"));
    c.env_clear();
    c
}

#[test]
fn list_works_with_an_empty_environment() {
    let out = bin().args(["hook", "list"]).output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.starts_with("Found 4 items:\n"), "{text}");
    assert!(text.contains("0 - tls-certificates\n"));
    assert!(text.contains("1 - custom-certificate\n"));
}

#[test]
fn config_is_a_v1_batch_config_and_nothing_else() {
    let out = bin().args(["hook", "config"]).output().expect("run");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    assert_eq!(v["version"], "v1");
    let hooks = v["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 4);
    for h in hooks {
        assert_eq!(h["configVersion"], "v1");
        assert!(h["metadata"]["name"].is_string());
        // module-sdk forbids onStartup together with kubernetes bindings.
        assert!(h.get("onStartup").is_none() || h.get("kubernetes").is_none());
        for k in h["kubernetes"].as_array().into_iter().flatten() {
            if let Some(e) = k.get("executeHookOnEvent") {
                assert!(e.is_boolean(), "executeHookOnEvent must be a bool");
            }
        }
    }
}

#[test]
fn run_reads_and_writes_the_protocol_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |n: &str| dir.path().join(n);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    std::fs::copy(format!("{fixtures}/before-helm-empty.json"), p("bc.json")).expect("copy");
    std::fs::copy(
        format!("{fixtures}/values-custom-domain.json"),
        p("values.json"),
    )
    .expect("copy");
    for f in ["config.json", "patch.json", "kube.json", "metrics.json"] {
        std::fs::write(p(f), "").expect("pre-create");
    }
    let out = bin()
        .args(["hook", "run", "0"])
        .env("BINDING_CONTEXT_PATH", p("bc.json"))
        .env("VALUES_PATH", p("values.json"))
        .env("CONFIG_VALUES_PATH", p("config.json"))
        .env("VALUES_JSON_PATCH_PATH", p("patch.json"))
        .env("KUBERNETES_PATCH_PATH", p("kube.json"))
        .env("METRICS_PATH", p("metrics.json"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch: Value =
        serde_json::from_str(&std::fs::read_to_string(p("patch.json")).expect("read"))
            .expect("json");
    let paths: Vec<&str> = patch
        .as_array()
        .expect("a JSON Patch array")
        .iter()
        .map(|op| op["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        [
            "/storageVolumeDataManager/internal/webhookCert",
            "/storageVolumeDataManager/internal/exporterCA"
        ]
    );
    // Metrics: one JSON object per line.
    let metrics = std::fs::read_to_string(p("metrics.json")).expect("read");
    assert_eq!(metrics.lines().count(), 3);
    for line in metrics.lines() {
        let m: Value = serde_json::from_str(line).expect("line is JSON");
        assert_eq!(m["name"], "svdm_certificate_expiration_timestamp_seconds");
    }
    assert_eq!(std::fs::read_to_string(p("kube.json")).expect("read"), "");
}

#[test]
fn failures_exit_1_with_a_json_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let bc = dir.path().join("bc.json");
    std::fs::write(&bc, "{not json").expect("write");
    let out = bin()
        .args(["hook", "run", "0"])
        .env("BINDING_CONTEXT_PATH", &bc)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).expect("stderr JSON");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("bc.json"))
    );

    let out = bin().args(["hook", "run", "99"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
}
