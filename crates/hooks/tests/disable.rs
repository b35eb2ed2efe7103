//! The module-disabled hook against objects as a live export leaves them.

mod common;

use common::{contexts, fixture, input};
use serde_json::{Value, json};
use svdm_hooks::disable::{DisableHook, PvOutcome};
use svdm_hooks::protocol::{Hook, Output};

fn plan() -> (Output, Vec<(String, PvOutcome)>) {
    let i = input(
        contexts(fixture("after-delete-helm-in-flight.json")),
        json!({"global": {}, "storageVolumeDataManager": {"internal": {}}}),
    );
    let mut out = Output::default();
    let outcomes = DisableHook.plan(&i, &mut out);
    (out, outcomes)
}

fn ops_on<'a>(out: &'a Output, kind: &str, name: &str) -> Vec<&'a Value> {
    out.kube_operations
        .iter()
        .filter(|o| o["kind"] == kind && o["name"] == name)
        .collect()
}

fn position(out: &Output, pred: impl Fn(&Value) -> bool) -> usize {
    out.kube_operations
        .iter()
        .position(pred)
        .expect("operation present")
}

#[test]
fn an_export_in_flight_is_returned_in_the_safe_order() {
    let (out, outcomes) = plan();
    assert_eq!(outcomes[0], ("pv-data".to_owned(), PvOutcome::Returned));

    let del_pod = position(&out, |o| o["operation"] == "Delete" && o["kind"] == "Pod");
    let del_pvc = position(&out, |o| {
        o["operation"] == "Delete" && o["name"] == "exp-0123456789ab"
    });
    let pv_ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(pv_ops.len(), 3, "{pv_ops:#?}");
    // claimRef back to the user PVC, with its uid, while still Retain.
    assert_eq!(pv_ops[0]["operation"], "JSONPatch");
    assert_eq!(
        pv_ops[0]["jsonPatch"],
        json!([{"op": "add", "path": "/spec/claimRef", "value": {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": "team-a", "name": "data", "uid": "user-pvc-uid"}}])
    );
    // The original policy only while claimRef carries the user's uid.
    assert_eq!(
        pv_ops[1]["jsonPatch"],
        json!([
            {"op": "test", "path": "/spec/claimRef/uid", "value": "user-pvc-uid"},
            {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"}
        ])
    );
    // Record cleared last, tracking label in the same write.
    assert_eq!(pv_ops[2]["operation"], "MergePatch");
    assert!(
        pv_ops[2]["mergePatch"]["metadata"]["labels"]["svdm.storage.deckhouse.io/exported"]
            .is_null()
    );

    let rebind = position(&out, |o| o == pv_ops[0]);
    let restore = position(&out, |o| o == pv_ops[1]);
    let unprotect = position(&out, |o| {
        o["kind"] == "PersistentVolumeClaim" && o["name"] == "data"
    });
    let clear = position(&out, |o| o == pv_ops[2]);
    assert!(del_pod < del_pvc && del_pvc < rebind && rebind < restore);
    assert!(restore < unprotect && unprotect < clear);
    let jq = out.kube_operations[unprotect]["jqFilter"]
        .as_str()
        .expect("jq");
    assert!(jq.contains("svdm.storage.deckhouse.io/export-protection"));
    assert!(!jq.contains("kubernetes.io/pvc-protection"));

    // The DataExport's finalizer is released; the one without finalizers is left alone.
    assert_eq!(ops_on(&out, "DataExport", "backup").len(), 1);
    assert!(ops_on(&out, "DataExport", "expired").is_empty());
}

#[test]
fn a_replaced_user_pvc_is_never_guessed_at() {
    let (out, outcomes) = plan();
    assert!(matches!(&outcomes[1].1, PvOutcome::Inconsistent(m) if m.contains("new-uid")));
    let ops = ops_on(&out, "PersistentVolume", "pv-recreated-claim");
    assert_eq!(ops.len(), 1);
    assert_eq!(
        ops[0]["mergePatch"],
        json!({"metadata": {"labels": {"svdm.storage.deckhouse.io/inconsistent": "true"}}})
    );
    // The unrelated new PVC with the same name is not touched.
    assert!(ops_on(&out, "PersistentVolumeClaim", "db").is_empty());
}

#[test]
fn an_incomplete_record_is_labelled_not_returned() {
    let (out, outcomes) = plan();
    assert!(matches!(&outcomes[2].1, PvOutcome::Inconsistent(m) if m.contains("reclaim policy")));
    let ops = ops_on(&out, "PersistentVolume", "pv-no-policy");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["operation"], "MergePatch");
}

#[test]
fn a_return_cut_short_before_clearing_the_record_is_finished() {
    let (out, outcomes) = plan();
    assert_eq!(
        outcomes[3],
        ("pv-almost-done".to_owned(), PvOutcome::Returned)
    );
    let ops = ops_on(&out, "PersistentVolume", "pv-almost-done");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["operation"], "MergePatch");
}

#[test]
fn a_protected_pvc_without_a_recorded_pv_is_released() {
    let (out, _) = plan();
    let ops = ops_on(&out, "PersistentVolumeClaim", "half-protected");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["operation"], "JQPatch");
}

#[test]
fn config_is_after_delete_helm_with_snapshot_only_bindings() {
    let c = DisableHook.config();
    assert_eq!(c["afterDeleteHelm"], 10);
    for b in c["kubernetes"].as_array().expect("bindings") {
        assert_eq!(b["executeHookOnEvent"], false);
        assert!(b["jqFilter"].is_string());
    }
}
