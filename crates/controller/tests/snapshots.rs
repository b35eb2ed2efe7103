//! VolumeSnapshot targets against the real control plane and snapshot-controller; needs the
//! simulated node's CSI driver (`svdm-sim` StorageClass and VolumeSnapshotClass).

mod common;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use svdm_api::{DataExport, conditions, names};

fn ar(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind),
        plural,
    )
}

async fn sim_storage_available(client: &Client) -> bool {
    let classes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar("VolumeSnapshotClass", "volumesnapshotclasses"),
    );
    matches!(classes.get_opt("svdm-sim").await, Ok(Some(_))) && node_ready(client).await
}

/// A PVC `src` of the simulated storage class, Bound, and a ready VolumeSnapshot `snap` of it.
async fn ready_snapshot(client: &Client, ns: &str, mode: &str, size: &str) -> Api<DynamicObject> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let src: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "src"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "storageClassName": "svdm-sim",
            "volumeMode": mode,
        }
    }))
    .expect("pvc");
    pvcs.create(&PostParams::default(), &src)
        .await
        .expect("src pvc");
    wait_for("source PVC Bound", 60, || async {
        let p = pvcs.get("src").await.ok()?;
        (p.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    let vss: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ar("VolumeSnapshot", "volumesnapshots"));
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": "snap"},
        "spec": {"volumeSnapshotClassName": "svdm-sim", "source": {"persistentVolumeClaimName": "src"}},
    }))
    .expect("vs");
    vss.create(&PostParams::default(), &vs).await.expect("vs");
    wait_for("snapshot ready", 90, || async {
        let v = vss.get("snap").await.ok()?;
        v.data["status"]["readyToUse"].as_bool()?.then_some(())
    })
    .await;
    vss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_restored_in_the_module_namespace_and_cleaned_up() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    if !sim_storage_available(&client).await {
        eprintln!("note: no simulated node/CSI driver (e2e/stack.sh up); snapshot test skipped");
        return;
    }
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-snap").await;
    let id = ns.clone();
    let ctl = start_controller(&kc, &id, None, &[]);

    let vss = ready_snapshot(&client, &ns, "Block", "64Mi").await;

    create_export(&client, &ns, "de1", &id, "1h", "VolumeSnapshot", "snap").await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let de = wait_for("Ready", 120, || async {
        let de = des.get("de1").await.ok()?;
        let c = conditions::find(&de.status.as_ref()?.conditions, conditions::READY)?.clone();
        (c.status == "True").then_some(de)
    })
    .await;
    let st = de.status.clone().expect("status");
    assert_eq!(st.volume_mode, Some(svdm_api::VolumeMode::Block));
    let obj = svdm_controller::objects::object_name(&de.uid().expect("uid"));
    let restored: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let r = restored.get(&obj).await.expect("restored pvc");
    assert_eq!(
        r.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("svdm-sim")
    );
    // The user's snapshot is released once the restore is done.
    wait_for("snapshot unprotected", 30, || async {
        let v = vss.get("snap").await.ok()?;
        (!v.finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_SNAPSHOT_PROTECTION))
        .then_some(())
    })
    .await;

    delete_export_and_wait(&client, &ns, "de1", 90).await;
    assert!(restored.get_opt(&obj).await.expect("get").is_none());
    let copies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        names::MODULE_NAMESPACE,
        &ar("VolumeSnapshot", "volumesnapshots"),
    );
    assert!(copies.get_opt(&obj).await.expect("get").is_none());
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar("VolumeSnapshotContent", "volumesnapshotcontents"),
    );
    wait_for("content copy gone", 30, || async {
        matches!(
            contents
                .get_opt(&svdm_controller::objects::snapshot_content_name(
                    &de.uid().unwrap_or_default()
                ))
                .await,
            Ok(None)
        )
        .then_some(())
    })
    .await;
    // The user's snapshot is untouched and still usable.
    let v = vss.get("snap").await.expect("user snapshot");
    assert_eq!(v.data["status"]["readyToUse"].as_bool(), Some(true));
    ctl.stop().await;
    delete_namespace(&client, &ns).await;
}

