//! The migration hook against objects as the earlier (Go) implementation left them.

mod common;

use common::{contexts, fixture, input};
use serde_json::{Value, json};
use svdm_hooks::migration::{self, MigrationHook};
use svdm_hooks::protocol::{Hook, Output};

fn legacy() -> Vec<svdm_hooks::protocol::BindingContext> {
    contexts(fixture("before-helm-legacy.json"))
}

fn values() -> Value {
    json!({"global": {}, "storageVolumeDataManager": {"internal": {}}})
}

fn ops_on<'a>(out: &'a Output, kind: &str, name: &str) -> Vec<&'a Value> {
    out.kube_operations
        .iter()
        .filter(|o| o["kind"] == kind && o["name"] == name)
        .collect()
}

/// The restore of pv-in-flight's `Delete` as one guarded JSON Patch: both tests first, then the
/// policy, then every key of the legacy record (our mark included) in the same write.
fn guarded_restore(uid: &str, full_record: bool) -> Value {
    let mut ops = vec![
        json!({"op": "test", "path": "/status/phase", "value": "Bound"}),
        json!({"op": "test", "path": "/spec/claimRef/uid", "value": uid}),
        json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"}),
    ];
    let annotations: &[&str] = if full_record {
        &[
            "original-pvc-namespace",
            "original-pvc-name",
            "storage-manager-namespace",
            "storage-manager-name",
            "target-ref",
            "generated-name-suffix",
            "original-reclaim-policy",
        ]
    } else {
        &[
            "original-pvc-namespace",
            "original-pvc-name",
            "original-reclaim-policy",
        ]
    };
    for k in annotations {
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/storage.deckhouse.io~1{k}")}));
    }
    ops.push(json!({"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1legacy-return-claim-uid"}));
    ops.push(
        json!({"op": "remove", "path": "/metadata/labels/storage.deckhouse.io~1data-exporter"}),
    );
    Value::Array(ops)
}

/// A run's only snapshot: the module namespace, no marker, and these legacy PVs and PVCs.
fn only(pvs: Value, pvcs: Value) -> Vec<svdm_hooks::protocol::BindingContext> {
    contexts(json!([{"binding": "beforeHelm", "snapshots": {
        "module_namespace": [{"filterResult": {"name": "d8-storage-volume-data-manager"}}],
        "marker": [], "legacy_pvs": pvs, "legacy_pvcs": pvcs, "legacy_dataexports": []}}]))
}

/// pv-in-flight as a run that rebound it but whose guarded restore was rejected leaves it (the
/// PV was Released): claimRef the user PVC with its uid, Retain, the legacy record and our mark.
fn half_returned(claim_uid: &str, mark: Option<&str>, policy: &str) -> Value {
    let mut annotations = json!({
        "storage.deckhouse.io/original-pvc-namespace": "team-a",
        "storage.deckhouse.io/original-pvc-name": "data",
        "storage.deckhouse.io/original-reclaim-policy": "Delete",
    });
    if let Some(m) = mark {
        annotations["svdm.storage.deckhouse.io/legacy-return-claim-uid"] = json!(m);
    }
    json!({"filterResult": {
        "name": "pv-in-flight",
        "claimRef": {"namespace": "team-a", "name": "data", "uid": claim_uid},
        "reclaimPolicy": policy, "phase": "Released",
        "annotations": annotations,
        "labels": {"storage.deckhouse.io/data-exporter": "true"},
    }})
}

