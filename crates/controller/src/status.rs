//! Pure status computation: phase, conditions, ttl/expiry math and which transitions deserve an
//! Event.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use svdm_api::conditions::{self, Desired, reason};
use svdm_api::{DataExportStatus, Phase, VolumeMode};

/// What the reconcile pass concluded about the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not serving yet (in progress, or a precondition fails and is retried).
    Pending {
        reason: &'static str,
        message: String,
    },
    /// The exporter serves the data (the message may add a note, e.g. about publishing).
    Ready { message: String },
    /// Will not be retried until the object changes.
    Failed {
        reason: &'static str,
        message: String,
    },
    /// Idle longer than its ttl; the volume is being returned (the finalizer is still on).
    Expiring,
    /// Idle longer than its ttl; the volume is back and no finalizer is left, so a client may
    /// delete and recreate the object at once.
    Expired,
    /// Deleted; data being returned.
    Terminating,
    /// Deleted, but the return waits for something the user must know about (e.g. an exporter
    /// pod on a lost node); the reason and message say what ends the wait.
    TerminatingBlocked {
        reason: &'static str,
        message: String,
    },
}

/// Facts for the status besides the outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub generation: Option<i64>,
    pub url: Option<String>,
    pub ca: Option<String>,
    pub public_url: Option<String>,
    pub volume_mode: Option<VolumeMode>,
    pub access: Option<Timestamp>,
    pub expiration: Option<Timestamp>,
    pub effective_ttl: Option<Duration>,
}

/// The ttl in effect: `spec.ttl` (capped at `max`) or the default.
pub fn effective_ttl(
    spec: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, svdm_api::ttl::TtlError> {
    let ttl = match spec.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => svdm_api::ttl::parse(s)?,
        None => default,
    };
    Ok(ttl.min(max))
}

/// `t + d`, saturating at the far future.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|sd| t.checked_add(sd).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Time from `now` until `t` (zero when past).
pub fn until(now: Timestamp, t: Timestamp) -> Duration {
    let d = t.duration_since(now);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Expiry moment: last access + ttl.
pub fn expires_at(last_access: Timestamp, ttl: Duration) -> Timestamp {
    add(last_access, ttl)
}

/// When an expired DataExport is to be deleted: the moment it expired + retention.
pub fn delete_at(status: Option<&DataExportStatus>, retention: Duration) -> Option<Timestamp> {
    let st = status?;
    if st.phase != Some(Phase::Expired) {
        return None;
    }
    let since = conditions::find(&st.conditions, conditions::EXPIRED)
        .or_else(|| conditions::find(&st.conditions, conditions::READY))
        .map(|c| c.last_transition_time.0)?;
    Some(add(since, retention))
}

fn phase_of(o: &Outcome) -> Phase {
    match o {
        Outcome::Pending { .. } => Phase::Pending,
        Outcome::Ready { .. } => Phase::Ready,
        Outcome::Failed { .. } => Phase::Failed,
        Outcome::Expiring => Phase::Expiring,
        Outcome::Expired => Phase::Expired,
        Outcome::Terminating | Outcome::TerminatingBlocked { .. } => Phase::Terminating,
    }
}

/// Builds the new status from the previous one (whose condition timestamps are kept unless a
/// condition flips).
pub fn compute(
    prev: Option<&DataExportStatus>,
    outcome: &Outcome,
    facts: &Facts,
    now: Timestamp,
) -> DataExportStatus {
    let mut conds = prev.map(|p| p.conditions.clone()).unwrap_or_default();
    let generation = facts.generation;
    let (ready, ready_reason, message) = match outcome {
        Outcome::Pending { reason, message }
        | Outcome::Failed { reason, message }
        | Outcome::TerminatingBlocked { reason, message } => (false, *reason, message.clone()),
        Outcome::Ready { message } => (true, reason::SERVER_READY, message.clone()),
        Outcome::Expiring => (
            false,
            reason::RETURNING,
            "the export was idle longer than its ttl; its volume is being returned, then the DataExport shows Expired".to_owned(),
        ),
        Outcome::Expired => (
            false,
            reason::EXPIRED,
            "the export was idle longer than its ttl; the volume was returned. Delete and recreate the DataExport to export again".to_owned(),
        ),
        Outcome::Terminating => (
            false,
            reason::TERMINATING,
            "the DataExport is being deleted; the volume is being returned".to_owned(),
        ),
    };
    conditions::merge(
        &mut conds,
        Desired {
            type_: conditions::READY,
            status: ready,
            reason: ready_reason,
            message: message.clone(),
        },
        generation,
        now,
    );
    if *outcome == Outcome::Expired {
        conditions::merge(
            &mut conds,
            Desired {
                type_: conditions::EXPIRED,
                status: true,
                reason: reason::EXPIRED,
                message,
            },
            generation,
            now,
        );
    } else {
        conditions::remove(&mut conds, conditions::EXPIRED);
    }
    let expired = matches!(outcome, Outcome::Expired | Outcome::Expiring);
    DataExportStatus {
        phase: Some(phase_of(outcome)),
        // Stale URLs after expiry would send clients to an exporter that no longer exists.
        url: if expired { None } else { facts.url.clone() },
        ca: facts.ca.clone(),
        public_url: if expired {
            None
        } else {
            facts.public_url.clone()
        },
        volume_mode: facts.volume_mode,
        access_timestamp: facts.access.map(Time),
        expiration_timestamp: if expired {
            prev.and_then(|p| p.expiration_timestamp.clone())
                .or(facts.expiration.map(Time))
        } else {
            facts.expiration.map(Time)
        },
        effective_ttl: facts.effective_ttl.map(svdm_api::ttl::format),
        conditions: conds,
        observed_generation: generation,
    }
}

/// An Event worth publishing for a status change: `(warning, reason, note)`. Only transitions of
/// the phase or of the Ready reason count, so repeated passes stay quiet.
pub fn transition(
    prev: Option<&DataExportStatus>,
    next: &DataExportStatus,
) -> Option<(bool, String, String)> {
    let ready = |s: &DataExportStatus| {
        conditions::find(&s.conditions, conditions::READY)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let prev_key = prev.map(|p| (p.phase, ready(p).map(|r| r.0)));
    let next_ready = ready(next);
    let next_key = (next.phase, next_ready.as_ref().map(|r| r.0.clone()));
    if prev_key.as_ref() == Some(&next_key) {
        return None;
    }
    let (reason, message) = next_ready?;
    let warning = !matches!(
        reason.as_str(),
        reason::SERVER_READY
            | reason::PENDING
            | reason::EXPIRED
            | reason::RETURNING
            | reason::TERMINATING
    );
    Some((warning, reason, message))
}

#[cfg(test)]
mod tests;
