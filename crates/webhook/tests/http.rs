//! AdmissionReview round-trips through the real actix-web handlers (no sockets).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, test, web};
use serde_json::{Value, json};
use svdm_webhook::facts::StaticFacts;
use svdm_webhook::server::{AppState, MAX_BODY_BYTES, routes};
use svdm_webhook::validate::{ClusterView, Lookup, PodFacts, PvcFacts, Settings};

fn state(view: Option<ClusterView>) -> web::Data<AppState> {
    web::Data::new(AppState {
        settings: Settings {
            default_ttl: Duration::from_secs(120),
            max_ttl: Duration::from_secs(86400),
            publish_configured: false,
        },
        facts: Arc::new(StaticFacts { view }),
    })
}

fn bound_view() -> ClusterView {
    ClusterView {
        pvc: Lookup::Found(PvcFacts {
            name: "data".into(),
            phase: Some("Bound".into()),
            volume_name: Some("pv-1".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn review(uid: &str, operation: &str, object: Value, old: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "storage.deckhouse.io", "version": "v1alpha1", "kind": "DataExport"},
            "resource": {"group": "storage.deckhouse.io", "version": "v1alpha1", "resource": "dataexports"},
            "name": "de",
            "namespace": "ns",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": old,
            "dryRun": false,
        }
    })
}

fn export(spec: Value) -> Value {
    json!({
        "apiVersion": "storage.deckhouse.io/v1alpha1",
        "kind": "DataExport",
        "metadata": {"name": "de", "namespace": "ns"},
        "spec": spec,
    })
}

async fn post(state: web::Data<AppState>, body: Vec<u8>) -> (u16, Value) {
    let app = test::init_service(App::new().configure(routes(state))).await;
    let req = test::TestRequest::post()
        .uri("/validate-dataexport")
        .insert_header(("content-type", "application/json"))
        .set_payload(body)
        .to_request();
    let resp = test::call_service(&app, req).await;
    let status = resp.status().as_u16();
    let body: Value = test::read_body_json(resp).await;
    (status, body)
}

fn response(v: &Value) -> &Value {
    &v["response"]
}

#[actix_web::test]
async fn valid_create_is_allowed_with_uid_copied_and_warnings() {
    let obj = export(
        json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "publish": true}),
    );
    let body = review("uid-1", "CREATE", obj, Value::Null);
    let (status, v) = post(state(Some(bound_view())), body.to_string().into_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = response(&v);
    assert_eq!(r["uid"], "uid-1");
    assert_eq!(r["allowed"], true);
    let warnings = r["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 2, "{v}");
    assert!(warnings.iter().any(|w| {
        w.as_str()
            .is_some_and(|w| w.contains("publishing is not configured"))
    }));
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("default of 2m")))
    );
}

#[actix_web::test]
async fn denial_carries_the_message_and_403() {
    let view = ClusterView {
        pods: vec![PodFacts {
            name: "web-0".into(),
            phase: Some("Running".into()),
            claims: vec!["data".into()],
        }],
        ..bound_view()
    };
    let obj = export(
        json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": "5m"}),
    );
    let (status, v) = post(
        state(Some(view)),
        review("uid-2", "CREATE", obj, Value::Null)
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let r = response(&v);
    assert_eq!(r["uid"], "uid-2");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert_eq!(
        r["status"]["message"],
        "PVC data is used by pod web-0; stop it or export a VolumeSnapshot instead"
    );
}

#[actix_web::test]
async fn create_without_cluster_state_fails_closed() {
    let obj = export(
        json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": "5m"}),
    );
    let (_, v) = post(
        state(None),
        review("uid-3", "CREATE", obj, Value::Null)
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(response(&v)["allowed"], false);
    assert!(
        response(&v)["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retry"))
    );
}

#[actix_web::test]
async fn update_of_publish_passes_without_cluster_state() {
    let old = export(
        json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": "5m", "publish": false}),
    );
    let mut new = old.clone();
    new["spec"]["publish"] = json!(true);
    let (_, v) = post(
        state(None),
        review("uid-4", "UPDATE", new, old).to_string().into_bytes(),
    )
    .await;
    assert_eq!(response(&v)["allowed"], true, "{v}");
    assert_eq!(response(&v)["uid"], "uid-4");
}

#[actix_web::test]
async fn delete_is_allowed() {
    let old = export(json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}}));
    let (_, v) = post(
        state(None),
        review("uid-5", "DELETE", Value::Null, old)
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(response(&v)["allowed"], true, "{v}");
}

