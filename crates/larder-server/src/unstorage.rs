//! `/unstorage`: unstorage's HTTP storage-server protocol (as `unstorage/server` 1.17 serves it
//! and its `http` driver speaks it), with the compare-and-swap of unstorage PR #772, over the
//! same store, tokens and limits as the native API. docs/unstorage.md has the mapping.
//!
//! - The path after `/unstorage` is an unstorage key: percent-decoded, `/`, `\` and `:` are
//!   separators, empty segments collapse (unstorage's `normalizeKey`). The key `a:b:c` is the
//!   Larder key `a/b/c`, so one object has one ETag through both APIs.
//! - A path ending in `/` or `:` is a base: `GET` lists every key under it (a JSON array of
//!   `/`-separated keys), `DELETE` removes them.
//! - `If-Match` / `If-None-Match` (and the date conditions) go to the store, which decides them
//!   atomically with the write; 412 on a mismatch, 501 when the store cannot decide one.
//! - Errors are JSON in h3's shape (`statusCode`, `statusMessage`, `data` = the native error).

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use larder::key::validate_prefix;
use larder::{DeleteOptions, Error, GetOptions, Key, ListOptions};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::auth::Access;
use crate::error::ApiError;
use crate::headers::{add_write_headers, preconditions, validator_headers};
use crate::objects::{head_meta, response_body, upload_body};
use crate::AppState;

/// Where the protocol is mounted.
pub const UNSTORAGE_PREFIX: &str = "/unstorage";
/// The media type that selects raw bytes: as `Accept` on a GET, as `Content-Type` on a PUT.
const RAW: &str = "application/octet-stream";
/// Served for a GET of a value as text, and stored with a value put as text. A `text/*` type
/// makes the http driver's fetch hand the text to unstorage, which parses JSON itself.
const TEXT: &str = "text/plain; charset=utf-8";
/// unstorage's TTL field, in seconds, on PUT and in HEAD/GET answers.
const X_TTL: &str = "x-ttl";
/// [`X_TTL`], parsed once.
static X_TTL_FIELD: header::HeaderName = header::HeaderName::from_static(X_TTL);
/// How many deletes of a `clear` run at once.
const CLEAR_PARALLELISM: usize = 16;

type Shared = State<Arc<AppState>>;

/// The route label (the router's template) of a request to a key or base under the mount,
/// which the server's direct dispatch records as the nested router would.
pub(crate) const UNSTORAGE_ROUTE: &str = "/unstorage/{*key}";

/// The router to nest at [`UNSTORAGE_PREFIX`].
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", any(handle))
        .route("/{*key}", any(handle))
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// One value.
    Item(Key),
    /// Every key under this Larder prefix (`""`, or ending in `/`).
    Base(String),
}

/// Maps a request path under the mount (what follows [`UNSTORAGE_PREFIX`]; the nested router
/// sees it so) to what it names, as
/// unstorage's server does: percent-decode, split on `/`, `\` and `:`, drop empty segments; a
/// path ending in `/` or `:` is a base. A `.` or `..` segment, an empty item key, or a key that
/// `Key` refuses is an `InvalidKey`.
pub fn parse_target(path: &str) -> Result<Target, Error> {
    match plain_item(path) {
        Some(key) => Ok(Target::Item(Key::new(key)?)),
        None => normalize(path),
    }
}

/// [`parse_target`] of any path, by the rules themselves.
fn normalize(path: &str) -> Result<Target, Error> {
    let rest = path;
    let invalid = |reason| Error::InvalidKey {
        key: rest.to_owned(),
        reason,
    };
    let mut decoded = String::with_capacity(rest.len());
    for (i, segment) in rest.split('/').enumerate() {
        if i > 0 {
            decoded.push('/');
        }
        let segment = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| invalid("key is not UTF-8 once percent-decoded"))?;
        decoded.push_str(&segment);
    }
    let is_base = rest.is_empty() || decoded.ends_with('/') || decoded.ends_with(':');
    let segments: Vec<&str> = decoded
        .split(['/', '\\', ':'])
        .filter(|s| !s.is_empty())
        .collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(invalid("key has a '.' or '..' segment"));
    }
    let joined = segments.join("/");
    if is_base {
        let prefix = if joined.is_empty() {
            joined
        } else {
            joined + "/"
        };
        validate_prefix(&prefix)?;
        return Ok(Target::Base(prefix));
    }
    if joined.is_empty() {
        return Err(invalid("key is empty"));
    }
    Ok(Target::Item(Key::new(joined)?))
}

