//! Module-disabled hook (afterDeleteHelm): gives every exported PersistentVolume back to its user
//! PersistentVolumeClaim and releases everything the module held, so nothing is left `Lost`,
//! stranded in the module namespace, or stuck behind a finalizer once the controller is gone.
//!
//! This run may be the last one ever: after it no controller and no orphan sweep runs. So it does
//! the controller's whole return (crates/controller `handover::return_step` and
//! `snapshot::return_step`; docs/development/ARCHITECTURE.md) in one pass, decided purely from
//! the snapshots, as object-patch operations that addon-operator applies in order after the run.
//! It never waits: deletions are requested in the background and the API server, the garbage
//! collector, the PV binder and the snapshot-controller finish them without the module.
//!
//! 1. per exported PV whose record is complete and whose user PVC still exists with the recorded
//!    uid: point `claimRef` back at the user PVC (uid) while the PV is still `Retain`. This comes
//!    before any export PVC delete: once `claimRef` names the user PVC, deleting the export PVC
//!    only turns it `Lost` and never releases the PV;
//! 2. restore the original reclaim policy and clear the PV's record (annotations and tracking
//!    label) in one JSON Patch guarded by `test` operations on the live PV: `status.phase` is
//!    `Bound` and `spec.claimRef.uid` is the user PVC's. A `Released` PV under `Delete` is deleted
//!    with its data by the CSI external-provisioner whatever `claimRef` says, and the PV is
//!    `Released` if the export PVC's deletion was processed before the rebind (e.g. the
//!    controller deleted it just before the module was disabled). The controller waits for
//!    `Bound`; the hook cannot wait, so the API server checks, atomically with the write. A failed
//!    `test` fails the operation and the run, and addon-operator retries it (see
//!    `restore_and_clear`); the PV keeps `Retain` and its record meanwhile. An original policy
//!    of `Retain` needs no guard;
//! 3. remove our finalizer, annotations and labels from the user PVC;
//! 4. VolumeSnapshot exports: release our protection finalizer on the user's VolumeSnapshot (the
//!    controller's return does the same; the snapshot itself is never touched otherwise);
//! 5. delete the exporter objects (Ingress, Pod, Service, Lease, Secrets) and the module's PVCs
//!    (export PVCs and restored PVCs);
//! 6. VolumeSnapshot exports: pin the copied VolumeSnapshotContent to `deletionPolicy: Retain`
//!    (deleting a copy must never delete the snapshot it shares with the user's), then delete the
//!    copied VolumeSnapshot and content;
//! 7. release DataExport finalizers, so DataExports, their namespaces and the CRD can be deleted.
//!
//! Running it again is harmless: every operation is a no-op on a returned object (deletes of
//! missing objects succeed, patches ignore missing objects, a rebind already done is not
//! repeated, a restored policy is left alone), and a run whose guarded restore failed is finished
//! by the retry: the PV still carries its record and tracking label.
//!
//! A PV whose record does not add up is never guessed at: it keeps `Retain`, gets the
//! inconsistent label, and the hook reports it on stderr (the data is safe; an administrator
//! finishes the return, see docs/FAQ.md).
//!
//! Snapshot kinds cannot be bound: a binding to a kind the API server does not serve breaks the
//! module's hook registration in clusters without the snapshot CRDs. The hook therefore learns of
//! snapshot exports from what it can always see (DataExports targeting a VolumeSnapshot, restored
//! PVCs recording their source snapshot), derives the copies' names from the DataExport uid as the
//! controller does, and emits operations on snapshot kinds only when it sees the snapshot CRDs
//! (a binding on CustomResourceDefinition), since an operation on an unknown kind fails the run.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::names;
use crate::protocol::{Hook, HookError, Input, Output};

pub const PV_BINDING: &str = "exported_pvs";
pub const PVC_BINDING: &str = "pvcs";
pub const POD_BINDING: &str = "exporter_pods";
pub const DATAEXPORT_BINDING: &str = "dataexports";
pub const SERVICE_BINDING: &str = "exporter_services";
pub const SECRET_BINDING: &str = "exporter_secrets";
pub const LEASE_BINDING: &str = "exporter_leases";
pub const INGRESS_BINDING: &str = "exporter_ingresses";
pub const SNAPSHOT_CRD_BINDING: &str = "snapshot_crds";

