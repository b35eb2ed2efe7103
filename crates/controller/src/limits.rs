//! The module's limit of concurrent exports (`--max-concurrent-exports`), the same for both
//! kinds of target (pure; the listing is in `pvc_io::running_exports`).
//!
//! An export counts as running while it has a PVC in the module namespace: the export PVC of a
//! PVC export, the restored PVC of a snapshot export. Both carry the managed label and the
//! DataExport uid label, so one listing counts both kinds the same way, and each DataExport
//! counts once.

use std::collections::BTreeSet;

/// Running exports and the limit, as observed before an export starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Concurrency {
    /// Other exports running now.
    pub running: usize,
    /// `--max-concurrent-exports`; 0 = unlimited.
    pub max: u32,
}

impl Concurrency {
    /// The Pending message when a new export must wait; None when it may start.
    pub fn blocked_message(&self) -> Option<String> {
        if self.max == 0 || self.running < self.max as usize {
            return None;
        }
        let (n, verb) = if self.running == 1 {
            ("export", "is")
        } else {
            ("exports", "are")
        };
        Some(format!(
            "{} {n} {verb} running, the module's limit is {}; this export starts when another one ends \
             (or raise maxConcurrentExports in the module settings)",
            self.running, self.max
        ))
    }
}

/// Counts distinct DataExports among the uid labels of the module's PVCs, leaving out `own`
/// (an export resuming after a restart must not count itself).
pub fn count_running<'a>(uids: impl IntoIterator<Item = Option<&'a str>>, own: &str) -> usize {
    uids.into_iter()
        .flatten()
        .filter(|u| !u.is_empty() && *u != own)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_blocks() {
        let c = Concurrency {
            running: 1000,
            max: 0,
        };
        assert_eq!(c.blocked_message(), None);
    }

    #[test]
    fn blocks_at_the_limit_with_the_numbers() {
        assert_eq!(Concurrency { running: 1, max: 2 }.blocked_message(), None);
        let m = Concurrency { running: 2, max: 2 }
            .blocked_message()
            .unwrap_or_default();
        assert!(
            m.starts_with("2 exports are running, the module's limit is 2;"),
            "{m}"
        );
        let m = Concurrency { running: 1, max: 1 }
            .blocked_message()
            .unwrap_or_default();
        assert!(
            m.starts_with("1 export is running, the module's limit is 1;"),
            "{m}"
        );
        // Lowered below what already runs.
        assert!(
            Concurrency { running: 5, max: 3 }
                .blocked_message()
                .is_some()
        );
    }

    #[test]
    fn each_export_counts_once_and_never_itself() {
        let uids = [Some("a"), Some("b"), Some("a"), None, Some(""), Some("me")];
        assert_eq!(count_running(uids, "me"), 2);
        assert_eq!(count_running([], "me"), 0);
    }
}