/// The key of a path the rules below leave as it is (after its leading `/`): no
/// percent-escape, no other separator than `/`, no empty, `.` or `..` segment, not a base.
/// Most paths are such; they need none of the copies that decoding and re-joining make.
fn plain_item(path: &str) -> Option<&str> {
    let key = path.strip_prefix('/').unwrap_or(path);
    let plain = !key.is_empty()
        && !key.bytes().any(|b| matches!(b, b'%' | b'\\' | b':'))
        && key.split('/').all(|s| !matches!(s, "" | "." | ".."));
    plain.then_some(key)
}

/// Every request: the method and path are checked in the order unstorage's server checks
/// them (405, then 400), then the token, then one store call (or a listing for a base).
async fn handle(State(s): Shared, req: Request) -> Response {
    // Taken apart rather than extracted field by field, which would copy the header map.
    let (parts, body) = req.into_parts();
    answer(&s, &parts.method, parts.uri.path(), &parts.headers, body).await
}

/// The answer to a request with `method`, `path` (under the mount: what follows
/// [`UNSTORAGE_PREFIX`]), `headers` and `body`: what the router's handler answers, and what the
/// server's direct dispatch calls.
pub(crate) async fn answer(
    s: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: HttpBody,
) -> Response {
    let result = async {
        if ![Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(method) {
            return Err(Reject::MethodNotAllowed(method.clone()));
        }
        let target = parse_target(path).map_err(ApiError::from)?;
        Ok(match (target, method) {
            (Target::Base(_), m @ (&Method::HEAD | &Method::PUT)) => {
                return Err(Reject::BadRequest(format!(
                    "Invalid key: {m} is not allowed on a base key"
                )))
            }
            (Target::Base(prefix), &Method::GET) => list(s, headers, prefix).await?,
            (Target::Base(prefix), _) => clear(s, headers, prefix).await?,
            (Target::Item(key), &Method::GET) => get(s, headers, key).await?,
            (Target::Item(key), &Method::HEAD) => head(s, headers, key).await?,
            (Target::Item(key), &Method::PUT) => put(s, headers, key, body).await?,
            (Target::Item(key), _) => delete(s, headers, key).await?,
        })
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => e.into_h3().await,
    }
}

/// Why a request is refused.
enum Reject {
    /// Not GET, HEAD, PUT or DELETE.
    MethodNotAllowed(Method),
    /// HEAD or PUT on a base.
    BadRequest(String),
    /// What the native API would answer.
    Api(ApiError),
}

impl From<ApiError> for Reject {
    fn from(e: ApiError) -> Self {
        Reject::Api(e)
    }
}

impl From<Error> for Reject {
    fn from(e: Error) -> Self {
        Reject::Api(e.into())
    }
}

impl Reject {
    /// The answer: the native API's status and fields (`ETag` on a 412, `WWW-Authenticate`,
    /// `Retry-After`, the validators of a 304), with the body in h3's error shape, whose `data`
    /// is the native error object.
    async fn into_h3(self) -> Response {
        let native = match self {
            Reject::MethodNotAllowed(m) => {
                let mut r = h3_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("Method Not Allowed: {m}"),
                    Value::Null,
                );
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
                );
                return r;
            }
            Reject::BadRequest(why) => return h3_error(StatusCode::BAD_REQUEST, why, Value::Null),
            Reject::Api(e) => e.into_response(),
        };
        let (mut parts, body) = native.into_parts();
        if parts.status == StatusCode::NOT_MODIFIED {
            return Response::from_parts(parts, HttpBody::empty());
        }
        // Error bodies are small JSON objects made by error.rs; this re-wraps one.
        let data = axum::body::to_bytes(body, 64 * 1024)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map_or(Value::Null, |mut v| v["error"].take());
        let message = data["message"]
            .as_str()
            .map_or_else(|| parts.status.to_string(), str::to_owned);
        parts.headers.remove(header::CONTENT_LENGTH);
        let h3 = h3_error(parts.status, message, data);
        let (h3_parts, h3_body) = h3.into_parts();
        parts.headers.extend(h3_parts.headers);
        Response::from_parts(parts, h3_body)
    }
}

