//! Migration from the earlier (Go) implementation of this module (DESIGN §3.6).
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
//! `status.url`). In order: delete the legacy exporter objects and export PVCs; return each PV to its
//! user PVC (claimRef with the live PVC's uid while `Retain`, then the original reclaim policy guarded
//! by a `test` of that uid, then the legacy annotations and label); release the user PVCs; drop the
//! legacy finalizer from DataExports; mark legacy-expired DataExports `Expired` in the current
//! contract (phase and `Ready=False/Expired`) so they are not restarted.
//!
//! Scope is strictly this module's own leftovers: PVs whose `claimRef` points into this module's
//! namespace, and objects in that namespace. The sibling storage-foundation module writes
//! `storage.deckhouse.io/data-export-request` on its own PVCs and uses its own namespace; neither is
//! ever touched (its removed 025 hook is the lesson: never act on what a live sibling owns).
//!
//! Gate: the ConfigMap `svdm-migration` in the module namespace (`legacy-go: done`), written in a run
//! that finds nothing left to migrate, so the marker means "verified clean", not "patches sent". Once
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

    // 1. Legacy exporter objects (Deployments first: their pods hold the export PVCs).
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
    let pvcs: Vec<LegacyPvc> = parse(input, PVC_BINDING);
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

    // 2. PVs whose claimRef points into this module's namespace (nothing else is ours).
    let mut blocked_claims: Vec<(String, String)> = Vec::new();
    for pv in parse::<LegacyPv>(input, PV_BINDING) {
        let ours = pv
            .claim_ref
            .as_ref()
            .is_some_and(|c| c.namespace == names::MODULE_NAMESPACE);
        if !ours {
            continue;
        }
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
        let user = pvcs.iter().find(|c| c.namespace == ns && c.name == name);
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
        } else {
            None
        };
        let Some(user) = user.filter(|_| why.is_none()) else {
            mark_inconsistent(out, &pv.name);
            blocked_claims.push((ns.clone(), name.clone()));
            p.inconsistent_pvs.push((
                pv.name.clone(),
                format!(
                    "legacy PV {}: {}; kept with reclaim policy Retain",
                    pv.name,
                    why.unwrap_or_default()
                ),
            ));
            continue;
        };
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": user.namespace, "name": user.name, "uid": user.uid});
        let mut ops = Vec::new();
        if pv.reclaim_policy.as_deref() != Some("Retain") {
            ops.push(json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Retain"}));
        }
        ops.push(json!({"op": "add", "path": "/spec/claimRef", "value": claim}));
        out.kube(
            json!({"operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume",
            "name": pv.name, "jsonPatch": ops}),
        );
        out.kube(
            json!({"operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume",
            "name": pv.name, "jsonPatch": [
                {"op": "test", "path": "/spec/claimRef/uid", "value": user.uid},
                {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": policy},
            ]}),
        );
        let mut annotations = serde_json::Map::new();
        for k in LEGACY_PV_ANNOTATIONS {
            annotations.insert((*k).to_owned(), Value::Null);
        }
        out.kube(
            json!({"operation": "MergePatch", "apiVersion": "v1", "kind": "PersistentVolume",
            "name": pv.name, "mergePatch": {"metadata": {"annotations": annotations,
                "labels": {LEGACY_PV_LABEL: null, LEGACY_PV_INCONSISTENT_LABEL: null}}}}),
        );
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

    // 4. DataExports: the legacy finalizer; legacy-expired ones become Expired in today's terms.
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

    // 5. The marker, only when this run found nothing left and the namespace exists.
    let nothing_left = p.deleted_objects == 0
        && p.returned_pvs.is_empty()
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
            r#"{"name": .metadata.name, "claimRef": (.spec.claimRef // null | if . == null then null else {namespace, name, uid} end), "reclaimPolicy": .spec.persistentVolumeReclaimPolicy, "annotations": ((.metadata.annotations // {}) | with_entries(select(.key | startswith("storage.deckhouse.io/")))), "labels": (.metadata.labels // {})}"#,
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
            eprintln!("legacy PV {pv}: returned to its PVC");
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
