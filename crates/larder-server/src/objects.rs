//! The handlers of `/v1/objects`: each parses the request into typed options, makes one
//! `Store` call (which decides every condition atomically), and maps the result.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use larder::range::content_range;
use larder::{
    Body, ByteStream, DeleteOptions, Error, GetOptions, GetResult, HeadOptions, Key, ListOptions,
    Meta,
};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Access;
use crate::error::ApiError;
use crate::headers::{
    add_write_headers, get_options, preconditions, put_options, validator_headers_owned,
};
use crate::wire::{CapabilitiesJson, ListJson, MetaJson};
use crate::AppState;

type Shared = State<Arc<AppState>>;

/// Path prefix of the object routes, and the route of the empty key.
pub const OBJECTS_PREFIX: &str = "/v1/objects/";

/// The route of an object (its template, also its label in the metrics).
pub const OBJECT_ROUTE: &str = "/v1/objects/{*key}";

/// The key of an object route, from the raw request path: each `/`-separated segment is
/// percent-decoded, then the whole is validated by `Key` (so `%2E%2E` is refused like `..`).
/// Decoding here rather than with axum's `Path` keeps every bad key (invalid UTF-8 too) a
/// JSON `invalid_key` 400.
pub fn parse_key(uri: &Uri) -> Result<Key, ApiError> {
    let rest = uri.path().strip_prefix(OBJECTS_PREFIX).unwrap_or_default();
    if !rest.contains('%') {
        // Nothing to decode (most keys): the path is the key.
        return Ok(Key::new(rest)?);
    }
    let mut key = String::with_capacity(rest.len());
    for (i, segment) in rest.split('/').enumerate() {
        if i > 0 {
            key.push('/');
        }
        let decoded = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| Error::InvalidKey {
                key: rest.to_owned(),
                reason: "key is not UTF-8 once percent-decoded",
            })?;
        key.push_str(&decoded);
    }
    Ok(Key::new(key)?)
}

/// GET: the object, a range of it (206), or 304/412/416.
pub async fn get(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    get_object(&s, req.uri(), req.headers()).await
}

/// [`get`] of the request with `uri` and `headers` (also what the server's direct dispatch of
/// the object routes calls).
pub(crate) async fn get_object(
    s: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // The request's parsed state stays out of this future (allocated per request): what waits
    // is one boxed future, and only for a store without the answer at hand.
    let waiting = match begin_get(s, uri, headers)? {
        Begun::Answered(got) => return Ok(get_response(s, got?)),
        Begun::Waiting(waiting) => waiting,
    };
    Ok(get_response(s, waiting.await?))
}

/// A GET's store call as it began (see [`begin_get`]).
enum Begun<'a> {
    /// The store had the answer at hand (memory, a cache hit): no future at all.
    Answered(larder::Result<GetResult>),
    /// The read, in a future of its own (with a multi-range request's look at the object).
    Waiting(BoxFuture<'a, Result<GetResult, ApiError>>),
}

/// Parses a GET (key, token, conditions, range) and begins its one store call.
fn begin_get<'a>(s: &'a AppState, uri: &Uri, headers: &HeaderMap) -> Result<Begun<'a>, ApiError> {
    let key = parse_key(uri)?;
    s.authorize(headers, Access::Read, key.as_str())?;
    let (opts, multiple) = get_options(headers)?;
    if !multiple {
        // A store that has the answer at hand (memory, a cache hit) gives it without a future.
        if let Some(got) = s.store.get_now(&key, &opts) {
            return Ok(Begun::Answered(got));
        }
    }
    Ok(Begun::Waiting(Box::pin(async move {
        let opts = match multiple {
            true => multiple_ranges(s, &key, opts).await?,
            false => opts,
        };
        // (After a failed If-Range on a multi-range request, `opts.range` is None: the whole
        // object.)
        Ok(s.store.get(&key, opts).await?)
    })))
}

