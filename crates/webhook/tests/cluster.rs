//! The webhook registered with a REAL API server (the local control plane of `e2e/testenv.sh`):
//! DataExports are created and updated through the API server, and the tests assert what a user
//! sees: denial messages and `Warning:` headers.
//!
//! Run: `e2e/testenv.sh up && source .run/testenv/env && cargo test -p svdm-webhook --test cluster`.
//! Without `TESTENV_KUBECONFIG` the tests print a note and pass, unless `CI` is set: then they fail.
//!
//! Each test gets its own namespace, its own webhook server on 127.0.0.1:<free port> with a
//! throw-away CA, and its own ValidatingWebhookConfiguration scoped to that namespace by label.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use svdm_pki::{LeafSpec, Usage};
use svdm_webhook::facts::{FactSource, KubeFacts};
use svdm_webhook::server::{AppState, serve};
use svdm_webhook::tls::ServingCert;
use svdm_webhook::validate::Settings;

const TEST_LABEL: &str = "svdm-webhook-test";

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    svdm_testenv::wait_for(what, timeout, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What the API server answered to a write: the status, the message of a failure, and the
/// admission warnings.
#[derive(Debug)]
struct Answer {
    code: u16,
    message: String,
    warnings: Vec<String>,
}

impl Answer {
    fn allowed(&self) -> bool {
        self.code < 300
    }

    #[track_caller]
    fn assert_denied(&self, needle: &str) {
        assert!(
            !self.allowed(),
            "expected a denial containing {needle:?}, got {self:?}"
        );
        assert!(
            self.message.contains(needle),
            "{:?} lacks {needle:?}",
            self.message
        );
    }

    #[track_caller]
    fn assert_allowed(&self) {
        assert!(self.allowed(), "expected success, got {self:?}");
    }
}

/// Raw requests so the `Warning` headers the webhook's warnings turn into are visible.
async fn send(
    client: &Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &Value,
) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = client
        .send(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        // `299 - "text"`
        .map(|v| v.trim_start_matches("299 - ").trim_matches('"').to_owned())
        .collect();
    let bytes = resp.into_body().collect_bytes().await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = if code >= 300 {
        v["message"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    Answer {
        code,
        message,
        warnings,
    }
}

struct Harness {
    client: Client,
    ns: String,
    id: String,
    pvs: Vec<String>,
    server: actix_web::dev::ServerHandle,
}

impl Harness {
    async fn start() -> Option<Harness> {
        let kubeconfig = svdm_testenv::require_kubeconfig(&svdm_testenv::current_test())?;
        let client = svdm_testenv::client_from(&kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let id = format!("{:08x}", rand::random::<u32>());
        let ns = format!("svdm-wh-{id}");

        install_crd(&client).await;

        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": ns, "labels": {TEST_LABEL: id}}})),
            )
            .await
            .unwrap_or_else(|e| panic!("namespace: {e}"));

        // The webhook, in process, with its own CA and a certificate for 127.0.0.1.
        let ca = svdm_pki::generate_ca("svdm-webhook-test", Duration::from_secs(3600))
            .unwrap_or_else(|e| panic!("{e}"));
        let leaf = svdm_pki::issue(
            &ca,
            &LeafSpec {
                common_name: "svdm-webhook",
                organizations: &[],
                dns_names: &["localhost".to_owned()],
                ip_addresses: &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                usage: Usage::Server,
                validity: Duration::from_secs(3600),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("tls.crt"), &leaf.cert_pem)
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("tls.key"), &leaf.key_pem).unwrap_or_else(|e| panic!("{e}"));
        let cert = ServingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .unwrap_or_else(|e| panic!("{e}"));

        let (facts, drive) = KubeFacts::start(client.clone(), Duration::from_secs(3));
        tokio::spawn(drive);
        eventually("webhook caches", Duration::from_secs(60), || {
            let ready = facts.ready();
            async move { ready.then_some(()) }
        })
        .await;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let state = web::Data::new(AppState {
            settings: Settings {
                default_ttl: Duration::from_secs(120),
                max_ttl: Duration::from_secs(24 * 3600),
                publish_configured: false,
            },
            facts: Arc::new(facts),
        });
        let server = serve(listener, &cert, state, 1).unwrap_or_else(|e| panic!("{e}"));
        let handle = server.handle();
        tokio::spawn(server);

        let ca_bundle = openssl::base64::encode_block(ca.cert_pem.as_bytes());
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {"name": format!("svdm-webhook-test-{id}")},
                    "webhooks": [{
                        "name": "dataexports.svdm.storage.deckhouse.io",
                        "clientConfig": {
                            "url": format!("https://127.0.0.1:{port}/validate-dataexport"),
                            "caBundle": ca_bundle,
                        },
                        "rules": [{
                            "apiGroups": ["storage.deckhouse.io"],
                            "apiVersions": ["v1alpha1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["dataexports"],
                            "scope": "Namespaced",
                        }],
                        "namespaceSelector": {"matchLabels": {TEST_LABEL: id}},
                        "failurePolicy": "Fail",
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                        "timeoutSeconds": 10,
                    }, {
                        // The optional Pod webhook as the templates register it: fail open,
                        // only pods that mount a PVC.
                        "name": "pods.svdm.storage.deckhouse.io",
                        "clientConfig": {
                            "url": format!("https://127.0.0.1:{port}/validate-pod"),
                            "caBundle": ca_bundle,
                        },
                        "rules": [{
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                            "scope": "Namespaced",
                        }],
                        "matchConditions": [{
                            "name": "mounts-a-pvc",
                            "expression": "has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.persistentVolumeClaim))",
                        }],
                        "namespaceSelector": {"matchLabels": {TEST_LABEL: id}},
                        "failurePolicy": "Ignore",
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                        "timeoutSeconds": 5,
                    }],
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("webhook configuration: {e}"));

        let h = Harness {
            client,
            ns,
            id,
            pvs: Vec::new(),
            server: handle,
        };
        // The configuration takes effect asynchronously: wait for the first denial (dry run).
        eventually("the webhook configuration to take effect", Duration::from_secs(60), || async {
            let a = h
                .create_export(
                    "probe",
                    json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "svdm-probe-missing"}, "ttl": "1m"}),
                    true,
                )
                .await;
            (!a.allowed() && a.message.contains("not found in namespace")).then_some(())
        })
        .await;
        Some(h)
    }

    async fn create_export(&self, name: &str, spec: Value, dry_run: bool) -> Answer {
        let uri = format!(
            "/apis/storage.deckhouse.io/v1alpha1/namespaces/{}/dataexports{}",
            self.ns,
            if dry_run { "?dryRun=All" } else { "" }
        );
        let body = json!({
            "apiVersion": "storage.deckhouse.io/v1alpha1",
            "kind": "DataExport",
            "metadata": {"name": name},
            "spec": spec,
        });
        send(&self.client, "POST", &uri, "application/json", &body).await
    }

    async fn patch_export(&self, name: &str, patch: Value) -> Answer {
        let uri = format!(
            "/apis/storage.deckhouse.io/v1alpha1/namespaces/{}/dataexports/{name}",
            self.ns
        );
        send(
            &self.client,
            "PATCH",
            &uri,
            "application/merge-patch+json",
            &patch,
        )
        .await
    }

    /// A PV pre-bound to PVC `name` and the PVC; returns once the binder made it Bound.
    async fn bound_pvc(&mut self, name: &str) {
        let pv = format!("svdm-wh-{}-{name}", self.id);
        Api::<PersistentVolume>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {"name": pv},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": format!("/tmp/{pv}")},
                        "claimRef": {"namespace": self.ns, "name": name},
                    },
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("pv: {e}"));
        self.pvs.push(pv.clone());
        let pvcs = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns);
        pvcs.create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "storageClassName": "",
                    "volumeName": pv,
                },
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("pvc: {e}"));
        eventually(
            &format!("PVC {name} to be Bound"),
            Duration::from_secs(90),
            || async {
                let p = pvcs.get(name).await.ok()?;
                (p.status?.phase.as_deref() == Some("Bound")).then_some(())
            },
        )
        .await;
    }

    async fn cleanup(self) {
        cleanup(&self.client, &self.ns, &self.id, &self.pvs).await;
        self.server.stop(false).await;
    }
}

