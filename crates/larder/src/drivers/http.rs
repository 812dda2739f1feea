//! A Larder server as a store: the client of the native HTTP API (`/v1/objects/{key}`).
//!
//! Every operation is one HTTP request; the server evaluates the preconditions atomically with
//! its own store, so this driver adds no precondition logic of its own: it maps
//! [`Preconditions`], ranges, TTL and metadata to request headers ([`request_headers`], the one
//! place that does so) and statuses back to typed [`Error`]s (`error_from_response`).
//!
//! Bodies stream both ways: a `put` sends the [`Body`] stream as a chunked request body (a
//! failing body stream aborts the request, and the server stores nothing), and a `get` returns
//! the response body as a [`ByteStream`].
//!
//! Retries: only idempotent requests (GET, HEAD, listing, and unconditional DELETE) are retried,
//! and only when the connection could not be made or the server answered 503, with exponential
//! backoff. A PUT, and a conditional DELETE, is sent exactly once: whether a lost response
//! means the write happened is for the caller to find out by re-reading.
//!
//! Atomicity: whatever the server's store provides. [`HttpStore::open`] (and
//! [`crate::open`]) asks the server (`GET /v1/capabilities`) and the driver then reports the
//! server store's capabilities. Until it has them (a store opened with
//! [`HttpConfig::fetch_capabilities`] off, or a server that could not be reached or predates the
//! route), it declares every condition
//! supported at [`AtomicScope::Cluster`]; a condition the server's store cannot do atomically
//! then comes back as 501, which is [`Error::Unsupported`], never ignored.
//!
//! The wire format (header names, JSON bodies) is [`crate::wire`], which the server uses too.
//!
//! Timeouts: 5 s to connect, 30 s for any one read from the server (not the whole transfer);
//! `?timeout=SECS` sets the read timeout (and caps the connect timeout). A server that cannot
//! be reached, or answers 503, is a retryable [`Error::Backend`]; a 507 is
//! [`Error::StorageFull`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::body::{Body, ByteStream};
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::{validate_prefix, Key};
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::precondition::{IfRange, Preconditions};
use crate::range::ByteRange;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};
use crate::wire::{self, header, CapabilitiesJson, ErrorJson, ListJson, MetaJson};

/// Settings of an [`HttpStore`].
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The server: `http://host:port` or `https://host:port` (any path is ignored).
    pub server: url::Url,
    /// Prepended to every key (and listing prefix) on the server, stripped from what comes
    /// back: `""`, or a key prefix ending in `/`.
    pub prefix: String,
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Longest wait for the connection to be made.
    pub connect_timeout: Duration,
    /// Longest wait for any one read from the server (not the whole transfer, so large
    /// streams are not cut off).
    pub read_timeout: Duration,
    /// How many times an idempotent request is repeated after a connect error or a 503.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Ask the server for its store's capabilities when the store is opened (default `true`;
    /// one request). Off, the store opens without a request (a one-shot client) and reports
    /// every condition supported until [`HttpStore::fetch_capabilities`] is called.
    pub fetch_capabilities: bool,
}