/// The answer to a GET that `got`: 200 or 206, the object's fields and its body.
fn get_response(s: &AppState, got: GetResult) -> Response {
    let GetResult { meta, range, body } = got;
    let size = meta.size;
    let mut h = HeaderMap::with_capacity(8);
    validator_headers_owned(&mut h, meta);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, len) = match &range {
        Some(r) => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range(r, size)).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    let body = response_body(body, len, s.metrics.bytes_out());
    // A body of known size gets its `Content-Length` from hyper (and axum's router), written
    // straight into the response head; a streamed one needs the field.
    if axum::body::HttpBody::size_hint(&body).exact() != Some(len) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = h;
    response
}

/// A GET asking for several ranges: no multipart responses, so 416 with the size once the
/// conditions have had their say, unless If-Range fails, which means "ignore the Range"
/// (RFC 9110 13.1.5); then `opts` is given back to serve the whole object.
async fn multiple_ranges(
    s: &AppState,
    key: &Key,
    opts: GetOptions,
) -> Result<GetOptions, ApiError> {
    let meta = s
        .store
        .head(
            key,
            HeadOptions {
                preconditions: opts.preconditions.clone(),
            },
        )
        .await?;
    if opts.if_range.as_ref().is_none_or(|c| c.holds(&meta)) {
        return Err(Error::RangeNotSatisfiable { size: meta.size }.into());
    }
    Ok(opts)
}

/// The body of a download, counted in `bytes{dir="out"}`. When the store has the whole body at
/// hand (a memory store, a cached copy), it goes out as those bytes, without a stream to poll
/// for every response; otherwise it streams as the store yields it.
pub(crate) fn response_body(
    mut body: ByteStream,
    len: u64,
    bytes_out: &prometheus::IntCounter,
) -> HttpBody {
    // Polled without waiting: a store that has nothing ready yet is polled again, with the
    // response's waker, by the stream below.
    let mut ready = Vec::new();
    match body.next().now_or_never() {
        // Nothing at hand yet.
        None => {}
        // Ended (a stream is not polled past its end).
        Some(None) if len == 0 => return HttpBody::empty(),
        Some(None) => body = futures::stream::empty().boxed(),
        Some(Some(Ok(chunk))) if chunk.len() as u64 == len => match body.next().now_or_never() {
            Some(None) => {
                bytes_out.inc_by(len);
                return HttpBody::from(chunk);
            }
            second => {
                ready.push(Ok(chunk));
                ready.extend(second.flatten());
            }
        },
        Some(Some(first)) => ready.push(first),
    }
    let bytes_out = bytes_out.clone();
    let body = futures::stream::iter(ready)
        .chain(body)
        .inspect_ok(move |chunk| bytes_out.inc_by(chunk.len() as u64))
        // The status went out with the head: a failure now can only cut the body short, so
        // it is logged here.
        .inspect_err(|e| tracing::error!(error = %e, "response failed while streaming"));
    HttpBody::from_stream(body)
}

/// The metadata of a HEAD of `key`, in both APIs: the token's read access, then one store call
/// that decides the request's conditions.
pub(crate) async fn head_meta(
    s: &AppState,
    headers: &HeaderMap,
    key: &Key,
) -> Result<Meta, ApiError> {
    s.authorize(headers, Access::Read, key.as_str())?;
    let opts = HeadOptions {
        preconditions: preconditions(headers)?,
    };
    Ok(s.store.head(key, opts).await?)
}

/// HEAD: the object's fields, no body.
pub async fn head(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    head_object(&s, req.uri(), req.headers()).await
}

/// [`head`] of the request with `uri` and `headers`.
pub(crate) async fn head_object(
    s: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let key = parse_key(uri)?;
    let meta = head_meta(s, headers, &key).await?;
    let size = meta.size;
    let mut h = HeaderMap::with_capacity(8);
    validator_headers_owned(&mut h, meta);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok((StatusCode::OK, h).into_response())
}

