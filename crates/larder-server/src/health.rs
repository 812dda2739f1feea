//! `/readyz`: whether the store (each tier and mount) answers now. `/healthz` stays a liveness
//! check that touches nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::AppState;

/// Longest a readiness check may take before the store counts as not answering.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a `/readyz` answer.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// The part that failed (`tier 2 of 2 (redis)`, `mount "cache/" (memory)`), or null when
    /// the store is one part or ready.
    pub failing: Option<String>,
    /// Why, when unavailable.
    pub error: Option<String>,
}

/// `GET /readyz`: 200 `{"status":"ready"}`, or 503 naming the failing part.
pub async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let (failing, error) = match tokio::time::timeout(READINESS_TIMEOUT, s.store.check()).await {
        Ok(Ok(())) => {
            let body = Readiness {
                status: "ready",
                failing: None,
                error: None,
            };
            return (StatusCode::OK, Json(body)).into_response();
        }
        Ok(Err(e)) => describe(e),
        Err(_) => (
            None,
            format!("the store did not answer within {READINESS_TIMEOUT:?}"),
        ),
    };
    // Logged once, as every 503 is, by the router's `observe` (with this cause).
    let cause = format!(
        "not ready: {}: {error}",
        failing.as_deref().unwrap_or("store")
    );
    let body = Readiness {
        status: "unavailable",
        failing,
        error: Some(error),
    };
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.extensions_mut().insert(crate::error::ErrorCause(cause));
    r
}

/// The failing part (if the store named one) and the error.
fn describe(e: larder::Error) -> (Option<String>, String) {
    if let larder::Error::Backend { source, .. } = &e {
        if let Some(p) = source.downcast_ref::<larder::PartError>() {
            return (Some(p.part.clone()), p.source.to_string());
        }
    }
    (None, e.to_string())
}
