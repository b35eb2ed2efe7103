//! The TLS hook, fed binding contexts as addon-operator builds them.

mod common;

use std::time::{Duration, SystemTime};

use common::{contexts, fixture, input, patched, secrets_context};
use serde_json::{Value, json};
use svdm_hooks::protocol::{Hook, Output, VALUES_KEY};
use svdm_hooks::tls::{self, TlsHook, Verdict};

const DAY: Duration = Duration::from_secs(86_400);

fn run(hook: &TlsHook, input: &svdm_hooks::protocol::Input) -> Output {
    let mut out = Output::default();
    hook.run(input, &mut out).expect("hook run");
    out
}

fn in_340_days() -> SystemTime {
    SystemTime::now() + 340 * DAY
}

fn in_9_5_years() -> SystemTime {
    SystemTime::now() + 3470 * DAY
}

#[test]
fn first_run_issues_everything_under_the_module_key() {
    let hook = TlsHook::default();
    let i = input(
        contexts(fixture("before-helm-empty.json")),
        fixture("values-custom-domain.json"),
    );
    let out = run(&hook, &i);
    for p in &out.values_patches {
        assert_eq!(p["op"], "add");
        assert!(
            p["path"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("/{VALUES_KEY}/internal/")))
        );
    }
    let wh = patched(&out, "/internal/webhookCert").expect("webhook cert");
    let info = svdm_pki::inspect(wh["crt"].as_str().expect("crt")).expect("parse");
    let mut names = info.dns_names.clone();
    names.sort();
    assert_eq!(
        names,
        vec![
            "webhook",
            "webhook.d8-storage-volume-data-manager",
            "webhook.d8-storage-volume-data-manager.svc",
            "webhook.d8-storage-volume-data-manager.svc.corp.example",
        ]
    );
    let ca = patched(&out, "/internal/exporterCA").expect("exporter CA");
    assert!(
        svdm_pki::inspect(ca["crt"].as_str().expect("crt"))
            .expect("ca")
            .is_ca
    );
    // The webhook leaf verifies against the CA that goes into caBundle.
    let pair = svdm_pki::CertPair {
        cert_pem: wh["crt"].as_str().expect("crt").into(),
        key_pem: wh["key"].as_str().expect("key").into(),
    };
    assert_eq!(
        tls::check_leaf(
            wh["ca"].as_str().expect("ca"),
            &pair,
            &tls::webhook_sans("corp.example"),
            SystemTime::now()
        ),
        Verdict::Reuse
    );
    // Expiry metrics for the three certificates, in one group.
    let labels: Vec<&str> = out
        .metrics
        .iter()
        .map(|m| m["labels"]["certificate"].as_str().expect("label"))
        .collect();
    assert_eq!(labels, ["webhook", "webhook-ca", "exporter-ca"]);
    assert!(out.metrics.iter().all(|m| m["group"] == tls::METRIC_GROUP
        && m["action"] == "set"
        && m["value"].as_f64().is_some_and(|v| v > 0.0)));
}

#[test]
fn existing_secrets_are_reused() {
    let hook = TlsHook::default();
    let values = fixture("values-custom-domain.json");
    let first = run(
        &hook,
        &input(contexts(fixture("before-helm-empty.json")), values.clone()),
    );
    let second = run(&hook, &input(secrets_context(&first), values));
    assert_eq!(
        patched(&first, "/internal/webhookCert"),
        patched(&second, "/internal/webhookCert")
    );
    assert_eq!(
        patched(&first, "/internal/exporterCA"),
        patched(&second, "/internal/exporterCA")
    );
}

#[test]
fn values_from_an_earlier_run_are_reused_before_the_secret_exists() {
    let hook = TlsHook::default();
    let mut values = fixture("values-custom-domain.json");
    let first = run(
        &hook,
        &input(contexts(fixture("before-helm-empty.json")), values.clone()),
    );
    values[VALUES_KEY]["internal"] = json!({
        "webhookCert": patched(&first, "/internal/webhookCert").cloned(),
        "exporterCA": patched(&first, "/internal/exporterCA").cloned(),
    });
    let second = run(
        &hook,
        &input(contexts(fixture("before-helm-empty.json")), values),
    );
    assert_eq!(first.values_patches, second.values_patches);
}

