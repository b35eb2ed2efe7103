//! Migration from the earlier (Go) implementation of this module (docs/development/ARCHITECTURE.md,
//! "Hooks").
//!
//! The earlier controller left, for every export: a Deployment `deploy-for-<kind>-<hash>`, a Service,
//! an Ingress and a CA Secret (`service-for-…`, `ingress-for-…`, `ca-secret-for-…`) and the export
//! PVC `pvc-for-<kind>-<hash>` in the module namespace; on the PV the annotations
//! `storage.deckhouse.io/original-pvc-{namespace,name}`, `…/original-reclaim-policy` (and others) and
//! the label `storage.deckhouse.io/data-exporter=true`, with `claimRef` pointing at the export PVC;
//! on the user PVC the finalizer `storage.deckhouse.io/storage-manager-controller` and the annotation
//! `storage.deckhouse.io/data-export-in-progress`; on DataExports the same finalizer, and for expired
//! ones the condition `Expired=True` without a `Ready` reason the current controller knows.
//!
//! The hook does not adopt those exports: it ends them safely and lets the current controller start
//! fresh ones for DataExports that are still live (same name, new exporter and URL; `d8` follows
//! `status.url`). In order (as the module-disabled hook, `disable.rs`):
//! 1. return each PV to its user PVC: `claimRef` with the live PVC's uid while `Retain` (before any
//!    export PVC delete: once `claimRef` names the user PVC, deleting the export PVC only turns it
//!    `Lost` and never releases the PV), together with our return mark [`ANN_LEGACY_RETURN_UID`];
//! 2. restore the original reclaim policy and clear the legacy record (annotations, label, our
//!    mark) in ONE JSON Patch whose first operations `test` on the live PV that `status.phase` is
//!    `Bound` and `spec.claimRef.uid` is the user PVC's. A `Released` PV under `Delete` is deleted
//!    with its data by the CSI external-provisioner whatever `claimRef` says, and the PV is
//!    `Released` if the export PVC's deletion was processed before the rebind. A failed `test`
//!    rejects the whole patch (the PV keeps `Retain`, its record and the mark), fails the run, and
//!    addon-operator retries it from fresh snapshots (deckhouse-conventions §3.9). An original
//!    policy of `Retain` (or one already restored) needs no guard;
//! 3. release the user PVCs; 4. delete the legacy exporter objects and export PVCs; 5. drop the
//!    legacy finalizer from DataExports and mark legacy-expired DataExports `Expired` in the
//!    current contract (phase and `Ready=False/Expired`) so they are not restarted.
//!
//! A retry finds a half-returned PV although its `claimRef` no longer points into the module
//! namespace: it still carries the legacy label and record, and our mark, and its `claimRef` names
//! the recorded user PVC with the marked uid. For it the hook emits only the guarded restore (the
//! rebind is done). The mark is what makes it ours: storage-foundation's PVs carry the same legacy
//! record and label, and a sibling's half-returned PV must never be touched; a legacy PV whose
//! `claimRef` names its user PVC without our mark is left alone as before.
//!
//! Scope is strictly this module's own leftovers: PVs whose `claimRef` points into this module's
//! namespace (or that this hook half-returned: our mark), and objects in that namespace. The sibling storage-foundation module writes
//! `storage.deckhouse.io/data-export-request` on its own PVCs and uses its own namespace; neither is
//! ever touched (its removed 025 hook is the lesson: never act on what a live sibling owns).
//!
//! Gate: the ConfigMap `svdm-migration` in the module namespace (`legacy-go: done`), written only in
//! a run that finds nothing left to migrate (no other operation in it), so the marker means
//! "verified clean", not "patches sent": a run that emits a restore (first or retried) never writes
//! it, and a half-returned PV is found by every later run until its guarded restore succeeded. Once
//! present the hook does nothing. Without the module namespace there is nothing to migrate and no
//! marker is written (first install: beforeHelm runs before Helm creates the namespace).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::disable::{PvView as LegacyPv, RECLAIM_POLICIES};
use crate::names;
use crate::protocol::{Hook, HookError, Input, Output};

