use super::*;
use crate::node_loss::NodeState;

type Mutation = Box<dyn Fn(&mut Observed)>;
type PvBreakage = Box<dyn Fn(&mut Pv)>;

const UID: &str = "de-uid";
const MODNS: &str = "d8-storage-volume-data-manager";
const EXP: &str = "exp-0123456789ab";

fn user_claim() -> ClaimRef {
    ClaimRef {
        namespace: "app".into(),
        name: "data".into(),
        uid: "user-uid".into(),
    }
}

fn fresh_user() -> UserPvc {
    UserPvc {
        namespace: "app".into(),
        name: "data".into(),
        uid: "user-uid".into(),
        phase: Some("Bound".into()),
        volume_name: Some("pv-1".into()),
        ..Default::default()
    }
}

fn fresh_pv() -> Pv {
    Pv {
        name: "pv-1".into(),
        claim_ref: Some(user_claim()),
        reclaim_policy: Some("Delete".into()),
        phase: Some("Bound".into()),
        ..Default::default()
    }
}

fn observed(intent: Intent) -> Observed {
    Observed {
        intent,
        uid: UID.into(),
        export_pvc_namespace: MODNS.into(),
        export_pvc_name: EXP.into(),
        user_pvc: Some(fresh_user()),
        pv: Some(fresh_pv()),
        export_pvc: None,
        exporter_objects_exist: false,
        exporter_pod: None,
        pods_using: vec![],
        attached: vec![],
        concurrency: Default::default(),
    }
}

/// A tiny model of the cluster: applies steps as the I/O layer does and then lets the PV binder
/// react, so whole runs (with a crash anywhere) can be checked without an API server.
#[derive(Clone, Debug)]
struct World {
    o: Observed,
    export_uid_counter: u32,
}

impl World {
    fn new() -> Self {
        World {
            o: observed(Intent::Export),
            export_uid_counter: 0,
        }
    }

    fn apply(&mut self, step: &Step) {
        let o = &mut self.o;
        match step {
            Step::ProtectUserPvc => {
                let u = o.user_pvc.as_mut().expect("user pvc");
                u.held_by = Some(UID.into());
                u.has_finalizer = true;
                u.has_labels = true;
            }
            Step::RecordPv {
                original_reclaim_policy,
                original_claim,
            } => {
                let pv = o.pv.as_mut().expect("pv");
                pv.owner_uid = Some(UID.into());
                pv.exported_label = true;
                pv.original_reclaim_policy = Some(original_reclaim_policy.clone());
                pv.original_claim_namespace = Some(original_claim.namespace.clone());
                pv.original_claim_name = Some(original_claim.name.clone());
                pv.original_claim_uid = Some(original_claim.uid.clone());
                pv.reclaim_policy = Some("Retain".into());
            }
            Step::EnsureRetain => o.pv.as_mut().expect("pv").reclaim_policy = Some("Retain".into()),
            Step::CreateExportPvc => {
                self.export_uid_counter += 1;
                o.export_pvc = Some(ExportPvc {
                    namespace: MODNS.into(),
                    name: EXP.into(),
                    uid: format!("export-uid-{}", self.export_uid_counter),
                    phase: Some("Pending".into()),
                    deleting: false,
                });
            }
            Step::BindPvToExportPvc { claim } | Step::RebindPvToUser { claim } => {
                o.pv.as_mut().expect("pv").claim_ref = Some(claim.clone());
            }
            Step::Serve => o.exporter_objects_exist = true,
            Step::DeleteExporterObjects => {
                o.exporter_objects_exist = false;
                if let Some(p) = o.exporter_pod.as_mut() {
                    p.deleting = true;
                }
            }
            Step::ForceDeleteExporterPod => o.exporter_pod = None,
            Step::DeleteExportPvc => o.export_pvc.as_mut().expect("export pvc").deleting = true,
            Step::RestoreReclaimPolicy { policy } => {
                o.pv.as_mut().expect("pv").reclaim_policy = Some(policy.clone())
            }
            Step::UnprotectUserPvc => {
                let u = o.user_pvc.as_mut().expect("user pvc");
                u.held_by = None;
                u.has_finalizer = false;
                u.has_labels = false;
            }
            Step::ClearPvRecord => {
                let pv = o.pv.as_mut().expect("pv");
                let (name, claim, policy, phase) = (
                    pv.name.clone(),
                    pv.claim_ref.clone(),
                    pv.reclaim_policy.clone(),
                    pv.phase.clone(),
                );
                *pv = Pv {
                    name,
                    claim_ref: claim,
                    reclaim_policy: policy,
                    phase,
                    ..Default::default()
                };
            }
            Step::Blocked { .. }
            | Step::WaitExporterPodGone { .. }
            | Step::WaitExportPvcGone
            | Step::WaitUserPvcBound
            | Step::Returned
            | Step::Inconsistent { .. } => {}
        }
        self.binder();
    }

