//! Activity tracking and the Lease the controller reads as "last access".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};

/// Set on every successful request and every streamed chunk; a cheap atomic so the data path pays nothing.
#[derive(Default)]
pub struct Activity {
    dirty: AtomicBool,
}

impl Activity {
    pub fn touch(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Returns whether there was activity since the last call, and resets it.
    pub fn take(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }
}

/// Renews `spec.renewTime` at most once per `interval`, only when there was activity. A missing Lease
/// (the controller creates it) or an API error is logged once per streak and retried, never fatal.
pub async fn renew_lease(
    activity: Arc<Activity>,
    client: kube::Client,
    namespace: String,
    name: String,
    holder: String,
    interval: Duration,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut complained = false;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !activity.take() {
            continue;
        }
        let patch = serde_json::json!({
            "spec": {
                "holderIdentity": holder,
                "renewTime": MicroTime(jiff::Timestamp::now()),
            }
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                if complained {
                    log::info!("lease {namespace}/{name} renewed again");
                }
                complained = false;
                log::debug!("lease {namespace}/{name} renewed");
            }
            Err(e) => {
                // Keep the activity pending so the next tick retries it.
                activity.touch();
                if !complained {
                    match &e {
                        kube::Error::Api(s) if s.code == 404 => log::warn!(
                            "lease {namespace}/{name} does not exist (yet); activity is not reported until the controller creates it"
                        ),
                        _ => log::warn!("cannot renew lease {namespace}/{name}: {e}"),
                    }
                    complained = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_resets() {
        let a = Activity::default();
        assert!(!a.take());
        a.touch();
        a.touch();
        assert!(a.take());
        assert!(!a.take());
    }

    #[test]
    fn micro_time_format() {
        let v = serde_json::to_value(MicroTime(jiff::Timestamp::UNIX_EPOCH)).unwrap_or_default();
        assert_eq!(v, "1970-01-01T00:00:00.000000Z");
    }
}
