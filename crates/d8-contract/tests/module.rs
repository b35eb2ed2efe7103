//! End to end against the module as installed from its chart (`e2e/run-tests.sh` runs this after
//! `e2e/module.sh up`, with `SVDM_MODULE_E2E=1`), as test-editor, through the contract client.
//!
//! Expired means recreatable: d8 sees the expiry signal of its generation, deletes the export and
//! creates it again under the same name at once, counting AlreadyExists as success; a lingering
//! finalizer turns that into `… not found` a poll later. Each generation does it 20 times in a row
//! on a PVC of its own (the two loops side by side), and after every recreate the first download
//! right after Ready must work. Between rounds the test, as the user, cuts the live export's ttl to
//! 1s (the client recreates with ttl 2m) and waits until the object shows the signal — the user
//! coming back later; the client itself never waits or retries beyond what d8 does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use svdm_d8_contract::export::{Exports, GROUP, Generation, Look, Target, look};
use svdm_d8_contract::kubecfg::Access;
use svdm_d8_contract::transfer::{Aids, Endpoint};

const ROUNDS: usize = 20;

struct Env {
    editor: PathBuf,
    namespace: String,
    work: PathBuf,
}

/// Runs only where `e2e/run-tests.sh` asks for it: the module must be installed from its chart.
fn env() -> Option<Env> {
    if std::env::var("SVDM_MODULE_E2E").ok().as_deref() != Some("1") {
        eprintln!(
            "note: SVDM_MODULE_E2E is not 1; the module end-to-end tests run from e2e/run-tests.sh"
        );
        return None;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    Some(Env {
        editor: PathBuf::from(var("TESTENV_KUBECONFIG_EDITOR")),
        namespace: var("TESTENV_EDITOR_NAMESPACE"),
        work: PathBuf::from(var("TESTENV_DIR")).join("contract-e2e"),
    })
}

async fn pvc_with_data(access: &Access, ns: &str, name: &str) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(access.client.clone(), ns);
    let pvc = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "svdm-sim",
                 "resources": {"requests": {"storage": "16Mi"}}}
    }))
    .expect("pvc");
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("create PVC");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = pvcs.get(name).await.expect("get PVC");
        if p.status.and_then(|s| s.phase).as_deref() == Some("Bound") {
            return;
        }
        assert!(Instant::now() < deadline, "PVC {name} not Bound");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The user waits for the export to expire: polls the object until the generation's signal shows.