#[test]
fn a_changed_cluster_domain_reissues_the_webhook_certificate_only() {
    let hook = TlsHook::default();
    let values = fixture("values-custom-domain.json");
    let first = run(
        &hook,
        &input(contexts(fixture("before-helm-empty.json")), values.clone()),
    );
    let mut moved = values;
    moved["global"]["discovery"]["clusterDomain"] = json!("cluster.local");
    let second = run(&hook, &input(secrets_context(&first), moved));
    let wh = patched(&second, "/internal/webhookCert").expect("webhook");
    let info = svdm_pki::inspect(wh["crt"].as_str().expect("crt")).expect("parse");
    assert!(
        info.dns_names
            .contains(&"webhook.d8-storage-volume-data-manager.svc.cluster.local".to_owned())
    );
    assert_ne!(patched(&first, "/internal/webhookCert"), Some(wh));
    assert_eq!(
        patched(&first, "/internal/exporterCA"),
        patched(&second, "/internal/exporterCA")
    );
}

#[test]
fn certificates_close_to_expiry_are_renewed() {
    let values = fixture("values-custom-domain.json");
    let first = run(
        &TlsHook::default(),
        &input(contexts(fixture("before-helm-empty.json")), values.clone()),
    );
    // 340 days on, the one-year webhook certificate has 25 days left: renewed. The CAs have years.
    let later = TlsHook { now: in_340_days };
    let second = run(&later, &input(secrets_context(&first), values.clone()));
    assert_ne!(
        patched(&first, "/internal/webhookCert").map(|v| &v["crt"]),
        patched(&second, "/internal/webhookCert").map(|v| &v["crt"])
    );
    assert_eq!(
        patched(&first, "/internal/exporterCA"),
        patched(&second, "/internal/exporterCA")
    );
    // Nine and a half years on, the CAs are within their last year: both renewed.
    let much_later = TlsHook { now: in_9_5_years };
    let third = run(&much_later, &input(secrets_context(&first), values));
    assert_ne!(
        patched(&first, "/internal/exporterCA"),
        patched(&third, "/internal/exporterCA")
    );
    assert_ne!(
        patched(&first, "/internal/webhookCert").map(|v| &v["ca"]),
        patched(&third, "/internal/webhookCert").map(|v| &v["ca"])
    );
}

#[test]
fn garbage_in_secrets_is_replaced_not_fatal() {
    let hook = TlsHook::default();
    let i = input(
        contexts(fixture("schedule-garbage-secrets.json")),
        fixture("values-custom-domain.json"),
    );
    let d = tls::decide(&i, SystemTime::now()).expect("decide");
    assert!(matches!(d.webhook_verdict, Verdict::Renew(_)));
    assert_eq!(d.exporter_ca_verdict, Verdict::Missing);
    let out = run(&hook, &i);
    assert!(patched(&out, "/internal/webhookCert").is_some());
}

#[test]
fn a_leaf_from_another_ca_is_not_reused() {
    let hook = TlsHook::default();
    let values = fixture("values-custom-domain.json");
    let a = run(
        &hook,
        &input(contexts(fixture("before-helm-empty.json")), values.clone()),
    );
    let b = run(
        &hook,
        &input(contexts(fixture("before-helm-empty.json")), values.clone()),
    );
    // Mix: a's leaf with b's CA.
    let mut mixed = values;
    let mut wh = patched(&a, "/internal/webhookCert")
        .cloned()
        .unwrap_or(Value::Null);
    wh["ca"] = patched(&b, "/internal/webhookCert").expect("b")["ca"].clone();
    mixed[VALUES_KEY]["internal"] = json!({"webhookCert": wh});
    let d = tls::decide(
        &input(contexts(fixture("before-helm-empty.json")), mixed),
        SystemTime::now(),
    )
    .expect("decide");
    assert_eq!(
        d.webhook_verdict,
        Verdict::Renew("certificate is not signed by the CA".into())
    );
}

#[test]
fn config_binds_both_secrets_for_snapshots_only() {
    let c = TlsHook::default().config();
    assert_eq!(c["beforeHelm"], 5);
    let bindings = c["kubernetes"].as_array().expect("bindings");
    let names: Vec<&str> = bindings
        .iter()
        .map(|b| b["nameSelector"]["matchNames"][0].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["webhook-tls", "exporter-ca"]);
    for b in bindings {
        assert_eq!(b["executeHookOnEvent"], false);
        assert_eq!(
            b["namespace"]["nameSelector"]["matchNames"][0],
            "d8-storage-volume-data-manager"
        );
    }
}
