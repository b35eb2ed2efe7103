//! Per-request authentication (bearer token via TokenReview, or a verified client certificate) and
//! authorization (SubjectAccessReview for `get dataexports/download <name>`), with short-lived caching
//! so a stream of range requests costs no API call each.
//!
//! Raw tokens live only in the request being served: caches are keyed by SHA-256 and nothing here logs
//! a token or an Authorization header.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::cache::TtlCache;
use crate::metrics::Metrics;
use crate::throttle::{Budget, Flights};

pub const API_GROUP: &str = "storage.deckhouse.io";
pub const RESOURCE: &str = "dataexports";
pub const SUBRESOURCE: &str = "download";
pub const VERB: &str = "get";
pub const REALM_CHALLENGE: &str = "Bearer realm=\"storage-volume-data-manager\"";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// An authenticated identity with the key its access decision is cached under, computed once when the
/// identity is established (a TokenReview, a TLS handshake) rather than on every request.
#[derive(Debug)]
pub struct Principal {
    pub identity: Identity,
    access_key: [u8; 32],
}

impl Principal {
    pub fn new(identity: Identity) -> Principal {
        Principal {
            access_key: identity_key(&identity),
            identity,
        }
    }

    /// The user a verified client certificate names: CN is the user, O the groups, as the API server
    /// takes them.
    pub fn from_certificate(cn: String, orgs: Vec<String>) -> Principal {
        let mut groups = orgs;
        // The API server adds this group to every authenticated user; RBAC bindings to it must work the
        // same here.
        groups.push("system:authenticated".into());
        Principal::new(Identity {
            username: cn,
            uid: String::new(),
            groups,
            extra: BTreeMap::new(),
        })
    }

    pub fn username(&self) -> &str {
        &self.identity.username
    }
}

/// What a TLS client certificate said, as checked during the handshake.
#[derive(Debug, Clone)]
pub enum PeerCert {
    Verified(Arc<Principal>),
    /// Presented but not signed by the client CA (or expired); never used as an identity.
    Rejected(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Missing,
    Bearer(&'a str),
    Basic,
    Other(String),
    Malformed,
}

pub fn parse_authorization(value: Option<&[u8]>) -> Credential<'_> {
    let Some(raw) = value else {
        return Credential::Missing;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Credential::Malformed;
    };
    let text = text.trim();
    let (scheme, rest) = match text.split_once(' ') {
        Some((s, r)) => (s, r.trim()),
        None => (text, ""),
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || rest.contains(' ') {
            return Credential::Malformed;
        }
        Credential::Bearer(rest)
    } else if scheme.eq_ignore_ascii_case("basic") {
        Credential::Basic
    } else if scheme.is_empty() {
        Credential::Malformed
    } else {
        Credential::Other(scheme.chars().take(32).collect())
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// 401 with `WWW-Authenticate`.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the API server could not answer; the request may succeed on retry.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with a short Retry-After: too many unverified tokens are being reviewed right now.
    #[error("{0}")]
    Busy(String),
}

/// Longest bearer token reviewed. Kubernetes ServiceAccount tokens are about 1 KiB and OIDC tokens a
/// few; anything longer is refused without asking the API server.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// How long a rejected token, or a denied access decision, is answered from memory.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long a token that authenticated once counts as known: known tokens are re-reviewed (when
/// their cache entry expires) outside the budget for unknown ones.
pub const KNOWN_TTL: Duration = Duration::from_secs(3600);

/// Bounds on what unauthenticated traffic can make the exporter ask the API server.
#[derive(Debug, Clone, Copy)]
pub struct ReviewLimits {
    /// API calls (TokenReview or SubjectAccessReview) in flight at once.
    pub in_flight: usize,
    /// Reviews of unknown tokens that may fail: at once, and refilled per second.
    pub burst: u32,
    pub per_second: f64,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        ReviewLimits {
            in_flight: 4,
            burst: 5,
            per_second: 2.0,
        }
    }
}

const REJECTED: &str =
    "the bearer token was not accepted by the cluster (expired, revoked or not a Kubernetes token)";

#[derive(Debug, Clone)]
enum TokenVerdict {
    Authenticated(Arc<Principal>),
    Rejected,
}

#[derive(Debug, Clone, Copy)]
enum AccessVerdict {
    Allowed,
    Denied,
}

pub fn forbidden_message(user: &str, name: &str, namespace: &str) -> String {
    format!(
        "user {user:?} cannot {VERB} {RESOURCE}/{SUBRESOURCE} {name:?} in namespace {namespace:?} ({API_GROUP}); ask for a role that grants it"
    )
}

pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Keys the access decision by everything the SubjectAccessReview sees.
pub fn identity_key(id: &Identity) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [&id.username, &id.uid] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for g in &id.groups {
        h.update(g.as_bytes());
        h.update([1]);
    }
    for (k, vs) in &id.extra {
        h.update(k.as_bytes());
        h.update([2]);
        for v in vs {
            h.update(v.as_bytes());
            h.update([3]);
        }
    }
    h.finalize().into()
}

