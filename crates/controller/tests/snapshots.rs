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

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let src: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "src"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "64Mi"}},
            "storageClassName": "svdm-sim",
            "volumeMode": "Block",
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
    let vss: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ar("VolumeSnapshot", "volumesnapshots"),
    );
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

    delete_export(&client, &ns, "de1").await;
    wait_gone(&client, &ns, "de1", 90).await;
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