    /// What kube-controller-manager does between our passes.
    fn binder(&mut self) {
        let o = &mut self.o;
        let pod_holds = o.exporter_pod.as_ref().is_some_and(|p| p.node.is_some());
        if let Some(e) = &o.export_pvc
            && e.deleting
            && !pod_holds
        {
            o.export_pvc = None; // pvc-protection lets go once no pod uses it
        }
        let claim = o.pv.as_ref().and_then(|p| p.claim_ref.clone());
        if let Some(e) = o.export_pvc.as_mut() {
            let bound = claim.as_ref().is_some_and(|c| c.uid == e.uid);
            e.phase = Some(if bound { "Bound" } else { "Pending" }.into());
        }
        if let Some(u) = o.user_pvc.as_mut() {
            let bound = claim.as_ref().is_some_and(|c| c.uid == u.uid);
            u.phase = Some(if bound { "Bound" } else { "Lost" }.into());
        }
        let claimed = claim.as_ref().is_some_and(|c| {
            o.user_pvc.as_ref().is_some_and(|u| u.uid == c.uid)
                || o.export_pvc.as_ref().is_some_and(|e| e.uid == c.uid)
        });
        if let Some(pv) = o.pv.as_mut() {
            pv.phase = Some(if claimed { "Bound" } else { "Released" }.into());
        }
    }

    /// Runs until a resting step; returns the steps taken.
    fn run(&mut self, max: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..max {
            let s = next_step(&self.o);
            let rest = matches!(
                s,
                Step::Serve | Step::Returned | Step::Blocked { .. } | Step::Inconsistent { .. }
            ) && (s != Step::Serve || self.o.exporter_objects_exist);
            steps.push(s.clone());
            if rest {
                break;
            }
            self.apply(&s);
        }
        steps
    }

    fn assert_returned(&self) {
        let u = self.o.user_pvc.as_ref().expect("user pvc");
        let pv = self.o.pv.as_ref().expect("pv");
        assert_eq!(u.phase.as_deref(), Some("Bound"));
        assert_eq!(pv.claim_ref, Some(user_claim()));
        assert_eq!(pv.reclaim_policy.as_deref(), Some("Delete"));
        assert!(!pv.has_any_record(), "{pv:?}");
        assert!(u.held_by.is_none() && !u.has_finalizer && !u.has_labels);
        assert!(self.o.export_pvc.is_none());
        assert!(!self.o.exporter_objects_exist);
    }
}

#[test]
fn full_handover_follows_the_design_order() {
    let mut w = World::new();
    let names: Vec<_> = w.run(30).iter().map(Step::name).collect();
    assert_eq!(
        names,
        [
            "protect-user-pvc",
            "record-pv",
            "create-export-pvc",
            "bind-pv-to-export-pvc",
            "serve",
            "serve"
        ]
    );
    assert_eq!(
        w.o.user_pvc.as_ref().and_then(|u| u.phase.as_deref()),
        Some("Lost")
    );
    assert_eq!(
        w.o.export_pvc.as_ref().and_then(|e| e.phase.as_deref()),
        Some("Bound")
    );
}

