//! Prometheus metrics, one registry per server (so servers in one process, as in tests, do not
//! share counters), served at `/metrics`:
//!
//! - `larder_http_requests_total{method,route,status}`
//! - `larder_http_request_duration_seconds{method,route}` (until the response head)
//! - `larder_http_precondition_outcomes_total{outcome="not_modified"|"precondition_failed"}`
//! - `larder_http_body_bytes_in_total` / `larder_http_body_bytes_out_total` (object bodies)
//! - `larder_http_uploads_in_flight`

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::AppState;

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    preconditions: IntCounterVec,
    /// Object bytes received (PUT bodies).
    pub bytes_in: IntCounter,
    /// Object bytes sent (GET bodies).
    pub bytes_out: IntCounter,
    /// Uploads being received.
    pub uploads_in_flight: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "larder_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "larder_http_request_duration_seconds",
                "Time until the response head, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ]),
            &["method", "route"],
        )
        .expect("valid metric");
        let preconditions = IntCounterVec::new(
            Opts::new(
                "larder_http_precondition_outcomes_total",
                "Conditional requests answered 304 or 412",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let bytes_in = IntCounter::new("larder_http_body_bytes_in_total", "Object bytes received")
            .expect("valid metric");
        let bytes_out = IntCounter::new("larder_http_body_bytes_out_total", "Object bytes sent")
            .expect("valid metric");
        let uploads_in_flight =
            IntGauge::new("larder_http_uploads_in_flight", "Uploads being received")
                .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(preconditions.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(uploads_in_flight.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            preconditions,
            bytes_in,
            bytes_out,
            uploads_in_flight,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to memory");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    fn record(&self, method: &str, route: &str, status: StatusCode, started: Instant) {
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(started.elapsed().as_secs_f64());
        match status {
            StatusCode::NOT_MODIFIED => self
                .preconditions
                .with_label_values(&["not_modified"])
                .inc(),
            StatusCode::PRECONDITION_FAILED => self
                .preconditions
                .with_label_values(&["precondition_failed"])
                .inc(),
            _ => {}
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The route label: a fixed set, so label cardinality stays bounded.
fn route(path: &str) -> &'static str {
    match path {
        "/v1/objects" => "/v1/objects",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        p if p.starts_with(crate::routes::OBJECTS_PREFIX) => "/v1/objects/{key}",
        _ => "other",
    }
}

/// The middleware: counts every request (including refused ones) by route and status.
pub(crate) async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = route(req.uri().path());
    let resp = next.run(req).await;
    st.metrics
        .record(method.as_str(), route, resp.status(), started);
    resp
}
