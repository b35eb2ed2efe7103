//! The top-level decisions of a reconcile pass, pure: what to do with a DataExport
//! ([`decide`]) and, once its exporter runs, what its status says ([`decide_serving`]). The
//! executor in `reconcile.rs` gathers the few facts they need, carries the plan out and writes
//! the status; the handover and snapshot flows below them are state machines of their own
//! (`handover.rs`, `snapshot.rs`). Order and meaning: docs/development/ARCHITECTURE.md.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use svdm_api::conditions::{self, reason};
use svdm_api::{DataExport, DataExportStatus, Phase, TargetKind, names};

use crate::exporter::Publish;
use crate::status::{self, Outcome};

/// What [`decide`] needs besides the object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Top {
    /// The user PVC the export targets is being deleted.
    pub user_pvc_deleting: bool,
}

/// What the module's settings say about ttls and retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub expired_retention: Duration,
}

/// One pass's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Deleted, and no finalizer of ours holds it: nothing left to do.
    Forget,
    /// Deleted: show Terminating (unless it already does), give everything back, drop the
    /// finalizer.
    Release {
        show_terminating: bool,
    },
    /// Idle past its ttl: give everything back, drop the finalizer, and only then show Expired
    /// (clients recreate an expired export at once).
    FinishExpiry,
    /// Expired, or failed for good: make sure nothing is held and no finalizer is left; an
    /// expired one is deleted at `delete_at` (after the retention), a failed one waits for a
    /// change.
    Settle {
        delete_at: Option<Timestamp>,
    },
    AddFinalizer,
    /// The spec cannot be served as it is: show Failed.
    Fail {
        reason: &'static str,
        message: String,
    },
    /// The user deletes the PVC: give its volume back so the deletion can finish, then show
    /// Failed/TargetNotFound.
    ReturnForDeletedPvc,
    /// Hand the volume over (or keep serving it) with this effective ttl.
    Export {
        ttl: Duration,
    },
}

fn has_finalizer(de: &DataExport) -> bool {
    de.finalizers()
        .iter()
        .any(|f| f == names::FINALIZER_DATAEXPORT)
}

/// The plan for one pass over `de`.
pub fn decide(de: &DataExport, top: &Top, limits: &Limits) -> Plan {
    let status = de.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    if de.metadata.deletion_timestamp.is_some() {
        return if has_finalizer(de) {
            Plan::Release {
                show_terminating: phase != Some(Phase::Terminating),
            }
        } else {
            Plan::Forget
        };
    }
    match phase {
        Some(Phase::Expiring) => return Plan::FinishExpiry,
        Some(Phase::Expired) => {
            return Plan::Settle {
                delete_at: status::delete_at(status, limits.expired_retention),
            };
        }
        // Failed for this generation: a spec change (a new generation) tries again.
        Some(Phase::Failed)
            if status.and_then(|s| s.observed_generation) == de.metadata.generation =>
        {
            return Plan::Settle { delete_at: None };
        }
        _ => {}
    }
    if !has_finalizer(de) {
        return Plan::AddFinalizer;
    }
    let ttl =
        match status::effective_ttl(de.spec.ttl.as_deref(), limits.default_ttl, limits.max_ttl) {
            Ok(t) => t,
            Err(e) => {
                return Plan::Fail {
                    reason: reason::VALIDATION_FAILED,
                    message: e.to_string(),
                };
            }
        };
    if de.spec.target_ref.kind == TargetKind::PersistentVolumeClaim && top.user_pvc_deleting {
        return Plan::ReturnForDeletedPvc;
    }
    Plan::Export { ttl }
}

/// Whether the route through the Service still needs checking (see `route.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not looked at: the export was already serving, or the pod is not ready.
    Unchecked,
    Ok,
    /// What the client's path still waits for.
    Waiting(String),
}

