//! Module-disabled hook (afterDeleteHelm): gives every exported PersistentVolume back to its user
//! PersistentVolumeClaim and releases everything the module held, so nothing is left `Lost` or
//! stuck behind a finalizer once the controller is gone.
//!
//! The controller's return (crates/controller `handover::next_step`, DESIGN §3.1) is async over
//! the API and waits between steps; a hook cannot wait, it emits object-patch operations that
//! addon-operator applies in order after the run. So this is the same return order, decided purely
//! from the snapshots, in one pass:
//!
//! 1. delete exporter pods, then export PVCs in the module namespace (`Delete` waits for them);
//! 2. per exported PV whose record is complete and whose user PVC still exists with the recorded
//!    uid: point `claimRef` back at the user PVC (uid) while the PV is still `Retain`;
//! 3. restore the original reclaim policy, guarded by a JSON Patch `test` that `claimRef` carries the
//!    user PVC's uid. The controller waits for `Bound` before this step; the hook cannot, and does
//!    not need to for safety: the user PVC exists with that uid (our finalizer keeps it, and is
//!    removed only in step 4), and the PV controller never reclaims a volume whose `claimRef` names
//!    an existing claim with a matching uid;
//! 4. remove our finalizer, annotations and labels from the user PVC;
//! 5. clear the PV's record, the tracking label last (same write);
//! 6. release DataExport finalizers.
//!
//! A PV whose record does not add up is never guessed at: it keeps `Retain`, gets the
//! inconsistent label, and the hook reports it on stderr (the data is safe; an administrator
//! finishes the return, see docs/FAQ.md).
//!
//! Not covered (documented gap): VolumeSnapshot restores. Binding to `snapshot.storage.k8s.io`
//! kinds would break hook registration in clusters without the snapshot CRDs; the copied
//! VolumeSnapshotContents (deletionPolicy Retain) and the protection finalizer on the user's
//! VolumeSnapshot are left for the controller's orphan sweep when the module is enabled again.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::names;
use crate::protocol::{Hook, HookError, Input, Output};

pub const PV_BINDING: &str = "exported_pvs";
pub const PVC_BINDING: &str = "pvcs";
pub const POD_BINDING: &str = "exporter_pods";
pub const DATAEXPORT_BINDING: &str = "dataexports";

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
}

