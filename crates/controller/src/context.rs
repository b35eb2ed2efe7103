//! Everything a reconcile pass needs besides the object: the client, settings, Event recorder
//! and metrics.

use std::sync::{Arc, OnceLock};

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use svdm_api::DataExport;

use crate::cache::Caches;
use crate::config::Settings;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Set once this replica leads and its stores are synced; until then every read is live.
    caches: OnceLock<Caches>,
}

/// Name under which the controller writes (field manager) and reports Events.
pub const MANAGER: &str = "svdm-controller";

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            caches: OnceLock::new(),
        }
    }

    /// The stores, once synced (see [`crate::cache`]).
    pub fn caches(&self) -> Option<&Caches> {
        self.caches.get()
    }

    /// Hands the synced stores to every later pass (the first call wins).
    pub fn set_caches(&self, caches: Caches) {
        let _ = self.caches.set(caches);
    }

    /// Publishes an Event on a DataExport; failures are logged, never fatal.
    pub async fn event(&self, de: &DataExport, warning: bool, reason: &str, note: &str) {
        self.event_for(de, warning, reason, note, "Reconcile").await;
    }

    /// [`Context::event`] with an explicit action. The recorder folds Events with the same
    /// object, reason and action into one series that keeps its first note, so a different
    /// situation with the same reason needs a different action to be told at all.
    pub async fn event_for(
        &self,
        de: &DataExport,
        warning: bool,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        let mut note = note.to_owned();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &de.object_ref(&())).await {
            log::warn!(
                "cannot publish Event {reason} for {}/{}: {e}",
                de.namespace().unwrap_or_default(),
                de.name_any()
            );
        }
    }

    /// Exits the process right after `step` was persisted, when `--fault-after-step` names it.
    pub fn fault_point(&self, step: &str) {
        if self.settings.fault_after_step.as_deref() == Some(step) {
            log::warn!("--fault-after-step {step}: exiting with status 3 as asked");
            std::process::exit(3);
        }
    }
}