async fn cleanup(client: &Client, ns: &str, id: &str, pvs: &[String]) {
    // No kubelet runs the test pods, so they would wait for pod GC; delete them at once.
    let _ = Api::<Pod>::namespaced(client.clone(), ns)
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &Default::default(),
        )
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(&format!("svdm-webhook-test-{id}"), &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
    for pv in pvs {
        let _ = Api::<PersistentVolume>::all(client.clone())
            .delete(pv, &DeleteParams::default())
            .await;
    }
}

async fn install_crd(client: &Client) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/dataexports.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        "dataexports.storage.deckhouse.io",
        &PatchParams::apply("svdm-webhook-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("CRD: {e}"));
    eventually(
        "the DataExport CRD to be Established",
        Duration::from_secs(60),
        || async {
            let c = api.get("dataexports.storage.deckhouse.io").await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

/// Runs `body` and always removes the test's cluster objects, also when it panics.
macro_rules! cluster_test {
    ($h:ident, $body:block) => {{
        let Some(mut $h) = Harness::start().await else {
            return;
        };
        let (client, ns, id) = ($h.client.clone(), $h.ns.clone(), $h.id.clone());
        let result = {
            let h_ref = &mut $h;
            let fut = async move {
                let $h = h_ref;
                $body
            };
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await
        };
        match result {
            Ok(()) => $h.cleanup().await,
            Err(panic) => {
                cleanup(&client, &ns, &id, &$h.pvs).await;
                std::panic::resume_unwind(panic);
            }
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_are_validated_against_the_cluster() {
    cluster_test!(h, {
        let pvc = |name: &str| json!({"kind": "PersistentVolumeClaim", "name": name});

        // Missing PVC.
        h.create_export(
            "missing",
            json!({"targetRef": pvc("nope"), "ttl": "5m"}),
            false,
        )
        .await
        .assert_denied(&format!(
            "PersistentVolumeClaim nope not found in namespace {}",
            h.ns
        ));

        // Unbound PVC (its class does not exist, so it stays Pending).
        Api::<PersistentVolumeClaim>::namespaced(h.client.clone(), &h.ns)
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {"name": "pending"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                        "storageClassName": "svdm-no-such-class",
                    },
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        h.create_export(
            "unbound",
            json!({"targetRef": pvc("pending"), "ttl": "5m"}),
            false,
        )
        .await
        .assert_denied("PVC pending is Pending, not Bound");

        // ttl: zero passes the schema pattern but not the webhook; over the maximum.
        h.bound_pvc("data").await;
        h.create_export(
            "zero",
            json!({"targetRef": pvc("data"), "ttl": "0s"}),
            false,
        )
        .await
        .assert_denied("is zero");
        h.create_export(
            "long",
            json!({"targetRef": pvc("data"), "ttl": "48h"}),
            false,
        )
        .await
        .assert_denied("exceeds the maximum of 24h");
        let a = h
            .create_export(
                "days",
                json!({"targetRef": pvc("data"), "ttl": "1d"}),
                false,
            )
            .await;
        assert!(!a.allowed() && a.message.contains("ttl"), "{a:?}");

        // A pod (bound to a node that does not exist, so nothing runs it) uses the PVC.
        let pods = Api::<Pod>::namespaced(h.client.clone(), &h.ns);
        let pod: Pod = obj(json!({
            "metadata": {"name": "web-0"},
            "spec": {
                "nodeName": "svdm-no-such-node",
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "registry.invalid/none"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            },
        }));
        // The ServiceAccount admission needs the namespace's default ServiceAccount first.
        eventually("pod creation", Duration::from_secs(60), || async {
            pods.create(&PostParams::default(), &pod)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        let a = eventually(
            "the pod to be seen by the webhook",
            Duration::from_secs(30),
            || async {
                let a = h
                    .create_export(
                        "busy",
                        json!({"targetRef": pvc("data"), "ttl": "5m"}),
                        false,
                    )
                    .await;
                (!a.allowed()).then_some(a)
            },
        )
        .await;
        a.assert_denied(
            "PVC data is used by pod web-0; stop it or export a VolumeSnapshot instead",
        );

        // VolumeSnapshots: missing, and one that cannot become ready (no such class).
        let snap = |name: &str| json!({"kind": "VolumeSnapshot", "name": name});
        h.create_export(
            "nosnap",
            json!({"targetRef": snap("nope"), "ttl": "5m"}),
            false,
        )
        .await
        .assert_denied(&format!(
            "VolumeSnapshot nope not found in namespace {}",
            h.ns
        ));
        let snaps = Api::<DynamicObject>::namespaced_with(
            h.client.clone(),
            &h.ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "snapshot.storage.k8s.io",
                "v1",
                "VolumeSnapshot",
            )),
        );
        snaps
            .create(
                &PostParams::default(),
                &obj(json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "metadata": {"name": "snap"},
                    "spec": {
                        "volumeSnapshotClassName": "svdm-no-such-class",
                        "source": {"persistentVolumeClaimName": "data"},
                    },
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        h.create_export(
            "snap",
            json!({"targetRef": {"kind": "VolumeSnapshot", "name": "snap", "group": "snapshot.storage.k8s.io"}, "ttl": "5m"}),
            false,
        )
        .await
        .assert_denied("VolumeSnapshot snap is not ready to use yet");

        // Wrong group for the kind (CRD rule or webhook, either way the user is told).
        let a = h
            .create_export(
                "group",
                json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data", "group": "apps"}, "ttl": "5m"}),
                false,
            )
            .await;
        assert!(!a.allowed() && a.message.contains("group"), "{a:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_export_updates_and_a_second_export() {
    cluster_test!(h, {
        let target = json!({"kind": "PersistentVolumeClaim", "name": "data"});
        h.bound_pvc("data").await;

        // Allowed, with the warnings a user sees for an omitted ttl and publish without a host.
        let a = h
            .create_export(
                "first",
                json!({"targetRef": target, "publish": true}),
                false,
            )
            .await;
        a.assert_allowed();
        assert!(
            a.warnings
                .iter()
                .any(|w| w.contains("publishing is not configured")),
            "{a:?}"
        );
        assert!(
            a.warnings.iter().any(|w| w.contains("default of 2m")),
            "{a:?}"
        );

        // A second export of the same PVC names the first (once the cache has seen it).
        let a = eventually(
            "the second export to be refused",
            Duration::from_secs(30),
            || async {
                let a = h
                    .create_export("second", json!({"targetRef": target, "ttl": "5m"}), false)
                    .await;
                (!a.allowed()).then_some(a)
            },
        )
        .await;
        a.assert_denied("PVC data is already exported by DataExport first");

        // Updates of a live export: ttl and metadata pass; publish flips (as d8 merge-patches it).
        let a = h
            .patch_export("first", json!({"spec": {"ttl": "10m", "publish": false}}))
            .await;
        a.assert_allowed();
        let a = h
            .patch_export("first", json!({"spec": {"publish": true}}))
            .await;
        a.assert_allowed();
        assert!(
            a.warnings
                .iter()
                .any(|w| w.contains("publishing is not configured")),
            "{a:?}"
        );
        h.patch_export("first", json!({"metadata": {"labels": {"team": "a"}, "finalizers": ["svdm.storage.deckhouse.io/cleanup"]}}))
            .await
            .assert_allowed();
        h.patch_export("first", json!({"spec": {"ttl": "48h"}}))
            .await
            .assert_denied("exceeds the maximum of 24h");
        h.patch_export(
            "first",
            json!({"spec": {"targetRef": {"kind": "PersistentVolumeClaim", "name": "other"}}}),
        )
        .await
        .assert_denied("immutable");

        // Deletion: the finalizer holds the object; removing it (the controller's last write)
        // must pass.
        let api = Api::<DynamicObject>::namespaced_with(
            h.client.clone(),
            &h.ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "storage.deckhouse.io",
                "v1alpha1",
                "DataExport",
            )),
        );
        api.delete("first", &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        h.patch_export("first", json!({"metadata": {"finalizers": null}}))
            .await
            .assert_allowed();
        eventually("first to be gone", Duration::from_secs(30), || async {
            api.get_opt("first")
                .await
                .ok()
                .and_then(|o| o.is_none().then_some(()))
        })
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_under_export_refuses_new_pods_and_exports() {
    cluster_test!(h, {
        use svdm_api::names;
        // What the controller leaves on a PV it has taken over from PVC `held`.
        let pv = format!("svdm-wh-{}-held", h.id);
        Api::<PersistentVolume>::all(h.client.clone())
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {
                        "name": pv,
                        "labels": {names::LABEL_PV_EXPORTED: "true"},
                        "annotations": {
                            names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE: h.ns,
                            names::ANN_PV_ORIGINAL_CLAIM_NAME: "held",
                            names::ANN_OWNER_NAMESPACE: h.ns,
                            names::ANN_OWNER_NAME: "backup",
                        },
                    },
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": format!("/tmp/{pv}")},
                    },
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        h.pvs.push(pv.clone());

        let pod = |name: &str, claim: &str| {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "nodeName": "svdm-no-such-node",
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "c", "image": "registry.invalid/none"}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
                },
            })
        };
        let uri = format!("/api/v1/namespaces/{}/pods", h.ns);
        // Refused with the export named (polling: the namespace's ServiceAccount and the PV
        // cache both take a moment).
        let a = eventually("the pod to be refused", Duration::from_secs(60), || async {
            let a = send(
                &h.client,
                "POST",
                &uri,
                "application/json",
                &pod("web-0", "held"),
            )
            .await;
            a.message.contains("being exported").then_some(a)
        })
        .await;
        a.assert_denied("PVC held is being exported by DataExport backup");
        // Another claim is fine.
        let a = eventually(
            "an unrelated pod to be created",
            Duration::from_secs(60),
            || async {
                let a = send(
                    &h.client,
                    "POST",
                    &uri,
                    "application/json",
                    &pod("web-1", "other"),
                )
                .await;
                a.allowed().then_some(a)
            },
        )
        .await;
        a.assert_allowed();

        // A new DataExport of that PVC is refused while the volume is held.
        Api::<PersistentVolumeClaim>::namespaced(h.client.clone(), &h.ns)
            .create(
                &PostParams::default(),
                &obj(json!({
                    "metadata": {"name": "held"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                        "storageClassName": "svdm-no-such-class",
                    },
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        h.create_export(
            "again",
            json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "held"}, "ttl": "5m"}),
            false,
        )
        .await
        .assert_denied(&format!(
            "the volume {pv} of PVC held is still held by DataExport backup"
        ));
    });
}
