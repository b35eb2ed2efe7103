//! VolumeSnapshot targets (docs/development/ARCHITECTURE.md, "Snapshot exports") as a pure state
//! machine: the user's snapshot is copied as a pre-provisioned content bound to a VolumeSnapshot in
//! the module namespace, restored into a PVC that belongs to the module, and that PVC is exported
//! directly (no handover).

use svdm_api::VolumeMode;
use svdm_api::conditions::reason;

use crate::limits::Concurrency;
use crate::node_loss::{self, ExporterPod, Verdict};

/// What is needed from the user's VolumeSnapshot and its bound content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub ready_to_use: bool,
    pub bound_content: Option<String>,
    /// `status.restoreSize` of the snapshot (a quantity), or the content's size in bytes.
    pub restore_size: Option<String>,
    pub driver: Option<String>,
    pub snapshot_handle: Option<String>,
    pub source_volume_mode: Option<String>,
    pub snapshot_class: Option<String>,
    /// StorageClass of the PVC the snapshot was taken from, if that PVC still exists and is
    /// still that volume (its PV's handle is the content's source handle).
    pub source_pvc_class: Option<String>,
    /// volumeMode of that same PVC (used when the content does not record `sourceVolumeMode`).
    pub source_pvc_mode: Option<String>,
    /// The bound content's `spec.volumeSnapshotRef` does not name this snapshot (namespace,
    /// name, uid): what it names instead. A snapshot's status is writable by whoever may write
    /// the snapshot, so its content is taken only when the content points back at it.
    pub content_belongs_elsewhere: Option<String>,
    pub has_our_finalizer: bool,
    pub deleting: bool,
}

/// Observation of one snapshot export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub returning: bool,
    /// The user's VolumeSnapshot (None: not found).
    pub source: Option<Source>,
    /// Content resolved to the bound content exists (Some(false) = name known but not found).
    pub source_content_found: bool,
    pub content_copy: bool,
    pub content_copy_deleting: bool,
    pub snapshot_copy: bool,
    pub snapshot_copy_deleting: bool,
    /// Restored PVC: None absent, Some(phase).
    pub restored_pvc: Option<String>,
    pub restored_pvc_deleting: bool,
    /// `spec.volumeMode` of the restored PVC.
    pub restored_pvc_mode: Option<VolumeMode>,
    pub exporter_objects_exist: bool,
    /// The exporter pod, also while it terminates.
    pub exporter_pod: Option<ExporterPod>,
    /// Running exports against the module's limit (only observed before anything is created).
    pub concurrency: Concurrency,
    /// Another of our restores from the same snapshot has not finished.
    pub other_restore_pending: bool,
    /// `--snapshot-storage-class`.
    pub fallback_class: Option<String>,
}

/// The next thing to do for a snapshot export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// Permanent until the DataExport or the settings change.
    Failed {
        reason: &'static str,
        message: String,
    },
    ProtectSource,
    CreateContentCopy,
    CreateSnapshotCopy,
    CreateRestoredPvc {
        storage_class: String,
        size: String,
        volume_mode: VolumeMode,
    },
    UnprotectSource,
    Serve {
        volume_mode: VolumeMode,
    },
    DeleteExporterObjects,
    /// The exporter pod's Node object is gone: delete the pod without the kubelet's confirmation.
    ForceDeleteExporterPod,
    /// The exporter pod is stuck on a node that does not answer (the message says so).
    WaitExporterPod {
        message: String,
    },
    DeleteRestoredPvc,
    DeleteSnapshotCopy,
    DeleteContentCopy,
    Wait,
    Returned,
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Blocked { .. } => "blocked",
            Step::Failed { .. } => "failed",
            Step::ProtectSource => "protect-snapshot",
            Step::CreateContentCopy => "create-content-copy",
            Step::CreateSnapshotCopy => "create-snapshot-copy",
            Step::CreateRestoredPvc { .. } => "create-restored-pvc",
            Step::UnprotectSource => "unprotect-snapshot",
            Step::Serve { .. } => "serve",
            Step::DeleteExporterObjects => "delete-exporter-objects",
            Step::ForceDeleteExporterPod => "force-delete-exporter-pod",
            Step::WaitExporterPod { .. } => "wait-exporter-pod-gone",
            Step::DeleteRestoredPvc => "delete-restored-pvc",
            Step::DeleteSnapshotCopy => "delete-snapshot-copy",
            Step::DeleteContentCopy => "delete-content-copy",
            Step::Wait => "wait",
            Step::Returned => "returned",
        }
    }
}

impl Step {
    /// Steps that change the cluster (as opposed to waiting, serving or reporting).
    pub fn is_action(&self) -> bool {
        !matches!(
            self,
            Step::Blocked { .. }
                | Step::Failed { .. }
                | Step::Serve { .. }
                | Step::WaitExporterPod { .. }
                | Step::Wait
                | Step::Returned
        )
    }
}

