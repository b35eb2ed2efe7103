//! Custom certificate hook: in HTTPS mode `CustomCertificate`, copies the named `kubernetes.io/tls`
//! Secret from `d8-system` into values, from which Helm renders `ingress-tls-customcertificate` in the
//! module namespace for the Ingresses of published exports.

use serde_json::{Value, json};

use crate::names;
use crate::protocol::{Hook, HookError, Input, Output};

pub const BINDING: &str = "custom_certificates";

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
            output.remove_value(input, "/internal/customCertificateData");
            return Ok(());
        }
        let Some(secret) = secret else {
            return Err(HookError::Invalid(
                "HTTPS mode is CustomCertificate but customCertificate.secretName is empty".into(),
            ));
        };
        let found = input
            .snapshot(BINDING)
            .into_iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(secret.as_str()));
        let Some(found) = found else {
            return Err(HookError::Invalid(format!(
                "custom certificate Secret {}/{secret} (type kubernetes.io/tls) not found",
                names::CUSTOM_CERTIFICATE_NAMESPACE
            )));
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
            return Err(HookError::Invalid(format!(
                "custom certificate Secret {}/{secret} lacks tls.crt or tls.key",
                names::CUSTOM_CERTIFICATE_NAMESPACE
            )));
        };
        let mut data = json!({"tls.crt": crt, "tls.key": key});
        if let (Some(ca), Value::Object(m)) = (decode("ca"), &mut data) {
            m.insert("ca.crt".into(), Value::String(ca));
        }
        output.set_value("/internal/customCertificateData", data);
        Ok(())
    }
}
