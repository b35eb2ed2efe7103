//! More DataExport flows against the real control plane: publish on/off, exporter pod deleted,
//! two exports of one PVC, the user deleting the PVC during an export, and orphans.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use svdm_api::{DataExport, Phase, conditions, names};

fn exporter_name(de: &DataExport) -> String {
    svdm_controller::objects::object_name(&de.uid().expect("uid"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_flips_and_a_deleted_exporter_pod_is_recreated() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-flow").await;
    let id = ns.clone();
    let ctl = start_controller(
        &kc,
        &id,
        None,
        &[
            "--publish-host",
            "data-exporter.example.com",
            "--ingress-tls-secret",
            "ingress-tls-test",
        ],
    );
    let (pv, uid) = make_bound_pvc(&client, &ns, "Filesystem").await;
    export_pvc(&client, &ns, "de1", &id).await;
    wait_handed_over(&client, &pv, 60).await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de = des.get("de1").await.expect("de");
    let name = exporter_name(&de);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    assert!(ingresses.get_opt(&name).await.expect("get").is_none());

    // publish false -> true on a live export.
    des.patch(
        "de1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"publish": true}})),
    )
    .await
    .expect("patch");
    let ing = wait_for("Ingress", 30, || async {
        ingresses.get_opt(&name).await.ok()?
    })
    .await;
    let rule = &ing.spec.expect("spec").rules.expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("data-exporter.example.com"));
    assert_eq!(
        rule.http.as_ref().expect("http").paths[0].path.as_deref(),
        Some(format!("/{ns}/de1/").as_str())
    );
    wait_for("publicURL", 30, || async {
        let de = des.get("de1").await.ok()?;
        (de.status?.public_url? == format!("https://data-exporter.example.com/{ns}/de1/"))
            .then_some(())
    })
    .await;

    // true -> false removes it again.
    des.patch(
        "de1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"publish": false}})),
    )
    .await
    .expect("patch");
    wait_for("Ingress gone", 30, || async {
        matches!(ingresses.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
    wait_for("publicURL cleared", 30, || async {
        let de = des.get("de1").await.ok()?;
        de.status?.public_url.is_none().then_some(())
    })
    .await;

    // The exporter pod is deleted: a new one replaces it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let old_uid = pods.get(&name).await.expect("pod").uid();
    pods.delete(&name, &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    wait_for("exporter pod recreated", 60, || async {
        let p = pods.get_opt(&name).await.ok()??;
        (p.uid() != old_uid && p.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;

    delete_export_and_wait(&client, &ns, "de1", 60).await;
    assert_returned(&client, &ns, &pv, &uid, "Delete").await;
    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}

/// Publishing asked for where the cluster publishes nothing: not Ready (a client that asked for
/// publishing waits for a publicURL that would never come), with the reason and what to do; the
/// in-cluster URL works meanwhile, and turning publishing off makes it Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_a_public_host_says_why_and_serves_in_the_cluster() {
    publish_refused(&[], "publicHost").await;
}

/// The same when a public host is set but the custom certificate hook could not copy its Secret
/// (the chart passes that as --publish-unavailable): the message names the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_a_usable_certificate_says_why_and_serves_in_the_cluster() {
    publish_refused(
        &[
            "--publish-host",
            "data-exporter.example.com",
            "--publish-unavailable",
            "the custom certificate Secret d8-system/missing-tls (type kubernetes.io/tls) was not found",
        ],
        "d8-system/missing-tls",
    )
    .await;
}

async fn publish_refused(controller_args: &[&str], says: &str) {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-flow").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, controller_args);
    let (pv, uid) = make_bound_pvc(&client, &ns, "Filesystem").await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de: DataExport = serde_json::from_value(json!({
        "apiVersion": "storage.deckhouse.io/v1alpha1",
        "kind": "DataExport",
        "metadata": {"name": "de1", "labels": {SELECTOR_LABEL: id}},
        "spec": {"ttl": "1h", "publish": true, "targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}},
    }))
    .expect("de");
    des.create(&Default::default(), &de).await.expect("create");
    let (message, url) = wait_for("Ready=False/PublishFailed", 90, || async {
        let st = des.get("de1").await.ok()?.status?;
        let c = conditions::find(&st.conditions, conditions::READY)?;
        (c.status == "False" && c.reason == "PublishFailed").then(|| (c.message.clone(), st.url))
    })
    .await;
    assert!(message.contains(says), "says what to set: {message}");
    assert!(
        url.is_some_and(|u| u.starts_with("https://")),
        "the in-cluster URL is there"
    );
    assert!(
        des.get("de1")
            .await
            .expect("de")
            .status
            .expect("status")
            .public_url
            .is_none(),
        "no publicURL that nothing serves"
    );
    des.patch(
        "de1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"publish": false}})),
    )
    .await
    .expect("patch");
    wait_for("Ready once publishing is off", 30, || async {
        (des.get("de1").await.ok()?.status?.phase == Some(Phase::Ready)).then_some(())
    })
    .await;
    delete_export_and_wait(&client, &ns, "de1", 60).await;
    assert_returned(&client, &ns, &pv, &uid, "Delete").await;
    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_export_of_the_same_pvc_waits_and_takes_nothing() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-flow").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let (pv, uid) = make_bound_pvc(&client, &ns, "Filesystem").await;
    export_pvc(&client, &ns, "first", &id).await;
    wait_handed_over(&client, &pv, 60).await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let created = {
        let de: DataExport = serde_json::from_value(json!({
            "apiVersion": "storage.deckhouse.io/v1alpha1",
            "kind": "DataExport",
            "metadata": {"name": "second", "labels": {SELECTOR_LABEL: id}},
            "spec": {"ttl": "1h", "publish": false, "targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}},
        }))
        .expect("de");
        des.create(&Default::default(), &de).await.is_ok()
    };
    if created {
        let reason = wait_for("second blocked", 30, || async {
            let de = des.get("second").await.ok()?;
            let st = de.status?;
            let c = conditions::find(&st.conditions, conditions::READY)?.clone();
            (st.phase == Some(Phase::Pending) && c.reason != conditions::reason::PENDING)
                .then_some(c.reason)
        })
        .await;
        assert_eq!(reason, conditions::reason::TARGET_IN_USE);
        // Deleting the second one must not disturb the first one's handover.
        delete_export_and_wait(&client, &ns, "second", 30).await;
        wait_handed_over(&client, &pv, 5).await;
    }
    delete_export_and_wait(&client, &ns, "first", 60).await;
    assert_returned(&client, &ns, &pv, &uid, "Delete").await;
    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_deleting_the_pvc_during_an_export_gets_it_back_and_deleted() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-flow").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let (pv, _uid) = make_bound_pvc(&client, &ns, "Filesystem").await;
    // Retain, so the test can check the PV itself after the PVC is gone.
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    pvs.patch(
        &pv,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
    )
    .await
    .expect("retain");
    export_pvc(&client, &ns, "de1", &id).await;
    wait_handed_over(&client, &pv, 60).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    pvcs.delete("data", &DeleteParams::default())
        .await
        .expect("delete user pvc");
    // The export ends, the PV goes back, our finalizer goes, and the PVC deletion completes.
    wait_for("user PVC deleted", 90, || async {
        matches!(pvcs.get_opt("data").await, Ok(None)).then_some(())
    })
    .await;
    let p = pvs.get(&pv).await.expect("pv");
    assert!(
        !p.labels().contains_key(names::LABEL_PV_EXPORTED),
        "{:?}",
        p.labels()
    );
    assert!(
        !p.annotations()
            .contains_key(names::ANN_PV_ORIGINAL_RECLAIM_POLICY)
    );
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    wait_for("DataExport Failed without finalizer", 30, || async {
        let de = des.get("de1").await.ok()?;
        (de.status?.phase == Some(Phase::Failed)
            && de.metadata.finalizers.is_none_or(|f| f.is_empty()))
        .then_some(())
    })
    .await;
    delete_export_and_wait(&client, &ns, "de1", 30).await;
    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_export_is_returned_by_the_sweep() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-flow").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let (pv, uid) = make_bound_pvc(&client, &ns, "Block").await;
    export_pvc(&client, &ns, "de1", &id).await;
    wait_handed_over(&client, &pv, 60).await;
    ctl.stop().await;
    // Someone strips the finalizer and deletes the DataExport while no controller runs.
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    des.patch(
        "de1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("strip finalizer");
    delete_export_and_wait(&client, &ns, "de1", 30).await;
    // The next controller finds the orphan in its first sweep and returns it.
    let ctl = start_controller(&kc, &id, None, &[]);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for("orphan returned", 90, || async {
        let p = pvcs.get("data").await.ok()?;
        let ours = p
            .finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_PVC_PROTECTION);
        (p.status?.phase.as_deref() == Some("Bound") && !ours).then_some(())
    })
    .await;
    wait_for("PV record cleared", 30, || async {
        let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
        let p = pvs.get(&pv).await.ok()?;
        (!p.labels().contains_key(names::LABEL_PV_EXPORTED)).then_some(())
    })
    .await;
    assert_returned(&client, &ns, &pv, &uid, "Delete").await;
    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}
