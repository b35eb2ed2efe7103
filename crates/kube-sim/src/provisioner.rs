//! The external-provisioner and the driver's controller plugin: PVCs of our StorageClasses get a volume and
//! a PV pre-bound to them (the real PV controller then binds), Released PVs with reclaim policy `Delete` lose
//! their data and their PV. Block volumes' loop devices are re-attached when the simulator restarts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::error::{Error, Result, is_conflict};
use crate::quantity::parse_bytes;
use crate::snapshot_api::{VolumeSnapshot, VolumeSnapshotContent};
use crate::storage::{VolumeLocation, VolumeMode};
use crate::{ANN_LOOP, ANN_NODE, ANN_PATH, ANN_PROVISIONED_BY, DRIVER, Sim};

const ANN_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const ANN_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What a PVC asks this node to provision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionRequest {
    pub pv_name: String,
    pub handle: String,
    pub mode: VolumeMode,
    pub capacity: String,
    pub size_bytes: u64,
    /// Name of a VolumeSnapshot (same namespace) to restore from.
    pub from_snapshot: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PvcDecision {
    /// Not ours, not yet, or already done.
    Ignore,
    Provision(ProvisionRequest),
    /// Ours but impossible as asked; reported on the PVC.
    Fail(String),
}

fn ann<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether and what to provision for `pvc`, given its StorageClass.
///
/// `pinned_only`: serve only classes whose `allowedTopologies` name nodes (a private test node must not
/// take claims meant for the shared one).
pub fn decide_pvc(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    pinned_only: bool,
) -> PvcDecision {
    let meta = &pvc.metadata;
    let names_us = ann(meta, ANN_PROVISIONER).or(ann(meta, ANN_PROVISIONER_BETA)) == Some(DRIVER);
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
        == "Pending";
    let Some(spec) = pvc.spec.as_ref() else {
        return PvcDecision::Ignore;
    };
    if !names_us
        || class.provisioner != DRIVER
        || !pending
        || meta.deletion_timestamp.is_some()
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
    {
        return PvcDecision::Ignore;
    }
    let wffc = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    match ann(meta, ANN_SELECTED_NODE) {
        Some(selected) if selected != node => return PvcDecision::Ignore,
        None if wffc => return PvcDecision::Ignore,
        _ => {}
    }
    if !topology_allows(class, node) || (pinned_only && !class_pinned(class)) {
        return PvcDecision::Ignore;
    }
    let Some(uid) = meta.uid.as_deref() else {
        return PvcDecision::Ignore;
    };
    let Some(capacity) = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    else {
        return PvcDecision::Fail("the claim has no storage request".into());
    };
    let Some(size_bytes) = parse_bytes(&capacity.0) else {
        return PvcDecision::Fail(format!("cannot parse storage request {:?}", capacity.0));
    };
    let data_source = spec
        .data_source_ref
        .as_ref()
        .map(|r| (r.api_group.as_deref(), r.kind.as_str(), r.name.as_str()));
    let data_source = data_source.or(spec
        .data_source
        .as_ref()
        .map(|r| (r.api_group.as_deref(), r.kind.as_str(), r.name.as_str())));
    let from_snapshot = match data_source {
        None => None,
        Some((Some("snapshot.storage.k8s.io"), "VolumeSnapshot", name)) => Some(name.to_string()),
        Some((group, kind, _)) => {
            return PvcDecision::Fail(format!(
                "data source {}/{kind} is not supported by {DRIVER} (only VolumeSnapshot)",
                group.unwrap_or("core")
            ));
        }
    };
    PvcDecision::Provision(ProvisionRequest {
        pv_name: format!("pvc-{uid}"),
        handle: format!("vol-{uid}"),
        mode: VolumeMode::from_field(spec.volume_mode.as_deref()),
        capacity: capacity.0.clone(),
        size_bytes,
        from_snapshot,
    })
}

/// Whether the class's `allowedTopologies` (on `kubernetes.io/hostname`, the only key this driver
/// reports) admit `node`. No restriction admits every node.
pub fn topology_allows(class: &StorageClass, node: &str) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    terms.iter().any(|term| {
        term.match_label_expressions
            .iter()
            .flatten()
            .all(|e| e.key != "kubernetes.io/hostname" || e.values.iter().any(|v| v == node))
    })
}