fn h3_error(status: StatusCode, message: String, data: Value) -> Response {
    let mut body = json!({ "statusCode": status.as_u16(), "statusMessage": message });
    if !data.is_null() {
        body["data"] = data;
    }
    (status, axum::Json(body)).into_response()
}

/// Whether an `Accept` or `Content-Type` field names raw bytes (parameters and case aside).
fn is_raw(headers: &HeaderMap, name: header::HeaderName) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(RAW))
}

/// unstorage's `x-ttl`: seconds, possibly fractional; `0` means none (as unstorage reads it).
fn ttl(headers: &HeaderMap) -> Result<Option<std::time::Duration>, Error> {
    let Some(v) = headers.get(&X_TTL_FIELD) else {
        return Ok(None);
    };
    let bad = || Error::InvalidInput(format!("{X_TTL} {v:?}: a number of seconds"));
    let secs: f64 = v
        .to_str()
        .map_err(|_| bad())?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    if secs == 0.0 {
        return Ok(None);
    }
    // Beyond `MAX_TTL` (or past what a Duration holds) is a 400, never a panic.
    let ttl = std::time::Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    larder::meta::check_ttl(ttl)?;
    Ok(Some(ttl))
}

/// The fields of a value's answer: the native validators, plus `x-ttl`, the whole seconds left
/// (rounded up, so a value put with `x-ttl: 60` reads back 60 right away) for a value with a TTL.
fn meta_headers(meta: &larder::Meta) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8);
    validator_headers(&mut h, meta);
    if let Some(expires) = meta.expires_at {
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        h.insert(X_TTL_FIELD.clone(), HeaderValue::from(secs));
    }
    h
}

/// GET of a value: its bytes, as text or (with `Accept: application/octet-stream`) raw; 304
/// for a matching `If-None-Match`, 404 when missing.
async fn get(s: &AppState, headers: &HeaderMap, key: Key) -> Result<Response, Reject> {
    s.authorize(headers, Access::Read, key.as_str())?;
    let opts = GetOptions {
        preconditions: preconditions(headers)?,
        ..Default::default()
    };
    let got = s.store.get(&key, opts).await?;
    let mut h = meta_headers(&got.meta);
    let media = if is_raw(headers, header::ACCEPT) {
        RAW
    } else {
        TEXT
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(got.meta.size));
    let body = response_body(got.body, got.meta.size, s.metrics.bytes_out());
    Ok((StatusCode::OK, h, body).into_response())
}

/// HEAD of a value: 200 with its fields, 404 when missing.
async fn head(s: &AppState, headers: &HeaderMap, key: Key) -> Result<Response, Reject> {
    let meta = head_meta(s, headers, &key).await?;
    Ok((StatusCode::OK, meta_headers(&meta)).into_response())
}

/// PUT of a value (text, or raw with `Content-Type: application/octet-stream`), `x-ttl` in
/// seconds, conditions decided by the store: `OK` with the new `ETag`, or 412 / 501.
async fn put(
    s: &AppState,
    headers: &HeaderMap,
    key: Key,
    body: HttpBody,
) -> Result<Response, Reject> {
    s.authorize(headers, Access::Write, key.as_str())?;
    let opts = larder::PutOptions {
        preconditions: preconditions(headers)?,
        ttl: ttl(headers)?,
        content_type: Some(
            if is_raw(headers, header::CONTENT_TYPE) {
                RAW
            } else {
                TEXT
            }
            .into(),
        ),
        ..Default::default()
    };
    let (_permit, body) = upload_body(s, headers, body)?;
    let put = s.store.put(&key, body, opts).await?;
    Ok(ok_with(|h| add_write_headers(h, &put.meta)))
}

