//! The custom certificate hook.

mod common;

use common::{contexts, fixture, input, patched};
use serde_json::json;
use svdm_hooks::custom_certificate::CustomCertificateHook;
use svdm_hooks::protocol::{Hook, Output};

fn values(module_https: serde_json::Value, internal: serde_json::Value) -> serde_json::Value {
    json!({
        "global": {"modules": {"https": {"mode": "CertManager", "customCertificate": {"secretName": "global-tls"}}}},
        "storageVolumeDataManager": {"https": module_https, "internal": internal}
    })
}

#[test]
fn copies_the_named_secret_in_custom_certificate_mode() {
    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(
            json!({"mode": "CustomCertificate", "customCertificate": {"secretName": "data-exporter-tls"}}),
            json!({}),
        ),
    );
    let mut out = Output::default();
    CustomCertificateHook.run(&i, &mut out).expect("run");
    let data = patched(&out, "/internal/customCertificateData").expect("data");
    assert!(data["tls.crt"].as_str().is_some_and(|s| s.contains("crt")));
    assert!(data["tls.key"].as_str().is_some_and(|s| s.contains("key")));
    assert!(data["ca.crt"].as_str().is_some_and(|s| s.contains("ca")));
}

fn gauge(out: &Output) -> Option<(f64, String)> {
    out.metrics
        .iter()
        .rev()
        .find(|m| m["name"] == "svdm_custom_certificate_problem" && m["action"] == "set")
        .map(|m| {
            (
                m["value"].as_f64().unwrap_or(f64::NAN),
                m["labels"]["secret"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
}

/// Runs the hook, which must succeed, and returns its output and the problem it recorded.
fn run_with_problem(i: &svdm_hooks::protocol::Input) -> (Output, String) {
    let mut out = Output::default();
    CustomCertificateHook
        .run(i, &mut out)
        .expect("an unusable Secret is not a failed run");
    let problem = patched(&out, "/internal/customCertificateError")
        .and_then(|v| v.as_str())
        .expect("problem recorded")
        .to_owned();
    (out, problem)
}

#[test]
fn a_missing_secret_does_not_stop_the_module_and_is_reported() {
    // The Secret is gone after an earlier good copy: the run succeeds (a failed beforeHelm hook
    // would block the whole module), the stale copy goes, and the problem is recorded for the
    // controller's PublishFailed message and the alert.
    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(
            json!({"mode": "CustomCertificate", "customCertificate": {"secretName": "nope"}}),
            json!({"customCertificateData": {"tls.crt": "a", "tls.key": "b"}}),
        ),
    );
    let (out, problem) = run_with_problem(&i);
    assert!(out.values_patches.contains(
        &json!({"op": "remove", "path": "/storageVolumeDataManager/internal/customCertificateData"})
    ));
    assert!(
        problem.contains("d8-system/nope") && problem.contains("not found"),
        "{problem}"
    );
    assert_eq!(gauge(&out), Some((1.0, "nope".to_owned())));
}

#[test]
fn an_incomplete_secret_or_no_name_is_reported_the_same_way() {
    let broken = contexts(json!([{
        "binding": "custom_certificates",
        "type": "Group",
        "groupName": "main",
        "snapshots": {"custom_certificates": [
            {"filterResult": {"name": "half-tls", "crt": "Y3J0", "key": null, "ca": null}}
        ]}
    }]));
    let i = input(
        broken,
        values(
            json!({"mode": "CustomCertificate", "customCertificate": {"secretName": "half-tls"}}),
            json!({}),
        ),
    );
    let (out, problem) = run_with_problem(&i);
    assert!(problem.contains("lacks tls.crt or tls.key"), "{problem}");
    assert!(patched(&out, "/internal/customCertificateData").is_none());

    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(json!({"mode": "CustomCertificate"}), json!({})),
    );
    let (_, problem) = run_with_problem(&i);
    assert!(problem.contains("secretName is empty"), "{problem}");
}

#[test]
fn a_fixed_secret_clears_the_problem() {
    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(
            json!({"mode": "CustomCertificate", "customCertificate": {"secretName": "data-exporter-tls"}}),
            json!({"customCertificateError": "the custom certificate Secret d8-system/data-exporter-tls (type kubernetes.io/tls) was not found"}),
        ),
    );
    let mut out = Output::default();
    CustomCertificateHook.run(&i, &mut out).expect("run");
    assert!(patched(&out, "/internal/customCertificateData").is_some());
    assert!(out.values_patches.contains(
        &json!({"op": "remove", "path": "/storageVolumeDataManager/internal/customCertificateError"})
    ));
    assert_eq!(gauge(&out), Some((0.0, "data-exporter-tls".to_owned())));
}

#[test]
fn other_modes_drop_stale_data_and_follow_the_global_mode() {
    // Module https not set: the global mode (CertManager) applies; old data is removed.
    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(
            json!({}),
            json!({"customCertificateData": {"tls.crt": "a", "tls.key": "b"}}),
        ),
    );
    let mut out = Output::default();
    CustomCertificateHook.run(&i, &mut out).expect("run");
    assert_eq!(
        out.values_patches,
        vec![
            json!({"op": "remove", "path": "/storageVolumeDataManager/internal/customCertificateData"})
        ]
    );
    // Nothing to remove: no patch at all (addon-operator applies removes strictly).
    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(json!({}), json!({})),
    );
    let mut out = Output::default();
    CustomCertificateHook.run(&i, &mut out).expect("run");
    assert!(out.values_patches.is_empty());
    // A problem reported while the mode was CustomCertificate does not outlive the mode.
    assert_eq!(
        out.metrics,
        vec![json!({"group": "svdm_custom_certificate", "action": "expire"})]
    );
}