async fn until_expired(exports: &Exports, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let obj = exports.get(name).await.unwrap_or_else(|e| panic!("{e}"));
        if look(exports.generation, &obj) == Ok(Look::Expired) {
            // What the signal promises: nothing holds the object any more.
            let fins = obj.pointer("/metadata/finalizers").cloned();
            assert!(
                fins.as_ref()
                    .and_then(|f| f.as_array())
                    .is_none_or(|f| f.is_empty()),
                "{name} shows the expiry signal with finalizers {fins:?}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not expire");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn rounds(env: Arc<Env>, generation: Generation, pvc: &'static str) {
    let access = Access::from_path(&env.editor)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pvc_with_data(&access, &env.namespace, pvc).await;
    let exports = Exports::new(&access, generation, GROUP, &env.namespace);
    let name = format!("recreate-{pvc}");
    let target = Target::parse(&format!("pvc/{pvc}")).expect("target");
    exports
        .create(&name, &target, "2m", false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = env.work.join(format!("{pvc}.listing"));
    let started = Instant::now();
    for round in 1..=ROUNDS {
        let ready = exports
            .wait_ready(&name)
            .await
            .unwrap_or_else(|e| panic!("{generation:?} round {round}: {e}"));
        {
            // Like d8, a client whose connections end with the command.
            let ep = Endpoint::new(&access, &ready, false, &Aids::default())
                .unwrap_or_else(|e| panic!("{e}"));
            let listing = ep
                .list("/")
                .await
                .unwrap_or_else(|e| panic!("{generation:?} round {round}, right after Ready: {e}"));
            std::fs::write(&out, listing).expect("write listing");
        }
        // The user lets it go idle: a short ttl on the live object.
        exports
            .api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"ttl": "1s"}})),
            )
            .await
            .expect("cut the ttl");
        until_expired(&exports, &name).await;
        // The next wait_ready deletes and recreates it, exactly as d8.
    }
    println!(
        "{generation:?}: {ROUNDS} expiries recreated and downloaded in a row in {:.0?}",
        started.elapsed()
    );
    let _ = exports.delete(&name).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while exports.api.get_opt(&name).await.ok().flatten().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(access.client.clone(), &env.namespace);
    let _ = pvcs.delete(pvc, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_exports_are_recreated_at_once_every_time() {
    let Some(env) = env() else { return };
    std::fs::create_dir_all(&env.work).expect("work dir");
    let env = Arc::new(env);
    let old = tokio::spawn(rounds(env.clone(), Generation::V0_33_6, "recreate-old"));
    let new = tokio::spawn(rounds(env.clone(), Generation::V0_33_14, "recreate-new"));
    let (a, b) = tokio::join!(old, new);
    if let Err(e) = a.and(b) {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The grant the chart ships (templates/rbac-for-us.yaml) lets any user run d8's
/// auto-detect, and inside this cluster it picks the in-cluster URL: the kubernetes Service's
/// ClusterIP reaches the same API server.
#[tokio::test]
async fn publish_autodetect_works_for_users_without_rights_in_default() {
    let Some(env) = env() else { return };
    let nobody = std::env::var("TESTENV_KUBECONFIG_NOBODY").expect("TESTENV_KUBECONFIG_NOBODY");
    for kubeconfig in [env.editor.clone(), PathBuf::from(nobody)] {
        let access = Access::from_path(&kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let publish = svdm_d8_contract::publish::detect(&access)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
        assert!(
            !publish,
            "{}: inside the cluster, publish=false",
            kubeconfig.display()
        );
    }
}

/// An exporter's identity may write only its own activity Lease (the chart's
/// ValidatingAdmissionPolicy, templates/exporter/lease-policy.yaml): with a token of the exporter
/// ServiceAccount bound to a pod, the Lease named like that pod can be renewed, the controller's
/// leader Lease and another export's Lease cannot.
#[tokio::test]
async fn an_exporter_token_writes_only_its_own_lease() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let Some(_) = env() else { return };
    let admin_kc = std::env::var("TESTENV_KUBECONFIG").expect("TESTENV_KUBECONFIG");
    let admin = Access::from_path(std::path::Path::new(&admin_kc))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ns = "d8-storage-volume-data-manager";
    let pods: Api<Pod> = Api::namespaced(admin.client.clone(), ns);
    let leases: Api<Lease> = Api::namespaced(admin.client.clone(), ns);
    let pod_name = format!("exp-leasetest{}", std::process::id());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name},
        "spec": {"serviceAccountName": "exporter",
                 "containers": [{"name": "c", "image": "registry.local/svdm/none:test"}]}
    }))
    .expect("pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    for name in [pod_name.as_str(), "exp-someone-else"] {
        let l: Lease =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {}})).expect("lease");
        let _ = leases.create(&PostParams::default(), &l).await;
    }
    let tr: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [], "expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod_name,
                                    "uid": pod.metadata.uid}}
    }))
    .expect("token request");
    let sas: Api<ServiceAccount> = Api::namespaced(admin.client.clone(), ns);
    let token = sas
        .create_token_request("exporter", &PostParams::default(), &tr)
        .await
        .expect("token")
        .status
        .expect("token status")
        .token
        .expect("a token");
    // The admin kubeconfig's cluster, the exporter's token.
    let kc = kube::config::Kubeconfig::read_from(&admin_kc).expect("kubeconfig");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    cfg.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let exporter = kube::Client::try_from(cfg).expect("client");
    let as_exporter: Api<Lease> = Api::namespaced(exporter, ns);
    let renew = json!({"spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}});
    let patch = |name: String| {
        let api = as_exporter.clone();
        let renew = renew.clone();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(renew))
                .await
        }
    };
    patch(pod_name.clone())
        .await
        .expect("an exporter renews its own Lease");
    for other in ["svdm-controller", "exp-someone-else"] {
        match patch(other.to_owned()).await {
            Err(kube::Error::Api(e)) => assert!(
                e.message.contains("only the activity Lease of its own pod"),
                "{other}: {}",
                e.message
            ),
            other_result => panic!("the exporter wrote Lease {other}: {other_result:?}"),
        }
    }
    let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
    for name in [pod_name.as_str(), "exp-someone-else"] {
        let _ = leases.delete(name, &DeleteParams::default()).await;
    }
}