/// The snapshot API (snapshot.storage.k8s.io/v1) the controller's snapshot exports use.
pub const SNAPSHOT_API_VERSION: &str = "snapshot.storage.k8s.io/v1";
/// CRDs that must both be served before the hook emits operations on snapshot kinds.
pub const SNAPSHOT_CRDS: &[&str] = &[
    "volumesnapshots.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
];
/// `spec.targetRef.kind` of a DataExport of a VolumeSnapshot.
const KIND_VOLUME_SNAPSHOT: &str = "VolumeSnapshot";

/// Reclaim policies a recorded original may name; anything else is an inconsistency.
pub(crate) const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain", "Recycle"];

/// A claim reference.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Claim {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

/// What the PV bindings' jq filters return (this hook's and the migration's).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PvView {
    pub name: String,
    #[serde(default, rename = "claimRef")]
    pub claim_ref: Option<Claim>,
    #[serde(default, rename = "reclaimPolicy")]
    pub reclaim_policy: Option<String>,
    /// `status.phase` as the snapshot saw it (informational: the restore is guarded on the live
    /// object, never decided from this).
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What the PVC binding's jq filter returns.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PvcView {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "volumeName")]
    pub volume_name: Option<String>,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `<namespace>/<name>` of the user's VolumeSnapshot a restored PVC was made from.
    #[serde(default, rename = "sourceSnapshot")]
    pub source_snapshot: Option<String>,
}

/// Namespace, name and finalizers (exporter objects, DataExports); uid and target for DataExports.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ObjView {
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default, rename = "targetKind")]
    pub target_kind: Option<String>,
    #[serde(default, rename = "targetName")]
    pub target_name: Option<String>,
}

pub use svdm_api::names::{ingress_tls_secret_name, object_name, snapshot_content_name};

/// A VolumeSnapshot export to tear down: the DataExport uid and, when known, the user's snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotExport {
    pub uid: String,
    pub source: Option<(String, String)>,
}

/// The outcome for one PV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PvOutcome {
    Returned,
    Inconsistent(String),
}

fn parse<T: for<'de> Deserialize<'de>>(input: &Input, binding: &str) -> Vec<T> {
    input
        .snapshot(binding)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

fn claim_json(c: &Claim) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": c.namespace, "name": c.name, "uid": c.uid})
}

fn record(pv: &PvView) -> Result<(Claim, String), String> {
    let a = |k: &str| pv.annotations.get(k).cloned().unwrap_or_default();
    let policy = a(names::ANN_PV_ORIGINAL_RECLAIM_POLICY);
    if !RECLAIM_POLICIES.contains(&policy.as_str()) {
        return Err(format!(
            "PV {} records no valid original reclaim policy ({policy:?})",
            pv.name
        ));
    }
    let claim = Claim {
        namespace: a(names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE),
        name: a(names::ANN_PV_ORIGINAL_CLAIM_NAME),
        uid: a(names::ANN_PV_ORIGINAL_CLAIM_UID),
    };
    if claim.namespace.is_empty() || claim.name.is_empty() || claim.uid.is_empty() {
        return Err(format!(
            "PV {} records an incomplete original claim (namespace, name, uid)",
            pv.name
        ));
    }
    Ok((claim, policy))
}

fn mark_inconsistent(out: &mut Output, pv: &str) {
    out.kube(json!({
        "operation": "MergePatch",
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "name": pv,
        "mergePatch": {"metadata": {"labels": {names::LABEL_PV_INCONSISTENT: "true"}}},
        "ignoreMissingObject": true,
    }));
}

