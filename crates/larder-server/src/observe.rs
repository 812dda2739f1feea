//! The wrapper around every route: bounds a request by the configured timeout, answers a
//! panicking handler with a 500, logs server errors with their route, and records the request
//! in the metrics. [`Observe`] wraps the router's routes; the object routes the server
//! dispatches itself (`dispatch.rs`) go through the same [`observed`].
//!
//! One layer for the four jobs, with no per-request work that the answer does not need: the
//! timeout's timer is armed only when the handler does not finish on its first poll (a memory
//! store answers at once), the handler's future is not copied once built ([`Observed`]), and
//! the metrics' labelled series are looked up once per label set.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::{self, CatchUnwind, Either, Ready};
use futures::FutureExt;
use tokio::time::Sleep;
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

pin_project_lite::pin_project! {
    /// The answer of a request's handler, observed as the [module docs](self) say: what
    /// [`observed`] returns. A plain struct, so the handler's future is stored once, where it
    /// was built, and polled in place: an `async fn` wrapping it kept its own copy at each
    /// level (catching the panic, the timeout), some 3 KB copied for every request.
    pub(crate) struct Observed<'a, F> {
        #[pin]
        work: Either<CatchUnwind<AssertUnwindSafe<F>>, Ready<std::thread::Result<Response>>>,
        // Armed only if the work does not finish on its first poll: arming and dropping a
        // timer takes the runtime's timer lock, a cost most requests to a fast store need not
        // pay. Boxed, so that only a request that waits pays for its room.
        timer: Option<Pin<Box<Sleep>>>,
        state: &'a AppState,
        route: &'a str,
        method: &'a Method,
        started: Instant,
    }
}

/// The answer of `handling` (the handler's future, or the panic of starting it) to a request
/// of `method` to `route`, received at `started`, observed as the [module docs](self) say. The
/// one implementation of those rules, for the routes of the router (through [`Observe`]) and for
/// those the server dispatches directly (`dispatch.rs`).
pub(crate) fn observed<'a, F>(
    state: &'a AppState,
    route: &'a str,
    method: &'a Method,
    started: Instant,
    handling: std::thread::Result<F>,
) -> Observed<'a, F>
where
    F: Future<Output = Response>,
{
    let work = match handling {
        Ok(handling) => Either::Left(AssertUnwindSafe(handling).catch_unwind()),
        Err(panic) => Either::Right(future::ready(Err(panic))),
    };
    Observed {
        work,
        timer: None,
        state,
        route,
        method,
        started,
    }
}

impl<F: Future<Output = Response>> Future for Observed<'_, F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = self.project();
        let answered = match this.work.poll(cx) {
            Poll::Ready(answered) => Some(answered),
            Poll::Pending => {
                // A timeout too far to count to on this clock is no timeout.
                let Some(deadline) = this.started.checked_add(this.state.config.request_timeout)
                else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => None,
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        Poll::Ready(finish(
            this.state,
            this.route,
            this.method,
            *this.started,
            answered,
        ))
    }
}

/// The response to a request once its handler has `answered` (`None`: past the request
/// timeout): a panic becomes a 500, a timeout a 503; 5xx are logged; the request is counted.
fn finish(
    state: &AppState,
    route: &str,
    method: &Method,
    started: Instant,
    answered: Option<std::thread::Result<Response>>,
) -> Response {
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