#[test]
fn full_return_follows_the_design_order() {
    let mut w = World::new();
    w.run(30);
    w.o.intent = Intent::Return;
    let names: Vec<_> = w.run(30).iter().map(Step::name).collect();
    assert_eq!(
        names,
        [
            "delete-exporter-objects",
            "delete-export-pvc",
            "rebind-pv-to-user-pvc",
            "restore-reclaim-policy",
            "unprotect-user-pvc",
            "clear-pv-record",
            "returned"
        ]
    );
    w.assert_returned();
}

/// Crash (stop) after every number of handover steps, then return: the user PVC always ends
/// Bound to its PV with the original reclaim policy and nothing of ours left.
#[test]
fn return_from_any_point_of_the_handover_restores_everything() {
    for crash_after in 0..8 {
        let mut w = World::new();
        for _ in 0..crash_after {
            let s = next_step(&w.o);
            w.apply(&s);
        }
        w.o.intent = Intent::Return;
        let steps = w.run(40);
        assert_eq!(
            steps.last(),
            Some(&Step::Returned),
            "crash after {crash_after}: {steps:?}"
        );
        w.assert_returned();
    }
}

/// Crash after every step of the return and resume it (the state is re-read from the world).
/// Also checks the binder may be slow: waiting steps never mutate.
#[test]
fn return_resumes_from_every_intermediate_state() {
    let mut base = World::new();
    base.run(30);
    base.o.intent = Intent::Return;
    let mut states = vec![base.clone()];
    let mut w = base;
    for _ in 0..20 {
        let s = next_step(&w.o);
        if s == Step::Returned {
            break;
        }
        w.apply(&s);
        states.push(w.clone());
    }
    assert!(states.len() >= 7);
    for (i, st) in states.into_iter().enumerate() {
        let mut w = st;
        let steps = w.run(40);
        assert_eq!(steps.last(), Some(&Step::Returned), "state {i}: {steps:?}");
        w.assert_returned();
    }
}

/// Re-running the handover from any intermediate state converges on Serve without repeating
/// a step that already took effect.
#[test]
fn handover_is_idempotent_from_every_intermediate_state() {
    for crash_after in 0..5 {
        let mut w = World::new();
        for _ in 0..crash_after {
            let s = next_step(&w.o);
            w.apply(&s);
        }
        let steps = w.run(30);
        assert_eq!(
            steps.last(),
            Some(&Step::Serve),
            "crash after {crash_after}"
        );
        let names: Vec<_> = steps.iter().map(Step::name).collect();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len() + 1, "{names:?}"); // only the final serve repeats
    }
}

#[test]
fn export_pvc_deleted_behind_our_back_is_replaced_safely() {
    let mut w = World::new();
    w.run(30);
    w.o.exporter_objects_exist = false;
    w.o.export_pvc = None;
    let steps = w.run(40);
    let names: Vec<_> = steps.iter().map(Step::name).collect();
    // The PV goes back to the user PVC first (it is Released meanwhile, safe under Retain), then
    // the handover continues with a fresh export PVC; the record stays valid throughout.
    assert_eq!(
        &names[..3],
        [
            "rebind-pv-to-user-pvc",
            "create-export-pvc",
            "bind-pv-to-export-pvc",
        ]
    );
    assert_eq!(steps.last(), Some(&Step::Serve));
}

#[test]
fn a_pod_using_the_pvc_is_named() {
    let mut o = observed(Intent::Export);
    o.pods_using = vec!["web-0".into()];
    assert_eq!(
        next_step(&o),
        Step::Blocked {
            reason: reason::TARGET_IN_USE,
            message: "PVC data is used by pod web-0; stop it or export a VolumeSnapshot instead"
                .into()
        }
    );
    o.pods_using = vec!["web-0".into(), "web-1".into()];
    let Step::Blocked { message, .. } = next_step(&o) else {
        panic!("blocked expected")
    };
    assert!(message.contains("pods web-0, web-1"));
}

