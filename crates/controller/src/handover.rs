//! The PV handover and return (docs/development/ARCHITECTURE.md, "Taking a PV and giving it back")
//! as a pure state machine.
//!
//! [`next_step`] looks only at what is observable in the cluster (annotations and labels on the
//! PV and the user PVC, the PV's `claimRef` and reclaim policy, the existence of the export PVC
//! and exporter objects) and names the single next step. The I/O layer applies that step and
//! observes again, so a controller that dies anywhere resumes from the cluster state alone.
//! A recorded state that does not add up is reported as [`Step::Inconsistent`], never guessed at.

use svdm_api::conditions::reason;

use crate::limits::Concurrency;
use crate::node_loss::{self, ExporterPod, Verdict};

/// A claim reference (namespace, name, uid) as found in `pv.spec.claimRef` or in our annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The user's PVC as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPvc {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub phase: Option<String>,
    pub volume_name: Option<String>,
    pub deleting: bool,
    /// Value of the owner-uid annotation: which DataExport holds this PVC, if any.
    pub held_by: Option<String>,
    /// Our protection finalizer is present.
    pub has_finalizer: bool,
    /// Our labels are present.
    pub has_labels: bool,
}

impl UserPvc {
    fn bound_to(&self, pv: &str) -> bool {
        self.phase.as_deref() == Some("Bound") && self.volume_name.as_deref() == Some(pv)
    }
}

/// The PV as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pv {
    pub name: String,
    pub claim_ref: Option<ClaimRef>,
    pub reclaim_policy: Option<String>,
    /// `status.phase` (Bound, Released, ...).
    pub phase: Option<String>,
    /// Owner-uid annotation (which DataExport recorded this PV).
    pub owner_uid: Option<String>,
    /// The tracking label `LABEL_PV_EXPORTED`.
    pub exported_label: bool,
    pub inconsistent_label: bool,
    pub original_reclaim_policy: Option<String>,
    pub original_claim_namespace: Option<String>,
    pub original_claim_name: Option<String>,
    pub original_claim_uid: Option<String>,
}

impl Pv {
    fn recorded_by(&self, uid: &str) -> bool {
        self.owner_uid.as_deref() == Some(uid)
    }

    fn has_any_record(&self) -> bool {
        self.owner_uid.is_some()
            || self.exported_label
            || self.original_reclaim_policy.is_some()
            || self.original_claim_uid.is_some()
    }

    fn claim_is(&self, c: &ClaimRef) -> bool {
        self.claim_ref.as_ref() == Some(c)
    }
}

/// The export PVC in the module namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportPvc {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub phase: Option<String>,
    pub deleting: bool,
}

/// Whether the DataExport wants its data served or given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    Export,
    Return,
}

/// Everything [`next_step`] decides from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub intent: Intent,
    /// UID of the DataExport.
    pub uid: String,
    /// Namespace and name the export PVC has (or will have).
    pub export_pvc_namespace: String,
    pub export_pvc_name: String,
    pub user_pvc: Option<UserPvc>,
    pub pv: Option<Pv>,
    pub export_pvc: Option<ExportPvc>,
    /// Any exporter object (Pod not yet being deleted, Service, Secret, Lease, Ingress) still
    /// exists.
    pub exporter_objects_exist: bool,
    /// The exporter pod, also while it terminates (observed together with
    /// `exporter_objects_exist`, i.e. for a return).
    pub exporter_pod: Option<ExporterPod>,
    /// Pods (not Succeeded/Failed) that use the user PVC; only needed before the handover starts.
    pub pods_using: Vec<String>,
    /// VolumeAttachments that are attached for the PV; only needed before the handover starts.
    pub attached: Vec<String>,
    /// Running exports against the module's limit (only observed before the handover).
    pub concurrency: Concurrency,
}