impl HttpConfig {
    /// Defaults for a server URL: no prefix, no token, 5 s to connect, 30 s per read, 3
    /// retries from 100 ms, capabilities asked for on open.
    pub fn new(server: url::Url) -> Self {
        HttpConfig {
            server,
            prefix: String::new(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            fetch_capabilities: true,
        }
    }

    /// From a store URL: `http://HOST:PORT[/key/prefix]?token=T&timeout=SECS&retries=N`,
    /// `https://…`, or either with a `larder+` scheme prefix (`larder+http://…`).
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |why: String| Error::InvalidInput(format!("http store URL {url:?}: {why}"));
        let plain = match url.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("larder+") => &url[7..],
            _ => url,
        };
        let parsed = url::Url::parse(plain).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https".into()));
        }
        if parsed.host_str().is_none() {
            return Err(bad("no host".into()));
        }
        let mut server = parsed.clone();
        server.set_path("/");
        server.set_query(None);
        server.set_fragment(None);
        let mut config = HttpConfig::new(server);
        let mut segments = Vec::new();
        for seg in parsed.path().split('/').filter(|s| !s.is_empty()) {
            let seg = percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| bad("the key prefix is not UTF-8".into()))?;
            segments.push(seg.into_owned());
        }
        if !segments.is_empty() {
            config.prefix = format!("{}/", segments.join("/"));
            validate_prefix(&config.prefix)?;
        }
        for (k, v) in parsed.query_pairs() {
            let secs = || -> Result<u64> {
                v.parse()
                    .map_err(|_| bad(format!("{k}={v} is not a number")))
            };
            match &*k {
                "token" => config.token = Some(v.into_owned()).filter(|t| !t.is_empty()),
                "timeout" => {
                    let t = Duration::from_secs(secs()?);
                    if t.is_zero() {
                        return Err(bad("timeout must be positive".into()));
                    }
                    config.read_timeout = t;
                    config.connect_timeout = t.min(config.connect_timeout);
                }
                "retries" => config.retries = secs()? as u32,
                _ => return Err(bad(format!("unknown option {k}"))),
            }
        }
        Ok(config)
    }
}

/// A store served by a Larder server over its native HTTP API.
#[derive(Debug)]
pub struct HttpStore {
    config: HttpConfig,
    client: reqwest::Client,
    /// The server store's capabilities, once the server has told them.
    server_capabilities: OnceLock<Capabilities>,
}