#[test]
fn a_forged_owner_annotation_on_the_user_pvc_skips_no_check() {
    // The user PVC's annotations are the user's to write: naming their own DataExport there must
    // not make the handover look started and jump past the checks.
    let forged = |o: &mut Observed| o.user_pvc.as_mut().expect("u").held_by = Some(UID.into());
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|o| o.pods_using = vec!["web-0".into()]),
            reason::TARGET_IN_USE,
        ),
        (
            Box::new(|o| o.attached = vec!["csi-att-1".into()]),
            reason::TARGET_IN_USE,
        ),
        (
            Box::new(|o| o.concurrency = Concurrency { running: 3, max: 3 }),
            reason::LIMIT_REACHED,
        ),
    ];
    for (mutate, want) in cases {
        let mut o = observed(Intent::Export);
        forged(&mut o);
        mutate(&mut o);
        match next_step(&o) {
            Step::Blocked { reason, .. } => assert_eq!(reason, want),
            other => panic!("expected Blocked({want}), got {other:?}"),
        }
    }
    // With the checks passing it goes on (the protection is already there).
    let mut o = observed(Intent::Export);
    forged(&mut o);
    assert!(matches!(next_step(&o), Step::RecordPv { .. }));
}

#[test]
fn preconditions_each_block_with_their_reason() {
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|o| o.user_pvc = None), reason::TARGET_NOT_FOUND),
        (
            Box::new(|o| o.user_pvc.as_mut().expect("u").phase = Some("Pending".into())),
            reason::TARGET_NOT_READY,
        ),
        (
            Box::new(|o| o.user_pvc.as_mut().expect("u").volume_name = None),
            reason::TARGET_NOT_READY,
        ),
        (Box::new(|o| o.pv = None), reason::TARGET_NOT_FOUND),
        (
            Box::new(|o| {
                o.pv.as_mut()
                    .expect("pv")
                    .claim_ref
                    .as_mut()
                    .expect("c")
                    .uid = "other".into()
            }),
            reason::PV_CONFLICT,
        ),
        (
            Box::new(|o| o.pv.as_mut().expect("pv").claim_ref = None),
            reason::PV_CONFLICT,
        ),
        (
            Box::new(|o| o.pv.as_mut().expect("pv").owner_uid = Some("other".into())),
            reason::PV_CONFLICT,
        ),
        (
            Box::new(|o| o.pv.as_mut().expect("pv").exported_label = true),
            reason::PV_CONFLICT,
        ),
        (
            Box::new(|o| o.pv.as_mut().expect("pv").inconsistent_label = true),
            reason::PV_CONFLICT,
        ),
        (
            Box::new(|o| o.user_pvc.as_mut().expect("u").held_by = Some("other".into())),
            reason::TARGET_IN_USE,
        ),
        (
            Box::new(|o| o.user_pvc.as_mut().expect("u").deleting = true),
            reason::TARGET_NOT_FOUND,
        ),
        (
            Box::new(|o| o.attached = vec!["csi-123".into()]),
            reason::TARGET_IN_USE,
        ),
        (
            Box::new(|o| o.concurrency = crate::limits::Concurrency { running: 3, max: 3 }),
            reason::LIMIT_REACHED,
        ),
    ];
    for (i, (mutate, want)) in cases.into_iter().enumerate() {
        let mut o = observed(Intent::Export);
        mutate(&mut o);
        match next_step(&o) {
            Step::Blocked { reason, .. } => assert_eq!(reason, want, "case {i}"),
            other => panic!("case {i}: {other:?}"),
        }
    }
    assert_eq!(next_step(&observed(Intent::Export)), Step::ProtectUserPvc);
}

#[test]
fn record_keeps_the_original_policy_and_claim() {
    let mut o = observed(Intent::Export);
    o.user_pvc.as_mut().expect("u").held_by = Some(UID.into());
    o.pv.as_mut().expect("pv").reclaim_policy = Some("Retain".into());
    assert_eq!(
        next_step(&o),
        Step::RecordPv {
            original_reclaim_policy: "Retain".into(),
            original_claim: user_claim()
        }
    );
}

