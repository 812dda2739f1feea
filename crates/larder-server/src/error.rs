//! Errors: `larder::Error` (and the server's own refusals) as an HTTP status plus the JSON body
//! of the contract, `{"error":{"code":..,"message":..,"current":META|null}}`; and
//! [`ServerError`], why a server could not start or run.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use larder::{Error, Meta};

use crate::headers::{meta_json, validator_headers};

/// Why [`serve`](crate::serve) could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Listening on a non-loopback address without tokens (and without `--insecure`).
    #[error(
        "refusing to listen on {0} without authentication: configure [[tokens]] or pass --insecure"
    )]
    Insecure(std::net::SocketAddr),
    /// Opening the store failed.
    #[error("opening the store: {0}")]
    Store(#[from] Error),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The contract's code (`not_found`, `precondition_failed`, ...).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The current object, for a 412.
    pub current: Option<Box<Meta>>,
    /// Extra response headers (ETag of the current object, Content-Range, Retry-After, ...).
    pub headers: Box<HeaderMap>,
}

impl ApiError {
    /// An error with no extra headers.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            current: None,
            headers: Box::default(),
        }
    }

    /// 400 `invalid_input`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"larder\""),
        );
        e
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 503 with `Retry-After: 1` (`code`: why).
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        e
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::NotModified(meta) => {
                // Not an error in HTTP terms: a 304 repeating the stored validators.
                let mut e = ApiError::new(StatusCode::NOT_MODIFIED, "not_modified", message);
                validator_headers(&meta, &mut e.headers);
                e
            }
            Error::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            Error::PreconditionFailed { current } => {
                let mut e = ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    message,
                );
                if let Some(cur) = &current {
                    if let Ok(v) = HeaderValue::from_str(&cur.etag.to_string()) {
                        e.headers.insert(header::ETAG, v);
                    }
                }
                e.current = current;
                e
            }
            Error::RangeNotSatisfiable { size } => {
                let mut e = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    message,
                );
                e.headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                e
            }
            Error::Unsupported { .. } => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", message)
            }
            Error::InvalidKey { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", message)
            }
            Error::InvalidInput(_) => ApiError::bad_request(message),
            Error::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            Error::Backend {
                retryable: true, ..
            } => {
                tracing::warn!(error = %message, "retryable backend error");
                ApiError::unavailable("backend", message)
            }
            Error::Backend { .. } => {
                tracing::error!(error = %message, "backend error");
                ApiError::new(StatusCode::BAD_GATEWAY, "backend", message)
            }
            other => {
                tracing::error!(error = %other, "unexpected error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return (self.status, *self.headers).into_response();
        }
        let body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "current": self.current.as_deref().map(meta_json),
            }
        });
        crate::headers::json_response(self.status, *self.headers, &body)
    }
}
