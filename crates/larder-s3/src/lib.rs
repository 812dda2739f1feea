//! An S3-compatible API over any [`larder::Store`]: every S3 client (the SDKs, the aws CLI,
//! rclone…) gets S3's conditional writes — `If-None-Match: *` and `If-Match` on PutObject and
//! CompleteMultipartUpload, `If-Match` on DeleteObject — decided by the store in the same atomic
//! step as the write, as everywhere in Larder.
//!
//! The protocol (routing, XML, SigV4 in headers and presigned URLs, `aws-chunked` bodies) is
//! [s3s]'s; this crate is the mapping onto [`larder::Store`] (see [`LarderS3`]) and the
//! authorization of access keys scoped like bearer tokens (see [`Grants`]).
//!
//! Addressing is path style: `http://host:port/bucket/key` is the Larder key `bucket/key`, one
//! object with one ETag through either API. docs/s3.md lists the operations and conditions.

#![deny(missing_docs)]

mod integrity;
mod multipart;
mod objects;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use larder::Store;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Result};

pub use objects::{LarderS3, BUCKET_MARKER};

/// What a request does to a key, for authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading one object (GET, HEAD, the source of a copy).
    Read,
    /// Listing under a prefix (a bucket's prefix when listing buckets or objects).
    List,
    /// Writing or deleting one object (PUT, DELETE, multipart, the target of a copy).
    Write,
}

/// The access keys an S3 endpoint accepts and what each may do.
pub trait Grants: Send + Sync + 'static {
    /// The secret key of `access_key`, or `None` when the key is unknown.
    fn secret(&self, access_key: &str) -> Option<String>;

    /// Whether `access_key` may do `access` to `target` (a Larder key, or a listing's
    /// prefix); `Err` carries the reason, answered as 403 AccessDenied.
    fn check(&self, access_key: &str, access: Access, target: &str) -> Result<(), String>;
}

/// Settings of an S3 endpoint.
#[derive(Clone, Default)]
pub struct S3Options {
    /// Who may do what. `None`: any access key is accepted and signatures are not checked
    /// (only for loopback listeners; the server refuses a non-loopback one without keys).
    pub grants: Option<Arc<dyn Grants>>,
    /// Largest object accepted, in bytes (`None`: the store's own limit).
    pub max_object_size: Option<u64>,
    /// Where multipart parts are spooled until completion (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// Bound on one whole request (`None`: unbounded); past it the answer is 400
    /// `RequestTimeout`.
    pub request_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("grants", &self.grants.is_some())
            .field("max_object_size", &self.max_object_size)
            .field("spool_dir", &self.spool_dir)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// s3s's view of [`Grants`]: the secret for SigV4 verification.
struct GrantsAuth(Arc<dyn Grants>);

#[async_trait::async_trait]
impl S3Auth for GrantsAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.secret(access_key) {
            Some(secret) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// The S3 API over `store`, as an axum router (every path is S3's).
pub fn router(store: Arc<dyn Store>, options: S3Options) -> std::io::Result<axum::Router> {
    let open = options.grants.is_none();
    let s3 = LarderS3::new(store, &options)?;
    let mut builder = S3ServiceBuilder::new(s3);
    if let Some(grants) = options.grants {
        // With an auth provider, s3s verifies every signature (headers, presigned URLs,
        // aws-chunked chunk and trailer signatures) and refuses unsigned requests; the
        // per-key scopes are checked by each operation.
        builder.set_auth(GrantsAuth(grants));
    }
    let service = builder.build();
    let handled = axum::error_handling::HandleError::new(service, |e: s3s::HttpError| async move {
        tracing::warn!(error = ?e, "s3 request failed");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    });
    let mut router = axum::Router::new().fallback_service(handled);
    if open {
        router = router.layer(axum::middleware::from_fn(accept_any_key));
    }
    if let Some(limit) = options.request_timeout {
        router = router.layer(axum::middleware::from_fn(move |req, next| {
            bounded(limit, req, next)
        }));
    }
    Ok(router)
}

/// An S3 error body, for the answers given before s3s sees a request.
fn s3_error_response(status: axum::http::StatusCode, code: &str, message: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        xml,
    )
        .into_response()
}

/// Bounds a whole request by the configured timeout, as the native API does.
async fn bounded(
    limit: std::time::Duration,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => s3_error_response(
            axum::http::StatusCode::BAD_REQUEST,
            "RequestTimeout",
            "the request took longer than the server allows",
        ),
    }
}

/// Serves the S3 API over `store` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    options: S3Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(store, options)?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Whether an S3 endpoint on `addr` with `keys` access keys may start: a non-loopback
/// listener needs keys, as the native API needs tokens.
pub fn check_exposure(addr: SocketAddr, keys: usize) -> Result<(), String> {
    if keys == 0 && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve S3 on {addr} without access keys: add [[s3.keys]] to the config"
        ));
    }
    Ok(())
}

/// Without configured keys (loopback only), any access key is accepted: the signature is
/// dropped before s3s sees the request, since the secret it was made with is unknown.
/// `aws-chunked` bodies can't be unwrapped without verifying them, so they are refused.
async fn accept_any_key(mut req: Request, next: axum::middleware::Next) -> Response {
    let streaming = req
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("STREAMING-"));
    if streaming {
        return s3_error_response(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "aws-chunked request bodies need configured access keys ([[s3.keys]]): the \
             signature chain can only be checked with a known secret",
        );
    }
    req.headers_mut().remove(axum::http::header::AUTHORIZATION);
    if let Some(query) = req.uri().query() {
        if query.contains("X-Amz-Signature") || query.contains("Signature=") {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| {
                    let name = p.split('=').next().unwrap_or("");
                    !(name.starts_with("X-Amz-")
                        || matches!(name, "AWSAccessKeyId" | "Signature" | "Expires"))
                })
                .collect();
            let path = req.uri().path().to_owned();
            let pq = if kept.is_empty() {
                path
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut parts = req.uri().clone().into_parts();
            if let Ok(pq) = pq.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    next.run(req).await
}