/// PUT (and POST): streams the body into the store; 201 created, 200 replaced, 412, 413.
pub async fn put(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    put_object(&s, &parts.uri, &parts.headers, body).await
}

/// [`put`] of the request with `uri`, `headers` and `body`.
pub(crate) async fn put_object(
    s: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: HttpBody,
) -> Result<Response, ApiError> {
    let checked = parse_key(uri).and_then(|key| {
        s.authorize(headers, Access::Write, key.as_str())?;
        Ok((key, put_options(headers)?))
    });
    let (key, opts) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            drain_small(body).await;
            return Err(e);
        }
    };
    let (_permit, body) = upload_body(s, headers, body)?;
    let put = s.store.put(&key, body, opts).await?;
    // The JSON and fields axum's `Json` and a header tuple would give, in the same order, built
    // in place: the tuple copies its header map into the response's.
    let json = MetaJson::json_of(&put.meta);
    let mut response = Response::new(HttpBody::from(json));
    *response.status_mut() = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_write_headers(h, &put.meta);
    Ok(response)
}

/// Most of a refused upload's body read before answering (see [`drain_small`]).
const DRAIN_LIMIT: usize = 64 * 1024;

/// An upload refused before its body was read (a bad key or header, a token that may not
/// write): reads and drops up to [`DRAIN_LIMIT`] bytes of it, for at most a second, so that a
/// client still sending a small body reads the refusal, not a connection reset (unread bytes in
/// a closed socket make the kernel reset the connection). A larger body is not read: that
/// connection is closed.
pub(crate) async fn drain_small(body: HttpBody) {
    let mut data = body.into_data_stream();
    let drain = async {
        let mut seen = 0;
        while let Some(Ok(chunk)) = data.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// The body of an upload, bounded as every upload is: refused with 413 past
/// `max_object_size` (declared or streamed), 503 when `max_concurrent_uploads` are in flight
/// (hold the permit until the store call returns), and counted in the `bytes{dir="in"}` metric.
pub(crate) fn upload_body(
    s: &AppState,
    headers: &HeaderMap,
    body: HttpBody,
) -> Result<(OwnedSemaphorePermit, Body), ApiError> {
    let limit = s.config.max_object_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge { limit }.into());
    }
    let permit = s
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy)?;
    let bytes_in = s.metrics.bytes_in();
    let mut data = body.into_data_stream();
    // A small body has often arrived whole with the head: then it is handed to the store as
    // bytes, with no stream to poll. (Polled without waiting; a body still on its way is polled
    // again, with the request's waker, by the stream below.)
    let mut ready = Vec::new();
    match data.next().now_or_never() {
        None => {}
        Some(None) => return Ok((permit, Body::empty())),
        Some(Some(first)) => match (first, data.next().now_or_never()) {
            (Ok(chunk), Some(None)) => {
                if chunk.len() as u64 > limit {
                    return Err(Error::TooLarge { limit }.into());
                }
                bytes_in.inc_by(chunk.len() as u64);
                return Ok((permit, Body::Bytes(chunk)));
            }
            (first, second) => {
                ready.push(first);
                ready.extend(second.flatten());
            }
        },
    }
    let bytes_in = bytes_in.clone();
    let mut seen = 0u64;
    // A connection that closes before the body is complete ends this stream with an error,
    // never a clean end, so the driver stores nothing.
    let stream = futures::stream::iter(ready).chain(data).map(move |chunk| {
        let chunk: Bytes =
            chunk.map_err(|e| Error::InvalidInput(format!("reading the request body: {e}")))?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(Error::TooLarge { limit });
        }
        bytes_in.inc_by(chunk.len() as u64);
        Ok(chunk)
    });
    Ok((permit, Body::from_stream(stream)))
}

/// DELETE: 204, 404, 412.
pub async fn delete(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    delete_object(&s, req.uri(), req.headers()).await
}