/// The one next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A precondition fails; nothing was (or will be) taken. Retry later.
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// Handover 2: finalizer, owner annotations and labels on the user PVC.
    ProtectUserPvc,
    /// Handover 3: record original reclaim policy and claim on the PV, and set Retain (one write).
    RecordPv {
        original_reclaim_policy: String,
        original_claim: ClaimRef,
    },
    /// The PV is recorded by us but someone changed its reclaim policy: set Retain again.
    EnsureRetain,
    /// Handover 4a: create the export PVC, pre-bound to the PV.
    CreateExportPvc,
    /// Handover 4b: point the PV's claimRef at the export PVC.
    BindPvToExportPvc { claim: ClaimRef },
    /// Handover done: run the exporter (Pod, Service, Secret, Lease, Ingress).
    Serve,
    /// Return 1: delete the exporter objects.
    DeleteExporterObjects,
    /// The exporter pod's Node object is gone: delete the pod without the kubelet's confirmation.
    ForceDeleteExporterPod,
    /// The exporter pod still exists (terminating); the volume is not given back before it is
    /// gone. `lost_node` explains a wait on a node that does not answer.
    WaitExporterPodGone { lost_node: Option<String> },
    /// Return 2: delete the export PVC.
    DeleteExportPvc,
    /// The export PVC is being deleted; wait.
    WaitExportPvcGone,
    /// Return 3: point the PV's claimRef back at the user PVC (with uid).
    RebindPvToUser { claim: ClaimRef },
    /// Return 4: wait until the user PVC is Bound to the PV again and the PV itself shows Bound.
    WaitUserPvcBound,
    /// Return 5: restore the original reclaim policy.
    RestoreReclaimPolicy { policy: String },
    /// Return 6: remove finalizer, annotations and labels from the user PVC.
    UnprotectUserPvc,
    /// Return 7: remove the PV's annotations and labels, the tracking label with them (last write).
    ClearPvRecord,
    /// Nothing of ours is held any more.
    Returned,
    /// The recorded state does not add up; a human must look. The PV is labelled.
    Inconsistent { message: String },
}

impl Step {
    /// Stable step name, used for logs, metrics and `--fault-after-step`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Blocked { .. } => "blocked",
            Step::ProtectUserPvc => "protect-user-pvc",
            Step::RecordPv { .. } => "record-pv",
            Step::EnsureRetain => "ensure-retain",
            Step::CreateExportPvc => "create-export-pvc",
            Step::BindPvToExportPvc { .. } => "bind-pv-to-export-pvc",
            Step::Serve => "serve",
            Step::DeleteExporterObjects => "delete-exporter-objects",
            Step::ForceDeleteExporterPod => "force-delete-exporter-pod",
            Step::WaitExporterPodGone { .. } => "wait-exporter-pod-gone",
            Step::DeleteExportPvc => "delete-export-pvc",
            Step::WaitExportPvcGone => "wait-export-pvc-gone",
            Step::RebindPvToUser { .. } => "rebind-pv-to-user-pvc",
            Step::WaitUserPvcBound => "wait-user-pvc-bound",
            Step::RestoreReclaimPolicy { .. } => "restore-reclaim-policy",
            Step::UnprotectUserPvc => "unprotect-user-pvc",
            Step::ClearPvRecord => "clear-pv-record",
            Step::Returned => "returned",
            Step::Inconsistent { .. } => "inconsistent",
        }
    }

    /// Steps that change the cluster (as opposed to waiting or reporting).
    pub fn is_action(&self) -> bool {
        !matches!(
            self,
            Step::Blocked { .. }
                | Step::Serve
                | Step::WaitExporterPodGone { .. }
                | Step::WaitExportPvcGone
                | Step::WaitUserPvcBound
                | Step::Returned
                | Step::Inconsistent { .. }
        )
    }
}

/// Names of every step that persists something, in handover then return order (for
/// `--fault-after-step` and the fault-injection suite). `force-delete-exporter-pod` persists too
/// but is only reached when a node is lost; `tests/node_gone.rs` covers it.
pub const PERSISTING_STEPS: &[&str] = &[
    "protect-user-pvc",
    "record-pv",
    "create-export-pvc",
    "bind-pv-to-export-pvc",
    "serve",
    "delete-exporter-objects",
    "delete-export-pvc",
    "rebind-pv-to-user-pvc",
    "restore-reclaim-policy",
    "unprotect-user-pvc",
    "clear-pv-record",
];

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain", "Recycle"];

fn blocked(reason: &'static str, message: impl Into<String>) -> Step {
    Step::Blocked {
        reason,
        message: message.into(),
    }
}

fn inconsistent(message: impl Into<String>) -> Step {
    Step::Inconsistent {
        message: message.into(),
    }
}

