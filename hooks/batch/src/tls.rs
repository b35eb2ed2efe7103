//! TLS hook: the webhook's serving certificate (and the CA in the ValidatingWebhookConfiguration's
//! `caBundle`) and the exporter CA with which the controller signs exporter certificates.
//!
//! The Secrets Helm renders from these values are the persistence: the hook reads them back through
//! snapshot bindings (or, between a hook run and the next render, from the values themselves) and
//! reuses them while they are valid, signed by their CA, name exactly the wanted hosts and are not
//! close to expiry. Otherwise it issues new ones. It never writes the Secrets itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};
use svdm_pki::{CertPair, LeafSpec, Usage};

use crate::names;
use crate::protocol::{Hook, HookError, Input, Output};

/// CAs live ten years and are replaced when a year is left.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 86_400);
/// The webhook certificate lives a year and is replaced when 30 days are left (the daily schedule
/// gets there long before the 14-day alert).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

pub const WEBHOOK_SECRET_BINDING: &str = "webhook_tls_secret";
pub const EXPORTER_CA_SECRET_BINDING: &str = "exporter_ca_secret";
pub const METRIC_GROUP: &str = "svdm_certificates";
pub const METRIC_EXPIRY: &str = "svdm_certificate_expiration_timestamp_seconds";

pub struct TlsHook {
    /// "Now", injectable for tests.
    pub now: fn() -> SystemTime,
}

impl Default for TlsHook {
    fn default() -> Self {
        TlsHook {
            now: SystemTime::now,
        }
    }
}

/// DNS names the webhook certificate must carry.
pub fn webhook_sans(cluster_domain: &str) -> Vec<String> {
    let svc = names::WEBHOOK_SERVICE;
    let ns = names::MODULE_NAMESPACE;
    vec![
        svc.to_owned(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.{cluster_domain}"),
    ]
}

fn secret_binding(name: &str, secret: &str, jq: &str) -> Value {
    json!({
        "name": name,
        "apiVersion": "v1",
        "kind": "Secret",
        "nameSelector": {"matchNames": [secret]},
        "namespace": {"nameSelector": {"matchNames": [names::MODULE_NAMESPACE]}},
        "executeHookOnEvent": false,
        "executeHookOnSynchronization": false,
        "keepFullObjectsInMemory": false,
        "jqFilter": jq,
    })
}

/// PEM strings from a jq result whose fields hold base64 Secret data.
fn decode_fields(v: &Value, fields: &[&str]) -> Option<Vec<String>> {
    fields
        .iter()
        .map(|f| {
            let b64 = v.get(*f)?.as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
        })
        .collect()
}

/// PEM strings from module values (already plain PEM).
fn plain_fields(v: &Value, fields: &[&str]) -> Option<Vec<String>> {
    fields
        .iter()
        .map(|f| {
            v.get(*f)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// Why an existing certificate set is not reused (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Reuse,
    Missing,
    Renew(String),
}

fn parse(pem: &str) -> Result<x509_parser::pem::Pem, String> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, p)| p)
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

fn key_matches(cert: &x509_parser::certificate::X509Certificate<'_>, key_pem: &str) -> bool {
    match rcgen::KeyPair::from_pem(key_pem) {
        Ok(key) => cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
        Err(_) => false,
    }
}

fn remaining(not_after: i64, now: SystemTime) -> Duration {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Duration::from_secs(u64::try_from(not_after).unwrap_or(0).saturating_sub(now))
}

/// Checks a CA (certificate + key).
pub fn check_ca(ca: &CertPair, now: SystemTime) -> Verdict {
    let pem = match parse(&ca.cert_pem) {
        Ok(p) => p,
        Err(e) => return Verdict::Renew(e),
    };
    let cert = match pem.parse_x509() {
        Ok(c) => c,
        Err(e) => return Verdict::Renew(format!("cannot parse CA: {e}")),
    };
    if !cert.is_ca() {
        return Verdict::Renew("certificate is not a CA".into());
    }
    if !key_matches(&cert, &ca.key_pem) {
        return Verdict::Renew("CA key does not match the certificate".into());
    }
    if remaining(cert.validity().not_after.timestamp(), now) <= CA_RENEW_BEFORE {
        return Verdict::Renew("CA expires within a year".into());
    }
    Verdict::Reuse
}

/// Checks a leaf against its CA and the wanted names.
pub fn check_leaf(ca_pem: &str, leaf: &CertPair, sans: &[String], now: SystemTime) -> Verdict {
    let (ca_pem, leaf_pem) = match (parse(ca_pem), parse(&leaf.cert_pem)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Verdict::Renew(e),
    };
    let (ca, cert) = match (ca_pem.parse_x509(), leaf_pem.parse_x509()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Verdict::Renew("cannot parse certificate".into()),
    };
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Verdict::Renew("certificate is not signed by the CA".into());
    }
    if !key_matches(&cert, &leaf.key_pem) {
        return Verdict::Renew("key does not match the certificate".into());
    }
    match svdm_pki::inspect(&leaf.cert_pem) {
        Ok(info) if !info.covers_exactly(sans) => {
            return Verdict::Renew(format!(
                "names {:?} differ from the wanted {:?}",
                info.dns_names, sans
            ));
        }
        Ok(_) => {}
        Err(e) => return Verdict::Renew(e.to_string()),
    }
    if remaining(cert.validity().not_after.timestamp(), now) <= LEAF_RENEW_BEFORE {
        return Verdict::Renew("certificate expires within 30 days".into());
    }
    Verdict::Reuse
}