/// Authentication/authorization backend.
///
/// The cost of unauthenticated traffic is bounded: tokens over [`MAX_TOKEN_BYTES`] are refused
/// outright; a rejected token is answered from memory for [`NEGATIVE_TTL`]; concurrent requests with
/// the same token share one review; unknown tokens may be reviewed only within a [`Budget`] that
/// successful reviews do not use up; at most `in_flight` API calls run at once, and everything goes
/// through the one shared, pooled `kube::Client`. Beyond the budget or the concurrency, requests with
/// unknown tokens get 503 with Retry-After at once.
pub struct Auth {
    client: Option<kube::Client>,
    namespace: String,
    name: String,
    tokens: TtlCache<[u8; 32], TokenVerdict>,
    access: TtlCache<[u8; 32], AccessVerdict>,
    /// Tokens that authenticated within [`KNOWN_TTL`].
    known: TtlCache<[u8; 32], ()>,
    token_flights: Flights<[u8; 32], Result<Arc<Principal>, AuthError>>,
    access_flights: Flights<[u8; 32], Result<(), AuthError>>,
    in_flight: tokio::sync::Semaphore,
    budget: Mutex<Budget>,
    metrics: Arc<Metrics>,
    /// The identity every request has under `--no-auth`.
    anonymous: Arc<Principal>,
}

impl Auth {
    /// `client == None` disables authentication entirely (`--no-auth`).
    pub fn new(
        client: Option<kube::Client>,
        namespace: String,
        name: String,
        ttl: Duration,
        limits: ReviewLimits,
        metrics: Arc<Metrics>,
    ) -> Auth {
        Auth {
            client,
            namespace,
            name,
            tokens: TtlCache::new(ttl, 10_000),
            access: TtlCache::new(ttl, 10_000),
            known: TtlCache::new(KNOWN_TTL, 10_000),
            token_flights: Flights::default(),
            access_flights: Flights::default(),
            in_flight: tokio::sync::Semaphore::new(limits.in_flight.max(1)),
            budget: Mutex::new(Budget::new(limits.burst, limits.per_second, Instant::now())),
            metrics,
            anonymous: Arc::new(Principal::new(Identity {
                username: "anonymous (--no-auth)".into(),
                uid: String::new(),
                groups: Vec::new(),
                extra: BTreeMap::new(),
            })),
        }
    }

