//! Prometheus metrics of the controller (served by `admin.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use svdm_api::Phase;

type Labels = Vec<(String, String)>;

/// Which transfer a duration measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transfer {
    Handover,
    Return,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    exports: Family<Labels, Gauge>,
    handover_seconds: Histogram,
    return_seconds: Histogram,
    reconcile_errors: Family<Labels, Counter>,
    inconsistent_pvs: Gauge,
    reconciles: Counter,
    phases: Mutex<HashMap<String, Phase>>,
    inconsistent: Mutex<HashSet<String>>,
    started: Mutex<HashMap<(String, Transfer), Instant>>,
    /// Set once this replica reconciles (leader, watches started).
    pub ready: AtomicBool,
}

const PHASES: [Phase; 6] = [
    Phase::Pending,
    Phase::Ready,
    Phase::Expiring,
    Phase::Expired,
    Phase::Failed,
    Phase::Terminating,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("svdm_controller");
        let exports = Family::<Labels, Gauge>::default();
        let handover_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let return_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let reconcile_errors = Family::<Labels, Counter>::default();
        let inconsistent_pvs = Gauge::default();
        let reconciles = Counter::default();
        registry.register("exports", "DataExports by phase", exports.clone());
        registry.register(
            "handover_duration_seconds",
            "Time from the first handover step until the export PVC holds the PV",
            handover_seconds.clone(),
        );
        registry.register(
            "return_duration_seconds",
            "Time from the first return step until the user PVC has its PV back",
            return_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "inconsistent_pvs",
            "PVs whose recorded export state is inconsistent and needs an administrator",
            inconsistent_pvs.clone(),
        );
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        for p in PHASES {
            exports
                .get_or_create(&vec![("phase".to_owned(), p.as_str().to_owned())])
                .set(0);
        }
        Metrics {
            registry,
            exports,
            handover_seconds,
            return_seconds,
            reconcile_errors,
            inconsistent_pvs,
            reconciles,
            phases: Mutex::new(HashMap::new()),
            inconsistent: Mutex::new(HashSet::new()),
            started: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    /// Records the phase of a DataExport (`None`: gone).
    pub fn set_phase(&self, uid: &str, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(uid.to_owned(), p),
            None => phases.remove(uid),
        };
        for p in PHASES {
            let n = phases.values().filter(|v| **v == p).count();
            self.exports
                .get_or_create(&vec![("phase".to_owned(), p.as_str().to_owned())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn is_inconsistent(&self, pv: &str) -> bool {
        self.inconsistent.lock().is_ok_and(|s| s.contains(pv))
    }

    pub fn set_inconsistent(&self, pv: &str, inconsistent: bool) {
        let Ok(mut set) = self.inconsistent.lock() else {
            return;
        };
        if inconsistent {
            set.insert(pv.to_owned());
        } else {
            set.remove(pv);
        }
        self.inconsistent_pvs
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
    }

    /// Notes that a transfer step ran; the first call starts the clock.
    pub fn transfer_step(&self, uid: &str, t: Transfer) {
        if let Ok(mut m) = self.started.lock() {
            m.entry((uid.to_owned(), t)).or_insert_with(Instant::now);
        }
    }

    /// Ends a transfer's clock and observes its duration (if this process saw it start).
    pub fn transfer_done(&self, uid: &str, t: Transfer) {
        let start = self
            .started
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&(uid.to_owned(), t)));
        if let Some(s) = start {
            let secs = s.elapsed().as_secs_f64();
            match t {
                Transfer::Handover => self.handover_seconds.observe(secs),
                Transfer::Return => self.return_seconds.observe(secs),
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_inconsistent_and_errors_are_exported() {
        let m = Metrics::new();
        m.set_phase("a", Some(Phase::Ready));
        m.set_phase("b", Some(Phase::Ready));
        m.set_phase("c", Some(Phase::Pending));
        m.set_phase("b", None);
        m.set_inconsistent("pv-1", true);
        m.error("ApiError");
        m.transfer_step("a", Transfer::Handover);
        m.transfer_done("a", Transfer::Handover);
        let text = m.encode();
        assert!(
            text.contains(r#"svdm_controller_exports{phase="Ready"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"svdm_controller_exports{phase="Pending"} 1"#));
        assert!(text.contains("svdm_controller_inconsistent_pvs 1"));
        assert!(text.contains(r#"svdm_controller_reconcile_errors_total{reason="ApiError"} 1"#));
        assert!(text.contains("svdm_controller_handover_duration_seconds_count 1"));
    }
}
