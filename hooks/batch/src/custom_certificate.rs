//! Custom certificate hook: in HTTPS mode `CustomCertificate`, copies the named `kubernetes.io/tls`
//! Secret from `d8-system` into values, from which Helm renders `ingress-tls-customcertificate` in the
//! module namespace for the Ingresses of published exports.
//!
//! The certificate matters for publishing only. A missing or incomplete Secret therefore does not
//! fail the run (a failed beforeHelm hook would stop the whole module, in-cluster exports and
//! upgrades included): the hook records what is wrong in `internal.customCertificateError`, from
//! which the chart tells the controller to report `PublishFailed` with that message on every
//! published export, and sets the gauge `svdm_custom_certificate_problem`, which the alert
//! `D8StorageVolumeDataManagerCustomCertificateProblem` turns into a message for the platform team.

use serde_json::{Value, json};

use crate::names;
use crate::protocol::{Hook, HookError, Input, Output};

pub const BINDING: &str = "custom_certificates";
/// Metric group and gauge of a custom certificate that cannot be used (1; 0 when it is fine).
pub const METRIC_GROUP: &str = "svdm_custom_certificate";
pub const METRIC_PROBLEM: &str = "svdm_custom_certificate_problem";
const DATA: &str = "/internal/customCertificateData";
const ERROR: &str = "/internal/customCertificateError";

pub struct CustomCertificateHook;

/// The effective HTTPS mode and custom Secret name: the module's `https` when it sets a mode,
/// otherwise the global `modules.https`.
pub fn https_settings(input: &Input) -> (String, Option<String>) {
    let from = |v: Option<&Value>| -> Option<(String, Option<String>)> {
        let v = v?;
        let mode = v.get("mode")?.as_str()?.to_owned();
        let secret = v
            .pointer("/customCertificate/secretName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Some((mode, secret))
    };
    from(input.module_value("/https"))
        .or_else(|| from(input.global_value("/modules/https")))
        .unwrap_or_else(|| ("Disabled".to_owned(), None))
}

impl Hook for CustomCertificateHook {
    fn name(&self) -> &'static str {
        "custom-certificate"
    }

    fn config(&self) -> Value {
        json!({
            "beforeHelm": 10,
            "kubernetes": [{
                "name": BINDING,
                "apiVersion": "v1",
                "kind": "Secret",
                "namespace": {"nameSelector": {"matchNames": [names::CUSTOM_CERTIFICATE_NAMESPACE]}},
                "fieldSelector": {"matchExpressions": [
                    {"field": "type", "operator": "Equals", "value": "kubernetes.io/tls"}
                ]},
                "executeHookOnSynchronization": false,
                "keepFullObjectsInMemory": false,
                "jqFilter": r#"{"name": .metadata.name, "crt": .data."tls.crt", "key": .data."tls.key", "ca": .data."ca.crt"}"#,
            }],
        })
    }

    fn run(&self, input: &Input, output: &mut Output) -> Result<(), HookError> {
        let (mode, secret) = https_settings(input);
        if mode != "CustomCertificate" {
            output.remove_value(input, DATA);
            output.remove_value(input, ERROR);
            output.expire_group(METRIC_GROUP);
            return Ok(());
        }
        let name = secret.clone().unwrap_or_default();
        match copy(input, secret.as_deref()) {
            Ok(data) => {
                output.set_value(DATA, data);
                output.remove_value(input, ERROR);
                output.set_gauge(METRIC_GROUP, METRIC_PROBLEM, 0.0, json!({"secret": name}));
            }
            Err(problem) => {
                eprintln!("custom certificate: {problem}; published exports report PublishFailed");
                output.remove_value(input, DATA);
                output.set_value(ERROR, Value::String(problem));
                output.set_gauge(METRIC_GROUP, METRIC_PROBLEM, 1.0, json!({"secret": name}));
            }
        }
        Ok(())
    }
}

/// The certificate data to copy, or what is wrong with the configured Secret.
fn copy(input: &Input, secret: Option<&str>) -> Result<Value, String> {
    let ns = names::CUSTOM_CERTIFICATE_NAMESPACE;
    let Some(secret) = secret else {
        return Err(
            "the HTTPS mode is CustomCertificate, but https.customCertificate.secretName is empty"
                .into(),
        );
    };
    let found = input
        .snapshot(BINDING)
        .into_iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(secret));
    let Some(found) = found else {
        return Err(format!(
            "the custom certificate Secret {ns}/{secret} (type kubernetes.io/tls) was not found"
        ));
    };
    let decode = |field: &str| -> Option<String> {
        use base64::Engine as _;
        let b64 = found.get(field)?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
    };
    let (Some(crt), Some(key)) = (decode("crt"), decode("key")) else {
        return Err(format!(
            "the custom certificate Secret {ns}/{secret} lacks tls.crt or tls.key"
        ));
    };
    let mut data = json!({"tls.crt": crt, "tls.key": key});
    if let (Some(ca), Value::Object(m)) = (decode("ca"), &mut data) {
        m.insert("ca.crt".into(), Value::String(ca));
    }
    Ok(data)
}
