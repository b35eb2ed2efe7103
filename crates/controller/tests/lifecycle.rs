//! DataExport lifecycle against the real local control plane (API server, PV binder, GC): the
//! handover and the return on real PV/PVC objects, preconditions, expiry and deletion.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use svdm_api::{DataExport, Phase, conditions, names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvc_handover_and_return_on_delete() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-ctl").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let with_node = node_ready(&client).await;
    let (pv, user_uid) = if with_node {
        make_provisioned_pvc(&client, &ns, "Filesystem").await
    } else {
        make_bound_pvc(&client, &ns, "Filesystem").await
    };

    export_pvc(&client, &ns, "de1", &id).await;
    wait_handed_over(&client, &pv, 60).await;

    // Status: url, ca and volumeMode are there before (and so no later than) Ready.
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de = wait_for("status.url", 30, || async {
        let de = des.get("de1").await.ok()?;
        de.status.as_ref()?.url.as_ref()?;
        Some(de)
    })
    .await;
    let st = de.status.clone().expect("status");
    assert!(
        st.url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://exp-")
                && u.ends_with(".d8-storage-volume-data-manager.svc/"))
    );
    assert!(st.ca.is_some());
    assert_eq!(st.volume_mode, Some(svdm_api::VolumeMode::Filesystem));
    assert!(
        de.finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_DATAEXPORT)
    );

    // The user PVC is protected and Lost while its PV is away.
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &ns);
    let user = pvcs.get("data").await.expect("pvc");
    assert!(
        user.finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_PVC_PROTECTION)
    );

    if with_node {
        wait_for("Ready=True", 90, || async {
            let de = des.get("de1").await.ok()?;
            let c = conditions::find(&de.status?.conditions, conditions::READY)?.clone();
            (c.status == "True").then_some(())
        })
        .await;
    } else {
        eprintln!("note: no simulated node; Ready=True not checked");
    }

    delete_export_and_wait(&client, &ns, "de1", 90).await;
    assert_returned(&client, &ns, &pv, &user_uid, "Delete").await;

    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}

use kube::ResourceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvc_in_use_is_refused_with_the_pod_named_and_deletion_while_pending_is_immediate() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-ctl").await;
    let id = ns.clone();
    let (pv, user_uid) = make_bound_pvc(&client, &ns, "Block").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "volumeDevices": [{"name": "d", "devicePath": "/dev/x"}]}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let ctl = start_controller(&kc, &id, None, &[]);

    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de: DataExport = serde_json::from_value(json!({
        "apiVersion": "storage.deckhouse.io/v1alpha1",
        "kind": "DataExport",
        "metadata": {"name": "de1", "labels": {SELECTOR_LABEL: id}},
        "spec": {"ttl": "1h", "publish": false, "targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}},
    }))
    .expect("de");
    match des.create(&PostParams::default(), &de).await {
        Ok(_) => {
            let msg = wait_for("TargetInUse", 60, || async {
                let de = des.get("de1").await.ok()?;
                let c = conditions::find(&de.status?.conditions, conditions::READY)?.clone();
                (c.reason == conditions::reason::TARGET_IN_USE).then_some(c.message)
            })
            .await;
            assert_eq!(
                msg,
                "PVC data is used by pod web-0; stop it or export a VolumeSnapshot instead"
            );
            // Nothing was taken.
            let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
            let p = pvs.get(&pv).await.expect("pv");
            assert_eq!(
                p.spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
                Some("Delete")
            );
            // Deleting a Pending export completes at once.
            delete_export_and_wait(&client, &ns, "de1", 30).await;
            assert_returned(&client, &ns, &pv, &user_uid, "Delete").await;
        }
        Err(e) => {
            // The admission webhook already refuses it; it must name the pod too.
            let s = e.to_string();
            assert!(s.contains("web-0"), "{s}");
        }
    }
    ctl.stop().await;
    let _ = pods
        .delete("web-0", &DeleteParams::default().grace_period(0))
        .await;
    delete_pv(&client, &pv).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_target_reports_target_not_found() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-ctl").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de: DataExport = serde_json::from_value(json!({
        "apiVersion": "storage.deckhouse.io/v1alpha1",
        "kind": "DataExport",
        "metadata": {"name": "de1", "labels": {SELECTOR_LABEL: id}},
        "spec": {"ttl": "1h", "publish": false, "targetRef": {"kind": "PersistentVolumeClaim", "name": "nope"}},
    }))
    .expect("de");
    if des.create(&PostParams::default(), &de).await.is_ok() {
        wait_for("TargetNotFound", 60, || async {
            let de = des.get("de1").await.ok()?;
            let st = de.status?;
            let c = conditions::find(&st.conditions, conditions::READY)?.clone();
            (c.reason == conditions::reason::TARGET_NOT_FOUND && st.phase == Some(Phase::Pending))
                .then_some(())
        })
        .await;
        delete_export_and_wait(&client, &ns, "de1", 30).await;
    }
    ctl.stop().await;
    delete_namespace(&client, &ns).await;
}