/// [`delete`] of the request with `uri` and `headers`.
pub(crate) async fn delete_object(
    s: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let key = parse_key(uri)?;
    s.authorize(headers, Access::Write, key.as_str())?;
    s.store
        .delete(
            &key,
            DeleteOptions {
                preconditions: preconditions(headers)?,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of a listing.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    delimiter: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Refuses a query string with a name or value that is not UTF-8 once percent-decoded (`%FF`):
/// the form decoder would replace it with U+FFFD and list another prefix than the one asked.
pub fn check_query_utf8(uri: &Uri) -> Result<(), ApiError> {
    let Some(query) = uri.query() else {
        return Ok(());
    };
    for part in query.split(['&', '=']) {
        let spaced = part.replace('+', " ");
        if percent_decode_str(&spaced).decode_utf8().is_err() {
            return Err(Error::InvalidInput(format!(
                "query: {part:?} is not UTF-8 once percent-decoded"
            ))
            .into());
        }
    }
    Ok(())
}

/// GET /v1/objects?prefix=&delimiter=&limit=&cursor=: one page, as JSON.
pub async fn list(
    State(s): Shared,
    uri: Uri,
    q: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A malformed query is a JSON 400 like every other bad input.
    check_query_utf8(&uri)?;
    let Query(q) = q.map_err(|e| Error::InvalidInput(format!("query: {}", e.body_text())))?;
    s.authorize(&headers, Access::List, &q.prefix)?;
    let delimiter = match q.delimiter.as_deref() {
        None | Some("") => None,
        Some(d) => {
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "delimiter {d:?} must be one character"
                    ))
                    .into())
                }
            }
        }
    };
    let page = s
        .store
        .list(ListOptions {
            prefix: q.prefix,
            delimiter,
            limit: q.limit,
            cursor: q.cursor,
        })
        .await?;
    Ok(Json(ListJson::from(&page)).into_response())
}

/// GET /v1/capabilities: what the served store can do (no token needed: it describes the
/// store, not its objects).
pub async fn capabilities(State(s): Shared) -> Response {
    Json(CapabilitiesJson::from(&s.store.capabilities())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::HttpBody as _;
    use http_body_util::BodyExt;

    fn chunks(parts: Vec<larder::Result<&'static str>>) -> ByteStream {
        futures::stream::iter(
            parts
                .into_iter()
                .map(|p| p.map(|s: &'static str| Bytes::from_static(s.as_bytes()))),
        )
        .boxed()
    }

    /// A body the store has at hand goes out as one buffer of known size; any other streams,
    /// with every byte and every failure, and all are counted.
    #[tokio::test]
    async fn bodies_at_hand_go_out_whole_and_others_stream() {
        let metrics = crate::metrics::Metrics::new();
        let out = metrics.bytes_out();

        let whole = response_body(chunks(vec![Ok("abcd")]), 4, out);
        assert_eq!(whole.size_hint().exact(), Some(4));
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "abcd");

        let (tx, rx) = futures::channel::oneshot::channel::<larder::Result<Bytes>>();
        let later = futures::stream::once(async move { rx.await.unwrap() }).boxed();
        let pending = response_body(later, 4, out);
        assert_eq!(pending.size_hint().exact(), None, "not at hand: streamed");
        tx.send(Ok(Bytes::from_static(b"efgh"))).unwrap();
        assert_eq!(pending.collect().await.unwrap().to_bytes(), "efgh");

        let split = response_body(chunks(vec![Ok("ab"), Ok("cd")]), 4, out);
        assert_eq!(split.collect().await.unwrap().to_bytes(), "abcd");

        let failing = response_body(chunks(vec![Ok("ab"), Err(Error::backend("gone"))]), 4, out);
        assert!(failing.collect().await.is_err(), "a failure cuts the body");

        let empty = response_body(chunks(vec![]), 0, out);
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert_eq!(out.get(), 14);
    }
}
