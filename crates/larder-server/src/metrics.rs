//! Prometheus metrics: requests by route and status, precondition outcomes, bytes in and out,
//! latency. Served as text at `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// The `method` label of a request: one of the methods of RFC 9110 (and `PATCH`), else
/// `other`, so that no client can grow the label sets by inventing methods. (Routes are labelled
/// by their template and statuses by their number, both from bounded sets too.)
pub fn method_label(method: &Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// Every value of the `method` label, indexed by [`method_index`].
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "other",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::PUT => 2,
        Method::POST => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// The statuses the server answers routinely, each with a cached counter per route and method;
/// any other status takes the registry's label lookup.
const CACHED_STATUSES: [u16; 18] = [
    200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 408, 412, 413, 416, 500, 501, 502, 503,
];

/// Routes with cached series; a router with more falls back to the label lookup for the rest.
const CACHED_ROUTES: usize = 32;

/// The series of one route, looked up once per label set rather than on every request (a
/// lookup hashes the label values and takes the registry's lock).
struct RouteSeries {
    route: Box<str>,
    latency: [OnceLock<Histogram>; METHOD_LABELS.len()],
    requests: Box<[OnceLock<IntCounter>]>,
}

impl RouteSeries {
    fn new(route: &str) -> Self {
        RouteSeries {
            route: route.into(),
            latency: Default::default(),
            requests: (0..METHOD_LABELS.len() * CACHED_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
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
    /// `bytes{direction="in"}` and `{direction="out"}`, once used.
    bytes_in: OnceLock<IntCounter>,
    bytes_out: OnceLock<IntCounter>,
    /// `preconditions` by outcome (304, 412) and method, once used.
    outcomes: [OnceLock<IntCounter>; 2 * METHOD_LABELS.len()],
    /// Per-route series, claimed by the first request of each route.
    routes: std::sync::Arc<[OnceLock<RouteSeries>; CACHED_ROUTES]>,
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
            bytes_in: OnceLock::new(),
            bytes_out: OnceLock::new(),
            outcomes: Default::default(),
            routes: std::sync::Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// The counter of upload body bytes, `bytes{direction="in"}`.
    pub fn bytes_in(&self) -> &IntCounter {
        self.bytes_in
            .get_or_init(|| self.bytes.with_label_values(&["in"]))
    }

    /// The counter of download body bytes, `bytes{direction="out"}`.
    pub fn bytes_out(&self) -> &IntCounter {
        self.bytes_out
            .get_or_init(|| self.bytes.with_label_values(&["out"]))
    }

    /// Records one answered request: its count by route, method and status, its latency, and
    /// the precondition outcome of a 304 or 412. `route` is the matched route template.
    pub fn record(&self, route: &str, method: &Method, status: StatusCode, elapsed: Duration) {
        let m = method_index(method);
        let labels = [route, METHOD_LABELS[m], status.as_str()];
        let series = self.route_series(route);
        let status_slot = CACHED_STATUSES.iter().position(|s| *s == status.as_u16());
        match (series, status_slot) {
            (Some(series), Some(st)) => series.requests[m * CACHED_STATUSES.len() + st]
                .get_or_init(|| self.requests.with_label_values(&labels))
                .inc(),
            _ => self.requests.with_label_values(&labels).inc(),
        }
        let seconds = elapsed.as_secs_f64();
        match series {
            Some(series) => series.latency[m]
                .get_or_init(|| self.latency.with_label_values(&labels[..2]))
                .observe(seconds),
            None => self
                .latency
                .with_label_values(&labels[..2])
                .observe(seconds),
        }
        let outcome = match status {
            StatusCode::NOT_MODIFIED => 0,
            StatusCode::PRECONDITION_FAILED => 1,
            _ => return,
        };
        self.outcomes[outcome * METHOD_LABELS.len() + m]
            .get_or_init(|| {
                let label = ["not_modified", "precondition_failed"][outcome];
                self.preconditions
                    .with_label_values(&[label, METHOD_LABELS[m]])
            })
            .inc();
    }

    /// The cached series of `route`: found among the routes seen so far, or claimed in the next
    /// free slot. `None` once every slot holds another route.
    fn route_series(&self, route: &str) -> Option<&RouteSeries> {
        for slot in self.routes.iter() {
            // Two first requests of different routes may race for a slot: the loser sees the
            // winner's route here and goes on to the next slot.
            let series = slot.get_or_init(|| RouteSeries::new(route));
            if &*series.route == route {
                return Some(series);
            }
        }
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series))
            .map(|l| l.rsplit(' ').next().unwrap_or_default())
    }

    /// The cached series are the registry's own: counts land where a label lookup would put
    /// them, for cached and uncached statuses alike, and past the last cached route.
    #[test]
    fn recorded_requests_reach_the_registry() {
        let m = Metrics::new();
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            m.record("/v1/objects/{*key}", &Method::GET, StatusCode::OK, ms);
        }
        m.record(
            "/v1/objects/{*key}",
            &Method::GET,
            StatusCode::NOT_MODIFIED,
            ms,
        );
        m.record(
            "/v1/objects/{*key}",
            &Method::PUT,
            StatusCode::IM_A_TEAPOT,
            ms,
        );
        m.record(
            "/v1/objects/{*key}",
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::OK,
            ms,
        );
        // Twice each: the second request of a route finds the series the first one claimed.
        for i in (0..CACHED_ROUTES + 5).flat_map(|i| [i, i]) {
            m.record(
                &format!("/r{i}"),
                &Method::DELETE,
                StatusCode::NO_CONTENT,
                ms,
            );
        }
        m.bytes_out().inc_by(7);
        let text = m.render();
        let requests =
            |labels: &str| line(&text, &format!("larder_http_requests_total{{{labels}}}"));
        for (method, status, count) in [
            ("GET", 200, "3"),
            ("GET", 304, "1"),
            ("PUT", 418, "1"),
            ("other", 200, "1"),
        ] {
            let labels =
                format!(r#"method="{method}",route="/v1/objects/{{*key}}",status="{status}""#);
            assert_eq!(requests(&labels), Some(count), "{labels}");
        }
        for i in 0..CACHED_ROUTES + 5 {
            let labels = format!(r#"method="DELETE",route="/r{i}",status="204""#);
            assert_eq!(requests(&labels), Some("2"), "{labels}");
        }
        assert_eq!(
            line(
                &text,
                r#"larder_http_request_duration_seconds_count{method="GET",route="/v1/objects/{*key}"}"#
            ),
            Some("4")
        );
        assert_eq!(
            line(
                &text,
                r#"larder_precondition_outcomes_total{method="GET",outcome="not_modified"}"#
            ),
            Some("1")
        );
        assert_eq!(
            line(&text, r#"larder_http_body_bytes_total{direction="out"}"#),
            Some("7")
        );
        assert_eq!(
            line(&text, r#"larder_http_body_bytes_total{direction="in"}"#),
            None
        );
    }
}