/// Validates our record on a PV; returns the recorded original claim and reclaim policy.
fn validate_record(pv: &Pv) -> Result<(ClaimRef, String), Step> {
    let policy = match pv.original_reclaim_policy.as_deref() {
        Some(p) if RECLAIM_POLICIES.contains(&p) => p.to_owned(),
        Some(p) => {
            return Err(inconsistent(format!(
                "PV {} records an unknown original reclaim policy {p:?}",
                pv.name
            )));
        }
        None => {
            return Err(inconsistent(format!(
                "PV {} is recorded as exported but its original reclaim policy is missing",
                pv.name
            )));
        }
    };
    match (
        pv.original_claim_namespace.as_deref(),
        pv.original_claim_name.as_deref(),
        pv.original_claim_uid.as_deref(),
    ) {
        (Some(ns), Some(name), Some(uid))
            if !ns.is_empty() && !name.is_empty() && !uid.is_empty() =>
        {
            Ok((
                ClaimRef {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                },
                policy,
            ))
        }
        _ => Err(inconsistent(format!(
            "PV {} is recorded as exported but its original claim (namespace, name, uid) is incomplete",
            pv.name
        ))),
    }
}

/// Decides the next step. Pure: the same observation always gives the same step.
pub fn next_step(o: &Observed) -> Step {
    match o.intent {
        Intent::Return => return_step(o),
        Intent::Export => export_step(o),
    }
}

fn export_claim(o: &Observed, export: &ExportPvc) -> ClaimRef {
    ClaimRef {
        namespace: o.export_pvc_namespace.clone(),
        name: o.export_pvc_name.clone(),
        uid: export.uid.clone(),
    }
}

fn claim_points_at_export_pvc(o: &Observed, pv: &Pv) -> bool {
    pv.claim_ref
        .as_ref()
        .is_some_and(|c| c.namespace == o.export_pvc_namespace && c.name == o.export_pvc_name)
}

fn export_step(o: &Observed) -> Step {
    let Some(user) = &o.user_pvc else {
        // A PV we recorded while its user PVC is gone cannot be handed back safely.
        if let Some(pv) = o.pv.as_ref().filter(|pv| pv.recorded_by(&o.uid)) {
            return inconsistent(format!(
                "PV {} is exported, but its user PVC no longer exists; the PV is kept with reclaim policy Retain",
                pv.name
            ));
        }
        return blocked(
            reason::TARGET_NOT_FOUND,
            "PersistentVolumeClaim not found; create it or fix spec.targetRef",
        );
    };

    let held_by_us = user.held_by.as_deref() == Some(o.uid.as_str());
    let pv_ours = o.pv.as_ref().is_some_and(|pv| pv.recorded_by(&o.uid));

    if !held_by_us {
        if pv_ours {
            // A return was cut short after the user PVC was released: finish it first.
            return return_step(o);
        }
        return precondition_step(o, user);
    }

    // The user PVC names us, but that annotation is the user's to write: until our record is on
    // the PV (or the export PVC exists) the handover has not started, whatever the PVC says, so
    // the checks before it still apply.
    if !pv_ours
        && o.export_pvc.is_none()
        && !user.deleting
        && let Some(stop) = start_checks(o, user)
    {
        return stop;
    }

    // From here the user PVC is ours: we are committed to the handover until told to return.
    if user.deleting {
        // The user wants the PVC gone; the caller turns this into a return.
        return return_step(o);
    }
    let Some(pv) = &o.pv else {
        if o.export_pvc.is_some() || o.exporter_objects_exist {
            return return_step(o);
        }
        return blocked(
            reason::TARGET_NOT_FOUND,
            format!(
                "PersistentVolume {} of the PVC not found",
                user.volume_name.as_deref().unwrap_or("<none>")
            ),
        );
    };
    if pv.inconsistent_label {
        return inconsistent(format!(
            "PV {} is labelled inconsistent; an administrator must check it and remove the label",
            pv.name
        ));
    }
    let user_claim = ClaimRef {
        namespace: user.namespace.clone(),
        name: user.name.clone(),
        uid: user.uid.clone(),
    };
    if !pv.recorded_by(&o.uid) {
        if pv.has_any_record() {
            return blocked(
                reason::PV_CONFLICT,
                format!("PV {} is already held by another export", pv.name),
            );
        }
        if !pv.claim_is(&user_claim) || !user.bound_to(&pv.name) {
            return blocked(
                reason::PV_CONFLICT,
                format!(
                    "PV {} is not bound to PVC {}/{} (claimRef or uid differ)",
                    pv.name, user.namespace, user.name
                ),
            );
        }
        return Step::RecordPv {
            original_reclaim_policy: pv
                .reclaim_policy
                .clone()
                .unwrap_or_else(|| "Delete".to_owned()),
            original_claim: user_claim,
        };
    }
    let (recorded_claim, _) = match validate_record(pv) {
        Ok(r) => r,
        Err(step) => return step,
    };
    if recorded_claim != user_claim {
        return inconsistent(format!(
            "PV {} records original claim {}/{} (uid {}), which is not the user PVC {}/{} (uid {})",
            pv.name,
            recorded_claim.namespace,
            recorded_claim.name,
            recorded_claim.uid,
            user.namespace,
            user.name,
            user.uid
        ));
    }
    if pv.reclaim_policy.as_deref() != Some("Retain") {
        return Step::EnsureRetain;
    }
    if pv.claim_is(&user_claim) {
        return match &o.export_pvc {
            None => Step::CreateExportPvc,
            Some(e) if e.deleting => Step::WaitExportPvcGone,
            Some(e) => Step::BindPvToExportPvc {
                claim: export_claim(o, e),
            },
        };
    }
    if claim_points_at_export_pvc(o, pv) {
        return match &o.export_pvc {
            Some(e) if !e.deleting && pv.claim_is(&export_claim(o, e)) => Step::Serve,
            // The export PVC was deleted or replaced behind our back: give the volume back; a
            // fresh handover follows once everything is returned.
            _ => return_step(o),
        };
    }
    if pv.claim_ref.as_ref().is_some_and(|c| {
        c.namespace == user_claim.namespace && c.name == user_claim.name && c.uid.is_empty()
    }) {
        // A claimRef without uid for the right claim: the binder fills it in.
        return blocked(
            reason::TARGET_NOT_READY,
            format!("PV {} is still being bound", pv.name),
        );
    }
    inconsistent(format!(
        "PV {} is recorded as exported, but its claimRef points neither at the user PVC nor at the export PVC",
        pv.name
    ))
}

