//! The wrapper around every route: bounds a request by the configured timeout, answers a
//! panicking handler with a 500, logs server errors with their route, and records the request
//! in the metrics. [`Observe`] wraps the router's routes; the object routes the server
//! dispatches itself (`dispatch.rs`) go through the same [`observed`].
//!
//! One layer for the four jobs, with no per-request work that the answer does not need: the
//! timeout's timer is armed only when the handler does not finish on its first poll (a memory
//! store answers at once), and the metrics' labelled series are looked up once per label set.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ApiError;
use crate::metrics::method_label;
use crate::AppState;

/// The [`Layer`] of [`Observe`].
#[derive(Clone)]
pub(crate) struct ObserveLayer(pub Arc<AppState>);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.0.clone(),
        }
    }
}

/// A route wrapped as the [module docs](self) say.
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let state = self.state.clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        let handling = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        Box::pin(async move {
            let route = route.as_ref().map_or("unmatched", |p| p.as_str());
            let handling =
                handling.map(|h| async { h.await.unwrap_or_else(|never| match never {}) });
            Ok(observed(&state, route, &method, started, handling).await)
        })
    }
}

/// The answer of `handling` (the handler's future, or the panic of starting it) to a request
/// of `method` to `route`, received at `started`, observed as the [module docs](self) say. The
/// one implementation of those rules, for the routes of the router (through [`Observe`]) and for
/// those the server dispatches directly (`dispatch.rs`).
pub(crate) async fn observed<F>(
    state: &AppState,
    route: &str,
    method: &Method,
    started: Instant,
    handling: std::thread::Result<F>,
) -> Response
where
    F: Future<Output = Response>,
{
    let answered = match handling {
        Ok(handling) => {
            let deadline = tokio::time::Instant::from_std(started) + state.config.request_timeout;
            bounded(AssertUnwindSafe(handling).catch_unwind(), deadline).await
        }
        Err(panic) => Some(Err(panic)),
    };
    let mut panicked = false;
    let response = match answered {
        Some(Ok(response)) => response,
        Some(Err(panic)) => {
            panicked = true;
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            tracing::error!(%route, method = method_label(method), panic = %what,
                "a handler panicked; answered 500");
            ApiError::Panicked.into_response()
        }
        None => ApiError::Timeout.into_response(),
    };
    let status = response.status();
    // Each 5xx is logged once, here, with its route and (from the error) its cause.
    let cause = response
        .extensions()
        .get::<crate::error::ErrorCause>()
        .map_or("", |c| c.0.as_str());
    if panicked {
        // Logged above, with what the panic said.
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        // Overload or a backend briefly away: the client is told to retry.
        tracing::warn!(%route, method = method_label(method), status = status.as_u16(),
            error = cause, "unavailable; retry");
    } else if status.is_server_error() {
        tracing::error!(%route, method = method_label(method), status = status.as_u16(),
            error = cause, "server error");
    }
    state
        .metrics
        .record(route, method, status, started.elapsed());
    response
}

/// `work`'s output, or `None` past `deadline`. The timer is armed only if `work` does not
/// finish on its first poll: arming and dropping one takes the runtime's timer lock, a cost
/// most requests to a fast store need not pay.
async fn bounded<F: Future>(work: F, deadline: tokio::time::Instant) -> Option<F::Output> {
    let mut work = pin!(work);
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Some(out),
        Poll::Pending => tokio::time::timeout_at(deadline, work).await.ok(),
    }
}
