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

#[test]
fn an_export_in_flight_is_ended_and_its_pv_returned() {
    let mut out = Output::default();
    let p = migration::plan(&input(legacy(), values()), &mut out);
    assert_eq!(p.returned_pvs, ["pv-in-flight"]);
    // Legacy exporter objects go first, Deployment before the export PVC.
    let pos = |kind: &str, name: &str| {
        out.kube_operations
            .iter()
            .position(|o| o["kind"] == kind && o["name"] == name)
            .expect("op")
    };
    let dep = pos("Deployment", "deploy-for-pvc-su23j56kdocmidbb");
    let pvc = pos("PersistentVolumeClaim", "pvc-for-pvc-su23j56kdocmidbb");
    let pv = pos("PersistentVolume", "pv-in-flight");
    assert!(dep < pvc && pvc < pv);
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
    assert_eq!(pv_ops.len(), 3);
    assert_eq!(
        pv_ops[0]["jsonPatch"][0]["value"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "team-a", "name": "data", "uid": "user-pvc-uid"})
    );
    assert_eq!(
        pv_ops[1]["jsonPatch"][0],
        json!({"op": "test", "path": "/spec/claimRef/uid", "value": "user-pvc-uid"})
    );
    assert_eq!(pv_ops[1]["jsonPatch"][1]["value"], "Delete");
    assert!(
        pv_ops[2]["mergePatch"]["metadata"]["labels"]["storage.deckhouse.io/data-exporter"]
            .is_null()
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
