//! HTTP header fields <-> Larder options, in one place: request fields into `Preconditions`,
//! `ByteRange`, `IfRange` and `PutOptions` (with the core's parsers, never a second one), and
//! `Meta` into response fields and the contract's JSON.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use larder::precondition::{parse_date_condition, parse_etag_condition};
use larder::range::{parse_range_header, RangeHeader};
use larder::{ByteRange, ETag, IfRange, Meta, Preconditions, PutOptions};

use crate::error::ApiError;

/// Prefix of user metadata fields.
pub const META_PREFIX: &str = "x-larder-meta-";
/// TTL in seconds on a PUT.
pub const TTL_HEADER: &str = "x-larder-ttl";
/// The ETag the body must hash to, on a PUT.
pub const EXPECT_ETAG_HEADER: &str = "x-larder-expect-etag";
/// RFC 9530 digest of the body, on a PUT.
pub const REPR_DIGEST_HEADER: &str = "repr-digest";

/// Every value of a field, as text; a value that is not visible ASCII is a 400.
fn values<'a>(h: &'a HeaderMap, name: &HeaderName) -> Result<Vec<&'a str>, ApiError> {
    h.get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
        })
        .collect()
}

/// The single value of a field that must not repeat.
fn single<'a>(h: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    let v = values(h, name)?;
    match v.len() {
        0 => Ok(None),
        1 => Ok(Some(v[0])),
        _ => Err(ApiError::bad_request(format!(
            "{name} given more than once"
        ))),
    }
}

/// `If-Match`, `If-None-Match` (each repeated field combined into one list),
/// `If-Modified-Since`, `If-Unmodified-Since` (an invalid date is ignored, RFC 9110 13.1.3).
pub fn preconditions(h: &HeaderMap) -> Result<Preconditions, ApiError> {
    Ok(Preconditions {
        if_match: parse_etag_condition(values(h, &header::IF_MATCH)?)?,
        if_none_match: parse_etag_condition(values(h, &header::IF_NONE_MATCH)?)?,
        if_modified_since: parse_date_condition(values(h, &header::IF_MODIFIED_SINCE)?),
        if_unmodified_since: parse_date_condition(values(h, &header::IF_UNMODIFIED_SINCE)?),
    })
}

/// What a GET's `Range` asks for.
#[derive(Debug)]
pub enum RangeRequest {
    /// No range (or one in another unit, which RFC 9110 14.2 says to ignore).
    Whole,
    /// One byte range, with its `If-Range` if any.
    Single(ByteRange, Option<IfRange>),
    /// Several ranges: not served (416), as multipart responses are not supported.
    Multiple(Option<IfRange>),
}

/// `Range` and `If-Range` of a GET. A malformed `bytes` range or `If-Range` is a 400.
pub fn range_request(h: &HeaderMap) -> Result<RangeRequest, ApiError> {
    let Some(range) = single(h, &header::RANGE)? else {
        return Ok(RangeRequest::Whole);
    };
    let if_range = single(h, &header::IF_RANGE)?
        .map(IfRange::parse)
        .transpose()?;
    Ok(match parse_range_header(range)? {
        RangeHeader::Single(r) => RangeRequest::Single(r, if_range),
        RangeHeader::Multiple(_) => RangeRequest::Multiple(if_range),
        RangeHeader::OtherUnit => RangeRequest::Whole,
    })
}

/// The options of a PUT: conditions (`If-Modified-Since` does not apply to writes),
/// `Content-Type`, `X-Larder-Meta-*`, TTL (`X-Larder-TTL` or `Cache-Control: max-age`), and the
/// expected digest (`Repr-Digest: sha-256=:..:` or `X-Larder-Expect-ETag`).
///
/// Only these fields are stored: conditional, hop-by-hop and credential fields never are.
pub fn put_options(h: &HeaderMap) -> Result<PutOptions, ApiError> {
    let mut p = preconditions(h)?;
    p.if_modified_since = None;
    let content_type = single(h, &header::CONTENT_TYPE)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mut metadata = BTreeMap::new();
    for (name, value) in h {
        let Some(meta_name) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };
        if meta_name.is_empty() {
            return Err(ApiError::bad_request("empty metadata name"));
        }
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| ApiError::bad_request(format!("{name} is not UTF-8")))?;
        if metadata
            .insert(meta_name.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(ApiError::bad_request(format!(
                "{name} given more than once"
            )));
        }
    }
    Ok(PutOptions {
        preconditions: p,
        ttl: ttl(h)?,
        content_type,
        metadata,
        expected_etag: expected_etag(h)?,
    })
}

fn ttl(h: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let secs = |v: &str, what: &str| -> Result<Duration, ApiError> {
        match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(ApiError::bad_request(format!(
                "{what} must be a positive number of seconds, not {v:?}"
            ))),
        }
    };
    if let Some(v) = single(h, &HeaderName::from_static(TTL_HEADER))? {
        return secs(v, "X-Larder-TTL").map(Some);
    }
    for v in values(h, &header::CACHE_CONTROL)? {
        for directive in v.split(',') {
            let d = directive.trim();
            if d.len() > 8 && d[..8].eq_ignore_ascii_case("max-age=") {
                return secs(d[8..].trim_matches('"'), "Cache-Control max-age").map(Some);
            }
        }
    }
    Ok(None)
}

