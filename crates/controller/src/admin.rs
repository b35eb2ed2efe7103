//! The controller's admin endpoint: `/healthz` and `/readyz` for the kubelet, `/metrics` for
//! Prometheus, over HTTPS on one port, served by actix-web with bounded cost (one worker, a
//! connection cap, timeouts for slow heads and idle connections).
//!
//! `/metrics` is authorized the way the kube-rbac-proxy sidecars of Deckhouse modules authorize
//! it: the caller's bearer token through a TokenReview, then a SubjectAccessReview for `get` on
//! `deployments/prometheus-metrics` named `controller` in the module namespace, which the cluster's
//! Prometheus is granted. Answers are cached by a hash of the token (allowed: a minute; refused:
//! five seconds) and at most two reviews run at once, so scrapes and strangers cost the API server
//! little. The serving certificate is generated at start (Prometheus does not verify it, as with
//! kube-rbac-proxy); what it protects is the token in transit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use svdm_api::names;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Tokens longer than this are refused unread (a real ServiceAccount token is ~1 KiB).
const MAX_TOKEN: usize = 8192;
const ALLOW_FOR: Duration = Duration::from_secs(60);
const DENY_FOR: Duration = Duration::from_secs(5);
/// Beyond this many remembered tokens the oldest answers are forgotten.
const CACHE_ENTRIES: usize = 256;

/// The decision for one request path (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    Metrics,
    NotFound,
}

pub fn route(path: &str) -> Route {
    match path {
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// The bearer token of an `Authorization` header value, if it is one and not oversized.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let t = header?.strip_prefix("Bearer ")?.trim();
    (!t.is_empty() && t.len() <= MAX_TOKEN).then_some(t)
}

/// Who may read `/metrics`: the attributes Deckhouse's kube-rbac-proxy sidecars check.
pub fn metrics_attributes() -> ResourceAttributes {
    ResourceAttributes {
        namespace: Some(names::MODULE_NAMESPACE.to_owned()),
        group: Some("apps".to_owned()),
        resource: Some("deployments".to_owned()),
        subresource: Some("prometheus-metrics".to_owned()),
        name: Some("controller".to_owned()),
        verb: Some("get".to_owned()),
        ..Default::default()
    }
}

struct Reviewer {
    client: Option<Client>,
    cache: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
    slots: Semaphore,
}

impl Reviewer {
    fn cached(&self, key: &[u8; 32]) -> Option<bool> {
        let cache = self.cache.lock().ok()?;
        let (allowed, until) = cache.get(key)?;
        (Instant::now() < *until).then_some(*allowed)
    }

    fn remember(&self, key: [u8; 32], allowed: bool) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            let ttl = if allowed { ALLOW_FOR } else { DENY_FOR };
            cache.insert(key, (allowed, Instant::now() + ttl));
        }
    }

    /// `Some(allowed)`, or `None` when no review could be made now (busy or API unavailable).
    async fn allowed(&self, token: &str) -> Option<bool> {
        let Some(client) = &self.client else {
            return Some(true);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(a) = self.cached(&key) {
            return Some(a);
        }
        let _slot = self.slots.try_acquire().ok()?;
        let tr = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &tr)
            .await
            .ok()?;
        let status = reviewed.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true));
        let Some(user) = user else {
            self.remember(key, false);
            return Some(false);
        };
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(metrics_attributes()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .ok()?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        self.remember(key, allowed);
        Some(allowed)
    }
}

struct State {
    metrics: Arc<Metrics>,
    reviewer: Reviewer,
}

async fn handle(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let text = |code: actix_web::http::StatusCode, body: &str| {
        HttpResponse::build(code)
            .content_type("text/plain; charset=utf-8")
            .body(body.to_owned())
    };
    use actix_web::http::StatusCode;
    match route(req.path()) {
        Route::Health => text(StatusCode::OK, "ok\n"),
        Route::Ready => {
            if state.metrics.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not leading or not synced\n",
                )
            }
        }
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        Route::Metrics => {
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let Some(token) = bearer(header) else {
                return HttpResponse::Unauthorized()
                    .insert_header(("WWW-Authenticate", "Bearer"))
                    .body("a bearer token is needed\n");
            };
            match state.reviewer.allowed(token).await {
                Some(true) => HttpResponse::Ok()
                    .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                    .body(state.metrics.encode()),
                Some(false) => text(StatusCode::FORBIDDEN, "not allowed to read the metrics\n"),
                None => HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "1"))
                    .body("cannot review the token now\n"),
            }
        }
    }
}

/// A throw-away serving certificate for the admin endpoint.
fn acceptor() -> anyhow::Result<openssl::ssl::SslAcceptorBuilder> {
    let ca = svdm_pki::generate_ca("svdm-controller admin", Duration::from_secs(365 * 86400))?;
    let leaf = svdm_pki::issue(
        &ca,
        &svdm_pki::LeafSpec {
            common_name: "controller",
            organizations: &[],
            dns_names: &["controller".to_owned()],
            ip_addresses: &[],
            usage: svdm_pki::Usage::Server,
            validity: Duration::from_secs(365 * 86400),
        },
    )?;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    let cert = X509::from_pem(leaf.cert_pem.as_bytes())?;
    let key = PKey::private_key_from_pem(leaf.key_pem.as_bytes())?;
    b.set_certificate(&cert)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    Ok(b)
}

/// Serves the admin endpoint on `address` until the process ends. `client` reviews `/metrics`
/// callers; `None` serves metrics to anyone (local runs).
pub async fn serve(
    address: String,
    metrics: Arc<Metrics>,
    client: Option<Client>,
) -> anyhow::Result<()> {
    let state = web::Data::new(State {
        metrics,
        reviewer: Reviewer {
            client,
            cache: Mutex::new(HashMap::new()),
            slots: Semaphore::new(2),
        },
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .default_service(web::route().to(handle))
    })
    .workers(1)
    .max_connections(64)
    .backlog(64)
    .client_request_timeout(Duration::from_secs(5))
    .client_disconnect_timeout(Duration::from_secs(2))
    .keep_alive(Duration::from_secs(30))
    .disable_signals()
    .bind_openssl(&address, acceptor()?)?;
    for a in server.addrs() {
        log::info!("admin endpoint (/healthz, /readyz, /metrics) on https://{a}");
    }
    server.run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_tokens() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/readyz"), Route::Ready);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/metrics/x"), Route::NotFound);
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN + 1));
        assert_eq!(
            bearer(Some(&long)),
            None,
            "oversized tokens are not reviewed"
        );
    }

    #[test]
    fn answers_are_remembered_briefly() {
        let r = Reviewer {
            client: None,
            cache: Mutex::new(HashMap::new()),
            slots: Semaphore::new(2),
        };
        let k = [1u8; 32];
        assert_eq!(r.cached(&k), None);
        r.remember(k, false);
        assert_eq!(r.cached(&k), Some(false));
        for i in 0..(CACHE_ENTRIES + 10) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            r.remember(key, true);
        }
        assert!(r.cache.lock().map(|c| c.len()).unwrap_or(0) <= CACHE_ENTRIES);
    }
}