pub const LEGACY_PREFIX: &str = "storage.deckhouse.io/";
pub const LEGACY_FINALIZER: &str = "storage.deckhouse.io/storage-manager-controller";
pub const LEGACY_PV_LABEL: &str = "storage.deckhouse.io/data-exporter";
pub const LEGACY_PV_INCONSISTENT_LABEL: &str = "storage.deckhouse.io/data-exporter-inconsistent";
pub const LEGACY_PVC_IN_PROGRESS: &str = "storage.deckhouse.io/data-export-in-progress";
/// PV annotations the earlier controller wrote (all removed on return).
pub const LEGACY_PV_ANNOTATIONS: &[&str] = &[
    "storage.deckhouse.io/original-pvc-namespace",
    "storage.deckhouse.io/original-pvc-name",
    "storage.deckhouse.io/storage-manager-namespace",
    "storage.deckhouse.io/storage-manager-name",
    "storage.deckhouse.io/target-ref",
    "storage.deckhouse.io/generated-name-suffix",
    "storage.deckhouse.io/original-reclaim-policy",
];
/// Name prefixes of the earlier controller's objects in the module namespace.
pub const LEGACY_OBJECT_PREFIXES: &[&str] = &[
    "deploy-for-",
    "service-for-",
    "ingress-for-",
    "ca-secret-for-",
    "pvc-for-",
];

/// Our mark on a legacy PV between its rebind and its guarded restore: the user PVC's uid. Set in
/// the rebind's write, removed in the restore's; a later run uses it to recognise a PV this hook
/// half-returned (and the uid its guard tests).
pub const ANN_LEGACY_RETURN_UID: &str = "svdm.storage.deckhouse.io/legacy-return-claim-uid";

pub const MARKER_CONFIGMAP: &str = "svdm-migration";
pub const MARKER_KEY: &str = "legacy-go";

pub const NAMESPACE_BINDING: &str = "module_namespace";
pub const MARKER_BINDING: &str = "marker";
pub const PV_BINDING: &str = "legacy_pvs";
pub const PVC_BINDING: &str = "legacy_pvcs";
pub const OBJECT_BINDING_PREFIX: &str = "legacy_";
pub const DATAEXPORT_BINDING: &str = "legacy_dataexports";

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LegacyPvc {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LegacyDataExport {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default)]
    pub conditions: Vec<Value>,
    #[serde(default)]
    pub phase: Option<String>,
}

/// What one run decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub skipped_by_marker: bool,
    pub returned_pvs: Vec<String>,
    /// PVs an earlier run rebound whose guarded restore is still due (only that is emitted).
    pub restored_pvs: Vec<String>,
    pub inconsistent_pvs: Vec<(String, String)>,
    pub deleted_objects: usize,
    pub released_pvcs: usize,
    pub dataexports: usize,
    pub marker_written: bool,
}