/// Namespace, name and finalizers (pods, DataExports).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ObjView {
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub finalizers: Vec<String>,
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
        // The PVC binding sees only PVCs with our label. Without it the return had already
        // restored the policy and released the PVC: only the PV's record is left to clear.
        None if pv.claim_ref.as_ref() == Some(&claim)
            && pv.reclaim_policy.as_deref() == Some(policy.as_str()) =>
        {
            clear_record(out, &pv.name);
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

    // 2. Retain first (if someone changed it), then claimRef back to the user PVC with its uid.
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
    // 3. The original reclaim policy, only while claimRef carries the user PVC's uid.
    out.kube(json!({
        "operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume", "name": pv.name,
        "jsonPatch": [
            {"op": "test", "path": "/spec/claimRef/uid", "value": claim.uid},
            {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": policy},
        ],
    }));
    // 4. The user PVC: our finalizer, owner annotations and labels.
    out.kube(json!({
        "operation": "JQPatch", "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "namespace": claim.namespace, "name": claim.name,
        "jqFilter": format!(
            r#".metadata.finalizers = ((.metadata.finalizers // []) | map(select(. != "{fin}"))) | del(.metadata.annotations["{a}"], .metadata.annotations["{b}"], .metadata.annotations["{c}"], .metadata.labels["{d}"], .metadata.labels["{e}"])"#,
            fin = names::FINALIZER_PVC_PROTECTION,
            a = names::ANN_OWNER_NAMESPACE,
            b = names::ANN_OWNER_NAME,
            c = names::ANN_OWNER_UID,
            d = names::LABEL_MANAGED,
            e = names::LABEL_DATAEXPORT_UID,
        ),
        "ignoreMissingObject": true,
    }));
    // 5. The PV's record; the tracking label goes in the same write, never before.
    clear_record(out, &pv.name);
    PvOutcome::Returned
}

fn clear_record(out: &mut Output, pv: &str) {
    let mut annotations = serde_json::Map::new();
    for k in [
        names::ANN_OWNER_NAMESPACE,
        names::ANN_OWNER_NAME,
        names::ANN_OWNER_UID,
        names::ANN_PV_ORIGINAL_RECLAIM_POLICY,
        names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE,
        names::ANN_PV_ORIGINAL_CLAIM_NAME,
        names::ANN_PV_ORIGINAL_CLAIM_UID,
    ] {
        annotations.insert(k.to_owned(), Value::Null);
    }
    out.kube(json!({
        "operation": "MergePatch", "apiVersion": "v1", "kind": "PersistentVolume", "name": pv,
        "mergePatch": {"metadata": {
            "annotations": annotations,
            "labels": {names::LABEL_DATAEXPORT_UID: null, names::LABEL_MANAGED: null, names::LABEL_PV_EXPORTED: null},
        }},
    }));
}

pub struct DisableHook;

impl DisableHook {
    /// The whole plan; returns the per-PV outcomes.
    pub fn plan(&self, input: &Input, out: &mut Output) -> Vec<(String, PvOutcome)> {
        let pvs: Vec<PvView> = parse(input, PV_BINDING);
        let pvcs: Vec<PvcView> = parse(input, PVC_BINDING);
        let pods: Vec<ObjView> = parse(input, POD_BINDING);
        let exports: Vec<ObjView> = parse(input, DATAEXPORT_BINDING);

        // 1. Exporter pods, then export PVCs (which wait for their pods through pvc-protection).
        for p in &pods {
            out.kube(json!({
                "operation": "Delete", "apiVersion": "v1", "kind": "Pod",
                "namespace": names::MODULE_NAMESPACE, "name": p.name,
            }));
        }
        for p in pvcs.iter().filter(|p| {
            p.namespace == names::MODULE_NAMESPACE
                && p.labels.get(names::LABEL_MANAGED).map(String::as_str) == Some("true")
        }) {
            out.kube(json!({
                "operation": "Delete", "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": names::MODULE_NAMESPACE, "name": p.name,
            }));
        }
        // 2-5. Every exported PV.
        let mut outcomes = Vec::new();
        for pv in &pvs {
            outcomes.push((pv.name.clone(), return_pv(pv, &pvcs, out)));
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
            out.kube(json!({
                "operation": "JQPatch", "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": p.namespace, "name": p.name,
                "jqFilter": format!(
                    r#".metadata.finalizers = ((.metadata.finalizers // []) | map(select(. != "{fin}"))) | del(.metadata.annotations["{a}"], .metadata.annotations["{b}"], .metadata.annotations["{c}"], .metadata.labels["{d}"], .metadata.labels["{e}"])"#,
                    fin = names::FINALIZER_PVC_PROTECTION,
                    a = names::ANN_OWNER_NAMESPACE,
                    b = names::ANN_OWNER_NAME,
                    c = names::ANN_OWNER_UID,
                    d = names::LABEL_MANAGED,
                    e = names::LABEL_DATAEXPORT_UID,
                ),
                "ignoreMissingObject": true,
            }));
        }
        // 6. DataExports: nothing holds anything for them any more.
        for e in exports.iter().filter(|e| {
            e.finalizers
                .iter()
                .any(|f| f == names::FINALIZER_DATAEXPORT)
        }) {
            out.kube(json!({
                "operation": "JQPatch", "apiVersion": format!("{}/{}", names::GROUP, names::VERSION),
                "kind": "DataExport", "namespace": e.namespace, "name": e.name,
                "jqFilter": format!(
                    r#".metadata.finalizers = ((.metadata.finalizers // []) | map(select(. != "{}")))"#,
                    names::FINALIZER_DATAEXPORT
                ),
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
            r#"{"name": .metadata.name, "claimRef": (.spec.claimRef // null | if . == null then null else {namespace, name, uid} end), "reclaimPolicy": .spec.persistentVolumeReclaimPolicy, "annotations": (.metadata.annotations // {}), "labels": (.metadata.labels // {})}"#,
        );
        pvs["labelSelector"] = json!({"matchLabels": {names::LABEL_PV_EXPORTED: "true"}});
        let mut pvcs = common(
            PVC_BINDING,
            "v1",
            "PersistentVolumeClaim",
            r#"{"namespace": .metadata.namespace, "name": .metadata.name, "uid": .metadata.uid, "phase": .status.phase, "volumeName": .spec.volumeName, "finalizers": (.metadata.finalizers // []), "labels": (.metadata.labels // {}), "annotations": {}}"#,
        );
        pvcs["labelSelector"] = json!({"matchLabels": {names::LABEL_MANAGED: "true"}});
        let mut pods = common(
            POD_BINDING,
            "v1",
            "Pod",
            r#"{"namespace": .metadata.namespace, "name": .metadata.name}"#,
        );
        pods["namespace"] = json!({"nameSelector": {"matchNames": [names::MODULE_NAMESPACE]}});
        pods["labelSelector"] = json!({"matchLabels": {names::LABEL_MANAGED: "true"}});
        let exports = common(
            DATAEXPORT_BINDING,
            &format!("{}/{}", names::GROUP, names::VERSION),
            "DataExport",
            r#"{"namespace": .metadata.namespace, "name": .metadata.name, "finalizers": (.metadata.finalizers // [])}"#,
        );
        json!({"afterDeleteHelm": 10, "kubernetes": [pvs, pvcs, pods, exports]})
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
