//! Prometheus metrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    pub sent_bytes: Counter,
    pub active_transfers: Gauge,
    auth_cache: Family<Labels, Counter>,
    auth_reviews: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("svdm_exporter");
        let requests = Family::<Labels, Counter>::default();
        let sent_bytes = Counter::default();
        let active_transfers = Gauge::default();
        let auth_cache = Family::<Labels, Counter>::default();
        let auth_reviews = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by method and status code",
            requests.clone(),
        );
        registry.register(
            "sent_bytes",
            "Response body bytes written",
            sent_bytes.clone(),
        );
        registry.register(
            "active_transfers",
            "Response bodies being streamed",
            active_transfers.clone(),
        );
        registry.register(
            "auth_cache",
            "Authentication and authorization cache lookups by kind (token, access) and result (hit, miss)",
            auth_cache.clone(),
        );
        registry.register(
            "auth_api_calls",
            "TokenReview and SubjectAccessReview calls by kind and outcome",
            auth_reviews.clone(),
        );
        Metrics {
            registry,
            requests,
            sent_bytes,
            active_transfers,
            auth_cache,
            auth_reviews,
        }
    }

    pub fn request(&self, method: &str, code: u16) {
        self.requests
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
    }

    pub fn cache(&self, kind: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.auth_cache
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn api_call(&self, kind: &'static str, outcome: &'static str) {
        self.auth_reviews
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
