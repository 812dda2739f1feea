//! Prometheus metrics: requests by route and status, precondition outcomes, bytes in and out,
//! latency. Served as text at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The `method` label of a request: one of the methods of RFC 9110 (and `PATCH`), else
/// `other`, so that no client can grow the label sets by inventing methods. (Routes are labelled
/// by their template and statuses by their number, both from bounded sets too.)
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// A per-tier counter: name, help text, and how to read it from a snapshot.
type TierSeries = (
    &'static str,
    &'static str,
    fn(&larder::tiered::TierStatsSnapshot) -> u64,
);

/// The server's metrics, in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The tiered store being served, whose per-tier counters are exported too.
    tiers: Option<larder::tiered::TieredStore>,
    /// Requests by route, method and status.
    pub requests: IntCounterVec,
    /// Conditional outcomes: `not_modified` (304) and `precondition_failed` (412), by method.
    pub preconditions: IntCounterVec,
    /// Body bytes, `in` (uploads) and `out` (downloads).
    pub bytes: IntCounterVec,
    /// Time to the response head, by route and method.
    pub latency: HistogramVec,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "larder_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let preconditions = IntCounterVec::new(
            Opts::new(
                "larder_precondition_outcomes_total",
                "Conditional requests answered 304 or 412",
            ),
            &["outcome", "method"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "larder_http_body_bytes_total",
                "Object body bytes received and sent",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "larder_http_request_duration_seconds",
                "Time from request to response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(preconditions.clone()),
            Box::new(bytes.clone()),
            Box::new(latency.clone()),
        ] {
            registry.register(c).expect("metrics registered once");
        }
        Metrics {
            registry,
            tiers: None,
            requests,
            preconditions,
            bytes,
            latency,
        }
    }

    /// Also exports the per-tier counters of `tiers` (hits, misses, backfills, invalidations,
    /// stale reads refused), labelled by tier index, nearest first.
    pub fn with_tiers(mut self, tiers: Option<larder::tiered::TieredStore>) -> Self {
        self.tiers = tiers;
        self
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        let mut text = String::from_utf8(out).expect("the text format is UTF-8");
        if let Some(tiered) = &self.tiers {
            // The store keeps these counters itself; they are read at scrape time.
            let stats = tiered.stats();
            let series: [TierSeries; 5] = [
                ("hits", "Reads a tier answered", |s| s.hits),
                ("misses", "Reads a tier could not answer", |s| s.misses),
                (
                    "backfills",
                    "Copies written into a tier after a deeper read",
                    |s| s.backfills,
                ),
                ("invalidations", "Copies removed from a tier", |s| {
                    s.invalidations
                }),
                (
                    "stale_reads_refused",
                    "Copies not served because their ETag disagreed with the authoritative one",
                    |s| s.stale_reads_refused,
                ),
            ];
            for (name, help, value) in series {
                text.push_str(&format!(
                    "# HELP larder_tier_{name}_total {help}\n# TYPE larder_tier_{name}_total counter\n"
                ));
                for (i, s) in stats.iter().enumerate() {
                    text.push_str(&format!(
                        "larder_tier_{name}_total{{tier=\"{i}\"}} {}\n",
                        value(s)
                    ));
                }
            }
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