/// DELETE of a value: `OK` whether or not it existed (unstorage's `removeItem` is idempotent);
/// with conditions, the store decides them and a missing value is 404.
async fn delete(s: &AppState, headers: &HeaderMap, key: Key) -> Result<Response, Reject> {
    s.authorize(headers, Access::Write, key.as_str())?;
    let conditions = preconditions(headers)?;
    let conditional = !conditions.is_empty();
    match s
        .store
        .delete(
            &key,
            DeleteOptions {
                preconditions: conditions,
            },
        )
        .await
    {
        Ok(()) => Ok(ok()),
        Err(Error::NotFound { .. }) if !conditional => Ok(ok()),
        Err(e) => Err(e.into()),
    }
}

/// `OK` as text, with no other field than the body's.
fn ok() -> Response {
    ok_with(|_| {})
}

/// `OK` as text, with the fields `add` adds after the body's `Content-Type`: the fields (in
/// the same order) that `(StatusCode::OK, h, "OK")` would give, built in place rather than
/// copied from a second map.
fn ok_with(add: impl FnOnce(&mut HeaderMap)) -> Response {
    let mut response = Response::new(HttpBody::from("OK"));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    add(h);
    response
}

/// Conditions make no sense on a base (they are about one value's ETag): refused, not ignored.
fn no_conditions(headers: &HeaderMap) -> Result<(), Reject> {
    if !preconditions(headers)?.is_empty() {
        return Err(Reject::BadRequest(
            "conditional requests apply to one key, not to a base".into(),
        ));
    }
    Ok(())
}

/// GET of a base: every key under it, as a JSON array of `/`-separated keys (as unstorage's
/// server answers), streamed page by page so a large store never sits in memory.
async fn list(s: &AppState, headers: &HeaderMap, prefix: String) -> Result<Response, Reject> {
    s.authorize(headers, Access::List, &prefix)?;
    no_conditions(headers)?;
    // The first page is fetched before answering, so a store that fails says so with a status.
    let first = s.store.list(ListOptions::prefix(prefix.clone())).await?;
    enum Next {
        Page(larder::ListPage),
        After(String),
        Done,
    }
    let store = s.store.clone();
    let keys = stream::try_unfold((Next::Page(first), false), move |(next, any)| {
        let store = store.clone();
        let prefix = prefix.clone();
        async move {
            let page = match next {
                Next::Done => return Ok(None),
                Next::Page(p) => p,
                Next::After(cursor) => {
                    let opts = ListOptions {
                        cursor: Some(cursor),
                        ..ListOptions::prefix(prefix)
                    };
                    store.list(opts).await?
                }
            };
            let mut out = String::new();
            for (i, m) in page.objects.iter().enumerate() {
                if any || i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(m.key.as_str()).to_string());
            }
            let any = any || !page.objects.is_empty();
            let next = page.next_cursor.map_or(Next::Done, Next::After);
            Ok::<_, Error>(Some((Bytes::from(out), (next, any))))
        }
    });
    let chunks = stream::once(async { Ok(Bytes::from_static(b"[")) })
        .chain(keys)
        .chain(stream::once(async { Ok(Bytes::from_static(b"]")) }));
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        HttpBody::from_stream(chunks),
    )
        .into_response())
}