fn volume_mode(src: Option<&Source>) -> VolumeMode {
    src.and_then(|s| {
        s.source_volume_mode
            .as_deref()
            .or(s.source_pvc_mode.as_deref())
    })
    .and_then(|m| VolumeMode::from_k8s(Some(m)))
    .unwrap_or(VolumeMode::Filesystem)
}

/// Decides the next step.
pub fn next_step(o: &Observed) -> Step {
    if o.returning {
        return return_step(o);
    }
    let src = o.source.as_ref();
    if let Some(phase) = &o.restored_pvc {
        if o.restored_pvc_deleting {
            return return_step(o);
        }
        // The restore is done once the PVC is bound; only then may the user's snapshot go.
        if phase == "Bound" && src.is_some_and(|s| s.has_our_finalizer) && !o.other_restore_pending
        {
            return Step::UnprotectSource;
        }
        return Step::Serve {
            volume_mode: o.restored_pvc_mode.unwrap_or_else(|| volume_mode(src)),
        };
    }
    let Some(s) = src else {
        return Step::Blocked {
            reason: reason::TARGET_NOT_FOUND,
            message: "VolumeSnapshot not found; create it or fix spec.targetRef".into(),
        };
    };
    if s.deleting && !s.has_our_finalizer {
        return Step::Blocked {
            reason: reason::TARGET_NOT_FOUND,
            message: "VolumeSnapshot is being deleted".into(),
        };
    }
    if !s.ready_to_use || s.bound_content.is_none() {
        return Step::Blocked {
            reason: reason::TARGET_NOT_READY,
            message: "VolumeSnapshot is not ready to use yet; wait until status.readyToUse is true"
                .into(),
        };
    }
    if let Some(other) = &s.content_belongs_elsewhere {
        return Step::Failed {
            reason: reason::VALIDATION_FAILED,
            message: format!(
                "VolumeSnapshotContent {} belongs to {other}, not to this VolumeSnapshot; its status.boundVolumeSnapshotContentName is not trusted. Recreate the VolumeSnapshot",
                s.bound_content.as_deref().unwrap_or_default()
            ),
        };
    }
    if !o.source_content_found || s.driver.is_none() || s.snapshot_handle.is_none() {
        return Step::Blocked {
            reason: reason::TARGET_NOT_READY,
            message: format!(
                "VolumeSnapshotContent {} is missing or has no snapshot handle yet",
                s.bound_content.as_deref().unwrap_or_default()
            ),
        };
    }
    let Some(size) = s.restore_size.clone() else {
        return Step::Blocked {
            reason: reason::TARGET_NOT_READY,
            message: "VolumeSnapshot has no restoreSize yet".into(),
        };
    };
    let Some(class) = s
        .source_pvc_class
        .clone()
        .or_else(|| o.fallback_class.clone())
    else {
        return Step::Failed {
            reason: reason::VALIDATION_FAILED,
            message: "cannot tell which StorageClass to restore the snapshot into: its source PVC is gone and no snapshot storage class is set in the module settings".into(),
        };
    };
    // The limit is checked before anything of this export exists (the same count as PVC
    // exports: see `limits`); an export already under way is never stopped by it.
    if !o.content_copy
        && !o.snapshot_copy
        && let Some(message) = o.concurrency.blocked_message()
    {
        return Step::Blocked {
            reason: reason::LIMIT_REACHED,
            message,
        };
    }
    if !s.has_our_finalizer {
        return Step::ProtectSource;
    }
    if !o.content_copy {
        return Step::CreateContentCopy;
    }
    if !o.snapshot_copy {
        return Step::CreateSnapshotCopy;
    }
    Step::CreateRestoredPvc {
        storage_class: class,
        size,
        volume_mode: volume_mode(src),
    }
}

