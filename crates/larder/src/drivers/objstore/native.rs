//! What `object_store` cannot express and the object-store drivers need: a DELETE guarded by
//! `If-Match`, and a multipart upload whose completion carries the condition (and, on S3, whose
//! initiation carries the metadata). Each backend ([`super::s3`], [`super::azure`]) implements
//! [`Native`] with raw requests signed by `object_store`'s own authorizers (`AwsAuthorizer`,
//! `AzureAuthorizer`) and sent with `reqwest`; parts are uploaded through `object_store`'s
//! `MultipartStore`, which needs no condition.
//!
//! Conditional requests here are sent exactly once: a timeout or a 5xx leaves the outcome
//! unknown, and the caller settles it by reading the blob's write id, never by resending.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::PutPayload;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::Error;

/// The backend's own precondition on a mutation, on its own ETag (not Larder's content ETag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// No condition: the mutation is unconditional.
    Always,
    /// `If-None-Match: *`: only if there is no blob.
    Absent,
    /// `If-Match: <backend ETag>`: only if the blob is still this version.
    Match(String),
}

impl Guard {
    /// The request header that carries the guard (the same on S3 and Azure).
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Guard::Always => None,
            Guard::Absent => Some(("if-none-match", "*".to_owned())),
            Guard::Match(etag) => Some(("if-match", etag.clone())),
        }
    }
}

/// Why a guarded request did not happen.
#[derive(Debug)]
pub enum NativeError {
    /// The backend refused because the blob is no longer in the state the [`Guard`] names
    /// (412, a conflicting concurrent conditional write's 409, or 404 for the blob): decide again.
    Changed,
    /// The upload's parts are gone (S3 `NoSuchUpload`; Azure `InvalidBlockList`, after another
    /// writer's commit discarded our uncommitted blocks): upload them again.
    UploadGone,
    /// The request failed or its outcome is unknown.
    Failed(Error),
}

impl From<Error> for NativeError {
    fn from(e: Error) -> Self {
        NativeError::Failed(e)
    }
}

/// The blob headers a write carries: Larder's metadata entry and the content type.
#[derive(Debug, Clone)]
pub struct BlobHeaders {
    /// The value of the `larder` user-metadata entry.
    pub larder: String,
    /// The blob's own `Content-Type`.
    pub content_type: Option<String>,
}

/// A multipart upload whose parts are all uploaded, as its completion names it.
#[derive(Debug, Clone, Copy)]
pub struct Uploaded<'a> {
    /// The blob.
    pub path: &'a Path,
    /// The upload id, as [`Native::begin_upload`] returned it.
    pub id: &'a str,
    /// The parts, in order.
    pub parts: &'a [PartId],
    /// What the blob will carry.
    pub headers: &'a BlobHeaders,
}

/// How a backend lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// [`Native::list`] is not implemented: the store lists through `object_store`.
    Unsupported,
    /// Names and sizes only (S3): each listed object on a page is headed for its metadata.
    Names,
    /// Names with their metadata (Azure): a page needs no further request.
    WithMetadata,
}

/// The order a backend lists names in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// UTF-8 byte order, as S3 and Azure specify; `start-after` is taken in the same order.
    Bytes,
    /// Directory-walk order (SeaweedFS): names compared segment by segment, as if `/` sorted
    /// before every other character (`a/x` before `a a/y` and `a-b`), and `start-after` is
    /// taken in that order too.
    Walk,
}

/// One listing request.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest<'a> {
    /// Only blobs whose full names start with this.
    pub prefix: &'a str,
    /// Group names by this character after the prefix into common prefixes.
    pub delimiter: Option<char>,
    /// Only names after this one (in the backend's [`ListOrder`]).
    pub start_after: Option<&'a str>,
    /// The continuation token of the previous response of the same listing.
    pub token: Option<&'a str>,
    /// At most this many entries (blobs plus common prefixes).
    pub max: usize,
}