fn expected_etag(h: &HeaderMap) -> Result<Option<ETag>, ApiError> {
    let mut expected: Option<ETag> = None;
    if let Some(v) = single(h, &HeaderName::from_static(EXPECT_ETAG_HEADER))? {
        let tag = ETag::parse(v)?;
        if tag.is_weak() {
            return Err(ApiError::bad_request(
                "X-Larder-Expect-ETag must be a strong ETag",
            ));
        }
        expected = Some(tag);
    }
    for v in values(h, &HeaderName::from_static(REPR_DIGEST_HEADER))? {
        // A dictionary of `alg=:base64:`; algorithms other than sha-256 are ignored (RFC 9530).
        for member in v.split(',') {
            let Some((alg, val)) = member.split_once('=') else {
                return Err(ApiError::bad_request(format!(
                    "malformed Repr-Digest {v:?}"
                )));
            };
            if !alg.trim().eq_ignore_ascii_case("sha-256") {
                continue;
            }
            let b64 = val
                .trim()
                .strip_prefix(':')
                .and_then(|s| s.strip_suffix(':'))
                .ok_or_else(|| ApiError::bad_request(format!("malformed Repr-Digest {v:?}")))?;
            let digest: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("Repr-Digest sha-256 is not 32 bytes: {v:?}"))
                })?;
            let tag = ETag::from_sha256(&digest);
            if expected.as_ref().is_some_and(|e| !e.strong_eq(&tag)) {
                return Err(ApiError::bad_request(
                    "Repr-Digest and X-Larder-Expect-ETag disagree",
                ));
            }
            expected = Some(tag);
        }
    }
    Ok(expected)
}

/// The headers that describe a stored object, as 200, 206, HEAD and 304 repeat them: ETag,
/// Last-Modified, Content-Type, Cache-Control + Expires (TTL objects), X-Larder-Meta-*.
pub fn validator_headers(meta: &Meta, h: &mut HeaderMap) {
    h.insert(header::ETAG, value(&meta.etag.to_string()));
    h.insert(
        header::LAST_MODIFIED,
        value(&httpdate::fmt_http_date(meta.last_modified)),
    );
    let ct = meta
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    if let Some(expires) = meta.expires_at {
        let remaining = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        h.insert(
            header::CACHE_CONTROL,
            value(&format!("max-age={remaining}")),
        );
        h.insert(header::EXPIRES, value(&httpdate::fmt_http_date(expires)));
    }
    for (k, v) in &meta.metadata {
        // Names that cannot be a field name cannot be served as one; values are sent as
        // their UTF-8 bytes (obs-text).
        if let (Ok(name), Ok(val)) = (
            HeaderName::from_bytes(format!("{META_PREFIX}{k}").as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            h.append(name, val);
        }
    }
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("generated header values are ASCII")
}

/// RFC 3339 with milliseconds, UTC.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The contract's Meta JSON.
pub fn meta_json(meta: &Meta) -> serde_json::Value {
    serde_json::json!({
        "key": meta.key.as_str(),
        "etag": meta.etag.to_string(),
        "size": meta.size,
        "last_modified": rfc3339(meta.last_modified),
        "expires_at": meta.expires_at.map(rfc3339),
        "content_type": meta.content_type,
        "metadata": meta.metadata,
    })
}

/// A JSON response.
pub fn json_response(status: StatusCode, headers: HeaderMap, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn repeated_fields_are_combined() {
        let a = ETag::of(b"a");
        let b = ETag::of(b"b");
        let h = map(&[
            ("if-none-match", &a.to_string()),
            ("if-none-match", &format!("W/\"x\", {b}")),
        ]);
        let p = preconditions(&h).unwrap();
        let cond = p.if_none_match.unwrap();
        assert!(cond.matches_weak(Some(&a)) && cond.matches_weak(Some(&b)));
        assert!(preconditions(&map(&[("if-match", "nope")])).is_err());
        // An invalid date is ignored, not an error.
        let p = preconditions(&map(&[("if-modified-since", "yesterday")])).unwrap();
        assert!(p.if_modified_since.is_none());
    }

    #[test]
    fn put_options_keep_only_what_is_stored() {
        let body_tag = ETag::of(b"abc");
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex_decode(body_tag.opaque()));
        let h = map(&[
            ("content-type", "text/plain"),
            ("x-larder-meta-Owner", "me"),
            ("authorization", "Bearer s3cret"),
            ("cookie", "a=b"),
            ("connection", "keep-alive"),
            ("if-match", "\"abc\""),
            ("cache-control", "no-transform, max-age=60"),
            ("repr-digest", &format!("sha-512=:AAAA:, sha-256=:{b64}:")),
        ]);
        let o = put_options(&h).unwrap();
        assert_eq!(o.content_type.as_deref(), Some("text/plain"));
        assert_eq!(o.metadata.len(), 1);
        assert_eq!(o.metadata["owner"], "me");
        assert_eq!(o.ttl, Some(Duration::from_secs(60)));
        assert_eq!(o.expected_etag, Some(body_tag));
        assert!(o.preconditions.if_match.is_some());
        assert!(put_options(&map(&[("x-larder-ttl", "0")])).is_err());
        assert!(put_options(&map(&[("repr-digest", "sha-256=:AAAA:")])).is_err());
        assert!(put_options(&map(&[("x-larder-expect-etag", "W/\"a\"")])).is_err());
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ranges() {
        assert!(matches!(
            range_request(&map(&[("range", "bytes=0-1")])).unwrap(),
            RangeRequest::Single(ByteRange::Bounded { first: 0, last: 1 }, None)
        ));
        assert!(matches!(
            range_request(&map(&[("range", "bytes=0-1,3-4")])).unwrap(),
            RangeRequest::Multiple(_)
        ));
        assert!(matches!(
            range_request(&map(&[("range", "items=0-1")])).unwrap(),
            RangeRequest::Whole
        ));
        assert!(range_request(&map(&[("range", "bytes=5-1")])).is_err());
        assert!(range_request(&map(&[("range", "bytes=0-1"), ("if-range", "junk")])).is_err());
    }
}