fn return_step(o: &Observed) -> Step {
    if o.source.as_ref().is_some_and(|s| s.has_our_finalizer) && !o.other_restore_pending {
        return Step::UnprotectSource;
    }
    if o.exporter_objects_exist {
        return Step::DeleteExporterObjects;
    }
    // The restored volume is the module's own, so nothing is handed back here; but its PVC is
    // kept by Kubernetes while the pod exists, and the user must learn why the deletion waits.
    match node_loss::return_verdict(o.exporter_pod.as_ref()) {
        Verdict::ForceDelete => return Step::ForceDeleteExporterPod,
        Verdict::WaitLostNode { message } => return Step::WaitExporterPod { message },
        Verdict::Wait | Verdict::Proceed => {}
    }
    if o.restored_pvc.is_some() {
        return if o.restored_pvc_deleting {
            Step::Wait
        } else {
            Step::DeleteRestoredPvc
        };
    }
    if o.snapshot_copy {
        return if o.snapshot_copy_deleting {
            Step::Wait
        } else {
            Step::DeleteSnapshotCopy
        };
    }
    if o.content_copy {
        return if o.content_copy_deleting {
            Step::Wait
        } else {
            Step::DeleteContentCopy
        };
    }
    Step::Returned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_source() -> Source {
        Source {
            ready_to_use: true,
            bound_content: Some("snapcontent-1".into()),
            restore_size: Some("1Gi".into()),
            driver: Some("local.csi.svdm.dev".into()),
            snapshot_handle: Some("h-1".into()),
            source_volume_mode: Some("Block".into()),
            snapshot_class: Some("svdm-sim".into()),
            source_pvc_class: Some("svdm-sim".into()),
            source_pvc_mode: None,
            content_belongs_elsewhere: None,
            has_our_finalizer: false,
            deleting: false,
        }
    }

    fn observed() -> Observed {
        Observed {
            source: Some(ready_source()),
            source_content_found: true,
            ..Default::default()
        }
    }

    /// Applies steps to a model of the cluster.
    fn apply(o: &mut Observed, s: &Step) {
        match s {
            Step::ProtectSource => o.source.as_mut().expect("s").has_our_finalizer = true,
            Step::UnprotectSource => o.source.as_mut().expect("s").has_our_finalizer = false,
            Step::CreateContentCopy => o.content_copy = true,
            Step::CreateSnapshotCopy => o.snapshot_copy = true,
            Step::CreateRestoredPvc { .. } => o.restored_pvc = Some("Bound".into()),
            Step::Serve { .. } => o.exporter_objects_exist = true,
            Step::DeleteExporterObjects => {
                o.exporter_objects_exist = false;
                if let Some(p) = o.exporter_pod.as_mut() {
                    p.deleting = true;
                }
            }
            Step::ForceDeleteExporterPod => o.exporter_pod = None,
            Step::DeleteRestoredPvc => o.restored_pvc = None,
            Step::DeleteSnapshotCopy => o.snapshot_copy = false,
            Step::DeleteContentCopy => o.content_copy = false,
            _ => {}
        }
    }

    fn run(o: &mut Observed) -> Vec<&'static str> {
        let mut names = vec![];
        for _ in 0..20 {
            let s = next_step(o);
            names.push(s.name());
            if matches!(
                s,
                Step::Returned | Step::Blocked { .. } | Step::Failed { .. }
            ) || (matches!(s, Step::Serve { .. }) && o.exporter_objects_exist)
            {
                break;
            }
            apply(o, &s);
        }
        names
    }

    #[test]
    fn restore_protects_then_releases_the_users_snapshot() {
        let mut o = observed();
        assert_eq!(
            run(&mut o),
            [
                "protect-snapshot",
                "create-content-copy",
                "create-snapshot-copy",
                "create-restored-pvc",
                "unprotect-snapshot",
                "serve",
                "serve"
            ]
        );
        o.returning = true;
        assert_eq!(
            run(&mut o),
            [
                "delete-exporter-objects",
                "delete-restored-pvc",
                "delete-snapshot-copy",
                "delete-content-copy",
                "returned"
            ]
        );
        assert!(!o.source.expect("s").has_our_finalizer);
    }

    #[test]
    fn return_from_every_point_leaves_nothing() {
        for k in 0..7 {
            let mut o = observed();
            for _ in 0..k {
                let s = next_step(&o);
                apply(&mut o, &s);
            }
            o.returning = true;
            let names = run(&mut o);
            assert_eq!(names.last(), Some(&"returned"), "{k}: {names:?}");
            assert!(!o.content_copy && !o.snapshot_copy && o.restored_pvc.is_none());
            assert!(!o.source.as_ref().expect("s").has_our_finalizer);
        }
    }

    #[test]
    fn volume_mode_size_and_class_come_from_the_source() {
        let mut o = observed();
        o.source.as_mut().expect("s").has_our_finalizer = true;
        o.content_copy = true;
        o.snapshot_copy = true;
        assert_eq!(
            next_step(&o),
            Step::CreateRestoredPvc {
                storage_class: "svdm-sim".into(),
                size: "1Gi".into(),
                volume_mode: VolumeMode::Block
            }
        );
        o.source.as_mut().expect("s").source_pvc_class = None;
        o.fallback_class = Some("fallback".into());
        assert!(
            matches!(next_step(&o), Step::CreateRestoredPvc { storage_class, .. } if storage_class == "fallback")
        );
        o.fallback_class = None;
        assert!(matches!(next_step(&o), Step::Failed { .. }));
        // Without sourceVolumeMode on the content, the source PVC's mode decides.
        o.fallback_class = Some("fallback".into());
        let s = o.source.as_mut().expect("s");
        s.source_volume_mode = None;
        s.source_pvc_mode = Some("Block".into());
        assert!(matches!(
            next_step(&o),
            Step::CreateRestoredPvc {
                volume_mode: VolumeMode::Block,
                ..
            }
        ));
        o.source.as_mut().expect("s").source_pvc_mode = None;
        assert!(matches!(
            next_step(&o),
            Step::CreateRestoredPvc {
                volume_mode: VolumeMode::Filesystem,
                ..
            }
        ));
        // A status naming another snapshot's content is refused, whatever else is in place.
        o.source.as_mut().expect("s").content_belongs_elsewhere =
            Some("VolumeSnapshot victim/theirs (uid v-1)".into());
        let Step::Failed { reason, message } = next_step(&o) else {
            panic!("refused expected")
        };
        assert_eq!(reason, reason::VALIDATION_FAILED);
        assert!(message.contains("victim/theirs"), "{message}");
    }

    #[test]
    fn not_ready_or_missing_snapshots_block() {
        let mut o = observed();
        o.source = None;
        assert!(
            matches!(next_step(&o), Step::Blocked { reason: r, .. } if r == reason::TARGET_NOT_FOUND)
        );
        let mut o = observed();
        o.source.as_mut().expect("s").ready_to_use = false;
        assert!(
            matches!(next_step(&o), Step::Blocked { reason: r, .. } if r == reason::TARGET_NOT_READY)
        );
        let mut o = observed();
        o.source_content_found = false;
        assert!(
            matches!(next_step(&o), Step::Blocked { reason: r, .. } if r == reason::TARGET_NOT_READY)
        );
    }

    #[test]
    fn copies_being_deleted_are_waited_for() {
        let mut o = observed();
        o.returning = true;
        o.snapshot_copy = true;
        o.snapshot_copy_deleting = true;
        o.content_copy = true;
        assert_eq!(next_step(&o), Step::Wait);
        o.snapshot_copy = false;
        assert_eq!(next_step(&o), Step::DeleteContentCopy);
        o.content_copy_deleting = true;
        assert_eq!(next_step(&o), Step::Wait);
    }

    #[test]
    fn users_snapshot_deleted_after_restore_does_not_stop_the_export() {
        let mut o = observed();
        run(&mut o);
        o.source = None;
        assert!(matches!(next_step(&o), Step::Serve { .. }));
    }

    #[test]
    fn another_pending_restore_keeps_the_protection() {
        let mut o = observed();
        o.source.as_mut().expect("s").has_our_finalizer = true;
        o.restored_pvc = Some("Bound".into());
        o.other_restore_pending = true;
        assert!(matches!(next_step(&o), Step::Serve { .. }));
        o.returning = true;
        assert_eq!(next_step(&o), Step::DeleteRestoredPvc);
    }

    #[test]
    fn the_limit_holds_a_new_export_but_never_one_under_way() {
        let full = Concurrency { running: 2, max: 2 };
        let mut o = observed();
        o.concurrency = full.clone();
        match next_step(&o) {
            Step::Blocked { reason: r, message } => {
                assert_eq!(r, reason::LIMIT_REACHED);
                assert!(
                    message.starts_with("2 exports are running, the module's limit is 2;"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        o.concurrency = Concurrency { running: 1, max: 2 };
        assert_eq!(next_step(&o), Step::ProtectSource);
        // Once a copy exists the export is under way (counted as soon as its PVC exists).
        let mut o = observed();
        o.source.as_mut().expect("s").has_our_finalizer = true;
        o.content_copy = true;
        o.concurrency = full.clone();
        assert_eq!(next_step(&o), Step::CreateSnapshotCopy);
        let mut o = observed();
        o.restored_pvc = Some("Bound".into());
        o.concurrency = full;
        assert!(matches!(next_step(&o), Step::Serve { .. }));
    }

    #[test]
    fn a_pod_on_a_lost_node_is_waited_for_until_its_node_is_deleted() {
        use crate::node_loss::NodeState;
        let mut o = observed();
        run(&mut o);
        o.returning = true;
        o.exporter_pod = Some(ExporterPod {
            name: "exp-1".into(),
            uid: "u".into(),
            node: Some("node-9".into()),
            node_state: Some(NodeState::NotReady),
            deleting: false,
        });
        assert_eq!(next_step(&o), Step::DeleteExporterObjects);
        apply(&mut o, &Step::DeleteExporterObjects);
        match next_step(&o) {
            Step::WaitExporterPod { message } => {
                assert!(message.contains("on unreachable node node-9"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        if let Some(p) = o.exporter_pod.as_mut() {
            p.node_state = Some(NodeState::Missing);
        }
        assert_eq!(
            run(&mut o),
            [
                "force-delete-exporter-pod",
                "delete-restored-pvc",
                "delete-snapshot-copy",
                "delete-content-copy",
                "returned"
            ]
        );
    }
}