/// Whether the class restricts `kubernetes.io/hostname` at all.
pub fn class_pinned(class: &StorageClass) -> bool {
    class.allowed_topologies.iter().flatten().any(|t| {
        t.match_label_expressions
            .iter()
            .flatten()
            .any(|e| e.key == "kubernetes.io/hostname")
    })
}

/// The PV for a provisioned volume: CSI source, pre-bound to the claim, pinned to this node.
pub fn pv_object(
    req: &ProvisionRequest,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    loc: &VolumeLocation,
) -> Value {
    let spec = pvc.spec.clone().unwrap_or_default();
    let mut annotations = json!({
        ANN_PROVISIONED_BY: DRIVER,
        ANN_NODE: node,
        ANN_PATH: loc.path.to_string_lossy(),
    });
    if let Some(dev) = &loc.loop_device {
        annotations[ANN_LOOP] = json!(dev);
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": req.pv_name, "annotations": annotations},
        "spec": {
            "capacity": {"storage": req.capacity},
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "volumeMode": req.mode.as_str(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "mountOptions": class.mount_options,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": pvc.metadata.namespace,
                "name": pvc.metadata.name,
                "uid": pvc.metadata.uid
            },
            "csi": {"driver": DRIVER, "volumeHandle": req.handle, "volumeAttributes": {ANN_NODE: node}},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
            ]}]}}
        }
    })
}

/// Where a PV provisioned by this simulator keeps its data (from its annotations).
pub fn location_of(pv: &PersistentVolume) -> Option<VolumeLocation> {
    let path = ann(&pv.metadata, ANN_PATH)?;
    let mode = VolumeMode::from_field(pv.spec.as_ref()?.volume_mode.as_deref());
    Some(VolumeLocation {
        mode,
        path: path.into(),
        loop_device: ann(&pv.metadata, ANN_LOOP).map(str::to_string),
    })
}

/// Whether `pv` belongs to this node's simulated driver.
pub fn is_ours(pv: &PersistentVolume, node: &str) -> bool {
    let csi_ours = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .is_some_and(|c| c.driver == DRIVER);
    csi_ours
        && ann(&pv.metadata, ANN_PROVISIONED_BY) == Some(DRIVER)
        && ann(&pv.metadata, ANN_NODE) == Some(node)
}

/// Whether the PV's node affinity (on `kubernetes.io/hostname`) admits `node`; none admits every node.
fn affinity_allows(pv: &PersistentVolume, node: &str) -> bool {
    let terms = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_default();
    terms.is_empty()
        || terms.iter().any(|t| {
            t.match_expressions.iter().flatten().all(|e| {
                e.key != "kubernetes.io/hostname"
                    || (e.operator == "In" && e.values.iter().flatten().any(|v| v == node))
            })
        })
}

/// A pre-provisioned ("static") PV of our driver that this simulator did not create: its volume handle
/// names a volume in this node's store. Returns the handle, volume mode and capacity in bytes.
/// With `pinned_only`, only PVs whose node affinity names this node qualify.
pub fn static_volume(
    pv: &PersistentVolume,
    node: &str,
    pinned_only: bool,
) -> Option<(String, VolumeMode, u64)> {
    let spec = pv.spec.as_ref()?;
    let csi = spec.csi.as_ref().filter(|c| c.driver == DRIVER)?;
    let pinned = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .is_some();
    if ann(&pv.metadata, ANN_PATH).is_some()
        || !affinity_allows(pv, node)
        || (pinned_only && !pinned)
    {
        return None;
    }
    let size = spec
        .capacity
        .as_ref()
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_bytes(&q.0))?;
    let mode = VolumeMode::from_field(spec.volume_mode.as_deref());
    Some((csi.volume_handle.clone(), mode, size))
}