/// The operations returning one PV; pure.
pub fn return_pv(pv: &PvView, pvcs: &[PvcView], out: &mut Output) -> PvOutcome {
    if pv.labels.contains_key(names::LABEL_PV_INCONSISTENT) {
        return PvOutcome::Inconsistent(format!(
            "PV {} is labelled inconsistent; left untouched",
            pv.name
        ));
    }
    let (claim, policy) = match record(pv) {
        Ok(r) => r,
        Err(why) => {
            mark_inconsistent(out, &pv.name);
            return PvOutcome::Inconsistent(why);
        }
    };
    let user = pvcs
        .iter()
        .find(|p| p.namespace == claim.namespace && p.name == claim.name);
    match user {
        Some(u) if u.uid == claim.uid => {}
        Some(u) => {
            mark_inconsistent(out, &pv.name);
            return PvOutcome::Inconsistent(format!(
                "PV {}: PVC {}/{} now has uid {}, not the recorded {}; the PV keeps reclaim policy Retain",
                pv.name, claim.namespace, claim.name, u.uid, claim.uid
            ));
        }
        // The PVC binding sees only PVCs with our label. Without it, an earlier run already
        // rebound the PV and released the user PVC: either it also restored the policy (only the
        // record is left to clear) or its guarded restore failed because the PV was not Bound
        // yet (restore now, guarded again: the `test` on the live PV decides).
        None if pv.claim_ref.as_ref() == Some(&claim) => {
            restore_and_clear(out, pv, &claim, &policy);
            return PvOutcome::Returned;
        }
        None => {
            mark_inconsistent(out, &pv.name);
            return PvOutcome::Inconsistent(format!(
                "PV {}: its PVC {}/{} no longer exists; the PV keeps reclaim policy Retain",
                pv.name, claim.namespace, claim.name
            ));
        }
    }

    // Rebind: Retain first (if someone changed it), then claimRef back to the user PVC with its
    // uid. Emitted before any export PVC delete: once claimRef names the user PVC, deleting the
    // export PVC only turns it `Lost` and never releases the PV.
    let mut ops = Vec::new();
    if pv.reclaim_policy.as_deref() != Some("Retain") && pv.claim_ref.as_ref() != Some(&claim) {
        ops.push(json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Retain"}));
    }
    if pv.claim_ref.as_ref() != Some(&claim) {
        ops.push(json!({"op": "add", "path": "/spec/claimRef", "value": claim_json(&claim)}));
    }
    if !ops.is_empty() {
        out.kube(json!({
            "operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume",
            "name": pv.name, "jsonPatch": ops,
        }));
    }
    // Restore the original policy (guarded) and clear the record in the same write.
    let rebound = PvView {
        claim_ref: Some(claim.clone()),
        reclaim_policy: if ops.is_empty() {
            pv.reclaim_policy.clone()
        } else {
            Some("Retain".to_owned())
        },
        ..pv.clone()
    };
    restore_and_clear(out, &rebound, &claim, &policy);
    // The user PVC: our finalizer, owner annotations and labels. After the restore, but not
    // atomic with it: addon-operator applies the remaining operations even when an earlier one
    // fails, so a retry may no longer see this PVC through the binding (see the `None` arm above).
    unprotect_pvc(out, &claim.namespace, &claim.name);
    PvOutcome::Returned
}

/// `true` for a reclaim policy under which the volume's storage is reclaimed (and its data lost)
/// once the PV is `Released`: `Delete` (the CSI external-provisioner deletes it, whatever
/// `claimRef` says) and `Recycle` (scrubbed).
fn reclaims_data(policy: &str) -> bool {
    policy != "Retain"
}

/// Record keys on a returned PV (annotations, then labels); all go in the write that restores
/// the policy, never before it: a retry needs the recorded policy, and the tracking label is how
/// it finds the PV.
const PV_RECORD_ANNOTATIONS: &[&str] = &[
    names::ANN_OWNER_NAMESPACE,
    names::ANN_OWNER_NAME,
    names::ANN_OWNER_UID,
    names::ANN_PV_ORIGINAL_RECLAIM_POLICY,
    names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE,
    names::ANN_PV_ORIGINAL_CLAIM_NAME,
    names::ANN_PV_ORIGINAL_CLAIM_UID,
];
const PV_RECORD_LABELS: &[&str] = &[
    names::LABEL_DATAEXPORT_UID,
    names::LABEL_MANAGED,
    names::LABEL_PV_EXPORTED,
];

/// RFC 6901 escaping of one JSON Pointer segment.
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The restore of the original reclaim policy on a PV whose claimRef already names (or, earlier
/// in the same run, is set to) the user PVC, together with clearing the record.
///
/// A PV that is `Released` under `Delete` is deleted with its data by the CSI external-provisioner,
/// which does not look at claimRef. The PV turns `Released` when the export PVC's deletion is
/// processed while claimRef still names it (the controller deleted it just before the module was
/// disabled, or the binder handles that before the rebind); it is `Bound` again only once the PV
/// binder has synced the rebind to the user PVC. The hook cannot wait for that, so the check is
/// left to the API server, atomically with the write: a JSON Patch whose first operations `test`
/// that `status.phase` is `Bound` and `spec.claimRef.uid` is the user PVC's, on the live object.
/// If either fails the whole patch is rejected (the PV keeps `Retain` and its record), the
/// operation fails and so does the hook run. deckhouse-conventions.md §3.9: "A non-zero exit is a
/// hook error. The task is retried with backoff and blocks its queue." (§3.7: the operations are
/// applied by addon-operator after the hook exits; in shell-operator's ObjectPatcher a failed
/// operation is collected and returned as the run's error, the remaining operations are still
/// applied.) The retry runs on fresh snapshots: a rebind already done is not repeated, and this
/// patch is emitted again until the PV is Bound and the policy restored; a PV whose policy was
/// restored is then left alone (only a left-over record is cleared). Whatever the retries do, a
/// PV that is not Bound to the user PVC never gets `Delete` back: `Retain` is the safe state.
fn restore_and_clear(out: &mut Output, pv: &PvView, claim: &Claim, policy: &str) {
    let restored = pv.reclaim_policy.as_deref() == Some(policy);
    if restored || !reclaims_data(policy) {
        // Nothing to guard: the policy is what it was, or `Retain` (already set by the rebind).
        clear_record(out, &pv.name);
        return;
    }
    let mut ops = vec![
        json!({"op": "test", "path": "/status/phase", "value": "Bound"}),
        json!({"op": "test", "path": "/spec/claimRef/uid", "value": claim.uid}),
        json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": policy}),
    ];
    // Only keys the snapshot shows (a `remove` of a missing key fails the patch; if the live
    // object differs, the retry sees it).
    for k in PV_RECORD_ANNOTATIONS
        .iter()
        .filter(|k| pv.annotations.contains_key(**k))
    {
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", pointer_segment(k))}));
    }
    for k in PV_RECORD_LABELS
        .iter()
        .filter(|k| pv.labels.contains_key(**k))
    {
        ops.push(
            json!({"op": "remove", "path": format!("/metadata/labels/{}", pointer_segment(k))}),
        );
    }
    out.kube(json!({
        "operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume",
        "name": pv.name, "jsonPatch": ops,
    }));
}

fn clear_record(out: &mut Output, pv: &str) {
    let annotations: serde_json::Map<String, Value> = PV_RECORD_ANNOTATIONS
        .iter()
        .map(|k| ((*k).to_owned(), Value::Null))
        .collect();
    let labels: serde_json::Map<String, Value> = PV_RECORD_LABELS
        .iter()
        .map(|k| ((*k).to_owned(), Value::Null))
        .collect();
    out.kube(json!({
        "operation": "MergePatch", "apiVersion": "v1", "kind": "PersistentVolume", "name": pv,
        "mergePatch": {"metadata": {"annotations": annotations, "labels": labels}},
    }));
}

/// `.metadata.finalizers` without `finalizer`, for a JQPatch (GET, jq, UPDATE: nothing else changes).
fn drop_finalizer_jq(finalizer: &str) -> String {
    format!(
        r#".metadata.finalizers = ((.metadata.finalizers // []) | map(select(. != "{finalizer}")))"#
    )
}

/// Releases a user PVC: our finalizer, owner annotations and labels (nothing else).
fn unprotect_pvc(out: &mut Output, namespace: &str, name: &str) {
    out.kube(json!({
        "operation": "JQPatch", "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "namespace": namespace, "name": name,
        "jqFilter": format!(
            r#"{} | del(.metadata.annotations["{a}"], .metadata.annotations["{b}"], .metadata.annotations["{c}"], .metadata.annotations["{f}"], .metadata.labels["{d}"], .metadata.labels["{e}"])"#,
            drop_finalizer_jq(names::FINALIZER_PVC_PROTECTION),
            a = names::ANN_OWNER_NAMESPACE,
            b = names::ANN_OWNER_NAME,
            c = names::ANN_OWNER_UID,
            f = names::ANN_BIND_REQUESTED,
            d = names::LABEL_MANAGED,
            e = names::LABEL_DATAEXPORT_UID,
        ),
        "ignoreMissingObject": true,
    }));
}

/// A background delete: requested now, finished by the API server and the controllers without
/// the module (a foreground `Delete` would block the run for up to 20 s per object and fail it
/// when e.g. a pod on a lost node never goes away).
fn delete(out: &mut Output, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
    let mut op = json!({
        "operation": "DeleteInBackground", "apiVersion": api_version, "kind": kind, "name": name,
    });
    if let Some(ns) = namespace {
        op["namespace"] = json!(ns);
    }
    out.kube(op);
}

fn split_source(s: &str) -> Option<(String, String)> {
    s.split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .map(|(ns, n)| (ns.to_owned(), n.to_owned()))
}

/// The VolumeSnapshot exports to tear down, from DataExports that target a VolumeSnapshot and from
/// restored PVCs (which record their source snapshot; they outlive a DataExport whose finalizer
/// was removed by hand). Every DataExport counts, with or without our finalizer: a teardown that
/// already finished makes the operations no-ops, and one interrupted after the finalizer was
/// released is finished too.
pub fn snapshot_exports(exports: &[ObjView], pvcs: &[PvcView]) -> Vec<SnapshotExport> {
    let mut found: BTreeMap<String, Option<(String, String)>> = BTreeMap::new();
    for e in exports
        .iter()
        .filter(|e| e.target_kind.as_deref() == Some(KIND_VOLUME_SNAPSHOT) && !e.uid.is_empty())
    {
        let source = e
            .target_name
            .as_ref()
            .filter(|n| !n.is_empty() && !e.namespace.is_empty())
            .map(|n| (e.namespace.clone(), n.clone()));
        found.insert(e.uid.clone(), source);
    }
    for p in pvcs
        .iter()
        .filter(|p| p.namespace == names::MODULE_NAMESPACE)
    {
        let (Some(src), Some(uid)) = (
            p.source_snapshot.as_deref(),
            p.labels.get(names::LABEL_DATAEXPORT_UID),
        ) else {
            continue;
        };
        let entry = found.entry(uid.clone()).or_default();
        if entry.is_none() {
            *entry = split_source(src);
        }
    }
    found
        .into_iter()
        .map(|(uid, source)| SnapshotExport { uid, source })
        .collect()
}

pub struct DisableHook;

impl DisableHook {
    /// The whole plan; returns the per-PV outcomes.
    pub fn plan(&self, input: &Input, out: &mut Output) -> Vec<(String, PvOutcome)> {
        let pvs: Vec<PvView> = parse(input, PV_BINDING);
        let pvcs: Vec<PvcView> = parse(input, PVC_BINDING);
        let pods: Vec<ObjView> = parse(input, POD_BINDING);
        let exports: Vec<ObjView> = parse(input, DATAEXPORT_BINDING);
        let services: Vec<ObjView> = parse(input, SERVICE_BINDING);
        let secrets: Vec<ObjView> = parse(input, SECRET_BINDING);
        let leases: Vec<ObjView> = parse(input, LEASE_BINDING);
        let ingresses: Vec<ObjView> = parse(input, INGRESS_BINDING);
        let crds: Vec<ObjView> = parse(input, SNAPSHOT_CRD_BINDING);
        let snapshot_api = SNAPSHOT_CRDS
            .iter()
            .all(|c| crds.iter().any(|o| o.name == *c));
        let snaps = snapshot_exports(&exports, &pvcs);
        if !snaps.is_empty() && !snapshot_api {
            // Without the CRDs no copy can exist (the controller could not have made one), and an
            // operation on an unknown kind would fail the run: nothing to do for them.
            eprintln!(
                "{} VolumeSnapshot export(s) but no snapshot API: no copies to remove",
                snaps.len()
            );
        }
        let snaps: &[SnapshotExport] = if snapshot_api { &snaps } else { &[] };

        // 1-3. Every exported PV first: rebind to the user PVC, then the guarded restore, then
        //      the user PVC released. Before any export PVC delete, so a PV still bound to its
        //      export PVC is rebound before that PVC's deletion could release it.
        let mut outcomes = Vec::new();
        for pv in &pvs {
            outcomes.push((pv.name.clone(), return_pv(pv, &pvcs, out)));
        }

        // 4. The user's VolumeSnapshot, as the controller's return does: the protection is
        //    only needed while a restore is in progress, and nothing restores any more.
        for sx in snaps {
            if let Some((ns, name)) = &sx.source {
                out.kube(json!({
                    "operation": "JQPatch", "apiVersion": SNAPSHOT_API_VERSION,
                    "kind": "VolumeSnapshot", "namespace": ns, "name": name,
                    "jqFilter": drop_finalizer_jq(names::FINALIZER_SNAPSHOT_PROTECTION),
                    "ignoreMissingObject": true,
                }));
            }
        }

        // 5. Exporter objects (the controller's `exporter::delete_all` order), then the module's
        //    PVCs: export PVCs (kept from deletion by pvc-protection until their pod is gone) and
        //    restored PVCs.
        let ns = Some(names::MODULE_NAMESPACE);
        for o in &ingresses {
            delete(out, "networking.k8s.io/v1", "Ingress", ns, &o.name);
        }
        for o in &pods {
            delete(out, "v1", "Pod", ns, &o.name);
        }
        for o in &services {
            delete(out, "v1", "Service", ns, &o.name);
        }
        for o in &leases {
            delete(out, "coordination.k8s.io/v1", "Lease", ns, &o.name);
        }
        let mut secret_names: BTreeSet<String> = secrets.iter().map(|o| o.name.clone()).collect();
        // Every DataExport the cluster still knows of may have published through an Ingress.
        let uids: BTreeSet<&str> = exports
            .iter()
            .map(|e| e.uid.as_str())
            .chain(ingresses.iter().map(|o| o.uid.as_str()))
            .filter(|u| !u.is_empty())
            .collect();
        for uid in uids {
            secret_names.insert(ingress_tls_secret_name(uid));
        }
        for name in &secret_names {
            delete(out, "v1", "Secret", ns, name);
        }
        for p in pvcs.iter().filter(|p| {
            p.namespace == names::MODULE_NAMESPACE
                && p.labels.get(names::LABEL_MANAGED).map(String::as_str) == Some("true")
        }) {
            delete(out, "v1", "PersistentVolumeClaim", ns, &p.name);
        }

        // 6. Snapshot copies: Retain before any delete, so that neither deleting the copied
        //    VolumeSnapshot (the snapshot-controller deletes a `Delete` content with it) nor
        //    deleting the content can remove the snapshot the user's content also points at.
        for sx in snaps {
            let content = snapshot_content_name(&sx.uid);
            out.kube(json!({
                "operation": "MergePatch", "apiVersion": SNAPSHOT_API_VERSION,
                "kind": "VolumeSnapshotContent", "name": content,
                "mergePatch": {"spec": {"deletionPolicy": "Retain"}},
                "ignoreMissingObject": true,
            }));
            delete(
                out,
                SNAPSHOT_API_VERSION,
                "VolumeSnapshot",
                ns,
                &object_name(&sx.uid),
            );
            delete(
                out,
                SNAPSHOT_API_VERSION,
                "VolumeSnapshotContent",
                None,
                &content,
            );
        }

        // A user PVC still protected by us whose PV carries no record (the handover stopped
        // before the PV was recorded, or the return after it was cleared): just release it.
        for p in pvcs.iter().filter(|p| {
            p.namespace != names::MODULE_NAMESPACE
                && p.finalizers
                    .iter()
                    .any(|f| f == names::FINALIZER_PVC_PROTECTION)
                && !pvs.iter().any(|pv| {
                    record(pv)
                        .map(|(c, _)| c.namespace == p.namespace && c.name == p.name)
                        .unwrap_or(false)
                        || p.volume_name.as_deref() == Some(pv.name.as_str())
                })
        }) {
            unprotect_pvc(out, &p.namespace, &p.name);
        }
        // 7. DataExports: nothing holds anything for them any more.
        for e in exports.iter().filter(|e| {
            e.finalizers
                .iter()
                .any(|f| f == names::FINALIZER_DATAEXPORT)
        }) {
            out.kube(json!({
                "operation": "JQPatch", "apiVersion": format!("{}/{}", names::GROUP, names::VERSION),
                "kind": "DataExport", "namespace": e.namespace, "name": e.name,
                "jqFilter": drop_finalizer_jq(names::FINALIZER_DATAEXPORT),
                "ignoreMissingObject": true,
            }));
        }
        outcomes
    }
}

impl Hook for DisableHook {
    fn name(&self) -> &'static str {
        "module-disabled"
    }

    fn config(&self) -> Value {
        let common = |name: &str, api: &str, kind: &str, jq: &str| {
            json!({
                "name": name, "apiVersion": api, "kind": kind,
                "executeHookOnEvent": false, "executeHookOnSynchronization": false,
                "keepFullObjectsInMemory": false, "jqFilter": jq,
            })
        };
        let mut pvs = common(
            PV_BINDING,
            "v1",
            "PersistentVolume",
            r#"{"name": .metadata.name, "claimRef": (.spec.claimRef // null | if . == null then null else {namespace, name, uid} end), "reclaimPolicy": .spec.persistentVolumeReclaimPolicy, "phase": .status.phase, "annotations": (.metadata.annotations // {}), "labels": (.metadata.labels // {})}"#,
        );
        pvs["labelSelector"] = json!({"matchLabels": {names::LABEL_PV_EXPORTED: "true"}});
        let mut pvcs = common(
            PVC_BINDING,
            "v1",
            "PersistentVolumeClaim",
            &format!(
                r#"{{"namespace": .metadata.namespace, "name": .metadata.name, "uid": .metadata.uid, "phase": .status.phase, "volumeName": .spec.volumeName, "finalizers": (.metadata.finalizers // []), "labels": (.metadata.labels // {{}}), "annotations": {{}}, "sourceSnapshot": (.metadata.annotations // {{}})["{}"]}}"#,
                names::ANN_SOURCE_SNAPSHOT
            ),
        );
        pvcs["labelSelector"] = json!({"matchLabels": {names::LABEL_MANAGED: "true"}});
        // Exporter objects: everything the controller labels in the module namespace.
        let module_objects = |name: &str, api: &str, kind: &str| {
            let mut b = common(
                name,
                api,
                kind,
                &format!(
                    r#"{{"namespace": .metadata.namespace, "name": .metadata.name, "uid": ((.metadata.labels // {{}})["{}"] // "")}}"#,
                    names::LABEL_DATAEXPORT_UID
                ),
            );
            b["namespace"] = json!({"nameSelector": {"matchNames": [names::MODULE_NAMESPACE]}});
            b["labelSelector"] = json!({"matchLabels": {names::LABEL_MANAGED: "true"}});
            b
        };
        let pods = module_objects(POD_BINDING, "v1", "Pod");
        let services = module_objects(SERVICE_BINDING, "v1", "Service");
        let secrets = module_objects(SECRET_BINDING, "v1", "Secret");
        let leases = module_objects(LEASE_BINDING, "coordination.k8s.io/v1", "Lease");
        let ingresses = module_objects(INGRESS_BINDING, "networking.k8s.io/v1", "Ingress");
        let exports = common(
            DATAEXPORT_BINDING,
            &format!("{}/{}", names::GROUP, names::VERSION),
            "DataExport",
            r#"{"namespace": .metadata.namespace, "name": .metadata.name, "uid": .metadata.uid, "finalizers": (.metadata.finalizers // []), "targetKind": .spec.targetRef.kind, "targetName": .spec.targetRef.name}"#,
        );
        // CustomResourceDefinition is always served, unlike the snapshot kinds themselves.
        let mut crds = common(
            SNAPSHOT_CRD_BINDING,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            r#"{"name": .metadata.name}"#,
        );
        crds["nameSelector"] = json!({"matchNames": SNAPSHOT_CRDS});
        json!({"afterDeleteHelm": 10, "kubernetes": [pvs, pvcs, pods, exports, services, secrets, leases, ingresses, crds]})
    }

    fn run(&self, input: &Input, output: &mut Output) -> Result<(), HookError> {
        for (pv, outcome) in self.plan(input, output) {
            match outcome {
                PvOutcome::Returned => eprintln!("PV {pv}: returned to its PVC"),
                PvOutcome::Inconsistent(why) => eprintln!("{why}"),
            }
        }
        Ok(())
    }
}
