//! Leader election over a coordination.k8s.io Lease: only the holder reconciles. A replica that
//! cannot renew in time exits, so two replicas never reconcile at once for long.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{Result, is_conflict};
use crate::status;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_INTERVAL: Duration = Duration::from_secs(4);
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Whether `identity` may take or keep the lease (pure).
pub fn may_hold(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> bool {
    let Some(s) = spec else { return true };
    match s.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == identity => true,
        Some(_) => {
            let dur = Duration::from_secs(
                u64::try_from(s.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
            );
            match s.renew_time.as_ref() {
                Some(t) => now >= status::add(t.0, dur),
                None => true,
            }
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// One attempt to acquire or renew; `Ok(true)` while we hold the lease.
    pub async fn try_hold(&self) -> Result<bool> {
        let now = Timestamp::now();
        let secs = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Some(mut lease) => {
                if !may_hold(lease.spec.as_ref(), &self.identity, now) {
                    return Ok(false);
                }
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(secs);
                // replace carries the resourceVersion we read: a concurrent writer wins, we retry.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    log::info!(
                        "leader election: {} holds lease {}",
                        self.identity,
                        self.name
                    );
                    return;
                }
                Ok(false) => {}
                Err(e) => log::warn!("leader election: {e}"),
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Renews forever; returns when the lease is lost (the caller must stop reconciling).
    pub async fn keep(&self) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            match self.try_hold().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    log::error!(
                        "leader election: lease {} taken by another replica",
                        self.name
                    );
                    return;
                }
                Err(e) => {
                    log::warn!("leader election: renew failed: {e}");
                    // Give up well before another replica may take over.
                    if last_ok.elapsed() + RENEW_INTERVAL >= LEASE_DURATION {
                        log::error!("leader election: could not renew in time");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn holder_keeps_others_wait_until_expiry() {
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(100))),
            ..Default::default()
        };
        assert!(may_hold(Some(&spec), "a", at(105)));
        assert!(!may_hold(Some(&spec), "b", at(105)));
        assert!(may_hold(Some(&spec), "b", at(115)));
        assert!(may_hold(None, "b", at(0)));
        let empty = LeaseSpec::default();
        assert!(may_hold(Some(&empty), "b", at(0)));
    }
}
