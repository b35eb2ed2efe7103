//! Cluster objects a CSI driver installation brings: the CSIDriver, the StorageClasses, the
//! VolumeSnapshotClass, and this node's CSINode. Created when absent, never overwritten.

use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Result, is_conflict, is_not_found};
use crate::{DRIVER, SNAPSHOT_CLASS, STORAGE_CLASS, STORAGE_CLASS_WFFC};

async fn create_if_absent<K>(api: &Api<K>, object: serde_json::Value) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            log::info!("created {}", name);
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn install_driver_and_classes(client: &kube::Client) -> Result<()> {
    create_if_absent(
        &Api::<CSIDriver>::all(client.clone()),
        json!({
            "metadata": {"name": DRIVER},
            "spec": {"attachRequired": false, "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"]}
        }),
    )
    .await?;
    let classes = Api::<StorageClass>::all(client.clone());
    for (name, mode) in [
        (STORAGE_CLASS, "Immediate"),
        (STORAGE_CLASS_WFFC, "WaitForFirstConsumer"),
    ] {
        create_if_absent(
            &classes,
            json!({
                "metadata": {"name": name},
                "provisioner": DRIVER,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": mode,
                "allowVolumeExpansion": false
            }),
        )
        .await?;
    }

    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass");
    let snapshot_classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let class = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {
            "name": SNAPSHOT_CLASS,
            "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}
        },
        "driver": DRIVER,
        "deletionPolicy": "Delete"
    });
    match create_if_absent(&snapshot_classes, class).await {
        Err(crate::error::Error::Kube(e)) if is_not_found(&e) => {
            log::warn!("VolumeSnapshotClass API is not installed; snapshots will not work");
            Ok(())
        }
        other => other,
    }
}

/// The CSINode the kubelet registers for a node once the driver's node plugin is up; owned by the Node so
/// the garbage collector removes it with the Node.
pub async fn register_csinode(client: &kube::Client, node: &str, node_uid: &str) -> Result<()> {
    create_if_absent(
        &Api::<CSINode>::all(client.clone()),
        json!({
            "metadata": {
                "name": node,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
            },
            "spec": {"drivers": [{"name": DRIVER, "nodeID": node, "topologyKeys": ["kubernetes.io/hostname"]}]}
        }),
    )
    .await
}