/// What the server said when it refused a request with a status that has no [`Error`] variant
/// of its own (401, 403, 5xx): the `source` of the [`Error::Backend`] it becomes, for callers
/// that downcast to tell an auth failure from an outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status.
    pub status: u16,
    /// The error code from the JSON body (`unauthorized`, `forbidden`, `backend`, …), if any.
    pub code: Option<String>,
    /// The server's message, or the status text.
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server answered {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for HttpError {}

impl HttpStore {
    /// A client for the server in `config`. Unless [`HttpConfig::fetch_capabilities`] is off it
    /// asks the server once, now, what its store can do; a server that cannot be reached, or
    /// that predates the capabilities route, is not an error here (see the
    /// [module docs](self)).
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use larder::drivers::http::{HttpConfig, HttpStore};
    ///
    /// let server = url::Url::parse("http://127.0.0.1:8080").unwrap();
    /// let store = HttpStore::open(HttpConfig {
    ///     token: Some("s3cret".into()),
    ///     prefix: "tenant-a/".into(), // every key lives under tenant-a/ on the server
    ///     ..HttpConfig::new(server)
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(config: HttpConfig) -> Result<Self> {
        // `HttpConfig::from_url` checks this too; a config built by hand may not have.
        if !matches!(config.server.scheme(), "http" | "https") || config.server.cannot_be_a_base() {
            return Err(Error::InvalidInput(format!(
                "http store: the server URL {} is not http(s)://host",
                config.server
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            // Retired before the server's keep-alive limit (its header-read timeout, 10 s by
            // default), so that a write is never sent on a connection the server is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(concat!("larder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::backend)?;
        let store = HttpStore {
            config,
            client,
            server_capabilities: OnceLock::new(),
        };
        if store.config.fetch_capabilities {
            if let Err(e) = store.fetch_capabilities().await {
                tracing::debug!(error = %e, "http store: the server's capabilities are unknown");
            }
        }
        Ok(store)
    }

    /// A client for the server a store URL names, as [`HttpConfig::from_url`] reads it.
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use larder::drivers::http::HttpStore;
    ///
    /// let store = HttpStore::from_url("https://larder.example.com/tenant-a?token=s3cret&retries=5").await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(HttpConfig::from_url(url)?).await
    }

    /// Asks the server what its store can do (`GET /v1/capabilities`, once: opening a store
    /// is not held up by retries); from then on [`Store::capabilities`] reports that.
    pub async fn fetch_capabilities(&self) -> Result<Capabilities> {
        let mut url = self.config.server.clone();
        url.set_path(wire::CAPABILITIES_PATH);
        let resp = self.send_once(self.request(Method::GET, url)).await?;
        if !resp.status().is_success() {
            return Err(self.error_from_response(resp, None).await);
        }
        let caps = json::<CapabilitiesJson>(resp)
            .await?
            .into_capabilities("http")?;
        Ok(self.server_capabilities.get_or_init(|| caps).clone())
    }

    /// The settings in use.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// The URL of an object: each key segment percent-encoded.
    fn object_url(&self, key: &Key) -> url::Url {
        let mut url = self.config.server.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .expect("http(s) URLs have path segments");
            segs.clear().push("v1").push("objects");
            for seg in self.config.prefix.split('/').filter(|s| !s.is_empty()) {
                segs.push(seg);
            }
            for seg in key.segments() {
                segs.push(seg);
            }
        }
        url
    }

    fn listing_url(&self) -> url::Url {
        let mut url = self.config.server.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have path segments")
            .clear()
            .push("v1")
            .push("objects");
        url
    }

    fn request(&self, method: Method, url: url::Url) -> RequestBuilder {
        let rb = self.client.request(method, url);
        match &self.config.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends an idempotent request, repeating it after a connect error or a 503.
    async fn send_idempotent(&self, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        let mut attempt = 0;
        loop {
            let delay = self.config.retry_backoff * 2u32.saturating_pow(attempt);
            match build().send().await {
                Err(e) if e.is_connect() && attempt < self.config.retries => {
                    tracing::debug!(error = %e, attempt, "http store: connect failed, retrying");
                }
                Ok(r)
                    if r.status() == StatusCode::SERVICE_UNAVAILABLE
                        && attempt < self.config.retries =>
                {
                    tracing::debug!(attempt, "http store: 503, retrying");
                    let after = retry_after(r.headers()).unwrap_or(delay);
                    tokio::time::sleep(after.min(Duration::from_secs(5))).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(transport_error(e)),
                Ok(r) => return Ok(r),
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Sends a request exactly once (writes: their body is a stream, and a repeat of a
    /// conditional write could succeed or fail for reasons the caller never saw).
    async fn send_once(&self, rb: RequestBuilder) -> Result<Response> {
        rb.send().await.map_err(transport_error)
    }

    /// The server's key back as a caller's key: the configured prefix removed.
    fn strip_prefix<'a>(&self, key: &'a str) -> Result<&'a str> {
        key.strip_prefix(self.config.prefix.as_str())
            .ok_or_else(|| {
                Error::backend(format!(
                    "the server returned key {key:?} outside the prefix {:?}",
                    self.config.prefix
                ))
            })
    }

    fn meta_from_wire(&self, w: MetaJson) -> Result<Meta> {
        let key = Key::new(self.strip_prefix(&w.key)?)?;
        w.into_meta(key)
    }

    /// The typed error for a response that is not a success.
    async fn error_from_response(&self, resp: Response, key: Option<&Key>) -> Error {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = if status == StatusCode::NOT_MODIFIED {
            None
        } else {
            resp.bytes().await.ok()
        };
        let err = body
            .as_deref()
            .and_then(|b| serde_json::from_slice::<ErrorJson>(b).ok())
            .map(|b| b.error);
        let message = err
            .as_ref()
            .map(|e| e.message.clone())
            .or_else(|| {
                body.as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
        let key_str = || key.map_or_else(String::new, |k| k.to_string());
        match status {
            StatusCode::NOT_MODIFIED => {
                let size = header_str(&headers, "content-length").and_then(|v| v.parse().ok());
                match key.map(|k| meta_from_headers(k, &headers, Some(size.unwrap_or(0)))) {
                    Some(Ok(meta)) => Error::NotModified(Box::new(meta)),
                    Some(Err(e)) => e,
                    None => Error::backend("unexpected 304 Not Modified"),
                }
            }
            StatusCode::PRECONDITION_FAILED => {
                let current = match err.and_then(|e| e.current) {
                    Some(w) => match self.meta_from_wire(w) {
                        Ok(m) => Some(Box::new(m)),
                        Err(e) => return e,
                    },
                    // A HEAD's 412 has no body; the validators may be in the headers.
                    None => key
                        .filter(|_| headers.contains_key(reqwest::header::ETAG))
                        .and_then(|k| meta_from_headers(k, &headers, Some(0)).ok())
                        .map(Box::new),
                };
                Error::PreconditionFailed { current }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                match header_str(&headers, reqwest::header::CONTENT_RANGE.as_str())
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|n| n.trim().parse().ok())
                {
                    Some(size) => Error::RangeNotSatisfiable { size },
                    None => Error::backend("416 without a Content-Range: bytes */N"),
                }
            }
            StatusCode::NOT_FOUND => Error::not_found(key_str()),
            StatusCode::BAD_REQUEST => match err.filter(|e| e.code == "invalid_key") {
                Some(e) => Error::InvalidKey {
                    key: key_str(),
                    reason: e
                        .reason
                        .as_deref()
                        .and_then(crate::key::known_reason)
                        .unwrap_or("refused by the server"),
                },
                None => Error::InvalidInput(message),
            },
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge {
                limit: err.and_then(|e| e.limit).unwrap_or(0),
            },
            StatusCode::NOT_IMPLEMENTED => Error::unsupported(message),
            StatusCode::INSUFFICIENT_STORAGE => Error::storage_full(HttpError {
                status: status.as_u16(),
                code: err.map(|e| e.code),
                message,
            }),
            _ => {
                let retryable = matches!(
                    status,
                    StatusCode::REQUEST_TIMEOUT
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                );
                Error::Backend {
                    source: Box::new(HttpError {
                        status: status.as_u16(),
                        code: err.map(|e| e.code),
                        message,
                    }),
                    retryable,
                }
            }
        }
    }

    /// The current metadata after a bodiless 412 to a HEAD, for reporting only (the decision
    /// was the server's, atomic; this read may see a later version).
    async fn current_after_head_412(&self, key: &Key) -> Option<Box<Meta>> {
        self.head(key, HeadOptions::default())
            .await
            .ok()
            .map(Box::new)
    }
}

/// Sets the request headers for preconditions, a range, and the `put` options: the one place
/// the driver turns options into headers.
pub fn request_headers(
    pre: &Preconditions,
    range: Option<(&ByteRange, Option<&IfRange>)>,
    put: Option<&PutOptions>,
) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    let value = |s: String| {
        HeaderValue::from_str(&s)
            .map_err(|_| Error::InvalidInput(format!("{s:?} cannot be sent in a header")))
    };
    if let Some(c) = &pre.if_match {
        h.insert(reqwest::header::IF_MATCH, value(c.to_string())?);
    }
    if let Some(c) = &pre.if_none_match {
        h.insert(reqwest::header::IF_NONE_MATCH, value(c.to_string())?);
    }
    if let Some(t) = pre.if_modified_since {
        h.insert(
            reqwest::header::IF_MODIFIED_SINCE,
            value(crate::meta::http_date(t))?,
        );
    }
    if let Some(t) = pre.if_unmodified_since {
        h.insert(
            reqwest::header::IF_UNMODIFIED_SINCE,
            value(crate::meta::http_date(t))?,
        );
    }
    if let Some((r, if_range)) = range {
        h.insert(reqwest::header::RANGE, value(r.to_string())?);
        match if_range {
            Some(IfRange::ETag(t)) => {
                h.insert(reqwest::header::IF_RANGE, value(t.to_string())?);
            }
            Some(IfRange::Date(d)) => {
                h.insert(
                    reqwest::header::IF_RANGE,
                    value(crate::meta::http_date(*d))?,
                );
            }
            None => {}
        }
    }
    if let Some(opts) = put {
        if let Some(ct) = &opts.content_type {
            h.insert(reqwest::header::CONTENT_TYPE, value(ct.clone())?);
        }
        if let Some(ttl) = opts.ttl {
            // Whole seconds on the wire; rounded up so a short TTL never becomes none.
            let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            h.insert(header::TTL, value(secs.to_string())?);
        }
        if let Some(etag) = &opts.expected_etag {
            h.insert(header::EXPECT_ETAG, value(etag.to_string())?);
        }
        for (k, v) in &opts.metadata {
            // The server lowercases names, so only lowercase token names round-trip.
            let ok_name = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !ok_name {
                return Err(Error::InvalidInput(format!(
                    "metadata name {k:?}: over HTTP, names are lowercase ASCII letters, digits, '-', '_' or '.'"
                )));
            }
            let name = HeaderName::from_bytes(format!("{}{k}", header::META_PREFIX).as_bytes())
                .map_err(|_| Error::InvalidInput(format!("metadata name {k:?}")))?;
            if v.bytes().any(|b| !(0x20..0x7f).contains(&b)) || v.trim() != v {
                return Err(Error::InvalidInput(format!(
                    "metadata value {v:?}: over HTTP, values are printable ASCII without leading or trailing spaces"
                )));
            }
            h.insert(name, value(v.clone())?);
        }
    }
    Ok(h)
}

/// The object metadata in the headers of a GET/HEAD (or 304) response. `size` overrides the
/// `Content-Length` (a 206's length is the range's; a 304 has none, and gets size 0).
///
/// `Content-Type: application/octet-stream` is read as "no type stored": the server sends it
/// by default, so over HTTP an explicit octet-stream type and none are the same.
pub fn meta_from_headers(key: &Key, h: &HeaderMap, size: Option<u64>) -> Result<Meta> {
    let etag = header_str(h, "etag")
        .ok_or_else(|| Error::backend("the server's response has no ETag"))
        .and_then(ETag::parse)?;
    let size = match size {
        Some(s) => s,
        None => header_str(h, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::backend("the server's response has no Content-Length"))?,
    };
    let date = |name: &str| header_str(h, name).and_then(|v| httpdate::parse_http_date(v).ok());
    let mut metadata = BTreeMap::new();
    for (name, v) in h {
        if let Some(k) = name.as_str().strip_prefix(header::META_PREFIX) {
            if let Ok(v) = v.to_str() {
                metadata.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    Ok(Meta {
        key: key.clone(),
        etag,
        size,
        last_modified: date("last-modified").unwrap_or(SystemTime::UNIX_EPOCH),
        expires_at: date("expires"),
        // The server sends its default type for objects stored without one.
        content_type: header_str(h, "content-type")
            .filter(|t| *t != header::DEFAULT_CONTENT_TYPE)
            .map(str::to_owned),
        metadata,
    })
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header_str(h, "retry-after")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
}

/// A transport failure: retryable when the request never reached the server or timed out.
fn transport_error(e: reqwest::Error) -> Error {
    let retryable = e.is_connect() || e.is_timeout();
    Error::Backend {
        source: Box::new(e),
        retryable,
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T> {
    let bytes = resp.bytes().await.map_err(transport_error)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::backend(format!("the server sent unexpected JSON: {e}")))
}

#[async_trait]
impl Store for HttpStore {
    fn capabilities(&self) -> Capabilities {
        // Until the server has told: its store decides, and answers 501 for what it cannot do
        // atomically, which comes back as Unsupported.
        self.server_capabilities
            .get()
            .cloned()
            .unwrap_or_else(|| Capabilities::full("http", AtomicScope::Cluster, true))
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let headers = request_headers(&opts.preconditions, None, None)?;
        let url = self.object_url(key);
        let resp = self
            .send_idempotent(|| {
                self.request(Method::HEAD, url.clone())
                    .headers(headers.clone())
            })
            .await?;
        if resp.status().is_success() {
            return meta_from_headers(key, resp.headers(), None);
        }
        match self.error_from_response(resp, Some(key)).await {
            Error::PreconditionFailed { current: None } => Err(Error::PreconditionFailed {
                current: self.current_after_head_412(key).await,
            }),
            e => Err(e),
        }
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        let range = opts.range.as_ref().map(|r| (r, opts.if_range.as_ref()));
        let headers = request_headers(&opts.preconditions, range, None)?;
        let url = self.object_url(key);
        let resp = self
            .send_idempotent(|| {
                self.request(Method::GET, url.clone())
                    .headers(headers.clone())
            })
            .await?;
        let (meta, range) = match resp.status() {
            StatusCode::OK => (meta_from_headers(key, resp.headers(), None)?, None),
            StatusCode::PARTIAL_CONTENT => {
                let (first, last, size) = header_str(resp.headers(), "content-range")
                    .and_then(parse_content_range)
                    .ok_or_else(|| Error::backend("206 without a valid Content-Range"))?;
                let meta = meta_from_headers(key, resp.headers(), Some(size))?;
                (meta, Some(first..last + 1))
            }
            _ => return Err(self.error_from_response(resp, Some(key)).await),
        };
        let body: ByteStream = resp
            .bytes_stream()
            .map(|c| c.map_err(transport_error))
            .boxed();
        Ok(GetResult { meta, range, body })
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        let headers = request_headers(&opts.preconditions, None, Some(&opts))?;
        // Keeps the body's own error, so a failed upload reports why rather than "connection
        // closed".
        let body_error: Arc<Mutex<Option<Error>>> = Arc::default();
        let req_body = match body {
            Body::Bytes(b) => reqwest::Body::from(b),
            Body::Stream(s) => {
                let slot = body_error.clone();
                reqwest::Body::wrap_stream(s.map(move |chunk| {
                    chunk.map_err(|e| {
                        let io = std::io::Error::other(e.to_string());
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        io
                    })
                }))
            }
        };
        let rb = self
            .request(Method::PUT, self.object_url(key))
            .headers(headers)
            .body(req_body);
        let resp = match self.send_once(rb).await {
            Ok(r) => r,
            Err(e) => {
                let own = body_error.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(own.unwrap_or(e));
            }
        };
        let created = match resp.status() {
            StatusCode::CREATED => true,
            StatusCode::OK => false,
            _ => return Err(self.error_from_response(resp, Some(key)).await),
        };
        let wire: MetaJson = json(resp).await?;
        Ok(PutResult {
            meta: self.meta_from_wire(wire)?,
            created,
        })
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let headers = request_headers(&opts.preconditions, None, None)?;
        let url = self.object_url(key);
        let build = || {
            self.request(Method::DELETE, url.clone())
                .headers(headers.clone())
        };
        let resp = if opts.preconditions.is_empty() {
            self.send_idempotent(build).await?
        } else {
            self.send_once(build()).await?
        };
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self.error_from_response(resp, Some(key)).await)
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let mut url = self.listing_url();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("prefix", &format!("{}{}", self.config.prefix, opts.prefix));
            if let Some(d) = opts.delimiter {
                q.append_pair("delimiter", d.encode_utf8(&mut [0; 4]));
            }
            q.append_pair("limit", &opts.page_size().to_string());
            if let Some(c) = &opts.cursor {
                q.append_pair("cursor", c);
            }
        }
        let resp = self
            .send_idempotent(|| self.request(Method::GET, url.clone()))
            .await?;
        if !resp.status().is_success() {
            return Err(self.error_from_response(resp, None).await);
        }
        let page: ListJson = json(resp).await?;
        let objects = page
            .objects
            .into_iter()
            .map(|w| self.meta_from_wire(w))
            .collect::<Result<Vec<_>>>()?;
        let common_prefixes = page
            .common_prefixes
            .iter()
            .map(|p| self.strip_prefix(p).map(str::to_owned))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListPage {
            objects,
            common_prefixes,
            // Opaque: handed back to the server as it gave it.
            next_cursor: page.next_cursor,
        })
    }
}

/// `bytes first-last/size`
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, size) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        size.trim().parse().ok()?,
    );
    (first <= last && last < size).then_some((first, last, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::ETagCondition;

    #[test]
    fn urls() {
        let c = HttpConfig::from_url("larder+http://127.0.0.1:7070/team/a%20b?token=T&timeout=5")
            .unwrap();
        assert_eq!(c.server.as_str(), "http://127.0.0.1:7070/");
        assert_eq!(c.prefix, "team/a b/");
        assert_eq!(c.token.as_deref(), Some("T"));
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        let c = HttpConfig::from_url("https://example.com").unwrap();
        assert_eq!((c.prefix.as_str(), c.token), ("", None));
        for bad in [
            "larder+ftp://x",
            "http://x/a%2F..%2Fb",
            "http://x/nul%00",
            "http://x?nope=1",
            "http://x?timeout=0",
            "http://x?timeout=abc",
        ] {
            assert!(HttpConfig::from_url(bad).is_err(), "{bad}");
        }
        let store = offline(HttpConfig::from_url("http://h:1/pre/fix").unwrap());
        let k = Key::new("a b/c%d/é").unwrap();
        assert_eq!(
            store.object_url(&k).as_str(),
            "http://h:1/v1/objects/pre/fix/a%20b/c%25d/%C3%A9"
        );
    }

    /// A store that has not talked to its server (none runs in these tests).
    fn offline(config: HttpConfig) -> HttpStore {
        let config = HttpConfig {
            fetch_capabilities: false,
            ..config
        };
        futures::executor::block_on(HttpStore::open(config)).unwrap()
    }

    #[tokio::test]
    async fn a_server_url_that_is_not_http_is_refused_not_a_panic() {
        for bad in ["mailto:x", "ftp://h/", "data:text/plain,x"] {
            let config = HttpConfig::new(url::Url::parse(bad).unwrap());
            assert!(
                matches!(HttpStore::open(config).await, Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers() {
        let tag = ETag::of(b"x");
        let pre = Preconditions {
            if_match: Some(ETagCondition::Tags(vec![
                tag.clone(),
                ETag::weak("w").unwrap(),
            ])),
            if_none_match: Some(ETagCondition::Any),
            if_modified_since: Some(
                httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap(),
            ),
            if_unmodified_since: None,
        };
        let r = ByteRange::Suffix(5);
        let ir = IfRange::ETag(tag.clone());
        let put = PutOptions {
            ttl: Some(Duration::from_millis(1500)),
            content_type: Some("text/plain".into()),
            metadata: [("owner".to_string(), "kit".to_string())].into(),
            expected_etag: Some(tag.clone()),
            ..Default::default()
        };
        let h = request_headers(&pre, Some((&r, Some(&ir))), Some(&put)).unwrap();
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(get("if-match"), format!("{tag}, W/\"w\""));
        assert_eq!(get("if-none-match"), "*");
        assert_eq!(get("if-modified-since"), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(get("range"), "bytes=-5");
        assert_eq!(get("if-range"), tag.to_string());
        assert_eq!(get("x-larder-ttl"), "2");
        assert_eq!(get("x-larder-meta-owner"), "kit");
        assert_eq!(get("x-larder-expect-etag"), tag.to_string());
        assert_eq!(get("content-type"), "text/plain");
        for (k, v) in [("Upper", "v"), ("a b", "v"), ("k", "é"), ("k", " padded")] {
            let put = PutOptions {
                metadata: [(k.to_string(), v.to_string())].into(),
                ..Default::default()
            };
            assert!(matches!(
                request_headers(&Preconditions::none(), None, Some(&put)),
                Err(Error::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn wire_formats() {
        assert_eq!(parse_content_range("bytes 2-5/10"), Some((2, 5, 10)));
        assert_eq!(parse_content_range("bytes 2-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        let mut h = HeaderMap::new();
        h.insert(
            "etag",
            HeaderValue::from_str(&ETag::of(b"x").to_string()).unwrap(),
        );
        h.insert("content-length", HeaderValue::from_static("1"));
        h.insert(
            "last-modified",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        h.insert("x-larder-meta-owner", HeaderValue::from_static("kit"));
        let m = meta_from_headers(&Key::new("k").unwrap(), &h, None).unwrap();
        assert_eq!((m.size, m.etag), (1, ETag::of(b"x")));
        assert_eq!(m.metadata.get("owner").map(String::as_str), Some("kit"));
    }
}