#[test]
fn an_export_in_flight_is_ended_and_its_pv_returned() {
    let mut out = Output::default();
    let p = migration::plan(&input(legacy(), values()), &mut out);
    assert_eq!(p.returned_pvs, ["pv-in-flight"]);
    // The PV is rebound (and its guarded restore emitted) before any legacy object or export PVC
    // is deleted; the user PVC is released after the restore; Deployment before the export PVC.
    let pos = |kind: &str, name: &str| {
        out.kube_operations
            .iter()
            .position(|o| o["kind"] == kind && o["name"] == name)
            .expect("op")
    };
    let dep = pos("Deployment", "deploy-for-pvc-su23j56kdocmidbb");
    let pvc = pos("PersistentVolumeClaim", "pvc-for-pvc-su23j56kdocmidbb");
    let pv = pos("PersistentVolume", "pv-in-flight");
    let user_pvc = pos("PersistentVolumeClaim", "data");
    assert!(pv + 1 < user_pvc && user_pvc < dep && dep < pvc);
    assert_eq!(
        ops_on(&out, "Service", "service-for-pvc-su23j56kdocmidbb").len(),
        1
    );
    assert!(ops_on(&out, "Service", "webhook").is_empty());
    assert_eq!(
        ops_on(&out, "Secret", "ca-secret-for-pvc-su23j56kdocmidbb").len(),
        1
    );

    let pv_ops = ops_on(&out, "PersistentVolume", "pv-in-flight");
    assert_eq!(
        pv_ops.len(),
        2,
        "rebind, then the guarded restore: {pv_ops:#?}"
    );
    assert_eq!(out.kube_operations[pv + 1], *pv_ops[1]);
    assert_eq!(
        pv_ops[0]["jsonPatch"],
        json!([
            {"op": "add", "path": "/spec/claimRef", "value": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "team-a", "name": "data", "uid": "user-pvc-uid"}},
            {"op": "add", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1legacy-return-claim-uid", "value": "user-pvc-uid"},
        ])
    );
    assert_eq!(
        pv_ops[1]["jsonPatch"],
        guarded_restore("user-pvc-uid", true)
    );

    let user = ops_on(&out, "PersistentVolumeClaim", "data");
    assert_eq!(user.len(), 1);
    let jq = user[0]["jqFilter"].as_str().expect("jq");
    assert!(jq.contains("storage.deckhouse.io/storage-manager-controller"));
    assert!(jq.contains("storage.deckhouse.io/data-export-in-progress"));
    assert!(
        !jq.contains("data-export-request"),
        "storage-foundation's annotation is not ours"
    );
}

#[test]
fn other_modules_pvs_are_never_touched() {
    let mut out = Output::default();
    migration::plan(&input(legacy(), values()), &mut out);
    assert!(ops_on(&out, "PersistentVolume", "pv-of-storage-foundation").is_empty());
}

#[test]
fn a_broken_record_is_labelled_and_its_pvc_keeps_its_finalizer() {
    let mut out = Output::default();
    let p = migration::plan(&input(legacy(), values()), &mut out);
    assert_eq!(p.inconsistent_pvs.len(), 1);
    assert_eq!(p.inconsistent_pvs[0].0, "pv-broken-record");
    let ops = ops_on(&out, "PersistentVolume", "pv-broken-record");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["operation"], "MergePatch");
    assert!(ops_on(&out, "PersistentVolumeClaim", "db").is_empty());
}

#[test]
fn dataexports_lose_the_legacy_finalizer_and_expired_ones_stay_expired() {
    let mut out = Output::default();
    migration::plan(&input(legacy(), values()), &mut out);
    let live = ops_on(&out, "DataExport", "backup");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["operation"], "JQPatch");
    let old = ops_on(&out, "DataExport", "old");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["subresource"], "status");
    let status = &old[0]["mergePatch"]["status"];
    assert_eq!(status["phase"], "Expired");
    let ready = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready");
    assert_eq!(ready["reason"], "Expired");
    assert_eq!(ready["lastTransitionTime"], "2026-10-01T10:00:00Z");
    // The legacy Expired=True condition stays for old d8 clients.
    assert!(
        status["conditions"]
            .as_array()
            .expect("c")
            .iter()
            .any(|c| c["type"] == "Expired")
    );
}

#[test]
fn the_marker_is_written_only_after_a_clean_run_and_then_gates_everything() {
    // A run with legacy objects does not write the marker.
    let mut out = Output::default();
    let p = migration::plan(&input(legacy(), values()), &mut out);
    assert!(!p.marker_written);
    // A clean run (nothing legacy left) writes it.
    let clean = contexts(json!([{"binding": "beforeHelm", "snapshots": {
        "module_namespace": [{"filterResult": {"name": "d8-storage-volume-data-manager"}}],
        "marker": [], "legacy_pvs": [], "legacy_pvcs": [], "legacy_dataexports": []}}]));
    let mut out = Output::default();
    let p = migration::plan(&input(clean, values()), &mut out);
    assert!(p.marker_written);
    assert_eq!(out.kube_operations[0]["operation"], "CreateOrUpdate");
    assert_eq!(
        out.kube_operations[0]["object"]["data"]["legacy-go"],
        "done"
    );
    // With the marker, even legacy objects are left alone (one-way).
    let mut gated = fixture("before-helm-legacy.json");
    gated[0]["snapshots"]["marker"] = json!([{"filterResult": {"data": {"legacy-go": "done"}}}]);
    let mut out = Output::default();
    let p = migration::plan(&input(contexts(gated), values()), &mut out);
    assert!(p.skipped_by_marker);
    assert!(out.kube_operations.is_empty());
}

#[test]
fn first_install_without_the_namespace_writes_nothing() {
    let fresh = contexts(json!([{"binding": "beforeHelm", "snapshots": {
        "module_namespace": [], "marker": [], "legacy_pvs": [], "legacy_pvcs": []}}]));
    let mut out = Output::default();
    MigrationHook
        .run(&input(fresh, values()), &mut out)
        .expect("run");
    assert!(out.kube_operations.is_empty());
    assert!(out.values_patches.is_empty());
}

