//! The module-disabled hook against objects as a live export leaves them.

mod common;

use common::{contexts, fixture, input};
use serde_json::{Value, json};
use svdm_hooks::disable::{self, DisableHook, PvOutcome};
use svdm_hooks::protocol::{Hook, Output};

const NS: &str = "d8-storage-volume-data-manager";

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

    // Deletions are requested in the background: the run never waits for them.
    let del_pod = position(&out, |o| {
        o["operation"] == "DeleteInBackground" && o["kind"] == "Pod"
    });
    let del_pvc = position(&out, |o| {
        o["operation"] == "DeleteInBackground" && o["name"] == "exp-0123456789ab"
    });
    assert!(
        !out.kube_operations
            .iter()
            .any(|o| o["operation"] == "Delete"),
        "no foreground (blocking) delete"
    );
    let pv_ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(pv_ops.len(), 2, "{pv_ops:#?}");
    // claimRef back to the user PVC, with its uid, while still Retain.
    assert_eq!(pv_ops[0]["operation"], "JSONPatch");
    assert_eq!(
        pv_ops[0]["jsonPatch"],
        json!([{"op": "add", "path": "/spec/claimRef", "value": {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": "team-a", "name": "data", "uid": "user-pvc-uid"}}])
    );
    // The original policy only on a live PV that is Bound with claimRef carrying the user's uid,
    // and the record (with the tracking label) cleared in that same write, never before it.
    assert_eq!(pv_ops[1]["operation"], "JSONPatch");
    assert_eq!(
        pv_ops[1]["jsonPatch"],
        json!([
            {"op": "test", "path": "/status/phase", "value": "Bound"},
            {"op": "test", "path": "/spec/claimRef/uid", "value": "user-pvc-uid"},
            {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1dataexport-namespace"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1dataexport-name"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1dataexport-uid"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1original-reclaim-policy"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1original-claim-namespace"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1original-claim-name"},
            {"op": "remove", "path": "/metadata/annotations/svdm.storage.deckhouse.io~1original-claim-uid"},
            {"op": "remove", "path": "/metadata/labels/svdm.storage.deckhouse.io~1dataexport-uid"},
            {"op": "remove", "path": "/metadata/labels/svdm.storage.deckhouse.io~1exported"},
        ])
    );

    // Order: rebind -> restore -> user PVC released -> deletes.
    let rebind = position(&out, |o| o == pv_ops[0]);
    let restore = position(&out, |o| o == pv_ops[1]);
    let unprotect = position(&out, |o| {
        o["kind"] == "PersistentVolumeClaim" && o["name"] == "data"
    });
    assert!(
        rebind < restore && restore < unprotect,
        "{rebind} {restore} {unprotect}"
    );
    assert!(
        unprotect < del_pod && del_pod < del_pvc,
        "{unprotect} {del_pod} {del_pvc}"
    );
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

fn snapshot_plan(with_crds: bool) -> Output {
    let mut v = fixture("after-delete-helm-snapshot.json");
    if !with_crds {
        v[0]["snapshots"]["snapshot_crds"] = json!([]);
    }
    let i = input(
        contexts(v),
        json!({"global": {}, "storageVolumeDataManager": {"internal": {}}}),
    );
    let mut out = Output::default();
    DisableHook.plan(&i, &mut out);
    out
}

#[test]
fn names_match_the_controllers() {
    // A value computed by `svdm_api::names::object_name` when the controller created objects by it:
    // pinned so a change of the naming (which would strand existing exports) fails here.
    assert_eq!(disable::object_name("de-snap-uid"), "exp-72c99bf2222d");
    assert_eq!(
        disable::snapshot_content_name("de-snap-uid"),
        "svdm-exp-72c99bf2222d"
    );
    assert_eq!(
        disable::ingress_tls_secret_name("de-snap-uid"),
        "exp-72c99bf2222d-public-tls"
    );
}

#[test]
fn a_snapshot_export_is_torn_down_and_the_users_snapshot_released() {
    let out = snapshot_plan(true);
    let ops = &out.kube_operations;
    // The user's snapshot: only its protection finalizer is dropped, first (as the controller's
    // return does), for the live export and for the orphaned restore alike.
    let user_vs: Vec<&Value> = ops
        .iter()
        .filter(|o| o["kind"] == "VolumeSnapshot" && o["namespace"] != NS)
        .collect();
    assert_eq!(user_vs.len(), 2, "{user_vs:#?}");
    for (o, (ns, name)) in user_vs
        .iter()
        .zip([("team-s", "nightly"), ("team-t", "weekly")])
    {
        assert_eq!(o["operation"], "JQPatch");
        assert_eq!(
            (o["namespace"].as_str(), o["name"].as_str()),
            (Some(ns), Some(name))
        );
        assert_eq!(o["ignoreMissingObject"], true);
        let jq = o["jqFilter"].as_str().expect("jq");
        assert!(jq.starts_with(".metadata.finalizers = "), "{jq}");
        assert!(jq.contains("svdm.storage.deckhouse.io/restore-protection"));
    }
    assert!(ops.iter().take(2).all(|o| o["kind"] == "VolumeSnapshot"));

    // Copies: Retain pinned before the copied VolumeSnapshot or content is deleted.
    let content = "svdm-exp-72c99bf2222d";
    let retain = position(&out, |o| {
        o["operation"] == "MergePatch"
            && o["kind"] == "VolumeSnapshotContent"
            && o["name"] == content
    });
    assert_eq!(
        ops[retain]["mergePatch"],
        json!({"spec": {"deletionPolicy": "Retain"}})
    );
    let del_vs = position(&out, |o| {
        o["operation"] == "DeleteInBackground"
            && o["kind"] == "VolumeSnapshot"
            && o["namespace"] == NS
            && o["name"] == "exp-72c99bf2222d"
    });
    let del_vsc = position(&out, |o| {
        o["operation"] == "DeleteInBackground"
            && o["kind"] == "VolumeSnapshotContent"
            && o["name"] == content
    });
    assert!(retain < del_vs && del_vs < del_vsc);
    // The orphaned restore's copies go too.
    position(&out, |o| {
        o["operation"] == "DeleteInBackground" && o["name"] == "svdm-exp-49e14a3015f0"
    });

    // Restored PVCs and exporter objects are deleted; the Ingress certificate by name.
    for (kind, name) in [
        ("PersistentVolumeClaim", "exp-72c99bf2222d"),
        ("PersistentVolumeClaim", "exp-orphan"),
        ("Pod", "exp-72c99bf2222d"),
        ("Service", "exp-72c99bf2222d"),
        ("Lease", "exp-72c99bf2222d"),
        ("Secret", "exp-72c99bf2222d"),
        ("Secret", "exp-72c99bf2222d-public-tls"),
    ] {
        let o = ops_on(&out, kind, name);
        assert_eq!(o.len(), 1, "{kind}/{name}: {o:#?}");
        assert_eq!(o[0]["operation"], "DeleteInBackground");
        assert_eq!(o[0]["namespace"], NS);
    }
    // Nothing outside the module namespace is deleted.
    assert!(
        ops.iter()
            .filter(|o| o["operation"] == "DeleteInBackground")
            .all(|o| o["namespace"] == NS || o["kind"] == "VolumeSnapshotContent")
    );
    // The DataExport's finalizer goes last.
    assert_eq!(ops.last().map(|o| &o["kind"]), Some(&json!("DataExport")));
}

#[test]
fn without_the_snapshot_api_no_operation_names_a_snapshot_kind() {
    let out = snapshot_plan(false);
    assert!(
        !out.kube_operations
            .iter()
            .any(|o| o["apiVersion"] == "snapshot.storage.k8s.io/v1"),
        "an operation on an unknown kind would fail the run"
    );
    assert_eq!(ops_on(&out, "DataExport", "snap-export").len(), 1);
}

#[test]
fn config_binds_only_kinds_every_cluster_serves() {
    let c = DisableHook.config();
    let kinds: Vec<&str> = c["kubernetes"]
        .as_array()
        .expect("bindings")
        .iter()
        .filter_map(|b| b["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"CustomResourceDefinition"));
    assert!(!kinds.iter().any(|k| k.starts_with("VolumeSnapshot")));
}

/// Every operation that gives a PV a policy other than Retain is a JSON Patch whose first
/// operations test, on the live object, that the PV is Bound and claimRef carries the user's uid.
fn assert_every_restore_is_guarded(out: &Output) {
    for o in &out.kube_operations {
        if o["kind"] != "PersistentVolume" {
            continue;
        }
        if o["operation"] == "MergePatch" {
            let p = &o["mergePatch"]["spec"]["persistentVolumeReclaimPolicy"];
            assert!(p.is_null() || p == "Retain", "{o:#}");
            continue;
        }
        let ops = o["jsonPatch"].as_array().expect("json patch");
        let restores = ops.iter().any(|op| {
            op["path"] == "/spec/persistentVolumeReclaimPolicy" && op["value"] != "Retain"
        });
        if restores {
            assert_eq!(
                ops[0],
                json!({"op": "test", "path": "/status/phase", "value": "Bound"}),
                "{o:#}"
            );
            assert_eq!(ops[1]["op"], "test", "{o:#}");
            assert_eq!(ops[1]["path"], "/spec/claimRef/uid", "{o:#}");
        }
    }
}

/// The in-flight fixture with its exported PVs replaced.
fn plan_with_pvs(pvs: Value, user_pvc_visible: bool) -> (Output, Vec<(String, PvOutcome)>) {
    let mut v = fixture("after-delete-helm-in-flight.json");
    v[0]["snapshots"]["exported_pvs"] = pvs;
    if !user_pvc_visible {
        let pvcs = v[0]["snapshots"]["pvcs"].as_array_mut().expect("pvcs");
        pvcs.retain(|p| p["filterResult"]["name"] != "data");
    }
    let i = input(
        contexts(v),
        json!({"global": {}, "storageVolumeDataManager": {"internal": {}}}),
    );
    let mut out = Output::default();
    let outcomes = DisableHook.plan(&i, &mut out);
    (out, outcomes)
}

fn recorded_pv(policy: &str, claim_ref: Value, current: &str, phase: &str) -> Value {
    json!([{"filterResult": {
        "name": "pv-data", "claimRef": claim_ref, "reclaimPolicy": current, "phase": phase,
        "annotations": {
            "svdm.storage.deckhouse.io/original-reclaim-policy": policy,
            "svdm.storage.deckhouse.io/original-claim-namespace": "team-a",
            "svdm.storage.deckhouse.io/original-claim-name": "data",
            "svdm.storage.deckhouse.io/original-claim-uid": "user-pvc-uid"},
        "labels": {"svdm.storage.deckhouse.io/exported": "true"}}}])
}

fn user_claim_ref() -> Value {
    json!({"namespace": "team-a", "name": "data", "uid": "user-pvc-uid"})
}

#[test]
fn every_fixture_restore_is_guarded() {
    assert_every_restore_is_guarded(&plan().0);
    assert_every_restore_is_guarded(&snapshot_plan(true));
}

/// The PV is already Released (export PVC deleted before the run): the hook emits the same
/// rebind and guarded restore; it never decides from the snapshot's phase, the live PV does.
#[test]
fn a_released_pv_gets_the_same_guarded_restore() {
    let export_ref = json!({"namespace": NS, "name": "exp-0123456789ab", "uid": "export-pvc-uid"});
    let (out, outcomes) = plan_with_pvs(
        recorded_pv("Delete", export_ref, "Retain", "Released"),
        true,
    );
    assert_eq!(outcomes[0].1, PvOutcome::Returned);
    let ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(ops.len(), 2, "{ops:#?}");
    assert_eq!(ops[0]["jsonPatch"][0]["path"], "/spec/claimRef");
    assert_eq!(
        ops[1]["jsonPatch"][0],
        json!({"op": "test", "path": "/status/phase", "value": "Bound"})
    );
    assert_every_restore_is_guarded(&out);
}

/// A retry after a run whose guarded restore failed: the rebind stuck, the user PVC was released
/// (the binding no longer sees it), the PV still has Retain and its record. Only the guarded
/// restore is emitted again; the rebind is not repeated.
#[test]
fn a_retry_after_a_failed_restore_repeats_only_the_guarded_restore() {
    let (out, outcomes) = plan_with_pvs(
        recorded_pv("Delete", user_claim_ref(), "Retain", "Released"),
        false,
    );
    assert_eq!(outcomes[0].1, PvOutcome::Returned);
    let ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(ops.len(), 1, "{ops:#?}");
    let patch = ops[0]["jsonPatch"].as_array().expect("json patch");
    assert_eq!(
        patch[0],
        json!({"op": "test", "path": "/status/phase", "value": "Bound"})
    );
    assert_eq!(
        patch[1],
        json!({"op": "test", "path": "/spec/claimRef/uid", "value": "user-pvc-uid"})
    );
    assert_eq!(
        patch[2],
        json!({"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"})
    );
    assert!(patch[3..].iter().all(|op| op["op"] == "remove"));
    assert!(ops_on(&out, "PersistentVolumeClaim", "data").is_empty());
}

/// A retry with the user PVC still visible (the earlier run stopped before releasing it): no
/// second rebind, the guarded restore again, then the release.
#[test]
fn a_retry_with_the_rebind_done_does_not_rebind_again() {
    let (out, _) = plan_with_pvs(
        recorded_pv("Delete", user_claim_ref(), "Retain", "Bound"),
        true,
    );
    let ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(ops.len(), 1, "{ops:#?}");
    assert_eq!(ops[0]["jsonPatch"][0]["op"], "test");
    let restore = position(&out, |o| o == ops[0]);
    let unprotect = position(&out, |o| {
        o["kind"] == "PersistentVolumeClaim" && o["name"] == "data"
    });
    assert!(restore < unprotect);
}

/// A policy already restored is left alone: only the record is cleared, no policy write.
#[test]
fn a_restored_policy_is_left_alone() {
    let (out, _) = plan_with_pvs(
        recorded_pv("Delete", user_claim_ref(), "Delete", "Bound"),
        false,
    );
    let ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(ops.len(), 1, "{ops:#?}");
    assert_eq!(ops[0]["operation"], "MergePatch");
    assert!(ops[0]["mergePatch"].get("spec").is_none());
}

/// An original policy of Retain needs no guard: the rebind already leaves Retain.
#[test]
fn an_original_retain_policy_needs_no_test() {
    let export_ref = json!({"namespace": NS, "name": "exp-0123456789ab", "uid": "export-pvc-uid"});
    let (out, _) = plan_with_pvs(recorded_pv("Retain", export_ref, "Retain", "Bound"), true);
    let ops = ops_on(&out, "PersistentVolume", "pv-data");
    assert_eq!(ops.len(), 2, "{ops:#?}");
    assert_eq!(ops[0]["operation"], "JSONPatch");
    assert!(
        ops[0]["jsonPatch"]
            .as_array()
            .expect("ops")
            .iter()
            .all(|op| op["op"] != "test")
    );
    assert_eq!(ops[1]["operation"], "MergePatch");
    assert!(!out.kube_operations.iter().any(|o| {
        o["jsonPatch"]
            .as_array()
            .is_some_and(|p| p.iter().any(|op| op["op"] == "test"))
    }));
}