fn recorded(o: &mut Observed) {
    o.user_pvc.as_mut().expect("u").held_by = Some(UID.into());
    o.user_pvc.as_mut().expect("u").has_finalizer = true;
    let pv = o.pv.as_mut().expect("pv");
    pv.owner_uid = Some(UID.into());
    pv.exported_label = true;
    pv.original_reclaim_policy = Some("Delete".into());
    pv.original_claim_namespace = Some("app".into());
    pv.original_claim_name = Some("data".into());
    pv.original_claim_uid = Some("user-uid".into());
    pv.reclaim_policy = Some("Retain".into());
}

#[test]
fn broken_records_are_never_guessed() {
    let breakages: Vec<PvBreakage> = vec![
        Box::new(|pv| pv.original_reclaim_policy = None),
        Box::new(|pv| pv.original_reclaim_policy = Some("Keep".into())),
        Box::new(|pv| pv.original_claim_uid = None),
        Box::new(|pv| pv.original_claim_name = Some(String::new())),
        Box::new(|pv| pv.original_claim_uid = Some("someone-else".into())),
        Box::new(|pv| pv.inconsistent_label = true),
    ];
    for (i, brk) in breakages.iter().enumerate() {
        for intent in [Intent::Export, Intent::Return] {
            let mut o = observed(intent);
            recorded(&mut o);
            brk(o.pv.as_mut().expect("pv"));
            assert!(
                matches!(next_step(&o), Step::Inconsistent { .. }),
                "breakage {i} {intent:?}: {:?}",
                next_step(&o)
            );
        }
    }
    // claimRef pointing somewhere else entirely.
    let mut o = observed(Intent::Export);
    recorded(&mut o);
    o.pv.as_mut().expect("pv").claim_ref = Some(ClaimRef {
        namespace: "x".into(),
        name: "y".into(),
        uid: "z".into(),
    });
    assert!(matches!(next_step(&o), Step::Inconsistent { .. }));
    // user PVC gone while the PV is ours.
    for intent in [Intent::Export, Intent::Return] {
        let mut o = observed(intent);
        recorded(&mut o);
        o.user_pvc = None;
        assert!(matches!(next_step(&o), Step::Inconsistent { .. }));
    }
}

#[test]
fn return_waits_for_the_binder_and_does_not_restore_early() {
    let mut o = observed(Intent::Return);
    recorded(&mut o);
    o.user_pvc.as_mut().expect("u").phase = Some("Lost".into());
    assert_eq!(next_step(&o), Step::WaitUserPvcBound);
    o.user_pvc.as_mut().expect("u").phase = Some("Bound".into());
    assert_eq!(
        next_step(&o),
        Step::RestoreReclaimPolicy {
            policy: "Delete".into()
        }
    );
}

/// Seen on the real control plane: the return rebinds so quickly that the user PVC still shows
/// its old `Bound` while the PV is still `Released` from the export PVC's deletion. Restoring
/// `Delete` then would let the provisioner delete the volume.
#[test]
fn a_released_pv_never_gets_delete_back_even_if_the_user_pvc_looks_bound() {
    let mut o = observed(Intent::Return);
    recorded(&mut o);
    o.pv.as_mut().expect("pv").phase = Some("Released".into());
    assert_eq!(
        o.user_pvc.as_ref().and_then(|u| u.phase.as_deref()),
        Some("Bound")
    );
    assert_eq!(next_step(&o), Step::WaitUserPvcBound);
    o.pv.as_mut().expect("pv").phase = Some("Bound".into());
    assert_eq!(
        next_step(&o),
        Step::RestoreReclaimPolicy {
            policy: "Delete".into()
        }
    );
}

#[test]
fn rebind_only_under_retain() {
    let mut o = observed(Intent::Return);
    recorded(&mut o);
    let pv = o.pv.as_mut().expect("pv");
    pv.claim_ref = Some(ClaimRef {
        namespace: MODNS.into(),
        name: EXP.into(),
        uid: "e".into(),
    });
    pv.reclaim_policy = Some("Delete".into());
    assert_eq!(next_step(&o), Step::EnsureRetain);
}