fn parse<T: for<'de> Deserialize<'de>>(input: &Input, binding: &str) -> Vec<T> {
    input
        .snapshot(binding)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// The legacy object kinds in the module namespace: (binding suffix, apiVersion, kind).
const OBJECT_KINDS: &[(&str, &str, &str)] = &[
    ("deployments", "apps/v1", "Deployment"),
    ("services", "v1", "Service"),
    ("ingresses", "networking.k8s.io/v1", "Ingress"),
    ("secrets", "v1", "Secret"),
];

fn is_legacy_name(name: &str) -> bool {
    LEGACY_OBJECT_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn legacy_release_jq(extra_annotation: bool) -> String {
    let mut jq = format!(
        r#".metadata.finalizers = ((.metadata.finalizers // []) | map(select(. != "{LEGACY_FINALIZER}")))"#
    );
    if extra_annotation {
        jq.push_str(&format!(
            r#" | del(.metadata.annotations["{LEGACY_PVC_IN_PROGRESS}"])"#
        ));
    }
    jq
}

fn mark_inconsistent(out: &mut Output, pv: &str) {
    out.kube(json!({
        "operation": "MergePatch", "apiVersion": "v1", "kind": "PersistentVolume", "name": pv,
        "mergePatch": {"metadata": {"labels": {names::LABEL_PV_INCONSISTENT: "true"}}},
        "ignoreMissingObject": true,
    }));
}

/// RFC 6901 escaping of one JSON Pointer segment.
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The legacy record's keys on a PV `pv` shows: (annotations, labels), our mark included.
fn record_keys(pv: &LegacyPv) -> (Vec<&str>, Vec<&str>) {
    let annotations = LEGACY_PV_ANNOTATIONS
        .iter()
        .copied()
        .chain([ANN_LEGACY_RETURN_UID])
        .filter(|k| pv.annotations.contains_key(*k))
        .collect();
    let labels = [LEGACY_PV_LABEL, LEGACY_PV_INCONSISTENT_LABEL]
        .into_iter()
        .filter(|k| pv.labels.contains_key(*k))
        .collect();
    (annotations, labels)
}

/// Restores the original reclaim policy of a PV whose claimRef names (or, earlier in the same
/// run, is set to) the user PVC with `uid`, and clears the legacy record in the same write.
///
/// Under `Delete` (or `Recycle`) the write is one JSON Patch whose first operations `test`, on the
/// live object, `status.phase == Bound` and `spec.claimRef.uid == uid`: a `Released` PV under
/// `Delete` is deleted with its data by the CSI external-provisioner whatever claimRef says, and
/// the hook cannot wait for the PV binder, so the API server checks atomically with the write. A
/// failed test rejects the whole patch: the PV keeps `Retain`, its record and our mark, the run
/// fails, and the retry (fresh snapshots) finds the PV again through them and emits this again.
/// The removes name only keys `pv` shows (a `remove` of a missing key fails the patch; if the live
/// object differs, the retry sees it). An original `Retain`, or a policy already restored, needs
/// no guard: only the record is cleared.
fn restore_and_clear(out: &mut Output, pv: &LegacyPv, uid: &str, policy: &str) {
    if policy == "Retain" || pv.reclaim_policy.as_deref() == Some(policy) {
        let mut annotations = serde_json::Map::new();
        for k in LEGACY_PV_ANNOTATIONS.iter().chain([&ANN_LEGACY_RETURN_UID]) {
            annotations.insert((*k).to_owned(), Value::Null);
        }
        out.kube(
            json!({"operation": "MergePatch", "apiVersion": "v1", "kind": "PersistentVolume",
            "name": pv.name, "mergePatch": {"metadata": {"annotations": annotations,
                "labels": {LEGACY_PV_LABEL: null, LEGACY_PV_INCONSISTENT_LABEL: null}}}}),
        );
        return;
    }
    let mut ops = vec![
        json!({"op": "test", "path": "/status/phase", "value": "Bound"}),
        json!({"op": "test", "path": "/spec/claimRef/uid", "value": uid}),
        json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": policy}),
    ];
    let (annotations, labels) = record_keys(pv);
    for k in annotations {
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", pointer_segment(k))}));
    }
    for k in labels {
        ops.push(
            json!({"op": "remove", "path": format!("/metadata/labels/{}", pointer_segment(k))}),
        );
    }
    out.kube(
        json!({"operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume",
        "name": pv.name, "jsonPatch": ops}),
    );
}

/// Decides the operations of one run; pure.
pub fn plan(input: &Input, out: &mut Output) -> Plan {
    let mut p = Plan::default();
    let marker_done = input.snapshot(MARKER_BINDING).iter().any(|m| {
        m.get("data")
            .and_then(|d| d.get(MARKER_KEY))
            .and_then(Value::as_str)
            == Some("done")
    });
    if marker_done {
        p.skipped_by_marker = true;
        return p;
    }
    let namespace_exists = !input.snapshot(NAMESPACE_BINDING).is_empty();

    // 1-2. PVs whose claimRef points into this module's namespace (nothing else is ours), and PVs
    // this hook already rebound whose guarded restore is still due.
    let pvcs: Vec<LegacyPvc> = parse(input, PVC_BINDING);
    let mut blocked_claims: Vec<(String, String)> = Vec::new();
    for pv in parse::<LegacyPv>(input, PV_BINDING) {
        let a = |k: &str| {
            pv.annotations
                .get(&format!("{LEGACY_PREFIX}{k}"))
                .cloned()
                .unwrap_or_default()
        };
        let (ns, name, policy) = (
            a("original-pvc-namespace"),
            a("original-pvc-name"),
            a("original-reclaim-policy"),
        );
        let in_flight = pv
            .claim_ref
            .as_ref()
            .is_some_and(|c| c.namespace == names::MODULE_NAMESPACE);
        let marked = pv.annotations.get(ANN_LEGACY_RETURN_UID);
        let half_returned = !in_flight
            && marked.is_some()
            && !ns.is_empty()
            && pv
                .claim_ref
                .as_ref()
                .is_some_and(|c| c.namespace == ns && c.name == name);
        if !in_flight && !half_returned {
            continue;
        }
        let user = pvcs.iter().find(|c| c.namespace == ns && c.name == name);
        let mut blocked = |out: &mut Output, p: &mut Plan, why: String| {
            mark_inconsistent(out, &pv.name);
            blocked_claims.push((ns.clone(), name.clone()));
            p.inconsistent_pvs.push((
                pv.name.clone(),
                format!(
                    "legacy PV {}: {why}; kept with reclaim policy Retain",
                    pv.name
                ),
            ));
        };
        if half_returned {
            // A retry: the rebind is done; only the guarded restore (and the record) is left.
            let uid = marked.cloned().unwrap_or_default();
            let bound_uid = pv
                .claim_ref
                .as_ref()
                .map(|c| c.uid.clone())
                .unwrap_or_default();
            let why = if !RECLAIM_POLICIES.contains(&policy.as_str()) {
                Some(format!(
                    "the original reclaim policy {policy:?} is not valid"
                ))
            } else if uid.is_empty() || bound_uid != uid {
                Some(format!(
                    "its claimRef names {ns}/{name} with uid {bound_uid:?}, not the returned PVC's {uid:?}"
                ))
            } else {
                user.filter(|u| u.uid != uid).map(|u| {
                    format!(
                        "its PVC {ns}/{name} is now uid {:?}, not the returned {uid:?}",
                        u.uid
                    )
                })
            };
            if let Some(why) = why {
                blocked(out, &mut p, why);
                continue;
            }
            restore_and_clear(out, &pv, &uid, &policy);
            p.restored_pvs.push(pv.name.clone());
            continue;
        }
        let why = if ns.is_empty() || name.is_empty() {
            Some("the original PVC is not recorded".to_owned())
        } else if !RECLAIM_POLICIES.contains(&policy.as_str()) {
            Some(format!(
                "the original reclaim policy {policy:?} is not valid"
            ))
        } else if user.is_none() {
            Some(format!(
                "its PVC {ns}/{name} no longer exists (or does not carry the legacy finalizer)"
            ))
        } else if user.is_some_and(|u| u.uid.is_empty()) {
            Some(format!("its PVC {ns}/{name} has no uid in the snapshot"))
        } else {
            None
        };
        let Some(user) = user.filter(|_| why.is_none()) else {
            blocked(out, &mut p, why.unwrap_or_default());
            continue;
        };
        // Rebind: Retain first (if someone changed it), then claimRef with the user PVC's uid,
        // and our mark in the same write (a retry recognises the PV by it).
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": user.namespace, "name": user.name, "uid": user.uid});
        let mut ops = Vec::new();
        if pv.reclaim_policy.as_deref() != Some("Retain") {
            ops.push(json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Retain"}));
        }
        ops.push(json!({"op": "add", "path": "/spec/claimRef", "value": claim}));
        ops.push(json!({"op": "add",
            "path": format!("/metadata/annotations/{}", pointer_segment(ANN_LEGACY_RETURN_UID)),
            "value": user.uid}));
        out.kube(
            json!({"operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume",
            "name": pv.name, "jsonPatch": ops}),
        );
        let mut rebound = pv.clone();
        rebound.reclaim_policy = Some("Retain".to_owned());
        rebound
            .annotations
            .insert(ANN_LEGACY_RETURN_UID.to_owned(), user.uid.clone());
        restore_and_clear(out, &rebound, &user.uid, &policy);
        p.returned_pvs.push(pv.name.clone());
    }

    // 3. User PVCs: the legacy finalizer and in-progress annotation (never storage-foundation's
    // data-export-request annotation). PVCs whose PV could not be returned keep them.
    for c in pvcs.iter().filter(|c| {
        c.namespace != names::MODULE_NAMESPACE
            && (c.finalizers.iter().any(|f| f == LEGACY_FINALIZER)
                || c.annotations.contains_key(LEGACY_PVC_IN_PROGRESS))
    }) {
        if blocked_claims
            .iter()
            .any(|(ns, n)| *ns == c.namespace && *n == c.name)
        {
            continue;
        }
        out.kube(
            json!({"operation": "JQPatch", "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": c.namespace, "name": c.name, "jqFilter": legacy_release_jq(true),
            "ignoreMissingObject": true}),
        );
        p.released_pvcs += 1;
    }

    // 4. Legacy exporter objects (Deployments first: their pods hold the export PVCs), after every
    // PV was rebound: a PV whose claimRef names its user PVC is never released by these deletes.
    for (suffix, api, kind) in OBJECT_KINDS {
        for o in parse::<Named>(input, &format!("{OBJECT_BINDING_PREFIX}{suffix}")) {
            if is_legacy_name(&o.name) {
                out.kube(json!({
                    "operation": "Delete", "apiVersion": api, "kind": kind,
                    "namespace": names::MODULE_NAMESPACE, "name": o.name,
                }));
                p.deleted_objects += 1;
            }
        }
    }
    for e in pvcs
        .iter()
        .filter(|c| c.namespace == names::MODULE_NAMESPACE && c.name.starts_with("pvc-for-"))
    {
        out.kube(json!({
            "operation": "Delete", "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": names::MODULE_NAMESPACE, "name": e.name,
        }));
        p.deleted_objects += 1;
    }

    // 5. DataExports: the legacy finalizer; legacy-expired ones become Expired in today's terms.
    for d in parse::<LegacyDataExport>(input, DATAEXPORT_BINDING) {
        let mut touched = false;
        if d.finalizers.iter().any(|f| f == LEGACY_FINALIZER) {
            out.kube(json!({"operation": "JQPatch",
                "apiVersion": format!("{}/{}", names::GROUP, names::VERSION), "kind": "DataExport",
                "namespace": d.namespace, "name": d.name, "jqFilter": legacy_release_jq(false),
                "ignoreMissingObject": true}));
            touched = true;
        }
        let expired = d
            .conditions
            .iter()
            .find(|c| c["type"] == "Expired" && c["status"] == "True");
        let ready_expired = d
            .conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["reason"] == "Expired");
        if let Some(exp) = expired
            && (!ready_expired || d.phase.as_deref() != Some("Expired"))
        {
            let mut conditions: Vec<Value> = d
                .conditions
                .iter()
                .filter(|c| c["type"] != "Ready")
                .cloned()
                .collect();
            conditions.push(json!({
                "type": "Ready", "status": "False", "reason": "Expired",
                "message": "The export expired (migrated from an earlier version of the module)",
                "lastTransitionTime": exp.get("lastTransitionTime").cloned().unwrap_or(Value::Null),
            }));
            out.kube(json!({"operation": "MergePatch",
                "apiVersion": format!("{}/{}", names::GROUP, names::VERSION), "kind": "DataExport",
                "namespace": d.namespace, "name": d.name, "subresource": "status",
                "mergePatch": {"status": {"phase": "Expired", "conditions": conditions}},
                "ignoreMissingObject": true}));
            touched = true;
        }
        if touched {
            p.dataexports += 1;
        }
    }

    // 6. The marker, only when this run found nothing left (it is then the run's only operation)
    // and the namespace exists; never while a PV's guarded restore is due.
    let nothing_left = p.deleted_objects == 0
        && p.returned_pvs.is_empty()
        && p.restored_pvs.is_empty()
        && p.inconsistent_pvs.is_empty()
        && p.released_pvcs == 0
        && p.dataexports == 0;
    if nothing_left && namespace_exists {
        out.kube(json!({"operation": "CreateOrUpdate", "object": {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MARKER_CONFIGMAP, "namespace": names::MODULE_NAMESPACE,
                "labels": {"heritage": "deckhouse", "module": names::MODULE_NAME}},
            "data": {MARKER_KEY: "done"},
        }}));
        p.marker_written = true;
    }
    p
}

pub struct MigrationHook;

impl Hook for MigrationHook {
    fn name(&self) -> &'static str {
        "migrate-legacy"
    }

    fn config(&self) -> Value {
        let ns = names::MODULE_NAMESPACE;
        let snap = |name: &str, api: &str, kind: &str, jq: &str| {
            json!({"name": name, "apiVersion": api, "kind": kind,
                "executeHookOnEvent": false, "executeHookOnSynchronization": false,
                "keepFullObjectsInMemory": false, "jqFilter": jq})
        };
        let mut bindings = Vec::new();
        let mut b = snap(
            NAMESPACE_BINDING,
            "v1",
            "Namespace",
            r#"{"name": .metadata.name}"#,
        );
        b["nameSelector"] = json!({"matchNames": [ns]});
        bindings.push(b);
        let mut b = snap(
            MARKER_BINDING,
            "v1",
            "ConfigMap",
            r#"{"data": (.data // {})}"#,
        );
        b["nameSelector"] = json!({"matchNames": [MARKER_CONFIGMAP]});
        b["namespace"] = json!({"nameSelector": {"matchNames": [ns]}});
        bindings.push(b);
        let mut b = snap(
            PV_BINDING,
            "v1",
            "PersistentVolume",
            &format!(
                r#"{{"name": .metadata.name, "claimRef": (.spec.claimRef // null | if . == null then null else {{namespace, name, uid}} end), "reclaimPolicy": .spec.persistentVolumeReclaimPolicy, "phase": .status.phase, "annotations": ((.metadata.annotations // {{}}) | with_entries(select((.key | startswith("storage.deckhouse.io/")) or .key == "{ANN_LEGACY_RETURN_UID}"))), "labels": (.metadata.labels // {{}})}}"#
            ),
        );
        b["labelSelector"] = json!({"matchLabels": {LEGACY_PV_LABEL: "true"}});
        bindings.push(b);
        bindings.push(snap(
            PVC_BINDING,
            "v1",
            "PersistentVolumeClaim",
            &format!(
                r#"if (((.metadata.finalizers // []) | index("{LEGACY_FINALIZER}")) != null) or ((.metadata.annotations // {{}}) | has("{LEGACY_PVC_IN_PROGRESS}")) or (.metadata.namespace == "{ns}" and (.metadata.name | startswith("pvc-for-"))) then {{"namespace": .metadata.namespace, "name": .metadata.name, "uid": .metadata.uid, "finalizers": (.metadata.finalizers // []), "annotations": ((.metadata.annotations // {{}}) | with_entries(select(.key == "{LEGACY_PVC_IN_PROGRESS}")))}} else null end"#
            ),
        ));
        for (suffix, api, kind) in OBJECT_KINDS {
            let mut b = snap(
                &format!("{OBJECT_BINDING_PREFIX}{suffix}"),
                api,
                kind,
                r#"if (.metadata.name | test("^(deploy|service|ingress|ca-secret)-for-")) then {"name": .metadata.name} else null end"#,
            );
            b["namespace"] = json!({"nameSelector": {"matchNames": [ns]}});
            bindings.push(b);
        }
        bindings.push(snap(
            DATAEXPORT_BINDING,
            &format!("{}/{}", names::GROUP, names::VERSION),
            "DataExport",
            &format!(
                r#"if (((.metadata.finalizers // []) | index("{LEGACY_FINALIZER}")) != null) or (((.status.conditions // []) | map(select(.type == "Expired" and .status == "True")) | length) > 0) then {{"namespace": .metadata.namespace, "name": .metadata.name, "finalizers": (.metadata.finalizers // []), "conditions": (.status.conditions // []), "phase": .status.phase}} else null end"#
            ),
        ));
        // Before the TLS hook and before Helm: the new controller must not meet legacy state.
        json!({"beforeHelm": 1, "kubernetes": bindings})
    }

    fn run(&self, input: &Input, output: &mut Output) -> Result<(), HookError> {
        let p = plan(input, output);
        if p.skipped_by_marker {
            return Ok(());
        }
        for pv in &p.returned_pvs {
            eprintln!(
                "legacy PV {pv}: returned to its PVC (reclaim policy restored only if it is Bound)"
            );
        }
        for pv in &p.restored_pvs {
            eprintln!(
                "legacy PV {pv}: rebound earlier; reclaim policy restored only if it is Bound"
            );
        }
        for (_, why) in &p.inconsistent_pvs {
            eprintln!("{why}");
        }
        if p.marker_written {
            eprintln!("no legacy objects left; migration marked done");
        }
        Ok(())
    }
}
