//! Publish auto-detect, as d8 does it when `--publish` is not given
//! (docs/development/D8-CLIENT.md §3):
//! 1. get Service default/kubernetes through the kubeconfig's endpoint — failure is fatal;
//! 2. get the same Service through `https://<ClusterIP>:443` with the same credentials, TLS server
//!    name `kubernetes.default.svc`, a 3 s timeout;
//! 3. the same uid means inside the cluster (publish=false); a different uid, a network or TLS
//!    error, 401, 403 or 404 mean outside (publish=true); any other answer is fatal.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Api;

use crate::kubecfg::Access;
use crate::{Error, Result};

/// The hint d8 prints with every failure of the auto-detect.
pub const HINT: &str = "cannot auto-detect publish mode, specify --publish=true or --publish=false";

/// What the second read (through the ClusterIP) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// 200 with the Service's uid.
    Uid(String),
    /// Another HTTP status.
    Status(u16),
    /// No HTTP answer: refused, reset, timed out, TLS failed.
    Unreachable(String),
}

/// Step 3: `Ok(publish)`, or the error d8 would fail with.
pub fn decide(kubeconfig_uid: &str, probe: &Probe) -> std::result::Result<bool, String> {
    match probe {
        Probe::Uid(uid) => Ok(uid != kubeconfig_uid),
        Probe::Unreachable(_) | Probe::Status(401 | 403 | 404) => Ok(true),
        Probe::Status(code) => Err(format!("{HINT} (the ClusterIP probe answered {code})")),
    }
}

/// Runs the auto-detect with the user's kubeconfig; returns the publish mode.
pub async fn detect(access: &Access) -> Result<bool> {
    let step = "publish auto-detect: get Service default/kubernetes through the kubeconfig";
    let svc = Api::<Service>::namespaced(access.client.clone(), "default")
        .get("kubernetes")
        .await
        .map_err(|e| Error::step(step, format!("{HINT}: {e}")))?;
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let ip: IpAddr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| Error::step(step, format!("{HINT}: the Service has no ClusterIP")))?;
    let probe = probe(access, ip).await;
    let publish = decide(&uid, &probe).map_err(|e| {
        Error::step(
            "publish auto-detect: get Service default/kubernetes through its ClusterIP",
            e,
        )
    })?;
    eprintln!("d8: publish auto-detect: {probe:?} -> publish={publish}");
    Ok(publish)
}

async fn probe(access: &Access, ip: IpAddr) -> Probe {
    const NAME: &str = "kubernetes.default.svc";
    let client = match access.api_http_client().and_then(|b| {
        b.resolve(NAME, SocketAddr::new(ip, 443))
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| Error::step("publish auto-detect", e.to_string()))
    }) {
        Ok(c) => c,
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let url = format!("https://{NAME}/api/v1/namespaces/default/services/kubernetes");
    let resp = match access.authorize(client.get(&url)).send().await {
        Ok(r) => r,
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let code = resp.status().as_u16();
    if code != 200 {
        return Probe::Status(code);
    }
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Probe::Unreachable(format!("unreadable answer: {e}")),
    };
    match serde_json::from_slice::<Service>(&body) {
        Ok(s) => Probe::Uid(s.metadata.uid.unwrap_or_default()),
        Err(e) => Probe::Unreachable(format!("unreadable answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let cases = [
            (Probe::Uid("u1".into()), Ok(false)),
            (Probe::Uid("u2".into()), Ok(true)),
            (Probe::Unreachable("connection refused".into()), Ok(true)),
            (Probe::Unreachable("timed out".into()), Ok(true)),
            (Probe::Status(401), Ok(true)),
            (Probe::Status(403), Ok(true)),
            (Probe::Status(404), Ok(true)),
        ];
        for (probe, want) in cases {
            assert_eq!(decide("u1", &probe), want, "{probe:?}");
        }
        for code in [400, 429, 500, 503] {
            assert!(decide("u1", &Probe::Status(code)).is_err(), "{code}");
        }
    }
}
