//! Helpers shared by the hook tests: fixtures and turning a hook's values output back into the
//! Secrets Helm would render (so the next run sees them through its snapshot bindings).

#![allow(dead_code)]

use base64::Engine as _;
use serde_json::{Value, json};
use svdm_hooks::protocol::{BindingContext, Input, Output};

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn contexts(v: Value) -> Vec<BindingContext> {
    serde_json::from_value(v).expect("binding contexts")
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The value a patch set at `/storageVolumeDataManager<pointer>`.
pub fn patched<'a>(out: &'a Output, pointer: &str) -> Option<&'a Value> {
    let path = format!("/storageVolumeDataManager{pointer}");
    out.values_patches
        .iter()
        .rev()
        .find(|p| p["path"] == path.as_str())
        .map(|p| &p["value"])
}

/// A grouped schedule context whose snapshots hold the Secrets rendered from `out`, as the jq
/// filters of the TLS hook's bindings would return them.
pub fn secrets_context(out: &Output) -> Vec<BindingContext> {
    let wh = patched(out, "/internal/webhookCert").expect("webhook values");
    let ca = patched(out, "/internal/exporterCA").expect("exporter CA values");
    let s = |v: &Value, k: &str| b64(v[k].as_str().expect("string"));
    contexts(json!([{
        "binding": "tls-certificates-daily",
        "type": "Group",
        "groupName": "main",
        "snapshots": {
            "webhook_tls_secret": [{"filterResult": {"crt": s(wh, "crt"), "key": s(wh, "key"), "ca": s(wh, "ca")}}],
            "exporter_ca_secret": [{"filterResult": {"crt": s(ca, "crt"), "key": s(ca, "key")}}],
        }
    }]))
}

pub fn input(contexts: Vec<BindingContext>, values: Value) -> Input {
    Input {
        contexts,
        values,
        config_values: Value::Null,
    }
}