    /// Whether requests are checked at all (false under `--no-auth`).
    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    pub async fn check(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&PeerCert>,
    ) -> Result<Arc<Principal>, AuthError> {
        let Some(client) = &self.client else {
            return Ok(self.anonymous.clone());
        };
        let principal = match parse_authorization(authorization) {
            Credential::Bearer(token) => self.review_token(client, token).await?,
            Credential::Basic => {
                return Err(AuthError::Unauthenticated(
                    "Basic authentication is not supported; use a bearer token or a client certificate".into(),
                ));
            }
            Credential::Other(scheme) => {
                return Err(AuthError::Unauthenticated(format!(
                    "authorization scheme {scheme:?} is not supported; use a bearer token or a client certificate"
                )));
            }
            Credential::Malformed => {
                return Err(AuthError::Unauthenticated(
                    "malformed Authorization header".into(),
                ));
            }
            Credential::Missing => match peer {
                Some(PeerCert::Verified(p)) => p.clone(),
                Some(PeerCert::Rejected(why)) => {
                    return Err(AuthError::Unauthenticated(format!(
                        "client certificate not accepted: {why}"
                    )));
                }
                None => {
                    return Err(AuthError::Unauthenticated(
                        "no credentials: send a Kubernetes bearer token (Authorization: Bearer …) or a client certificate"
                            .into(),
                    ));
                }
            },
        };
        self.authorize(client, &principal).await?;
        Ok(principal)
    }

