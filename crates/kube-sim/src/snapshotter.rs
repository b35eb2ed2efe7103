//! The csi-snapshotter sidecar and the driver's snapshot calls. The real snapshot-controller binds
//! VolumeSnapshots to VolumeSnapshotContents; this acts on contents whose `spec.driver` is ours:
//! cuts dynamic snapshots, checks pre-provisioned handles, and deletes snapshot data on content deletion.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result};
use crate::provisioner::host_location;
use crate::quantity::parse_bytes;
use crate::snapshot_api::VolumeSnapshotContent;
use crate::{DRIVER, Sim};

const ANN_BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
const ANN_BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentAction {
    Ignore,
    /// Dynamic snapshot: copy volume `volume_handle` to `snapshot_handle`.
    Create {
        snapshot_handle: String,
        volume_handle: String,
    },
    /// Pre-provisioned content: report on `snapshot_handle` from the store.
    Import {
        snapshot_handle: String,
    },
    /// Deletion with policy Delete: remove the data, then our finalizer.
    Delete {
        snapshot_handle: String,
    },
    /// Deletion with nothing (left) to delete.
    RemoveFinalizer,
}

pub fn decide_content(c: &VolumeSnapshotContent) -> ContentAction {
    if c.spec.driver != DRIVER {
        return ContentAction::Ignore;
    }
    let status = c.status.clone().unwrap_or_default();
    let annotated = |key: &str| {
        c.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(key))
    };
    if c.metadata.deletion_timestamp.is_some() {
        let unbound_pre_provisioned = c.spec.source.snapshot_handle.is_some()
            && c.spec
                .volume_snapshot_ref
                .uid
                .as_deref()
                .unwrap_or("")
                .is_empty();
        if !(annotated(ANN_BEING_DELETED) || unbound_pre_provisioned) {
            return ContentAction::Ignore;
        }
        return match status.snapshot_handle {
            Some(handle) if c.spec.deletion_policy == "Delete" => ContentAction::Delete {
                snapshot_handle: handle,
            },
            _ if c.finalizers().iter().any(|f| f == CONTENT_FINALIZER) => {
                ContentAction::RemoveFinalizer
            }
            _ => ContentAction::Ignore,
        };
    }
    if status.error.is_some() {
        return ContentAction::Ignore;
    }
    if let Some(volume_handle) = &c.spec.source.volume_handle {
        if status.snapshot_handle.is_some() {
            return ContentAction::Ignore;
        }
        let id = c
            .spec
            .volume_snapshot_ref
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| c.name_any());
        return ContentAction::Create {
            snapshot_handle: format!("snapshot-{id}"),
            volume_handle: volume_handle.clone(),
        };
    }
    if let Some(handle) = &c.spec.source.snapshot_handle
        && status.ready_to_use != Some(true)
    {
        return ContentAction::Import {
            snapshot_handle: handle.clone(),
        };
    }
    ContentAction::Ignore
}

async fn set_status(
    api: &Api<VolumeSnapshotContent>,
    name: &str,
    status: serde_json::Value,
) -> Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

async fn set_error(api: &Api<VolumeSnapshotContent>, name: &str, message: &str) -> Result<()> {
    log::warn!("snapshot content {name}: {message}");
    let now = jiff::Timestamp::now().to_string();
    set_status(
        api,
        name,
        json!({"readyToUse": false, "error": {"message": message, "time": now}}),
    )
    .await
}

async fn annotate(
    api: &Api<VolumeSnapshotContent>,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn create(
    sim: &Sim,
    api: &Api<VolumeSnapshotContent>,
    c: &VolumeSnapshotContent,
    snap: String,
    volume: String,
) -> Result<()> {
    let name = c.name_any();
    let pvs = Api::<PersistentVolume>::all(sim.client.clone())
        .list(&ListParams::default())
        .await?;
    let source = pvs.items.into_iter().find(|pv| {
        pv.spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .is_some_and(|c| c.driver == DRIVER && c.volume_handle == volume)
    });
    let Some(pv) = source else {
        return set_error(api, &name, &format!("source volume {volume} not found")).await;
    };
    let Some(loc) = host_location(sim, &pv).await? else {
        return Ok(()); // Another simulated node's volume.
    };
    let size = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_bytes(&q.0))
        .unwrap_or(0);
    annotate(api, &name, ANN_BEING_CREATED, Some("yes")).await?;
    let store = sim.store.clone();
    let handle = snap.clone();
    let cut =
        tokio::task::spawn_blocking(move || store.create_snapshot(&handle, &loc, &volume, size))
            .await
            .map_err(|e| Error::NotReady(e.to_string()))?;
    let meta = match cut {
        Ok(meta) => meta,
        Err(e) => {
            set_error(api, &name, &format!("cannot copy the volume: {e}")).await?;
            return annotate(api, &name, ANN_BEING_CREATED, None).await;
        }
    };
    set_status(
        api,
        &name,
        json!({
            "snapshotHandle": snap,
            "readyToUse": true,
            "restoreSize": meta.size_bytes,
            "creationTime": meta.created_nanos
        }),
    )
    .await?;
    annotate(api, &name, ANN_BEING_CREATED, None).await?;
    log::info!(
        "snapshot content {name}: cut {snap} ({} bytes)",
        meta.size_bytes
    );
    Ok(())
}