/// Where this node keeps the data of `pv`, or `None` when the PV is not served here. Static PVs get an
/// empty volume in the store the first time they are used (like a disk the admin created by hand); Block
/// volumes get their loop device attached.
pub async fn host_location(sim: &Sim, pv: &PersistentVolume) -> Result<Option<VolumeLocation>> {
    let node = &sim.config.node_name;
    let store = sim.store.clone();
    let wanted = if is_ours(pv, node) {
        match location_of(pv) {
            Some(loc) => Some((loc, None)),
            None => return Ok(None),
        }
    } else if let Some((handle, mode, size)) = static_volume(pv, node, sim.config.pinned_only) {
        let loc = VolumeLocation {
            mode,
            path: PathBuf::new(),
            loop_device: None,
        };
        Some((loc, Some((handle, size))))
    } else {
        None
    };
    let Some((loc, create)) = wanted else {
        return Ok(None);
    };
    let loc = tokio::task::spawn_blocking(move || -> Result<VolumeLocation> {
        match create {
            Some((handle, size)) => store.create_volume(&handle, loc.mode, size, None),
            None if loc.mode == VolumeMode::Block => {
                let dev = crate::storage::attach_loop(&loc.path)?;
                Ok(VolumeLocation {
                    loop_device: Some(dev),
                    ..loc
                })
            }
            None => Ok(loc),
        }
    })
    .await
    .map_err(|e| Error::NotReady(e.to_string()))??;
    Ok(Some(loc))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvDecision {
    Ignore,
    /// A live Block volume: make sure its loop device exists.
    EnsureAttached,
    /// Released with reclaim policy Delete: remove the data, then the PV.
    Delete,
}

pub fn decide_pv(pv: &PersistentVolume, node: &str) -> PvDecision {
    if !is_ours(pv, node) {
        return PvDecision::Ignore;
    }
    let spec = pv.spec.as_ref();
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let reclaim = spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    if phase == Some("Released") && reclaim == Some("Delete") {
        return PvDecision::Delete;
    }
    if pv.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.volume_mode.as_deref()) == Some("Block")
    {
        return PvDecision::EnsureAttached;
    }
    PvDecision::Ignore
}

async fn event(
    sim: &Sim,
    pvc: &PersistentVolumeClaim,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Provisioning".into(),
        secondary: None,
    };
    if let Err(e) = sim.recorder.publish(&ev, &pvc.object_ref(&())).await {
        log::debug!("cannot publish event: {e}");
    }
}

/// Find the snapshot handle a restore reads from, checking what the external-provisioner checks.
async fn snapshot_handle(
    sim: &Sim,
    pvc: &PersistentVolumeClaim,
    req: &ProvisionRequest,
    vs_name: &str,
) -> Result<String> {
    let ns = pvc.namespace().unwrap_or_default();
    let vs = Api::<VolumeSnapshot>::namespaced(sim.client.clone(), &ns)
        .get_opt(vs_name)
        .await?
        .ok_or_else(|| Error::NotReady(format!("VolumeSnapshot {ns}/{vs_name} not found")))?;
    let status = vs.status.unwrap_or_default();
    let content_name = match (
        status.ready_to_use,
        status.bound_volume_snapshot_content_name,
    ) {
        (Some(true), Some(name)) => name,
        _ => {
            return Err(Error::NotReady(format!(
                "VolumeSnapshot {ns}/{vs_name} is not ready to use"
            )));
        }
    };
    let content = Api::<VolumeSnapshotContent>::all(sim.client.clone())
        .get(&content_name)
        .await?;
    if content.spec.driver != DRIVER {
        return Err(Error::Unsupported(format!(
            "snapshot content {content_name} belongs to driver {}",
            content.spec.driver
        )));
    }
    let handle = content
        .status
        .and_then(|s| s.snapshot_handle)
        .ok_or_else(|| {
            Error::NotReady(format!("snapshot content {content_name} has no handle yet"))
        })?;
    let store = sim.store.clone();
    let h = handle.clone();
    let meta = tokio::task::spawn_blocking(move || store.snapshot(&h))
        .await
        .map_err(|e| Error::NotReady(e.to_string()))??
        .ok_or_else(|| {
            Error::Unsupported(format!("snapshot {handle} is not in this node's store"))
        })?;
    if meta.mode != req.mode {
        return Err(Error::Unsupported(format!(
            "snapshot {vs_name} is of a {} volume; the claim asks for {}",
            meta.mode.as_str(),
            req.mode.as_str()
        )));
    }
    if meta.size_bytes > req.size_bytes {
        return Err(Error::Unsupported(format!(
            "the claim requests {} bytes, less than the snapshot's restore size {}",
            req.size_bytes, meta.size_bytes
        )));
    }
    Ok(handle)
}

