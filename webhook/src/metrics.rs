//! Prometheus metrics, served as text on `--metrics-listen`.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::conn::Closed;
use crate::review::ReviewResult;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ResultValue {
    patched,
    allowed_unchanged,
    denied,
    invalid,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: ResultValue,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ReloadValue {
    ok,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadValue,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Reasons a request is refused before its review (besides invalid bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The body did not arrive within --body-timeout (408).
    BodyTimeout,
    /// The request byte budget was full (503).
    Busy,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Self::BodyTimeout => "body_timeout",
            Self::Busy => "busy",
        }
    }
}

const CLOSED: [Closed; 4] = [
    Closed::HeaderTimeout,
    Closed::IdleTimeout,
    Closed::Overload,
    Closed::DrainTimeout,
];

/// Latency buckets, in seconds: 50 µs .. 1 s.
const BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// Every metric of the webhook. Cheap to update from many threads.
pub struct Metrics {
    registry: Registry,
    /// patched, allowed_unchanged, denied, invalid.
    reviews: [Counter; 4],
    latency: Histogram,
    /// ok, error.
    cert_reloads: [Counter; 2],
    cert_expiry: Gauge,
    cert_expiring_soon: Gauge,
    connections: Family<ListenerLabels, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rds_iam_webhook");
        let reviews = Family::<ResultLabels, Counter>::default();
        // Every result shows up as 0 before the first review; the counters
        // are kept so the hot path skips the family's lock.
        let review_counters = [
            ResultValue::patched,
            ResultValue::allowed_unchanged,
            ResultValue::denied,
            ResultValue::invalid,
        ]
        .map(|result| reviews.get_or_create(&ResultLabels { result }).clone());
        registry.register(
            "reviews",
            "Admission reviews answered, by result",
            reviews.clone(),
        );
        let latency = Histogram::new(BUCKETS);
        registry.register(
            "review_duration_seconds",
            "Time to answer one admission review, body read to response built",
            latency.clone(),
        );
        let cert_reloads = Family::<ReloadLabels, Counter>::default();
        let reload_counters = [ReloadValue::ok, ReloadValue::error]
            .map(|result| cert_reloads.get_or_create(&ReloadLabels { result }).clone());
        registry.register(
            "cert_reloads",
            "Serving certificate reloads after a file change, by result (error keeps the old pair)",
            cert_reloads.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "cert_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as a Unix timestamp",
            cert_expiry.clone(),
        );
        let cert_expiring_soon = Gauge::default();
        registry.register(
            "cert_expiring_soon",
            "1 when the serving certificate in use expires within 7 days",
            cert_expiring_soon.clone(),
        );
        let connections = Family::<ListenerLabels, Gauge>::default();
        let closed = Family::<ClosedLabels, Counter>::default();
        for listener in ["https", "metrics"] {
            let _ = connections.get_or_create(&ListenerLabels { listener });
            for why in CLOSED {
                let _ = closed.get_or_create(&ClosedLabels {
                    listener,
                    reason: why.as_str(),
                });
            }
        }
        registry.register(
            "connections",
            "Connections open, by listener",
            connections.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the webhook closed, by listener and reason (header_timeout, idle_timeout, overload: unused at the connection cap, drain_timeout: cut at shutdown)",
            closed.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        for r in [Refused::BodyTimeout, Refused::Busy] {
            let _ = refused.get_or_create(&RefusedLabels { reason: r.as_str() });
        }
        registry.register(
            "requests_refused",
            "Requests answered without a review: body_timeout (408) or busy (503, the request byte budget was full)",
            refused.clone(),
        );
        Self {
            registry,
            reviews: review_counters,
            latency,
            cert_reloads: reload_counters,
            cert_expiry,
            cert_expiring_soon,
            connections,
            closed,
            refused,
        }
    }

    pub fn connection_opened(&self, listener: &'static str) {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// A connection ended; `why` is set when the webhook closed it.
    pub fn connection_closed(&self, listener: &'static str, why: Option<Closed>) {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .dec();
        if let Some(why) = why {
            self.closed
                .get_or_create(&ClosedLabels {
                    listener,
                    reason: why.as_str(),
                })
                .inc();
        }
    }

    pub fn request_refused(&self, why: Refused) {
        self.refused
            .get_or_create(&RefusedLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    pub fn observe_review(&self, result: ReviewResult, elapsed: Duration) {
        let i = match result {
            ReviewResult::Patched => 0,
            ReviewResult::AllowedUnchanged => 1,
            ReviewResult::Denied => 2,
            ReviewResult::Invalid => 3,
        };
        self.reviews[i].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn cert_reloaded(&self, ok: bool) {
        self.cert_reloads[usize::from(!ok)].inc();
    }

    /// Records the expiry of the certificate now in use.
    pub fn set_cert_expiry(&self, not_after_unix: i64, expiring_soon: bool) {
        self.cert_expiry.set(not_after_unix);
        self.cert_expiring_soon.set(i64::from(expiring_soon));
    }

    /// The OpenMetrics text exposition (Prometheus reads it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_text() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            text.contains("rds_iam_webhook_reviews_total{result=\"denied\"} 0"),
            "{text}"
        );
        m.observe_review(ReviewResult::Patched, Duration::from_micros(70));
        m.observe_review(ReviewResult::Patched, Duration::from_micros(70));
        m.observe_review(ReviewResult::Invalid, Duration::from_micros(10));
        m.cert_reloaded(false);
        m.set_cert_expiry(1_900_000_000, true);
        m.connection_opened("https");
        m.connection_opened("https");
        m.connection_opened("metrics");
        m.connection_closed("https", Some(Closed::IdleTimeout));
        m.connection_closed("metrics", None);
        m.request_refused(Refused::Busy);
        let text = m.encode();
        for want in [
            "rds_iam_webhook_reviews_total{result=\"patched\"} 2",
            "rds_iam_webhook_reviews_total{result=\"invalid\"} 1",
            "rds_iam_webhook_review_duration_seconds_count 3",
            "rds_iam_webhook_review_duration_seconds_bucket{le=\"0.0001\"} 3",
            "rds_iam_webhook_review_duration_seconds_bucket{le=\"0.00005\"} 1",
            "rds_iam_webhook_cert_reloads_total{result=\"error\"} 1",
            "rds_iam_webhook_cert_reloads_total{result=\"ok\"} 0",
            "rds_iam_webhook_cert_expiry_timestamp_seconds 1900000000",
            "rds_iam_webhook_cert_expiring_soon 1",
            "rds_iam_webhook_connections{listener=\"https\"} 1",
            "rds_iam_webhook_connections{listener=\"metrics\"} 0",
            "rds_iam_webhook_connections_closed_total{listener=\"https\",reason=\"idle_timeout\"} 1",
            "rds_iam_webhook_connections_closed_total{listener=\"https\",reason=\"header_timeout\"} 0",
            "rds_iam_webhook_connections_closed_total{listener=\"metrics\",reason=\"drain_timeout\"} 0",
            "rds_iam_webhook_requests_refused_total{reason=\"busy\"} 1",
            "rds_iam_webhook_requests_refused_total{reason=\"body_timeout\"} 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