async fn import(
    sim: &Sim,
    api: &Api<VolumeSnapshotContent>,
    name: &str,
    handle: String,
) -> Result<()> {
    let store = sim.store.clone();
    let h = handle.clone();
    let meta = tokio::task::spawn_blocking(move || store.snapshot(&h))
        .await
        .map_err(|e| Error::NotReady(e.to_string()))??;
    match meta {
        Some(meta) => {
            let status = json!({
                "snapshotHandle": handle,
                "readyToUse": true,
                "restoreSize": meta.size_bytes,
                "creationTime": meta.created_nanos
            });
            set_status(api, name, status).await
        }
        // Several simulated nodes each have their own store: only a lone node reports absence.
        None if other_sim_nodes(sim).await? => Ok(()),
        None => {
            set_error(
                api,
                name,
                &format!("snapshot {handle} does not exist in the {DRIVER} store"),
            )
            .await
        }
    }
}

async fn other_sim_nodes(sim: &Sim) -> Result<bool> {
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(sim.client.clone())
        .list(&ListParams::default().labels("sim.svdm.dev/node=true"))
        .await?;
    Ok(nodes
        .items
        .iter()
        .any(|n| n.name_any() != sim.config.node_name))
}

async fn remove_finalizer(
    api: &Api<VolumeSnapshotContent>,
    c: &VolumeSnapshotContent,
) -> Result<()> {
    let kept: Vec<&String> = c
        .finalizers()
        .iter()
        .filter(|f| *f != CONTENT_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": c.resource_version()}});
    api.patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn reconcile(c: Arc<VolumeSnapshotContent>, sim: Arc<Sim>) -> Result<Action> {
    match act(&c, &sim).await {
        // The content went away while we worked on it (the snapshot-controller deleted it): done.
        Err(Error::Kube(e)) if crate::error::is_not_found(&e) => Ok(Action::await_change()),
        other => other,
    }
}

async fn act(c: &VolumeSnapshotContent, sim: &Sim) -> Result<Action> {
    let api: Api<VolumeSnapshotContent> = Api::all(sim.client.clone());
    let name = c.name_any();
    match decide_content(c) {
        ContentAction::Ignore => return Ok(Action::await_change()),
        ContentAction::Create {
            snapshot_handle,
            volume_handle,
        } => create(sim, &api, c, snapshot_handle, volume_handle).await?,
        ContentAction::Import { snapshot_handle } => {
            import(sim, &api, &name, snapshot_handle).await?
        }
        ContentAction::Delete { snapshot_handle } => {
            let store = sim.store.clone();
            let h = snapshot_handle.clone();
            tokio::task::spawn_blocking(move || store.delete_snapshot(&h))
                .await
                .map_err(|e| Error::NotReady(e.to_string()))??;
            log::info!("snapshot content {name}: deleted snapshot data {snapshot_handle}");
            remove_finalizer(&api, c).await?;
        }
        ContentAction::RemoveFinalizer => remove_finalizer(&api, c).await?,
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

fn error_policy(_c: Arc<VolumeSnapshotContent>, err: &Error, _sim: Arc<Sim>) -> Action {
    log::warn!("snapshotter: {err}");
    Action::requeue(Duration::from_secs(5))
}

pub async fn run(sim: Arc<Sim>) {
    let api: Api<VolumeSnapshotContent> = Api::all(sim.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, sim)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(v: serde_json::Value) -> VolumeSnapshotContent {
        serde_json::from_value(v).expect("valid content")
    }

    #[test]
    fn dynamic_content_is_cut_once() {
        let mut c = content(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-1"},
            "spec": {"driver": DRIVER, "deletionPolicy": "Delete", "source": {"volumeHandle": "vol-1"},
                     "volumeSnapshotRef": {"name": "s", "namespace": "ns", "uid": "vs-uid"}}
        }));
        assert_eq!(
            decide_content(&c),
            ContentAction::Create {
                snapshot_handle: "snapshot-vs-uid".into(),
                volume_handle: "vol-1".into()
            }
        );
        c.status = Some(crate::snapshot_api::VolumeSnapshotContentStatus {
            snapshot_handle: Some("snapshot-vs-uid".into()),
            ready_to_use: Some(true),
            ..Default::default()
        });
        assert_eq!(decide_content(&c), ContentAction::Ignore);
        c.spec.driver = "other".into();
        assert_eq!(decide_content(&c), ContentAction::Ignore);
    }

    #[test]
    fn deletion_follows_policy_and_annotation() {
        let base = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z",
                         "finalizers": [CONTENT_FINALIZER], "annotations": {ANN_BEING_DELETED: "yes"}},
            "spec": {"driver": DRIVER, "deletionPolicy": "Delete", "source": {"volumeHandle": "vol-1"},
                     "volumeSnapshotRef": {"uid": "x"}},
            "status": {"snapshotHandle": "snap-1", "readyToUse": true}
        });
        assert_eq!(
            decide_content(&content(base.clone())),
            ContentAction::Delete {
                snapshot_handle: "snap-1".into()
            }
        );
        let mut retain = base.clone();
        retain["spec"]["deletionPolicy"] = json!("Retain");
        assert_eq!(
            decide_content(&content(retain)),
            ContentAction::RemoveFinalizer
        );
        let mut not_yet = base;
        not_yet["metadata"]["annotations"] = json!({});
        assert_eq!(decide_content(&content(not_yet)), ContentAction::Ignore);
    }

    #[test]
    fn pre_provisioned_content_is_checked() {
        let c = content(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "c"},
            "spec": {"driver": DRIVER, "deletionPolicy": "Retain", "source": {"snapshotHandle": "snap-1"},
                     "volumeSnapshotRef": {"name": "s", "namespace": "ns"}}
        }));
        assert_eq!(
            decide_content(&c),
            ContentAction::Import {
                snapshot_handle: "snap-1".into()
            }
        );
    }
}