/// Expiry needs a serving exporter, so it runs only with the simulated node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_returns_the_volume_and_leaves_no_finalizer_then_retention_deletes() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    if !node_ready(&client).await {
        eprintln!("note: no simulated node (e2e/stack.sh up); expiry test skipped");
        return;
    }
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-ctl").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &["--expired-retention", "20s"]);
    let (pv, user_uid) = make_provisioned_pvc(&client, &ns, "Filesystem").await;
    create_export(
        &client,
        &ns,
        "de1",
        &id,
        "4s",
        "PersistentVolumeClaim",
        "data",
    )
    .await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de = wait_for("Expired", 120, || async {
        let de = des.get("de1").await.ok()?;
        (de.status.as_ref()?.phase == Some(Phase::Expired) && de.finalizers().is_empty())
            .then_some(de)
    })
    .await;
    let st = de.status.expect("status");
    let ready = conditions::find(&st.conditions, conditions::READY).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Expired")
    );
    let exp = conditions::find(&st.conditions, conditions::EXPIRED).expect("expired");
    assert_eq!(exp.status, "True");
    assert_returned(&client, &ns, &pv, &user_uid, "Delete").await;
    // Retention: the expired object disappears by itself.
    wait_gone(&client, &ns, "de1", 90).await;
    stop_and_clean_up(ctl, &client, &ns, &pv).await;
}

/// A ttl edited on a live export takes effect without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_edited_on_a_live_export_takes_effect() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    if !node_ready(&client).await {
        eprintln!("note: no simulated node (e2e/stack.sh up); ttl edit test skipped");
        return;
    }
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-ctl").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);
    let (pv, user_uid) = make_provisioned_pvc(&client, &ns, "Block").await;
    export_pvc(&client, &ns, "de1", &id).await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de = wait_for("Ready", 120, || async {
        let de = des.get("de1").await.ok()?;
        (de.status.as_ref()?.phase == Some(Phase::Ready)).then_some(de)
    })
    .await;
    let st = de.status.expect("status");
    assert_eq!(st.volume_mode, Some(svdm_api::VolumeMode::Block));
    assert_eq!(st.effective_ttl.as_deref(), Some("1h"));
    assert!(st.expiration_timestamp.is_some());
    des.patch(
        "de1",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"ttl": "2s"}})),
    )
    .await
    .expect("edit ttl");
    wait_for("Expired after the ttl edit", 60, || async {
        let de = des.get("de1").await.ok()?;
        (de.status.as_ref()?.phase == Some(Phase::Expired) && de.finalizers().is_empty())
            .then_some(())
    })
    .await;
    assert_returned(&client, &ns, &pv, &user_uid, "Delete").await;
    // Expired objects carry no finalizer: a delete completes at once.
    delete_export_and_wait(&client, &ns, "de1", 10).await;
    ctl.stop().await;
    delete_namespace(&client, &ns).await;
}