fn precondition_step(o: &Observed, user: &UserPvc) -> Step {
    if let Some(other) = &user.held_by {
        return blocked(
            reason::TARGET_IN_USE,
            format!(
                "PVC is already exported by another DataExport (uid {other}); delete that DataExport first"
            ),
        );
    }
    if user.deleting {
        return blocked(reason::TARGET_NOT_FOUND, "PVC is being deleted");
    }
    start_step(o, user)
}

/// The checks before a handover starts: the step that stops it, or `None` when it may start.
fn start_checks(o: &Observed, user: &UserPvc) -> Option<Step> {
    Some(start_step(o, user)).filter(|s| *s != Step::ProtectUserPvc)
}

/// The first step of a handover: blocked by the first check that fails, else
/// [`Step::ProtectUserPvc`].
fn start_step(o: &Observed, user: &UserPvc) -> Step {
    if user.phase.as_deref() != Some("Bound") {
        return blocked(
            reason::TARGET_NOT_READY,
            format!(
                "PVC is {}, not Bound; wait until it is bound",
                user.phase.as_deref().unwrap_or("Pending")
            ),
        );
    }
    let Some(volume) = user.volume_name.as_deref().filter(|v| !v.is_empty()) else {
        return blocked(reason::TARGET_NOT_READY, "PVC has no volume yet");
    };
    let Some(pv) = o.pv.as_ref().filter(|pv| pv.name == volume) else {
        return blocked(
            reason::TARGET_NOT_FOUND,
            format!("PersistentVolume {volume} of the PVC not found"),
        );
    };
    if pv.inconsistent_label {
        return blocked(
            reason::PV_CONFLICT,
            format!(
                "PV {volume} is labelled inconsistent by an earlier export; an administrator must check it"
            ),
        );
    }
    if pv.has_any_record() {
        return blocked(
            reason::PV_CONFLICT,
            format!("PV {volume} is already held by another export"),
        );
    }
    let expected = ClaimRef {
        namespace: user.namespace.clone(),
        name: user.name.clone(),
        uid: user.uid.clone(),
    };
    if !pv.claim_is(&expected) {
        return blocked(
            reason::PV_CONFLICT,
            format!(
                "PV {volume} claimRef does not match PVC {}/{} (uid {})",
                user.namespace, user.name, user.uid
            ),
        );
    }
    if !o.pods_using.is_empty() {
        let word = if o.pods_using.len() == 1 {
            "pod"
        } else {
            "pods"
        };
        return blocked(
            reason::TARGET_IN_USE,
            format!(
                "PVC data is used by {word} {}; stop it or export a VolumeSnapshot instead",
                o.pods_using.join(", ")
            ),
        );
    }
    if !o.attached.is_empty() {
        return blocked(
            reason::TARGET_IN_USE,
            format!(
                "PV {volume} is still attached to a node (VolumeAttachment {}); wait until it is detached",
                o.attached.join(", ")
            ),
        );
    }
    if let Some(message) = o.concurrency.blocked_message() {
        return blocked(reason::LIMIT_REACHED, message);
    }
    Step::ProtectUserPvc
}

