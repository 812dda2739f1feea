//! The handlers: objects (`/v1/objects/{key}`), listing (`/v1/objects`), health, metrics.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use larder::{DeleteOptions, Error, GetOptions, HeadOptions, Key, ListOptions, Meta};
use percent_encoding::percent_decode_str;

use crate::error::ApiError;
use crate::headers::{self, json_response, meta_json, validator_headers, RangeRequest};
use crate::AppState;

/// Path prefix of object routes.
pub const OBJECTS_PREFIX: &str = "/v1/objects/";

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The key of an object route: each `/`-separated segment percent-decoded, then validated by
/// `Key` (so `%2E%2E` is refused like `..`).
pub fn key_from_path(path: &str) -> Result<Key> {
    let rest = path.strip_prefix(OBJECTS_PREFIX).unwrap_or_default();
    let mut key = String::with_capacity(rest.len());
    for (i, segment) in rest.split('/').enumerate() {
        if i > 0 {
            key.push('/');
        }
        let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_key",
                "key is not UTF-8 once percent-decoded",
            )
        })?;
        key.push_str(&decoded);
    }
    Ok(Key::new(key)?)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    prefix: Option<String>,
    delimiter: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The listing options of a query string.
pub fn list_query(query: Option<&str>) -> Result<ListOptions> {
    let q: ListQuery = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let delimiter = match q.delimiter.as_deref() {
        None | Some("") => None,
        Some(d) => {
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => return Err(ApiError::bad_request("delimiter must be one character")),
            }
        }
    };
    if q.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let opts = ListOptions {
        prefix: q.prefix.unwrap_or_default(),
        delimiter,
        limit: q.limit,
        cursor: q.cursor.filter(|c| !c.is_empty()),
    };
    opts.validate()?;
    Ok(opts)
}

/// `GET /v1/objects?prefix=&delimiter=&limit=&cursor=`.
pub(crate) async fn list(State(st): State<AppState>, req: Request) -> Result<Response> {
    let opts = list_query(req.uri().query())?;
    let page = st.store.list(opts).await?;
    let body = serde_json::json!({
        "objects": page.objects.iter().map(meta_json).collect::<Vec<_>>(),
        "common_prefixes": page.common_prefixes,
        "next_cursor": page.next_cursor,
    });
    Ok(json_response(StatusCode::OK, HeaderMap::new(), &body))
}

fn object_headers(meta: &Meta) -> HeaderMap {
    let mut h = HeaderMap::new();
    validator_headers(meta, &mut h);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h
}

/// `HEAD /v1/objects/{key}`: the GET's headers, from the store's `head`.
pub(crate) async fn head_object(State(st): State<AppState>, req: Request) -> Result<Response> {
    let key = key_from_path(req.uri().path())?;
    let preconditions = headers::preconditions(req.headers())?;
    let meta = st.store.head(&key, HeadOptions { preconditions }).await?;
    let mut h = object_headers(&meta);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    Ok((StatusCode::OK, h).into_response())
}

/// `GET /v1/objects/{key}`: conditions and range decided by the store in one step with the
/// read; the body is streamed from the store.
pub(crate) async fn get_object(State(st): State<AppState>, req: Request) -> Result<Response> {
    let key = key_from_path(req.uri().path())?;
    let preconditions = headers::preconditions(req.headers())?;
    let (range, if_range) = match headers::range_request(req.headers())? {
        RangeRequest::Whole => (None, None),
        RangeRequest::Single(r, if_range) => (Some(r), if_range),
        RangeRequest::Multiple(if_range) => {
            // Multipart responses are not served: 416 once the conditions pass, unless
            // If-Range fails (then the whole object, as for any range).
            let meta = st
                .store
                .head(
                    &key,
                    HeadOptions {
                        preconditions: preconditions.clone(),
                    },
                )
                .await?;
            if if_range.as_ref().is_none_or(|c| c.holds(&meta)) {
                return Err(Error::RangeNotSatisfiable { size: meta.size }.into());
            }
            (None, None)
        }
    };
    let got = st
        .store
        .get(
            &key,
            GetOptions {
                preconditions,
                range,
                if_range,
            },
        )
        .await?;
    let mut h = object_headers(&got.meta);
    let status = match &got.range {
        Some(r) => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&larder::range::content_range(r, got.meta.size))
                    .expect("ascii"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            StatusCode::PARTIAL_CONTENT
        }
        None => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(got.meta.size));
            StatusCode::OK
        }
    };
    let bytes_out = st.metrics.bytes_out.clone();
    let key_for_log = key.clone();
    let body = got.body.map(move |chunk| match chunk {
        Ok(b) => {
            bytes_out.inc_by(b.len() as u64);
            Ok(b)
        }
        Err(e) => {
            // The head is sent; all that is left is to cut the connection short.
            tracing::error!(key = %key_for_log, error = %e, "body stream failed mid-response");
            Err(e)
        }
    });
    Ok((status, h, Body::from_stream(body)).into_response())
}

/// `PUT` / `POST /v1/objects/{key}`: the body is streamed into the store, bounded by the
/// object size limit; a body that ends early is an error item, so nothing is stored.
pub(crate) async fn put_object(State(st): State<AppState>, req: Request) -> Result<Response> {
    let key = key_from_path(req.uri().path())?;
    let opts = headers::put_options(req.headers())?;
    st.store.capabilities().check_put(&opts)?;
    let limit = st.config.max_object_size;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ApiError::bad_request("malformed Content-Length"))?;
        if len > limit {
            return Err(Error::TooLarge { limit }.into());
        }
    }
    let _permit = st.uploads.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable("busy", "too many uploads in progress; retry shortly")
    })?;
    st.metrics.uploads_in_flight.inc();
    let _in_flight = scopeguard(st.metrics.uploads_in_flight.clone());

    let bytes_in = st.metrics.bytes_in.clone();
    let mut received: u64 = 0;
    let body = req
        .into_body()
        .into_data_stream()
        .map(move |chunk| match chunk {
            Ok(b) => {
                received += b.len() as u64;
                if received > limit {
                    return Err(Error::TooLarge { limit });
                }
                bytes_in.inc_by(b.len() as u64);
                Ok(b)
            }
            // A client that goes away mid-body (or breaks the framing) ends the stream with an
            // error, never a clean end, so the driver discards what it received.
            Err(e) => Err(Error::InvalidInput(format!("request body: {e}"))),
        });
    let put = st
        .store
        .put(&key, larder::Body::from_stream(body), opts)
        .await?;
    let mut h = HeaderMap::new();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&put.meta.etag.to_string()).expect("ascii"),
    );
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&httpdate::fmt_http_date(put.meta.last_modified)).expect("ascii"),
    );
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, h, &meta_json(&put.meta)))
}

/// Decrements the in-flight gauge however the upload ends (including cancellation).
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn scopeguard(g: prometheus::IntGauge) -> GaugeGuard {
    GaugeGuard(g)
}

/// `DELETE /v1/objects/{key}`.
pub(crate) async fn delete_object(State(st): State<AppState>, req: Request) -> Result<Response> {
    let key = key_from_path(req.uri().path())?;
    let mut preconditions = headers::preconditions(req.headers())?;
    preconditions.if_modified_since = None;
    st.store
        .delete(&key, DeleteOptions { preconditions })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Anything else: 404 in the contract's JSON.
pub(crate) async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
