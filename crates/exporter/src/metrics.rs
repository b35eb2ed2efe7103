//! Prometheus metrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label sets are small typed values: counting a request hashes two words and allocates nothing.
/// Methods are a closed set, so a client sending made-up methods cannot grow the metric's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    OTHER,
}

impl MethodLabel {
    pub fn of(method: &str) -> MethodLabel {
        match method {
            "GET" => MethodLabel::GET,
            "HEAD" => MethodLabel::HEAD,
            _ => MethodLabel::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    kind: &'static str,
    outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    pub sent_bytes: Counter,
    pub active_transfers: Gauge,
    /// Requests answered 503 because too many unverified credentials were being reviewed.
    pub throttled: Counter,
    auth_cache: Family<CacheLabels, Counter>,
    auth_reviews: Family<CallLabels, Counter>,
    /// The cache counters every authenticated request bumps, resolved once: (kind, hit, miss).
    cache_counters: [(&'static str, Counter, Counter); 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("svdm_exporter");
        let requests = Family::<RequestLabels, Counter>::default();
        let sent_bytes = Counter::default();
        let active_transfers = Gauge::default();
        let throttled = Counter::default();
        let auth_cache = Family::<CacheLabels, Counter>::default();
        let auth_reviews = Family::<CallLabels, Counter>::default();
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
            "auth_throttled",
            "Requests answered 503 because the budget or the concurrency for reviewing unverified credentials was used up",
            throttled.clone(),
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
        let cache_counters = ["token", "access"].map(|kind| {
            let of = |result| {
                auth_cache
                    .get_or_create(&CacheLabels { kind, result })
                    .clone()
            };
            (kind, of("hit"), of("miss"))
        });
        Metrics {
            registry,
            requests,
            sent_bytes,
            active_transfers,
            throttled,
            auth_cache,
            auth_reviews,
            cache_counters,
        }
    }

    pub fn request(&self, method: MethodLabel, code: u16) {
        self.requests
            .get_or_create(&RequestLabels { method, code })
            .inc();
    }

    pub fn cache(&self, kind: &'static str, hit: bool) {
        if let Some((_, hits, misses)) = self.cache_counters.iter().find(|(k, _, _)| *k == kind) {
            if hit { hits } else { misses }.inc();
            return;
        }
        let result = if hit { "hit" } else { "miss" };
        self.auth_cache
            .get_or_create(&CacheLabels { kind, result })
            .inc();
    }

    pub fn api_call(&self, kind: &'static str, outcome: &'static str) {
        self.auth_reviews
            .get_or_create(&CallLabels { kind, outcome })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_keeps_its_names_and_labels() {
        let m = Metrics::new();
        m.request(MethodLabel::of("GET"), 200);
        m.request(MethodLabel::of("BREW"), 405);
        m.cache("token", true);
        m.api_call("tokenreview", "rejected");
        let text = m.render();
        for line in [
            "svdm_exporter_requests_total{method=\"GET\",code=\"200\"} 1",
            "svdm_exporter_requests_total{method=\"OTHER\",code=\"405\"} 1",
            "svdm_exporter_auth_cache_total{kind=\"token\",result=\"hit\"} 1",
            "svdm_exporter_auth_api_calls_total{kind=\"tokenreview\",outcome=\"rejected\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