/// A blob as a listing returns it.
#[derive(Debug, Clone)]
pub struct ListedBlob {
    /// The blob's full name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The value of its `larder` metadata entry, when the listing returns metadata
    /// ([`Listing::WithMetadata`]) and the blob has one.
    pub larder: Option<String>,
}

/// What one listing request returns, in the backend's order.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// The blobs.
    pub blobs: Vec<ListedBlob>,
    /// The common prefixes, each ending with the delimiter.
    pub prefixes: Vec<String>,
    /// The token of the next response; `None` after the last.
    pub token: Option<String>,
}

/// The native operations of one backend.
#[async_trait]
pub trait Native: Send + Sync + std::fmt::Debug {
    /// Whether and how [`Native::list`] lists.
    fn listing(&self) -> Listing {
        Listing::Unsupported
    }

    /// The order the backend lists in (asked once per store).
    async fn list_order(&self) -> Result<ListOrder, Error> {
        Ok(ListOrder::Bytes)
    }

    /// One response of a listing: one request to the backend.
    async fn list(&self, request: ListRequest<'_>) -> Result<Listed, Error> {
        let _ = request;
        Err(Error::unsupported("native listing"))
    }

    /// Whether the backend enforces `If-Match` on delete (when not, conditional deletes are
    /// `Unsupported`).
    fn conditional_delete(&self) -> bool;

    /// Deletes the blob if `guard` holds.
    async fn delete(&self, path: &Path, guard: &Guard) -> Result<(), NativeError>;

    /// Starts a multipart upload of a blob that will carry `headers`; returns the upload id.
    async fn begin_upload(&self, path: &Path, headers: &BlobHeaders) -> Result<String, Error>;

    /// The backend's `object_store` client, which uploads the parts (no condition needed).
    fn parts(&self) -> &dyn MultipartStore;

    /// Uploads part `index` (from 0) of the upload.
    async fn put_part(
        &self,
        path: &Path,
        upload: &str,
        index: usize,
        data: PutPayload,
    ) -> Result<PartId, Error> {
        self.parts()
            .put_part(path, &upload.to_owned(), index, data)
            .await
            .map_err(super::map_err)
    }

    /// Makes the uploaded parts the blob, if `guard` holds at that moment.
    async fn complete_upload(&self, upload: Uploaded<'_>, guard: &Guard)
        -> Result<(), NativeError>;

    /// Drops an upload that will not be completed (best effort).
    async fn abort_upload(&self, path: &Path, upload: &str);
}

/// Characters left as they are in a blob path in a URL (as `object_store` encodes them, so
/// both address the same blob).
const PATH_ENCODE_SET: AsciiSet = NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A query-string value, percent-encoded.
pub(crate) fn query_value(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

/// `base` (no trailing slash) joined with the percent-encoded blob path.
pub(crate) fn blob_url(base: &str, path: &Path) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        utf8_percent_encode(path.as_ref(), &PATH_ENCODE_SET)
    )
}

/// A raw request about to be signed and sent.
pub(crate) fn request(
    method: http::Method,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<HttpRequest, Error> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder = builder.header(http::header::CONTENT_LENGTH, body.len());
    builder
        .body(HttpRequestBody::from(body))
        .map_err(|e| Error::InvalidInput(format!("request to {url}: {e}")))
}

/// A response read whole: status, the error code (S3's and Azure's XML `<Code>`, or Azure's
/// `x-ms-error-code`), and the body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: http::StatusCode,
    /// The `Server` header, which names the implementation (its quirks are known by name).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub server: Option<String>,
    pub code: Option<String>,
    pub body: String,
}

impl Response {
    /// A backend error describing this response.
    pub fn error(&self, what: &str) -> Error {
        let msg = format!(
            "{what}: HTTP {} {}",
            self.status,
            self.code.as_deref().unwrap_or("")
        );
        if self.status.is_server_error() || self.status == http::StatusCode::TOO_MANY_REQUESTS {
            Error::transient(msg)
        } else {
            Error::backend(msg)
        }
    }
}