async fn provision(
    sim: &Sim,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    req: ProvisionRequest,
) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(sim.client.clone());
    if pvs.get_opt(&req.pv_name).await?.is_some() {
        return Ok(()); // Done before; the binder will bind it.
    }
    let snapshot = match &req.from_snapshot {
        Some(vs) => Some(snapshot_handle(sim, pvc, &req, vs).await?),
        None => None,
    };
    let store = sim.store.clone();
    let (handle, mode, size) = (req.handle.clone(), req.mode, req.size_bytes);
    let loc = tokio::task::spawn_blocking(move || {
        store.create_volume(&handle, mode, size, snapshot.as_deref())
    })
    .await
    .map_err(|e| Error::NotReady(e.to_string()))??;
    let pv: PersistentVolume =
        serde_json::from_value(pv_object(&req, pvc, class, &sim.config.node_name, &loc))?;
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            log::info!(
                "provisioned {} for {}/{} at {}",
                req.pv_name,
                pvc.namespace().unwrap_or_default(),
                pvc.name_any(),
                loc.path.display()
            );
            event(
                sim,
                pvc,
                EventType::Normal,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {}", req.pv_name),
            )
            .await;
            Ok(())
        }
        Err(e) => {
            // Someone else (another simulated node) won, or the API failed: do not leak our copy.
            let store = sim.store.clone();
            let cleanup = tokio::task::spawn_blocking(move || store.delete_volume(&loc)).await;
            if let Ok(Err(err)) = cleanup {
                log::warn!("cannot clean up unused volume: {err}");
            }
            if is_conflict(&e) {
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

async fn reconcile_pvc(pvc: Arc<PersistentVolumeClaim>, sim: Arc<Sim>) -> Result<Action> {
    let class_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let names_us = [ANN_PROVISIONER, ANN_PROVISIONER_BETA]
        .iter()
        .any(|k| ann(&pvc.metadata, k) == Some(DRIVER));
    if class_name.is_empty() || !names_us {
        return Ok(Action::await_change());
    }
    let Some(class) = Api::<StorageClass>::all(sim.client.clone())
        .get_opt(&class_name)
        .await?
    else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    match decide_pvc(&pvc, &class, &sim.config.node_name, sim.config.pinned_only) {
        PvcDecision::Ignore => Ok(Action::await_change()),
        PvcDecision::Fail(msg) => {
            event(&sim, &pvc, EventType::Warning, "ProvisioningFailed", msg).await;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        PvcDecision::Provision(req) => match provision(&sim, &pvc, &class, req).await {
            Ok(()) => Ok(Action::await_change()),
            Err(e @ (Error::NotReady(_) | Error::Unsupported(_))) => {
                event(
                    &sim,
                    &pvc,
                    EventType::Warning,
                    "ProvisioningFailed",
                    e.to_string(),
                )
                .await;
                Ok(Action::requeue(Duration::from_secs(3)))
            }
            Err(e) => Err(e),
        },
    }
}

async fn reconcile_pv(pv: Arc<PersistentVolume>, sim: Arc<Sim>) -> Result<Action> {
    let node = &sim.config.node_name;
    let pvs: Api<PersistentVolume> = Api::all(sim.client.clone());
    match decide_pv(&pv, node) {
        PvDecision::Ignore => Ok(Action::await_change()),
        PvDecision::EnsureAttached => {
            let Some(loc) = location_of(&pv) else {
                return Ok(Action::await_change());
            };
            let path = loc.path.clone();
            let dev = tokio::task::spawn_blocking(move || crate::storage::attach_loop(&path))
                .await
                .map_err(|e| Error::NotReady(e.to_string()))??;
            if loc.loop_device.as_deref() != Some(dev.as_str()) {
                log::info!("PV {}: loop device is now {dev}", pv.name_any());
                let patch = json!({"metadata": {"annotations": {ANN_LOOP: dev}}});
                pvs.patch(
                    &pv.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await?;
            }
            Ok(Action::await_change())
        }
        PvDecision::Delete => {
            // Decide again on fresh state: never delete data on a cached view of a PV.
            let Some(fresh) = pvs.get_opt(&pv.name_any()).await? else {
                return Ok(Action::await_change());
            };
            if decide_pv(&fresh, node) != PvDecision::Delete {
                return Ok(Action::await_change());
            }
            if let Some(loc) = location_of(&fresh) {
                let store = sim.store.clone();
                tokio::task::spawn_blocking(move || store.delete_volume(&loc))
                    .await
                    .map_err(|e| Error::NotReady(e.to_string()))??;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: fresh.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pvs.delete(&fresh.name_any(), &dp).await {
                Ok(_) => log::info!("deleted released PV {} and its data", fresh.name_any()),
                Err(e) if crate::error::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
    }
}

fn error_policy<K>(_obj: Arc<K>, err: &Error, _sim: Arc<Sim>) -> Action {
    log::warn!("provisioner: {err}");
    Action::requeue(Duration::from_secs(5))
}

pub async fn run(sim: Arc<Sim>) {
    let pvcs = Controller::new(
        Api::<PersistentVolumeClaim>::all(sim.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_pvc, error_policy, sim.clone())
    .for_each(|_| async {});
    let pvs = Controller::new(
        Api::<PersistentVolume>::all(sim.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_pv, error_policy, sim.clone())
    .for_each(|_| async {});
    futures::join!(pvcs, pvs);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(mode: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "svdm-sim"}, "provisioner": DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": mode
        }))
        .expect("valid class")
    }

    fn pvc(extra_ann: Value, spec_extra: Value) -> PersistentVolumeClaim {
        let mut annotations = json!({ANN_PROVISIONER: DRIVER});
        if let (Some(a), Some(e)) = (annotations.as_object_mut(), extra_ann.as_object()) {
            a.extend(e.clone());
        }
        let mut spec = json!({
            "storageClassName": "svdm-sim", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "64Mi"}}
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), spec_extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u1", "annotations": annotations},
            "spec": spec, "status": {"phase": "Pending"}
        }))
        .expect("valid pvc")
    }

    #[test]
    fn provisions_pending_claims_naming_our_driver() {
        let d = decide_pvc(&pvc(json!({}), json!({})), &class("Immediate"), "n1", false);
        let PvcDecision::Provision(req) = d else {
            panic!("expected provisioning, got {d:?}")
        };
        assert_eq!(req.pv_name, "pvc-u1");
        assert_eq!(req.handle, "vol-u1");
        assert_eq!(req.size_bytes, 64 << 20);
        assert_eq!(req.mode, VolumeMode::Filesystem);
        assert_eq!(req.from_snapshot, None);
    }

    #[test]
    fn ignores_bound_foreign_and_unselected_claims() {
        let bound = pvc(json!({}), json!({"volumeName": "pv-x"}));
        assert_eq!(
            decide_pvc(&bound, &class("Immediate"), "n1", false),
            PvcDecision::Ignore
        );
        let other_driver = pvc(json!({ANN_PROVISIONER: "other.csi"}), json!({}));
        assert_eq!(
            decide_pvc(&other_driver, &class("Immediate"), "n1", false),
            PvcDecision::Ignore
        );
        let wffc_unselected = pvc(json!({}), json!({}));
        assert_eq!(
            decide_pvc(
                &wffc_unselected,
                &class("WaitForFirstConsumer"),
                "n1",
                false
            ),
            PvcDecision::Ignore
        );
        let elsewhere = pvc(json!({ANN_SELECTED_NODE: "n2"}), json!({}));
        assert_eq!(
            decide_pvc(&elsewhere, &class("WaitForFirstConsumer"), "n1", false),
            PvcDecision::Ignore
        );
        let here = pvc(
            json!({ANN_SELECTED_NODE: "n1"}),
            json!({"volumeMode": "Block"}),
        );
        assert!(matches!(
            decide_pvc(&here, &class("WaitForFirstConsumer"), "n1", false),
            PvcDecision::Provision(ProvisionRequest {
                mode: VolumeMode::Block,
                ..
            })
        ));
    }

    #[test]
    fn restores_only_from_volume_snapshots() {
        let restore = pvc(
            json!({}),
            json!({"dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}}),
        );
        assert!(matches!(
            decide_pvc(&restore, &class("Immediate"), "n1", false),
            PvcDecision::Provision(ProvisionRequest { from_snapshot: Some(ref s), .. }) if s == "snap"
        ));
        let clone = pvc(
            json!({}),
            json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "other"}}),
        );
        assert!(matches!(
            decide_pvc(&clone, &class("Immediate"), "n1", false),
            PvcDecision::Fail(_)
        ));
    }

    #[test]
    fn allowed_topologies_pin_a_class_to_nodes() {
        let mut c = class("Immediate");
        assert!(topology_allows(&c, "n1"));
        c = serde_json::from_value(json!({
            "metadata": {"name": "pinned"}, "provisioner": DRIVER,
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "kubernetes.io/hostname", "values": ["n2"]}]}]
        }))
        .expect("valid class");
        assert!(!topology_allows(&c, "n1"));
        assert!(topology_allows(&c, "n2"));
        assert_eq!(
            decide_pvc(&pvc(json!({}), json!({})), &c, "n1", false),
            PvcDecision::Ignore
        );
        // A private node serves only pinned classes.
        let claim = pvc(json!({}), json!({}));
        assert!(matches!(
            decide_pvc(&claim, &c, "n2", true),
            PvcDecision::Provision(_)
        ));
        assert_eq!(
            decide_pvc(&claim, &class("Immediate"), "n2", true),
            PvcDecision::Ignore
        );
    }

    #[test]
    fn static_pvs_of_our_driver_are_served_where_affinity_allows() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "static"},
            "spec": {"capacity": {"storage": "1Mi"}, "volumeMode": "Block",
                     "csi": {"driver": DRIVER, "volumeHandle": "handmade"}}
        }))
        .expect("valid pv");
        assert_eq!(
            static_volume(&pv, "n1", false),
            Some(("handmade".into(), VolumeMode::Block, 1 << 20))
        );
        let mut pinned = pv.clone();
        if let Some(spec) = pinned.spec.as_mut() {
            spec.node_affinity = serde_json::from_value(json!({"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}
            ]}}))
            .expect("valid affinity");
        }
        assert_eq!(static_volume(&pinned, "n1", false), None);
        assert!(static_volume(&pinned, "n2", false).is_some());
        let provisioned = super::tests::pv("Bound", "Delete", "Filesystem", "n1");
        assert_eq!(static_volume(&provisioned, "n1", false), None);
        assert_eq!(static_volume(&pv, "n1", true), None);
        assert!(static_volume(&pinned, "n2", true).is_some());
    }

    fn pv(phase: &str, reclaim: &str, mode: &str, node: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-u1", "annotations": {ANN_PROVISIONED_BY: DRIVER, ANN_NODE: node, ANN_PATH: "/x"}},
            "spec": {"persistentVolumeReclaimPolicy": reclaim, "volumeMode": mode, "csi": {"driver": DRIVER, "volumeHandle": "vol-u1"}},
            "status": {"phase": phase}
        }))
        .expect("valid pv")
    }

    #[test]
    fn deletes_only_released_delete_volumes_of_this_node() {
        assert_eq!(
            decide_pv(&pv("Released", "Delete", "Filesystem", "n1"), "n1"),
            PvDecision::Delete
        );
        assert_eq!(
            decide_pv(&pv("Released", "Retain", "Filesystem", "n1"), "n1"),
            PvDecision::Ignore
        );
        assert_eq!(
            decide_pv(&pv("Bound", "Delete", "Filesystem", "n1"), "n1"),
            PvDecision::Ignore
        );
        assert_eq!(
            decide_pv(&pv("Bound", "Delete", "Block", "n1"), "n1"),
            PvDecision::EnsureAttached
        );
        assert_eq!(
            decide_pv(&pv("Released", "Delete", "Filesystem", "n2"), "n1"),
            PvDecision::Ignore
        );
    }
}