/// Our finalizer or labels on a user PVC that no other export holds.
fn unclaimed_leftovers(u: &UserPvc) -> bool {
    u.held_by.is_none() && (u.has_finalizer || u.has_labels)
}

fn return_step(o: &Observed) -> Step {
    if o.exporter_objects_exist {
        return Step::DeleteExporterObjects;
    }
    let pod = node_loss::return_verdict(o.exporter_pod.as_ref());
    match &pod {
        Verdict::ForceDelete => return Step::ForceDeleteExporterPod,
        Verdict::WaitLostNode { message } => {
            return Step::WaitExporterPodGone {
                lost_node: Some(message.clone()),
            };
        }
        Verdict::Wait | Verdict::Proceed => {}
    }
    if let Some(e) = &o.export_pvc {
        return if e.deleting {
            Step::WaitExportPvcGone
        } else {
            Step::DeleteExportPvc
        };
    }
    // The export PVC's protection normally holds until the pod is gone; this does not rely on
    // it: no rebind while a pod that may still mount the volume exists.
    if pod == Verdict::Wait {
        return Step::WaitExporterPodGone { lost_node: None };
    }
    let user = o.user_pvc.as_ref();
    let held_by_us = user.is_some_and(|u| u.held_by.as_deref() == Some(o.uid.as_str()));
    let Some(pv) = o.pv.as_ref().filter(|pv| pv.recorded_by(&o.uid)) else {
        // Nothing of the PV is ours (never recorded, or already cleared).
        if held_by_us || user.is_some_and(unclaimed_leftovers) {
            return Step::UnprotectUserPvc;
        }
        return Step::Returned;
    };
    if pv.inconsistent_label {
        return inconsistent(format!(
            "PV {} is labelled inconsistent; an administrator must check it and remove the label",
            pv.name
        ));
    }
    let (recorded_claim, policy) = match validate_record(pv) {
        Ok(r) => r,
        Err(step) => return step,
    };
    let Some(user) = user else {
        return inconsistent(format!(
            "PV {} cannot be returned: its user PVC {}/{} no longer exists; the PV is kept with reclaim policy Retain",
            pv.name, recorded_claim.namespace, recorded_claim.name
        ));
    };
    if user.namespace != recorded_claim.namespace
        || user.name != recorded_claim.name
        || user.uid != recorded_claim.uid
    {
        return inconsistent(format!(
            "PV {} records original claim {}/{} uid {}, but that PVC now has uid {}",
            pv.name, recorded_claim.namespace, recorded_claim.name, recorded_claim.uid, user.uid
        ));
    }
    if user.volume_name.as_deref().is_some_and(|v| v != pv.name) {
        return inconsistent(format!(
            "PV {} records PVC {}/{}, but that PVC names volume {}",
            pv.name,
            user.namespace,
            user.name,
            user.volume_name.as_deref().unwrap_or_default()
        ));
    }
    if !pv.claim_is(&recorded_claim) {
        // Safe only because the PV is Retain: it stayed Released while nobody claimed it.
        if pv.reclaim_policy.as_deref() != Some("Retain") {
            return Step::EnsureRetain;
        }
        return Step::RebindPvToUser {
            claim: recorded_claim,
        };
    }
    // Both sides must show the binding again. The user PVC alone is not enough: right after a
    // quick rebind it can still show its old `Bound` (it never turned Lost) while the PV is
    // still `Released` from the export PVC's deletion, and a `Released` PV given its `Delete`
    // policy back is deleted by its provisioner. The restore below is written against this
    // observed PV version, so it only lands while the PV is Bound.
    if !user.bound_to(&pv.name) || pv.phase.as_deref() != Some("Bound") {
        return Step::WaitUserPvcBound;
    }
    if pv.reclaim_policy.as_deref() != Some(policy.as_str()) {
        return Step::RestoreReclaimPolicy { policy };
    }
    if user.deleting {
        // Releasing a PVC that is being deleted makes it vanish at once; the PV record (the
        // only other trace) goes first, the PVC's own marks are then found on the PVC itself.
        return Step::ClearPvRecord;
    }
    if held_by_us || unclaimed_leftovers(user) {
        return Step::UnprotectUserPvc;
    }
    Step::ClearPvRecord
}

#[cfg(test)]
mod tests;