async fn wait_limit_reached(des: &Api<DataExport>, name: &str) -> String {
    wait_for("Pending with LimitReached", 60, || async {
        let de = des.get(name).await.ok()?;
        let st = de.status.as_ref()?;
        let c = conditions::find(&st.conditions, conditions::READY)?;
        (st.phase == Some(svdm_api::Phase::Pending) && c.reason == "LimitReached")
            .then(|| c.message.clone())
    })
    .await
}

/// `--max-concurrent-exports` counts PVC and snapshot exports alike and holds both kinds. Two
/// controllers share the namespace: A (no limit) starts the exports that run, B (limit 1)
/// gets the ones that must wait; a running export of either kind blocks one of the other kind.
/// (Starting once below the limit is not checked here: exports of concurrent tests count too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_limit_holds_snapshot_and_pvc_exports_alike() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    if !sim_storage_available(&client).await {
        eprintln!("note: no simulated node/CSI driver (e2e/stack.sh up); snapshot test skipped");
        return;
    }
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-limit").await;
    let id_a = format!("{ns}-a");
    let id_b = format!("{ns}-b");
    let ctl_a = start_controller(&kc, &id_a, None, &[]);
    let ctl_b = start_controller(&kc, &id_b, None, &["--max-concurrent-exports", "1"]);
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let ready = |name: &'static str| {
        let des = des.clone();
        async move {
            wait_for("Ready", 120, || async {
                let de = des.get(name).await.ok()?;
                (de.status?.phase == Some(svdm_api::Phase::Ready)).then_some(())
            })
            .await
        }
    };

    // A PVC export runs (controller A).
    let (_pv, _) = make_provisioned_pvc(&client, &ns, "Filesystem").await;
    create_export(
        &client,
        &ns,
        "de-pvc",
        &id_a,
        "1h",
        "PersistentVolumeClaim",
        "data",
    )
    .await;
    ready("de-pvc").await;

    // A snapshot export under the limit of 1 waits for it (controller B), touching nothing.
    let vss = ready_snapshot(&client, &ns, "Filesystem", "16Mi").await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    create_export(
        &client,
        &ns,
        "de-snap-b",
        &id_b,
        "1h",
        "VolumeSnapshot",
        "snap",
    )
    .await;
    let message = wait_limit_reached(&des, "de-snap-b").await;
    assert!(
        message.contains("running, the module's limit is 1;"),
        "{message}"
    );
    let uid = des.get("de-snap-b").await.expect("de").uid().expect("uid");
    let restored: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let obj = svdm_controller::objects::object_name(&uid);
    assert!(restored.get_opt(&obj).await.expect("get").is_none());
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar("VolumeSnapshotContent", "volumesnapshotcontents"),
    );
    assert!(
        contents
            .get_opt(&svdm_controller::objects::snapshot_content_name(&uid))
            .await
            .expect("get")
            .is_none()
    );
    let v = vss.get("snap").await.expect("snap");
    assert!(
        !v.finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_SNAPSHOT_PROTECTION),
        "a held snapshot export must not protect the snapshot"
    );

    // A snapshot export runs (controller A); the PVC export ends.
    create_export(
        &client,
        &ns,
        "de-snap-a",
        &id_a,
        "1h",
        "VolumeSnapshot",
        "snap",
    )
    .await;
    ready("de-snap-a").await;
    delete_export_and_wait(&client, &ns, "de-pvc", 90).await;

    // Now a PVC export under the limit waits for the snapshot export, touching nothing.
    create_export(
        &client,
        &ns,
        "de-pvc-b",
        &id_b,
        "1h",
        "PersistentVolumeClaim",
        "data",
    )
    .await;
    let message = wait_limit_reached(&des, "de-pvc-b").await;
    assert!(
        message.contains("running, the module's limit is 1;"),
        "{message}"
    );
    let user = pvcs.get("data").await.expect("data");
    assert!(
        !user
            .finalizers()
            .iter()
            .any(|f| f.starts_with(names::PREFIX)),
        "a held PVC export must not protect the PVC: {:?}",
        user.finalizers()
    );

    for name in ["de-pvc-b", "de-snap-b", "de-snap-a"] {
        delete_export(&client, &ns, name).await;
    }
    for name in ["de-pvc-b", "de-snap-b", "de-snap-a"] {
        wait_gone(&client, &ns, name, 90).await;
    }
    ctl_a.stop().await;
    ctl_b.stop().await;
    delete_namespace(&client, &ns).await;
}