fn not_after_secs(pem: &str) -> Option<f64> {
    let info = svdm_pki::inspect(pem).ok()?;
    info.not_after
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// The webhook set: (CA, leaf).
fn webhook_candidates(input: &Input) -> Vec<(CertPair, CertPair)> {
    let mut out = Vec::new();
    let mut push = |f: Option<Vec<String>>| {
        if let Some([crt, key, ca]) = f.as_deref() {
            out.push((
                CertPair {
                    cert_pem: ca.clone(),
                    key_pem: String::new(),
                },
                CertPair {
                    cert_pem: crt.clone(),
                    key_pem: key.clone(),
                },
            ));
        }
    };
    if let Some(v) = input.module_value("/internal/webhookCert") {
        push(plain_fields(v, &["crt", "key", "ca"]));
    }
    for v in input.snapshot(WEBHOOK_SECRET_BINDING) {
        push(decode_fields(v, &["crt", "key", "ca"]));
    }
    out
}

fn exporter_ca_candidates(input: &Input) -> Vec<CertPair> {
    let mut out = Vec::new();
    let mut push = |f: Option<Vec<String>>| {
        if let Some([crt, key]) = f.as_deref() {
            out.push(CertPair {
                cert_pem: crt.clone(),
                key_pem: key.clone(),
            });
        }
    };
    if let Some(v) = input.module_value("/internal/exporterCA") {
        push(plain_fields(v, &["crt", "key"]));
    }
    for v in input.snapshot(EXPORTER_CA_SECRET_BINDING) {
        push(decode_fields(v, &["crt", "key"]));
    }
    out
}

/// What the hook decided, for the values and for tests.
#[derive(Clone, Debug)]
pub struct Decision {
    pub webhook_ca: String,
    pub webhook: CertPair,
    pub webhook_verdict: Verdict,
    pub exporter_ca: CertPair,
    pub exporter_ca_verdict: Verdict,
}

pub fn decide(input: &Input, now: SystemTime) -> Result<Decision, HookError> {
    let domain = input
        .global_value("/discovery/clusterDomain")
        .or_else(|| input.global_value("/clusterConfiguration/clusterDomain"))
        .and_then(Value::as_str)
        .unwrap_or("cluster.local");
    let sans = webhook_sans(domain);

    // Webhook: the first candidate that passes is reused; the CA's key is not kept (it is only
    // needed to issue, and a new leaf comes with a new CA).
    let mut webhook_verdict = Verdict::Missing;
    let mut reuse = None;
    for (ca, leaf) in webhook_candidates(input) {
        let ca_ok = match parse(&ca.cert_pem).map(|p| {
            p.parse_x509().map(|c| {
                c.is_ca() && remaining(c.validity().not_after.timestamp(), now) > CA_RENEW_BEFORE
            })
        }) {
            Ok(Ok(true)) => Verdict::Reuse,
            _ => Verdict::Renew("webhook CA is invalid or expires within a year".into()),
        };
        let verdict = match ca_ok {
            Verdict::Reuse => check_leaf(&ca.cert_pem, &leaf, &sans, now),
            other => other,
        };
        if verdict == Verdict::Reuse {
            reuse = Some((ca.cert_pem, leaf));
            webhook_verdict = Verdict::Reuse;
            break;
        }
        webhook_verdict = verdict;
    }
    let (webhook_ca, webhook) = match reuse {
        Some(r) => r,
        None => {
            let ca =
                svdm_pki::generate_ca(&format!("{}-webhook", names::MODULE_NAME), CA_VALIDITY)?;
            let leaf = svdm_pki::issue(
                &ca,
                &LeafSpec {
                    common_name: names::WEBHOOK_SERVICE,
                    organizations: &[],
                    dns_names: &sans,
                    ip_addresses: &[],
                    usage: Usage::Server,
                    validity: LEAF_VALIDITY,
                },
            )?;
            (ca.cert_pem, leaf)
        }
    };

    let mut exporter_ca_verdict = Verdict::Missing;
    let mut exporter_ca = None;
    for ca in exporter_ca_candidates(input) {
        let verdict = check_ca(&ca, now);
        if verdict == Verdict::Reuse {
            exporter_ca = Some(ca);
            exporter_ca_verdict = Verdict::Reuse;
            break;
        }
        exporter_ca_verdict = verdict;
    }
    let exporter_ca = match exporter_ca {
        Some(ca) => ca,
        None => svdm_pki::generate_ca(&format!("{}-exporter", names::MODULE_NAME), CA_VALIDITY)?,
    };
    Ok(Decision {
        webhook_ca,
        webhook,
        webhook_verdict,
        exporter_ca,
        exporter_ca_verdict,
    })
}

impl Hook for TlsHook {
    fn name(&self) -> &'static str {
        "tls-certificates"
    }

    fn config(&self) -> Value {
        json!({
            "beforeHelm": 5,
            "schedule": [{"name": "tls-certificates-daily", "crontab": "42 4 * * *"}],
            "kubernetes": [
                secret_binding(
                    WEBHOOK_SECRET_BINDING,
                    names::WEBHOOK_TLS_SECRET,
                    r#"{"crt": .data."tls.crt", "key": .data."tls.key", "ca": .data."ca.crt"}"#,
                ),
                secret_binding(
                    EXPORTER_CA_SECRET_BINDING,
                    names::EXPORTER_CA_SECRET,
                    r#"{"crt": .data."tls.crt", "key": .data."tls.key"}"#,
                ),
            ],
        })
    }

    fn run(&self, input: &Input, output: &mut Output) -> Result<(), HookError> {
        let now = (self.now)();
        let d = decide(input, now)?;
        for (what, verdict) in [
            ("webhook certificate", &d.webhook_verdict),
            ("exporter CA", &d.exporter_ca_verdict),
        ] {
            match verdict {
                Verdict::Reuse => {}
                Verdict::Missing => eprintln!("{what}: none found, issuing a new one"),
                Verdict::Renew(why) => eprintln!("{what}: renewing ({why})"),
            }
        }
        output.set_value(
            "/internal/webhookCert",
            json!({"ca": d.webhook_ca, "crt": d.webhook.cert_pem, "key": d.webhook.key_pem}),
        );
        output.set_value(
            "/internal/exporterCA",
            json!({"crt": d.exporter_ca.cert_pem, "key": d.exporter_ca.key_pem}),
        );
        for (label, pem) in [
            ("webhook", &d.webhook.cert_pem),
            ("webhook-ca", &d.webhook_ca),
            ("exporter-ca", &d.exporter_ca.cert_pem),
        ] {
            if let Some(ts) = not_after_secs(pem) {
                output.set_gauge(
                    METRIC_GROUP,
                    METRIC_EXPIRY,
                    ts,
                    json!({"certificate": label}),
                );
            }
        }
        Ok(())
    }
}
