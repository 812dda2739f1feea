//! The one mapping from [`larder::Error`] (and the server's own refusals) to an HTTP response.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use larder::Error;

use crate::headers::validator_headers_owned;
use crate::wire::{ErrorDetail, ErrorJson, MetaJson};

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// The store (or the request's parsing) said no.
    Store(Error),
    /// No valid bearer token.
    Unauthorized,
    /// The token does not grant this.
    Forbidden(String),
    /// Too many uploads in flight.
    Busy,
    /// The request took longer than the configured bound.
    Timeout,
    /// A handler panicked (caught per request; the server goes on).
    Panicked,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Store(e)
    }
}

/// Why a request failed on the server's side (a 5xx), attached to its response so that the
/// request is logged once, with its route, status and this cause (see `observe` in lib.rs).
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

/// `response` with `cause` attached (see [`ErrorCause`]).
fn with_cause(mut response: Response, cause: String) -> Response {
    response.extensions_mut().insert(ErrorCause(cause));
    response
}

fn json(status: StatusCode, code: &'static str, message: String) -> Response {
    detailed(status, ErrorDetail::new(code, message))
}

fn detailed(status: StatusCode, error: ErrorDetail) -> Response {
    (status, Json(ErrorJson { error })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Unauthorized => {
                let mut r = json(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid bearer token is required".into(),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"larder\""),
                );
                return r;
            }
            ApiError::Forbidden(why) => return json(StatusCode::FORBIDDEN, "forbidden", why),
            ApiError::Busy => {
                let mut r = json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many uploads in flight; retry shortly".into(),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            ApiError::Timeout => {
                return json(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request took longer than the server allows".into(),
                )
            }
            ApiError::Panicked => {
                return json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed on this request".into(),
                )
            }
            ApiError::Store(e) => e,
        };
        let e = match e {
            Error::NotModified(meta) => {
                // The most frequent "error": built as the 200's head is, with no message.
                let mut response = Response::new(axum::body::Body::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                validator_headers_owned(response.headers_mut(), *meta);
                return response;
            }
            e => e,
        };
        let message = e.to_string();
        match e {
            Error::PreconditionFailed { current } => {
                let mut headers = HeaderMap::new();
                if let Some(m) = &current {
                    if let Some(v) = crate::headers::etag_value(&m.etag) {
                        headers.insert(header::ETAG, v);
                    }
                }
                let body = ErrorJson {
                    error: ErrorDetail {
                        current: current.as_deref().map(MetaJson::from),
                        ..ErrorDetail::new("precondition_failed", message)
                    },
                };
                (StatusCode::PRECONDITION_FAILED, headers, Json(body)).into_response()
            }
            Error::RangeNotSatisfiable { size } => {
                let mut r = json(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    message,
                );
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                r
            }
            Error::NotFound { .. } => json(StatusCode::NOT_FOUND, "not_found", message),
            Error::InvalidKey { reason, .. } => detailed(
                StatusCode::BAD_REQUEST,
                ErrorDetail {
                    reason: Some(reason.to_owned()),
                    ..ErrorDetail::new("invalid_key", message)
                },
            ),
            Error::InvalidInput(_) => json(StatusCode::BAD_REQUEST, "invalid_input", message),
            Error::TooLarge { limit } => detailed(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorDetail {
                    limit: Some(limit),
                    ..ErrorDetail::new("too_large", message)
                },
            ),
            Error::Unsupported { .. } => json(StatusCode::NOT_IMPLEMENTED, "unsupported", message),
            Error::StorageFull { .. } => with_cause(
                json(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    message.clone(),
                ),
                message,
            ),
            Error::Backend { retryable, .. } => {
                let r = if retryable {
                    let mut r = json(StatusCode::SERVICE_UNAVAILABLE, "backend", message.clone());
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    r
                } else {
                    json(StatusCode::BAD_GATEWAY, "backend", message.clone())
                };
                with_cause(r, message)
            }
            _ => with_cause(
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    message.clone(),
                ),
                message,
            ),
        }
    }
}
