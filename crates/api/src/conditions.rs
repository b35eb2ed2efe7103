//! Condition bookkeeping for `status.conditions`: pure functions, so the rules that clients rely
//! on (a `lastTransitionTime` that moves only on a flip) are unit-tested without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub const READY: &str = "Ready";
/// Legacy condition for `d8` releases up to v0.33.6, which detect expiry only through it.
pub const EXPIRED: &str = "Expired";

/// Reasons of the `Ready` condition. Each names a cause a user can act on.
pub mod reason {
    pub const PENDING: &str = "Pending";
    pub const SERVER_READY: &str = "ServerReady";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const TARGET_NOT_READY: &str = "TargetNotReady";
    pub const TARGET_IN_USE: &str = "TargetInUse";
    pub const PV_CONFLICT: &str = "PVConflict";
    pub const EXPORTER_FAILED: &str = "ExporterFailed";
    pub const PUBLISH_FAILED: &str = "PublishFailed";
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    pub const LIMIT_REACHED: &str = "LimitReached";
    pub const EXPIRED: &str = "Expired";
    /// Idle longer than its ttl; the volume is being returned. The expiry signals (`Expired=True`,
    /// `Ready=False/Expired`) follow once no finalizer is left, because clients delete and
    /// recreate an expired export at once.
    pub const RETURNING: &str = "Returning";
    pub const TERMINATING: &str = "Terminating";
}

/// A condition as the controller wants it; timestamps are filled by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Puts `desired` into `conditions`, keeping `lastTransitionTime` when the status did not flip,
/// so clients and `kubectl wait` see real transitions only. Returns whether anything changed.
pub fn merge(
    conditions: &mut Vec<Condition>,
    desired: Desired<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = if desired.status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let flipped = existing.status != status;
            let changed = flipped
                || existing.reason != desired.reason
                || existing.message != desired.message
                || existing.observed_generation != generation;
            if flipped {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.to_owned();
            existing.reason = desired.reason.to_owned();
            existing.message = desired.message;
            existing.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_owned(),
                status: status.to_owned(),
                reason: desired.reason.to_owned(),
                message: desired.message,
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Removes a condition type; returns whether it was present.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn ready(status: bool, reason: &'static str, message: &str) -> Desired<'static> {
        Desired {
            type_: READY,
            status,
            reason,
            message: message.to_owned(),
        }
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut c = Vec::new();
        assert!(merge(
            &mut c,
            ready(false, reason::PENDING, "starting"),
            Some(1),
            at(10)
        ));
        assert_eq!(c[0].last_transition_time, Time(at(10)));

        // Same status, new reason and message: updated, but the transition time stays.
        assert!(merge(
            &mut c,
            ready(false, reason::TARGET_IN_USE, "used by pod web-0"),
            Some(1),
            at(20)
        ));
        assert_eq!(c[0].reason, reason::TARGET_IN_USE);
        assert_eq!(c[0].last_transition_time, Time(at(10)));

        // Flip to True: the transition time moves.
        assert!(merge(
            &mut c,
            ready(true, reason::SERVER_READY, "ready"),
            Some(1),
            at(30)
        ));
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].last_transition_time, Time(at(30)));

        // Nothing new: reported unchanged, so no status write is needed.
        assert!(!merge(
            &mut c,
            ready(true, reason::SERVER_READY, "ready"),
            Some(1),
            at(40)
        ));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn conditions_are_kept_per_type() {
        let mut c = Vec::new();
        merge(&mut c, ready(false, reason::EXPIRED, "idle"), None, at(1));
        merge(
            &mut c,
            Desired {
                type_: EXPIRED,
                status: true,
                reason: reason::EXPIRED,
                message: "idle".into(),
            },
            None,
            at(1),
        );
        assert_eq!(c.len(), 2);
        assert!(find(&c, EXPIRED).is_some());
        assert!(remove(&mut c, EXPIRED));
        assert!(!remove(&mut c, EXPIRED));
        assert_eq!(c.len(), 1);
    }
}