/// DELETE of a base: removes every key under it, page by page; `OK`.
async fn clear(s: &AppState, headers: &HeaderMap, prefix: String) -> Result<Response, Reject> {
    s.authorize(headers, Access::Write, &prefix)?;
    no_conditions(headers)?;
    let mut cursor = None;
    loop {
        let page = s
            .store
            .list(ListOptions {
                cursor,
                ..ListOptions::prefix(prefix.clone())
            })
            .await?;
        stream::iter(page.objects)
            .map(|m| async move {
                match s.store.delete(&m.key, DeleteOptions::default()).await {
                    // Gone already (removed meanwhile, or expired): what clear wants.
                    Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(CLEAR_PARALLELISM)
            .try_collect::<Vec<()>>()
            .await?;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(k: &str) -> Target {
        Target::Item(Key::new(k).unwrap())
    }

    #[test]
    fn paths_map_to_keys_as_unstorage_normalizes_them() {
        assert_eq!(parse_target("/a/b/c").unwrap(), item("a/b/c"));
        assert_eq!(parse_target("/a:b:c").unwrap(), item("a/b/c"));
        assert_eq!(parse_target("//a//b%3Ac").unwrap(), item("a/b/c"));
        assert_eq!(parse_target("/a/b%20c").unwrap(), item("a/b c"));
        assert_eq!(parse_target("/a%5Cb").unwrap(), item("a/b"));
        assert_eq!(parse_target("/a/b/").unwrap(), Target::Base("a/b/".into()));
        assert_eq!(parse_target("/a/b/:").unwrap(), Target::Base("a/b/".into()));
        assert_eq!(parse_target("/a:b:").unwrap(), Target::Base("a/b/".into()));
        assert_eq!(parse_target("/:").unwrap(), Target::Base("".into()));
        assert_eq!(parse_target("/").unwrap(), Target::Base("".into()));
        assert_eq!(parse_target("").unwrap(), Target::Base("".into()));
    }

    #[test]
    fn plain_paths_are_read_as_the_rules_read_them() {
        let paths = [
            "/a",
            "a",
            "/a/b/c",
            "/ü/ key",
            "/a.b/..c/.d",
            "/a//b",
            "//a",
            "/a/",
            "/a:b",
            "/a%2Fb",
            "/a\\b",
            "/./a",
            "/a/..",
            "/",
            "",
            "/.",
            "/a\"b",
            "/a\u{1}b",
            "/a?b",
        ];
        let long = format!("/{}", "k".repeat(2000));
        for path in paths.iter().copied().chain([long.as_str()]) {
            assert_eq!(
                format!("{:?}", parse_target(path)),
                format!("{:?}", normalize(path)),
                "{path:?}"
            );
        }
        assert_eq!(plain_item("/a/b"), Some("a/b"));
        assert_eq!(plain_item("/a:b"), None);
    }

    #[test]
    fn bad_paths_are_invalid_keys() {
        for p in [
            "/unstorage/a/../b",
            "/unstorage/a/%2e%2E/b",
            "/unstorage/a:..:b",
            "/unstorage/./",
            "/unstorage/%FF",
            "/unstorage/a%00b",
        ] {
            assert!(
                matches!(parse_target(p), Err(Error::InvalidKey { .. })),
                "{p}"
            );
        }
        assert!(parse_target(&format!("/{}", "x".repeat(2000))).is_err());
    }

    #[test]
    fn ttl_is_read_as_unstorage_reads_it() {
        let mut h = HeaderMap::new();
        assert_eq!(ttl(&h).unwrap(), None);
        h.insert(X_TTL, HeaderValue::from_static("60"));
        assert_eq!(ttl(&h).unwrap(), Some(std::time::Duration::from_secs(60)));
        h.insert(X_TTL, HeaderValue::from_static("1.5"));
        assert_eq!(
            ttl(&h).unwrap(),
            Some(std::time::Duration::from_millis(1500))
        );
        h.insert(X_TTL, HeaderValue::from_static("0"));
        assert_eq!(ttl(&h).unwrap(), None);
        // Past the 100-year maximum or what a Duration holds: a 400, never a panic.
        for bad in [
            "-1",
            "soon",
            "NaN",
            "inf",
            "1e30",
            "18446744073709551616",
            "3155760001",
        ] {
            h.insert(X_TTL, HeaderValue::from_static(bad));
            assert!(ttl(&h).is_err(), "{bad}");
        }
    }
}