#[test]
fn config_runs_first_before_helm() {
    let c = MigrationHook.config();
    assert_eq!(c["beforeHelm"], 1);
    for b in c["kubernetes"].as_array().expect("bindings") {
        assert_eq!(b["executeHookOnEvent"], false);
    }
}

#[test]
fn a_retry_finds_the_half_returned_pv_and_emits_only_the_guarded_restore() {
    // The user PVC was released by the failed run (addon-operator applies the remaining
    // operations), so the retry's snapshot no longer has it; the export objects are gone.
    let mut out = Output::default();
    let p = migration::plan(
        &input(
            only(
                json!([half_returned(
                    "user-pvc-uid",
                    Some("user-pvc-uid"),
                    "Retain"
                )]),
                json!([]),
            ),
            values(),
        ),
        &mut out,
    );
    assert_eq!(p.restored_pvs, ["pv-in-flight"]);
    assert!(p.returned_pvs.is_empty() && p.inconsistent_pvs.is_empty());
    assert!(!p.marker_written, "a restore is still due");
    assert_eq!(out.kube_operations.len(), 1, "{:#?}", out.kube_operations);
    assert_eq!(out.kube_operations[0]["operation"], "JSONPatch");
    assert_eq!(out.kube_operations[0]["name"], "pv-in-flight");
    assert_eq!(
        out.kube_operations[0]["jsonPatch"],
        guarded_restore("user-pvc-uid", false)
    );

    // The same with the user PVC still protected (its release also failed): released again,
    // after the restore.
    let pvcs = json!([{"filterResult": {"namespace": "team-a", "name": "data", "uid": "user-pvc-uid",
        "finalizers": ["storage.deckhouse.io/storage-manager-controller"], "annotations": {}}}]);
    let mut out = Output::default();
    let p = migration::plan(
        &input(
            only(
                json!([half_returned(
                    "user-pvc-uid",
                    Some("user-pvc-uid"),
                    "Retain"
                )]),
                pvcs,
            ),
            values(),
        ),
        &mut out,
    );
    assert_eq!(p.restored_pvs, ["pv-in-flight"]);
    assert!(!p.marker_written);
    assert_eq!(out.kube_operations.len(), 2);
    assert_eq!(out.kube_operations[0]["kind"], "PersistentVolume");
    assert_eq!(out.kube_operations[1]["kind"], "PersistentVolumeClaim");

    // Once the restore held, the PV has neither the label nor the record: the binding no longer
    // returns it, and the next run is clean and writes the marker.
    let mut out = Output::default();
    let p = migration::plan(&input(only(json!([]), json!([])), values()), &mut out);
    assert!(p.marker_written);
}

#[test]
fn the_retry_emits_the_same_guarded_restore_as_the_first_run() {
    // First run: pv-in-flight is rebound and its restore guarded.
    let mut first = Output::default();
    migration::plan(&input(legacy(), values()), &mut first);
    let restore = ops_on(&first, "PersistentVolume", "pv-in-flight")[1].clone();
    // The snapshot after the rebind held and the restore was rejected (all 7 legacy keys kept).
    let mut pv = half_returned("user-pvc-uid", Some("user-pvc-uid"), "Retain");
    for (k, v) in [
        ("storage-manager-namespace", "team-a"),
        ("storage-manager-name", "backup"),
        ("target-ref", "pvc"),
        ("generated-name-suffix", "su23j56kdocmidbb"),
    ] {
        pv["filterResult"]["annotations"][format!("storage.deckhouse.io/{k}")] = json!(v);
    }
    let mut retry = Output::default();
    migration::plan(&input(only(json!([pv]), json!([])), values()), &mut retry);
    assert_eq!(retry.kube_operations, [restore]);
}