    async fn review_token(
        &self,
        client: &kube::Client,
        token: &str,
    ) -> Result<Arc<Principal>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Unauthenticated(format!(
                "the bearer token is longer than {} KiB; it is not a Kubernetes token",
                MAX_TOKEN_BYTES / 1024
            )));
        }
        let key = token_key(token);
        match self.tokens.get(&key) {
            Some(TokenVerdict::Authenticated(p)) => {
                self.metrics.cache("token", true);
                return Ok(p);
            }
            Some(TokenVerdict::Rejected) => {
                self.metrics.cache("token", true);
                return Err(AuthError::Unauthenticated(REJECTED.into()));
            }
            None => self.metrics.cache("token", false),
        }
        self.token_flights
            .run(&key, || self.review_uncached(client, token, key))
            .await
    }

    async fn review_uncached(
        &self,
        client: &kube::Client,
        token: &str,
        key: [u8; 32],
    ) -> Result<Arc<Principal>, AuthError> {
        // A token seen to succeed is re-reviewed outside the budget and waits for a slot; an unknown
        // one needs the budget and a free slot now, or gets a fast 503.
        let known = self.known.get(&key).is_some();
        let _slot = if known {
            self.in_flight.acquire().await.map_err(|_| self.busy())?
        } else {
            let admitted = self
                .budget
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_take(Instant::now());
            if !admitted {
                return Err(self.busy());
            }
            self.in_flight.try_acquire().map_err(|_| self.busy())?
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(client.clone());
        let result = api.create(&PostParams::default(), &review).await.map_err(|e| {
            self.metrics.api_call("tokenreview", "error");
            log::warn!("TokenReview failed: {e}");
            AuthError::Unavailable(
                "cannot verify the token with the Kubernetes API right now; retry in a few seconds".into(),
            )
        })?;
        let status = result.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            self.metrics.api_call("tokenreview", "rejected");
            self.tokens
                .insert_for(key, TokenVerdict::Rejected, NEGATIVE_TTL);
            return Err(AuthError::Unauthenticated(REJECTED.into()));
        }
        self.metrics.api_call("tokenreview", "authenticated");
        if !known {
            self.budget
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refund(Instant::now());
        }
        let user = status.user.unwrap_or_default();
        let principal = Arc::new(Principal::new(Identity {
            username: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }));
        self.tokens
            .insert(key, TokenVerdict::Authenticated(principal.clone()));
        self.known.insert(key, ());
        Ok(principal)
    }

    fn busy(&self) -> AuthError {
        self.metrics.throttled.inc();
        AuthError::Busy(
            "too many unverified credentials are being checked right now; retry in a moment".into(),
        )
    }

    async fn authorize(
        &self,
        client: &kube::Client,
        principal: &Principal,
    ) -> Result<(), AuthError> {
        let key = principal.access_key;
        let denied = || {
            AuthError::Forbidden(forbidden_message(
                &principal.identity.username,
                &self.name,
                &self.namespace,
            ))
        };
        match self.access.get(&key) {
            Some(AccessVerdict::Allowed) => {
                self.metrics.cache("access", true);
                return Ok(());
            }
            Some(AccessVerdict::Denied) => {
                self.metrics.cache("access", true);
                return Err(denied());
            }
            None => self.metrics.cache("access", false),
        }
        self.access_flights
            .run(&key, || self.review_access(client, principal, key))
            .await
    }

    async fn review_access(
        &self,
        client: &kube::Client,
        principal: &Principal,
        key: [u8; 32],
    ) -> Result<(), AuthError> {
        // Only authenticated identities get here: they wait for a slot rather than fail.
        let _slot = self.in_flight.acquire().await.map_err(|_| self.busy())?;
        let id = &principal.identity;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(id.username.clone()),
                uid: (!id.uid.is_empty()).then(|| id.uid.clone()),
                groups: Some(id.groups.clone()),
                extra: (!id.extra.is_empty()).then(|| id.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.namespace.clone()),
                    verb: Some(VERB.into()),
                    group: Some(API_GROUP.into()),
                    resource: Some(RESOURCE.into()),
                    subresource: Some(SUBRESOURCE.into()),
                    name: Some(self.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(client.clone());
        let result = api.create(&PostParams::default(), &review).await.map_err(|e| {
            self.metrics.api_call("subjectaccessreview", "error");
            log::warn!("SubjectAccessReview failed: {e}");
            AuthError::Unavailable(
                "cannot check permissions with the Kubernetes API right now; retry in a few seconds".into(),
            )
        })?;
        let status = result.status.unwrap_or_default();
        if status.allowed {
            self.metrics.api_call("subjectaccessreview", "allowed");
            self.access.insert(key, AccessVerdict::Allowed);
            Ok(())
        } else {
            self.metrics.api_call("subjectaccessreview", "denied");
            self.access
                .insert_for(key, AccessVerdict::Denied, NEGATIVE_TTL);
            Err(AuthError::Forbidden(forbidden_message(
                &id.username,
                &self.name,
                &self.namespace,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorization() {
        assert_eq!(parse_authorization(None), Credential::Missing);
        assert_eq!(
            parse_authorization(Some(b"Bearer abc.def")),
            Credential::Bearer("abc.def")
        );
        assert_eq!(
            parse_authorization(Some(b"bearer  abc ")),
            Credential::Bearer("abc")
        );
        assert_eq!(parse_authorization(Some(b"Bearer")), Credential::Malformed);
        assert_eq!(
            parse_authorization(Some(b"Bearer a b")),
            Credential::Malformed
        );
        assert_eq!(
            parse_authorization(Some(b"Basic dXNlcjpwYXNz")),
            Credential::Basic
        );
        assert_eq!(
            parse_authorization(Some(b"Negotiate x")),
            Credential::Other("Negotiate".into())
        );
        assert_eq!(parse_authorization(Some(b"")), Credential::Malformed);
        assert_eq!(
            parse_authorization(Some(&[0xff, 0xfe])),
            Credential::Malformed
        );
    }

    #[test]
    fn keys_and_messages() {
        assert_ne!(token_key("a"), token_key("b"));
        let a = Identity {
            username: "u".into(),
            uid: "1".into(),
            groups: vec!["g".into()],
            extra: BTreeMap::new(),
        };
        let mut b = a.clone();
        b.groups.push("h".into());
        assert_ne!(identity_key(&a), identity_key(&b));
        assert_eq!(identity_key(&a), identity_key(&a.clone()));
        assert_eq!(
            forbidden_message("x", "name", "ns"),
            "user \"x\" cannot get dataexports/download \"name\" in namespace \"ns\" (storage.deckhouse.io); ask for a role that grants it"
        );
    }

    #[tokio::test]
    async fn no_auth_mode_allows() {
        let auth = Auth::new(
            None,
            "ns".into(),
            "n".into(),
            Duration::from_secs(1),
            ReviewLimits::default(),
            Arc::new(Metrics::new()),
        );
        assert!(auth.check(None, None).await.is_ok());
    }
}
