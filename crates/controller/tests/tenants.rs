//! What one tenant can do to another's export by writing only objects of their own namespace.
//!
//! A tenant labels a PVC of theirs as the module's (`svdm.storage.deckhouse.io/managed=true`),
//! annotates it with the uid of another tenant's live export and an owner that does not exist,
//! and adds the module's protection finalizer. The controller used to take such a PVC for an
//! orphan's record and "return" the victim's export: its exporter pod torn down, its volume moved
//! back, then rebuilt, again and again. Now the victim's export must not notice (same exporter pod,
//! still Ready, its PV still with the export) across more than one orphan sweep, and the forged
//! PVC keeps nothing of the module but loses the protection it was given.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use svdm_api::{DataExport, Phase, names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pvc_in_another_namespace_does_not_touch_a_live_export() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let victim = create_namespace(&client, "svdm-victim").await;
    let tenant = create_namespace(&client, "svdm-tenant").await;
    // One controller for both namespaces' exports (the selector is the test's id).
    let id = victim.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let (pv, user_uid) = make_provisioned_pvc(&client, &victim, "Filesystem").await;
    export_pvc(&client, &victim, "de1", &id).await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &victim);
    let uid = wait_for("victim export Ready", 120, || async {
        let de = des.get("de1").await.ok()?;
        (de.status.as_ref()?.phase == Some(Phase::Ready)).then(|| de.uid())?
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let exporter = svdm_controller::objects::object_name(&uid);
    let pod_uid = pods.get(&exporter).await.expect("exporter pod").uid();

    // The tenant's forgery, all in their own namespace.
    let forged: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {
            "name": "bait",
            "labels": {names::LABEL_MANAGED: "true", names::LABEL_DATAEXPORT_UID: uid},
            "annotations": {
                names::ANN_OWNER_UID: uid,
                names::ANN_OWNER_NAMESPACE: tenant,
                names::ANN_OWNER_NAME: "no-such-export",
            },
            "finalizers": [names::FINALIZER_PVC_PROTECTION],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "svdm-no-such-class",
                 "resources": {"requests": {"storage": "1Mi"}}}
    }))
    .expect("pvc");
    let tenant_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &tenant);
    tenant_pvcs
        .create(&PostParams::default(), &forged)
        .await
        .expect("create the forged PVC");

    // More than one sweep (every 30 s): the victim's export stays as it is the whole time.
    let hold = Instant::now() + Duration::from_secs(40);
    while Instant::now() < hold {
        let de = des.get("de1").await.expect("victim export");
        assert_eq!(
            de.status.as_ref().and_then(|s| s.phase),
            Some(Phase::Ready),
            "the victim's export left Ready"
        );
        let now = pods
            .get_opt(&exporter)
            .await
            .expect("get pod")
            .map(|p| p.uid());
        assert_eq!(
            now,
            Some(pod_uid.clone()),
            "the victim's exporter pod was replaced"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The forged PVC's own protection, which no export holds, is gone; nothing else was done.
    wait_for("the forged protection removed", 30, || async {
        let p = tenant_pvcs.get_opt("bait").await.ok()?;
        p.is_none_or(|p| {
            !p.finalizers()
                .iter()
                .any(|f| f == names::FINALIZER_PVC_PROTECTION)
        })
        .then_some(())
    })
    .await;

    delete_export_and_wait(&client, &victim, "de1", 90).await;
    assert_returned(&client, &victim, &pv, &user_uid, "Delete").await;
    ctl.stop().await;
    delete_namespace(&client, &tenant).await;
    delete_namespace(&client, &victim).await;
}