/// What [`decide_serving`] needs about the exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exporter {
    pub pod_ready: bool,
    /// Why the pod cannot serve, when it is clearly broken (not merely starting).
    pub pod_problem: Option<String>,
    pub route: Route,
    /// The exporter's last reported activity.
    pub last_access: Option<Timestamp>,
    pub publish: Publish,
}

/// What a serving pass ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServePlan {
    /// Not usable yet (or not any more): show this and look again after `retry`.
    Wait { outcome: Outcome, retry: Duration },
    /// Idle past its ttl: end it (the executor first confirms the activity with the API).
    Expire { last: Timestamp },
    /// Show this; look again after `next` (the expiry moment, or the resync).
    Show {
        outcome: Outcome,
        public_url: bool,
        expires: Timestamp,
        next: Duration,
    },
}

/// Longest time between two passes over a healthy export (activity mirrored into the status,
/// certificate renewal).
pub const RESYNC: Duration = Duration::from_secs(60);
/// Retry while publishing is refused.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(10);

/// Serving means Ready, or serving in the cluster while publishing is refused: its route was
/// checked on the way there, and its idle clock runs.
pub fn was_serving(prev: Option<&DataExportStatus>) -> bool {
    prev.is_some_and(|s| {
        s.phase == Some(Phase::Ready)
            || conditions::find(&s.conditions, conditions::READY)
                .is_some_and(|c| c.reason == reason::PUBLISH_FAILED)
    })
}

/// Whether the executor must check the route before this pass can decide.
pub fn needs_route_check(prev: Option<&DataExportStatus>, pod_ready: bool) -> bool {
    pod_ready && !was_serving(prev)
}

/// The status of a running exporter: Ready only when a client could use it now, the ttl counted
/// from the last activity but never from before the export became ready.
pub fn decide_serving(
    prev: Option<&DataExportStatus>,
    exp: &Exporter,
    ttl: Duration,
    publish_host: Option<&str>,
    now: Timestamp,
) -> ServePlan {
    if !exp.pod_ready {
        let outcome = match &exp.pod_problem {
            Some(p) => Outcome::Pending {
                reason: reason::EXPORTER_FAILED,
                message: p.clone(),
            },
            None => Outcome::Pending {
                reason: reason::PENDING,
                message: "waiting for the exporter pod to become ready".into(),
            },
        };
        return ServePlan::Wait {
            outcome,
            retry: Duration::from_secs(5),
        };
    }
    let serving = was_serving(prev);
    if !serving && let Route::Waiting(message) = &exp.route {
        return ServePlan::Wait {
            outcome: Outcome::Pending {
                reason: reason::PENDING,
                message: message.clone(),
            },
            retry: Duration::from_secs(1),
        };
    }
    let ready_since = prev
        .filter(|_| serving)
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .map(|c| c.last_transition_time.0)
        .unwrap_or(now);
    let last = exp.last_access.map_or(ready_since, |a| a.max(ready_since));
    let expires = status::expires_at(last, ttl);
    if serving && now >= expires {
        return ServePlan::Expire { last };
    }
    // A published export is Ready only with its publicURL (clients that asked for publishing
    // wait for it), shown once its Ingress is admitted.
    let (outcome, public_url, retry) = match (&exp.publish, publish_host) {
        (Publish::Failed(message), _) => (
            Outcome::Pending {
                reason: reason::PUBLISH_FAILED,
                message: message.clone(),
            },
            false,
            PUBLISH_RETRY,
        ),
        (Publish::Admitted, Some(_)) => (
            Outcome::Ready {
                message: "the exporter is serving the data, in the cluster and published".into(),
            },
            true,
            RESYNC,
        ),
        _ => (
            Outcome::Ready {
                message: "the exporter is serving the data".into(),
            },
            false,
            RESYNC,
        ),
    };
    let until_expiry = if serving {
        status::until(now, expires)
    } else {
        ttl
    };
    ServePlan::Show {
        outcome,
        public_url,
        expires,
        next: until_expiry.min(retry).max(Duration::from_millis(500)),
    }
}

#[cfg(test)]
mod tests;