#[test]
fn return_of_something_never_taken_is_immediate() {
    assert_eq!(next_step(&observed(Intent::Return)), Step::Returned);
    let mut o = observed(Intent::Return);
    o.user_pvc.as_mut().expect("u").held_by = Some(UID.into());
    o.user_pvc.as_mut().expect("u").has_finalizer = true;
    assert_eq!(next_step(&o), Step::UnprotectUserPvc);
    // Another export's hold is not ours to remove.
    let mut o = observed(Intent::Return);
    o.user_pvc.as_mut().expect("u").held_by = Some("other".into());
    o.user_pvc.as_mut().expect("u").has_finalizer = true;
    assert_eq!(next_step(&o), Step::Returned);
}

/// Every combination of the observable facts: the decision never touches a PV held by another
/// export, a return never takes anything, and the PV record is cleared only after the user
/// PVC is bound again with the original reclaim policy.
#[test]
fn exhaustive_safety_properties() {
    let holders = [None, Some(UID), Some("other")];
    let claims = ["user", "export", "export-stale", "elsewhere", "none"];
    let export_states = [0u8, 1, 2]; // absent, present, deleting
    let policies = ["Delete", "Retain"];
    let records = [0u8, 1, 2]; // none, complete, broken
    let phases = ["Bound", "Lost", "Pending"];
    let mut checked = 0;
    for intent in [Intent::Export, Intent::Return] {
        for user_holder in holders {
            for pv_owner in holders {
                for claim in claims {
                    for ex in export_states {
                        for objs in [false, true] {
                            for policy in policies {
                                for rec in records {
                                    for phase in phases {
                                        for user_present in [true, false] {
                                            for (pod, pv_phase) in
                                                pod_variants().into_iter().flat_map(|p| {
                                                    [(p.clone(), "Bound"), (p, "Released")]
                                                })
                                            {
                                                let mut o = observed(intent);
                                                o.exporter_pod = pod;
                                                o.pv.as_mut().expect("pv").phase =
                                                    Some(pv_phase.into());
                                                if let Some(u) = o.user_pvc.as_mut() {
                                                    u.held_by = user_holder.map(Into::into);
                                                    u.has_finalizer = user_holder.is_some();
                                                    u.phase = Some(phase.into());
                                                }
                                                if !user_present {
                                                    o.user_pvc = None;
                                                }
                                                o.exporter_objects_exist = objs;
                                                if ex > 0 {
                                                    o.export_pvc = Some(ExportPvc {
                                                        namespace: MODNS.into(),
                                                        name: EXP.into(),
                                                        uid: "e1".into(),
                                                        phase: Some("Bound".into()),
                                                        deleting: ex == 2,
                                                    });
                                                }
                                                let pv = o.pv.as_mut().expect("pv");
                                                pv.reclaim_policy = Some(policy.into());
                                                pv.claim_ref = match claim {
                                                    "user" => Some(user_claim()),
                                                    "export" => Some(ClaimRef {
                                                        namespace: MODNS.into(),
                                                        name: EXP.into(),
                                                        uid: "e1".into(),
                                                    }),
                                                    "export-stale" => Some(ClaimRef {
                                                        namespace: MODNS.into(),
                                                        name: EXP.into(),
                                                        uid: "e0".into(),
                                                    }),
                                                    "elsewhere" => Some(ClaimRef {
                                                        namespace: "x".into(),
                                                        name: "y".into(),
                                                        uid: "z".into(),
                                                    }),
                                                    _ => None,
                                                };
                                                if let Some(owner) = pv_owner {
                                                    pv.owner_uid = Some(owner.into());
                                                    pv.exported_label = true;
                                                    if rec >= 1 {
                                                        pv.original_reclaim_policy =
                                                            Some("Delete".into());
                                                        pv.original_claim_namespace =
                                                            Some("app".into());
                                                        pv.original_claim_name =
                                                            Some("data".into());
                                                        pv.original_claim_uid = Some(
                                                            if rec == 1 {
                                                                "user-uid"
                                                            } else {
                                                                "zzz"
                                                            }
                                                            .into(),
                                                        );
                                                    }
                                                }
                                                check_properties(&o);
                                                checked += 1;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 100_000, "{checked}");
}

/// No pod, a pod never scheduled, and a terminating pod on a node in each state.
fn pod_variants() -> Vec<Option<ExporterPod>> {
    let mut v = vec![
        None,
        Some(ExporterPod {
            name: EXP.into(),
            uid: "pod-uid".into(),
            deleting: true,
            ..Default::default()
        }),
    ];
    for state in [
        None,
        Some(NodeState::Ready),
        Some(NodeState::NotReady),
        Some(NodeState::Missing),
        Some(NodeState::Unknown),
    ] {
        v.push(Some(ExporterPod {
            name: EXP.into(),
            uid: "pod-uid".into(),
            node: Some("node-1".into()),
            node_state: state,
            deleting: true,
        }));
    }
    v
}

fn check_properties(o: &Observed) {
    let step = next_step(o);
    let pv = o.pv.as_ref().expect("pv");
    let pv_other = pv.owner_uid.as_deref().is_some_and(|u| u != UID);
    let ctx = || format!("{o:#?} -> {step:?}");
    if o.intent == Intent::Return {
        assert!(
            !matches!(
                step,
                Step::ProtectUserPvc
                    | Step::RecordPv { .. }
                    | Step::CreateExportPvc
                    | Step::BindPvToExportPvc { .. }
                    | Step::Serve
            ),
            "return takes: {}",
            ctx()
        );
    }
    if pv_other {
        assert!(
            !matches!(
                step,
                Step::RecordPv { .. }
                    | Step::EnsureRetain
                    | Step::BindPvToExportPvc { .. }
                    | Step::RebindPvToUser { .. }
                    | Step::RestoreReclaimPolicy { .. }
                    | Step::ClearPvRecord
            ),
            "touches another export's PV: {}",
            ctx()
        );
    }
    let pod_may_mount = o.exporter_pod.as_ref().is_some_and(|p| p.node.is_some());
    if pod_may_mount {
        // Nothing is given back while a pod that may still mount the volume exists.
        assert!(
            !matches!(
                step,
                Step::RebindPvToUser { .. }
                    | Step::RestoreReclaimPolicy { .. }
                    | Step::UnprotectUserPvc
                    | Step::ClearPvRecord
                    | Step::Returned
            ),
            "gives back with a pod left: {}",
            ctx()
        );
    }
    if step == Step::ForceDeleteExporterPod {
        let p = o.exporter_pod.as_ref().expect("pod");
        assert_eq!(p.node_state, Some(NodeState::Missing), "{}", ctx());
    }
    if let Step::RebindPvToUser { claim } = &step {
        assert_eq!(claim, &user_claim(), "{}", ctx());
        assert_eq!(pv.reclaim_policy.as_deref(), Some("Retain"), "{}", ctx());
        assert!(
            o.export_pvc.is_none() && !o.exporter_objects_exist,
            "{}",
            ctx()
        );
    }
    if matches!(
        step,
        Step::ClearPvRecord | Step::RestoreReclaimPolicy { .. }
    ) {
        let u = o.user_pvc.as_ref().expect("user pvc present");
        assert_eq!(u.phase.as_deref(), Some("Bound"), "{}", ctx());
        assert_eq!(pv.claim_ref, Some(user_claim()), "{}", ctx());
    }
    if let Step::RestoreReclaimPolicy { .. } = step {
        // A Released PV given its Delete policy back would be deleted by its provisioner.
        assert_eq!(pv.phase.as_deref(), Some("Bound"), "{}", ctx());
    }
    if step == Step::ClearPvRecord {
        assert_eq!(pv.reclaim_policy.as_deref(), Some("Delete"), "{}", ctx());
    }
    if let Step::BindPvToExportPvc { .. } = step {
        assert_eq!(pv.reclaim_policy.as_deref(), Some("Retain"), "{}", ctx());
        assert_eq!(pv.owner_uid.as_deref(), Some(UID), "{}", ctx());
    }
    if step == Step::DeleteExportPvc {
        assert!(!o.exporter_objects_exist, "{}", ctx());
    }
}

fn stuck_pod(state: NodeState) -> ExporterPod {
    ExporterPod {
        name: EXP.into(),
        uid: "pod-uid".into(),
        node: Some("node-1".into()),
        node_state: Some(state),
        deleting: false,
    }
}

#[test]
fn a_pod_on_a_lost_node_holds_the_return_until_its_node_is_deleted() {
    let mut w = World::new();
    w.run(30);
    w.o.intent = Intent::Return;
    w.o.exporter_pod = Some(stuck_pod(NodeState::NotReady));
    let steps = w.run(5);
    assert_eq!(steps[0], Step::DeleteExporterObjects);
    for s in &steps[1..] {
        match s {
            Step::WaitExporterPodGone {
                lost_node: Some(message),
            } => {
                assert!(
                    message.contains("on unreachable node node-1 to terminate"),
                    "{message}"
                );
                assert!(message.contains("delete the Node if it is gone for good"));
            }
            other => panic!("expected a wait for the lost node, got {other:?}"),
        }
    }
    // Nothing was given back meanwhile.
    let pv = w.o.pv.as_ref().expect("pv");
    assert_ne!(pv.claim_ref, Some(user_claim()));
    assert_eq!(pv.reclaim_policy.as_deref(), Some("Retain"));
    assert!(w.o.export_pvc.is_some());
    // The Node object is deleted: the pod is force-deleted and the return completes.
    if let Some(p) = w.o.exporter_pod.as_mut() {
        p.node_state = Some(NodeState::Missing);
    }
    let names: Vec<_> = w.run(30).iter().map(Step::name).collect();
    assert_eq!(
        names,
        [
            "force-delete-exporter-pod",
            "delete-export-pvc",
            "rebind-pv-to-user-pvc",
            "restore-reclaim-policy",
            "unprotect-user-pvc",
            "clear-pv-record",
            "returned"
        ]
    );
    w.assert_returned();
}

#[test]
fn a_pod_terminating_on_a_healthy_node_is_waited_for_before_the_rebind() {
    let mut w = World::new();
    w.run(30);
    w.o.intent = Intent::Return;
    w.o.exporter_pod = Some(stuck_pod(NodeState::Ready));
    assert_eq!(next_step(&w.o), Step::DeleteExporterObjects);
    w.apply(&Step::DeleteExporterObjects);
    // The export PVC may go (Kubernetes keeps it until the pod is gone)...
    assert_eq!(next_step(&w.o), Step::DeleteExportPvc);
    w.apply(&Step::DeleteExportPvc);
    assert_eq!(next_step(&w.o), Step::WaitExportPvcGone);
    // ...and even if it went first, the volume is not handed back while the pod exists.
    w.o.export_pvc = None;
    assert_eq!(
        next_step(&w.o),
        Step::WaitExporterPodGone { lost_node: None }
    );
    w.o.exporter_pod = None;
    assert!(matches!(next_step(&w.o), Step::RebindPvToUser { .. }));
    w.run(30);
    w.assert_returned();
}

#[test]
fn a_deleting_user_pvc_is_released_last() {
    let mut w = World::new();
    w.run(30);
    w.o.intent = Intent::Return;
    w.o.user_pvc.as_mut().expect("u").deleting = true;
    let names: Vec<_> = w.run(30).iter().map(Step::name).collect();
    assert_eq!(
        names,
        [
            "delete-exporter-objects",
            "delete-export-pvc",
            "rebind-pv-to-user-pvc",
            "restore-reclaim-policy",
            "clear-pv-record",
            "unprotect-user-pvc",
            "returned"
        ]
    );
}