#[test]
fn a_half_returned_pv_that_does_not_add_up_keeps_retain() {
    // claimRef names the user PVC with another uid than the one this hook rebound it to.
    let mut out = Output::default();
    let p = migration::plan(
        &input(
            only(
                json!([half_returned("other-uid", Some("user-pvc-uid"), "Retain")]),
                json!([]),
            ),
            values(),
        ),
        &mut out,
    );
    assert!(p.restored_pvs.is_empty() && !p.marker_written);
    assert_eq!(p.inconsistent_pvs.len(), 1);
    let ops = ops_on(&out, "PersistentVolume", "pv-in-flight");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["operation"], "MergePatch");
    assert!(
        !out.kube_operations
            .iter()
            .any(|o| o["operation"] == "JSONPatch")
    );

    // The user PVC was recreated under the same name: its PVC keeps the legacy finalizer.
    let pvcs = json!([{"filterResult": {"namespace": "team-a", "name": "data", "uid": "new-uid",
        "finalizers": ["storage.deckhouse.io/storage-manager-controller"], "annotations": {}}}]);
    let mut out = Output::default();
    let p = migration::plan(
        &input(
            only(
                json!([half_returned(
                    "user-pvc-uid",
                    Some("user-pvc-uid"),
                    "Retain"
                )]),
                pvcs,
            ),
            values(),
        ),
        &mut out,
    );
    assert_eq!(p.inconsistent_pvs.len(), 1);
    assert!(ops_on(&out, "PersistentVolumeClaim", "data").is_empty());
    assert!(
        !out.kube_operations
            .iter()
            .any(|o| o["operation"] == "JSONPatch")
    );
}

#[test]
fn a_half_returned_pv_without_our_mark_is_not_ours() {
    // storage-foundation's PVs carry the same legacy record and label; one it is returning
    // itself looks like this and is never touched.
    let mut out = Output::default();
    let p = migration::plan(
        &input(
            only(
                json!([half_returned("user-pvc-uid", None, "Retain")]),
                json!([]),
            ),
            values(),
        ),
        &mut out,
    );
    assert!(p.restored_pvs.is_empty() && p.inconsistent_pvs.is_empty());
    assert!(ops_on(&out, "PersistentVolume", "pv-in-flight").is_empty());
    assert!(p.marker_written);
}

#[test]
fn a_restored_policy_or_an_original_retain_needs_no_guard() {
    // The policy is already Delete (an older run restored it but did not clear the record).
    let mut out = Output::default();
    let p = migration::plan(
        &input(
            only(
                json!([half_returned(
                    "user-pvc-uid",
                    Some("user-pvc-uid"),
                    "Delete"
                )]),
                json!([]),
            ),
            values(),
        ),
        &mut out,
    );
    assert_eq!(p.restored_pvs, ["pv-in-flight"]);
    assert_eq!(out.kube_operations.len(), 1);
    assert_eq!(out.kube_operations[0]["operation"], "MergePatch");
    let md = &out.kube_operations[0]["mergePatch"]["metadata"];
    assert!(md["labels"]["storage.deckhouse.io/data-exporter"].is_null());
    assert!(
        md["annotations"]
            .as_object()
            .expect("annotations")
            .contains_key("svdm.storage.deckhouse.io/legacy-return-claim-uid")
    );

    // An original Retain: the rebind leaves it Retain; the record is cleared without a guard.
    let mut ctx = fixture("before-helm-legacy.json");
    ctx[0]["snapshots"]["legacy_pvs"][0]["filterResult"]["annotations"]["storage.deckhouse.io/original-reclaim-policy"] =
        json!("Retain");
    let mut out = Output::default();
    migration::plan(&input(contexts(ctx), values()), &mut out);
    let pv_ops = ops_on(&out, "PersistentVolume", "pv-in-flight");
    assert_eq!(pv_ops.len(), 2);
    assert_eq!(pv_ops[1]["operation"], "MergePatch");
    assert!(
        !pv_ops[1]
            .to_string()
            .contains("persistentVolumeReclaimPolicy")
    );
}

#[test]
fn a_pv_not_on_retain_is_set_to_retain_in_the_rebind() {
    let mut ctx = fixture("before-helm-legacy.json");
    ctx[0]["snapshots"]["legacy_pvs"][0]["filterResult"]["reclaimPolicy"] = json!("Delete");
    let mut out = Output::default();
    migration::plan(&input(contexts(ctx), values()), &mut out);
    let pv_ops = ops_on(&out, "PersistentVolume", "pv-in-flight");
    assert_eq!(
        pv_ops[0]["jsonPatch"][0],
        json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Retain"})
    );
    // The restore is still guarded (the snapshot's Delete is not the live object's after the
    // rebind).
    assert_eq!(
        pv_ops[1]["jsonPatch"],
        guarded_restore("user-pvc-uid", true)
    );
}

#[test]
fn the_pv_binding_keeps_our_mark_and_the_phase() {
    let c = MigrationHook.config();
    let b = c["kubernetes"]
        .as_array()
        .expect("bindings")
        .iter()
        .find(|b| b["name"] == "legacy_pvs")
        .expect("legacy_pvs");
    let jq = b["jqFilter"].as_str().expect("jq");
    assert!(jq.contains("svdm.storage.deckhouse.io/legacy-return-claim-uid"));
    assert!(jq.contains(".status.phase"));
    assert_eq!(
        b["labelSelector"]["matchLabels"]["storage.deckhouse.io/data-exporter"],
        "true"
    );
}
