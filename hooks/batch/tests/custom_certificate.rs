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

#[test]
fn a_missing_secret_is_an_error_naming_it() {
    let i = input(
        contexts(fixture("custom-certificate-secrets.json")),
        values(
            json!({"mode": "CustomCertificate", "customCertificate": {"secretName": "nope"}}),
            json!({}),
        ),
    );
    let err = CustomCertificateHook
        .run(&i, &mut Output::default())
        .expect_err("must fail");
    assert!(err.to_string().contains("d8-system/nope"));
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
}