fn assert_invalid(status: u16, v: &Value, uid: &str, needle: &str) {
    assert_eq!(status, 200);
    assert_eq!(v["kind"], "AdmissionReview", "{v}");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1", "{v}");
    let r = response(v);
    assert_eq!(r["allowed"], false, "{v}");
    assert_eq!(r["uid"], uid, "{v}");
    let msg = r["status"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[actix_web::test]
async fn malformed_json_gets_an_invalid_review() {
    let (status, v) = post(state(None), b"{not json".to_vec()).await;
    assert_invalid(status, &v, "", "malformed AdmissionReview");
    let (status, v) = post(state(None), Vec::new()).await;
    assert_invalid(status, &v, "", "malformed AdmissionReview");
}

#[actix_web::test]
async fn missing_uid_gets_an_invalid_review() {
    let mut body = review("x", "CREATE", export(json!({})), Value::Null);
    body["request"].as_object_mut().map(|r| r.remove("uid"));
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "", "malformed AdmissionReview");
    let body = review("", "CREATE", export(json!({})), Value::Null);
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "", "empty uid");
}

#[actix_web::test]
async fn wrong_api_version_gets_an_invalid_review_with_uid() {
    let mut body = review("uid-6", "CREATE", export(json!({})), Value::Null);
    body["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "uid-6", "admission.k8s.io/v1");
}

#[actix_web::test]
async fn a_review_without_request_or_of_another_kind_is_invalid() {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "", "no request");
    let mut body = review("uid-7", "CREATE", export(json!({})), Value::Null);
    body["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "uid-7", "not /Pod");
}

#[actix_web::test]
async fn a_wrongly_typed_field_keeps_the_uid() {
    let mut body = review("uid-8", "CREATE", export(json!({})), Value::Null);
    body["request"]["operation"] = json!(42);
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "uid-8", "malformed AdmissionReview");
}

#[actix_web::test]
async fn oversize_body_gets_an_invalid_review() {
    let mut body = review("uid-9", "CREATE", export(json!({})), Value::Null);
    body["request"]["object"]["metadata"]["annotations"] =
        json!({"big": "x".repeat(MAX_BODY_BYTES)});
    let (status, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_invalid(status, &v, "", "exceeds");
}

#[actix_web::test]
async fn health_and_readiness() {
    for (view, ready) in [(None, 503), (Some(bound_view()), 200)] {
        let app = test::init_service(App::new().configure(routes(state(view)))).await;
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(resp.status().as_u16(), 200);
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(resp.status().as_u16(), ready);
    }
}

fn pod_review(uid: &str, claim: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web-0",
            "namespace": "ns",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": "ns"},
                "spec": {
                    "containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        }
    })
}

async fn post_pod(state: web::Data<AppState>, body: Value) -> Value {
    let app = test::init_service(App::new().configure(routes(state))).await;
    let req = test::TestRequest::post()
        .uri("/validate-pod")
        .set_payload(body.to_string())
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status().as_u16(), 200);
    test::read_body_json(resp).await
}

#[actix_web::test]
async fn pod_webhook_refuses_a_pvc_under_export() {
    use svdm_api::names;
    let mut pv = svdm_webhook::validate::PvFacts {
        name: "pv-1".into(),
        ..Default::default()
    };
    pv.labels
        .insert(names::LABEL_PV_EXPORTED.into(), "true".into());
    for (k, v) in [
        (names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE, "ns"),
        (names::ANN_PV_ORIGINAL_CLAIM_NAME, "data"),
        (names::ANN_OWNER_NAMESPACE, "ns"),
        (names::ANN_OWNER_NAME, "backup"),
    ] {
        pv.annotations.insert(k.into(), v.into());
    }
    let view = ClusterView {
        exported_pvs: vec![pv],
        ..Default::default()
    };
    let v = post_pod(state(Some(view.clone())), pod_review("p-1", "data")).await;
    assert_eq!(v["response"]["uid"], "p-1");
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("PVC data is being exported by DataExport backup")),
        "{v}"
    );
    let v = post_pod(state(Some(view)), pod_review("p-2", "logs")).await;
    assert_eq!(v["response"]["allowed"], true);
    // Caches not loaded: the pod webhook fails open.
    let v = post_pod(state(None), pod_review("p-3", "data")).await;
    assert_eq!(v["response"]["allowed"], true);
    // A DataExport review sent to the pod route is invalid.
    let v = post_pod(
        state(None),
        review("p-4", "CREATE", export(json!({})), Value::Null),
    )
    .await;
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["uid"], "p-4");
}

#[actix_web::test]
async fn status_writes_and_dry_runs() {
    // A status write (if the subresource is ever registered) is never blocked.
    let old = export(
        json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": "5m"}),
    );
    let mut new = old.clone();
    new["status"] = json!({"phase": "Ready"});
    let mut body = review("s-1", "UPDATE", new, old);
    body["request"]["subResource"] = json!("status");
    let (_, v) = post(state(None), body.to_string().into_bytes()).await;
    assert_eq!(response(&v)["allowed"], true, "{v}");
    // A dry run is decided like the real request (the webhook has no side effects).
    let obj = export(
        json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "ttl": "48h"}),
    );
    let mut body = review("s-2", "CREATE", obj, Value::Null);
    body["request"]["dryRun"] = json!(true);
    let (_, v) = post(state(Some(bound_view())), body.to_string().into_bytes()).await;
    assert_eq!(response(&v)["allowed"], false, "{v}");
    assert_eq!(response(&v)["uid"], "s-2");
}