/// The HTTP client for one store's raw requests, within the store's `bounds` (a hung backend
/// fails a request within `bounds.timeout`). One per store, not one per process: a pooled
/// connection belongs to the tokio runtime that opened it.
pub(crate) fn new_client(bounds: &super::NetworkBounds) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(bounds.connect_timeout)
        // Until the response starts, and then between two reads of it. (S3 answers a
        // completion's headers at once and keeps the body moving while it works.)
        .read_timeout(bounds.timeout)
        // Below the servers' own keep-alive timeouts (Node's, so Azurite's, is 5 s): a
        // pooled connection the server is closing would fail a request that cannot be
        // resent.
        .pool_idle_timeout(Duration::from_secs(2))
        // Completing a multi-gigabyte upload can take minutes on S3, with the body moving.
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| Error::backend(format!("HTTP client for the raw requests: {e}")))
}

/// Sends a signed request up to `attempts` times while the connection fails: once for a
/// conditional request (see the module doc), more only for one safe to repeat (a read), and
/// not again once `retry_for` has passed since the first attempt (a hung backend fails the
/// request within about `retry_for` plus one timeout).
pub(crate) async fn send(
    client: &reqwest::Client,
    request: HttpRequest,
    attempts: usize,
    retry_for: Duration,
) -> Result<Response, Error> {
    let started = std::time::Instant::now();
    let mut last = None;
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            if started.elapsed() >= retry_for {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        match send_one(client, clone_request(&request)?).await {
            Err(SendError::Connection(e)) => last = Some(e),
            Err(SendError::Other(e)) => return Err(e),
            Ok(r) => return Ok(r),
        }
    }
    Err(last.unwrap_or_else(|| Error::transient("the request was not sent")))
}

fn clone_request(r: &HttpRequest) -> Result<HttpRequest, Error> {
    let mut c = http::Request::builder()
        .method(r.method().clone())
        .uri(r.uri().clone());
    if let Some(h) = c.headers_mut() {
        *h = r.headers().clone();
    }
    c.body(HttpRequestBody::from(
        r.body().as_bytes().cloned().unwrap_or_default(),
    ))
    .map_err(|e| Error::InvalidInput(format!("request to {}: {e}", r.uri())))
}

enum SendError {
    /// The request may not have reached the server.
    Connection(Error),
    Other(Error),
}

async fn send_one(client: &reqwest::Client, request: HttpRequest) -> Result<Response, SendError> {
    let (parts, body) = request.into_parts();
    let body = body.as_bytes().cloned().unwrap_or_default();
    let url = parts.uri.to_string();
    let response = client
        .request(parts.method, &url)
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            SendError::Connection(Error::transient(format!(
                "{url}: {}",
                crate::error::chain(&e)
            )))
        })?;
    let status = response.status();
    let header_code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let server = response
        .headers()
        .get(http::header::SERVER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.map_err(|e| {
        SendError::Other(Error::transient(format!(
            "{url}: reading the response: {}",
            crate::error::chain(&e)
        )))
    })?;
    let code = header_code.or_else(|| xml_text(&body, "Code"));
    Ok(Response {
        status,
        server,
        code,
        body,
    })
}

/// The text of the first `<tag>…</tag>` in `xml`, unescaped.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml_unescape(&xml[start..end]))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `s` escaped for XML text.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_round_trip() {
        let x = format!("<R><UploadId>{}</UploadId></R>", xml_escape("a&b<c>\"d\""));
        assert_eq!(xml_text(&x, "UploadId").as_deref(), Some("a&b<c>\"d\""));
        assert_eq!(xml_text(&x, "Code"), None);
    }

    #[test]
    fn blob_urls_encode_like_object_store() {
        let p = Path::parse("pre/a b/ü+x").unwrap();
        assert_eq!(
            blob_url("http://h:1/bucket/", &p),
            "http://h:1/bucket/pre/a%20b/%C3%BC%2Bx"
        );
    }
}
