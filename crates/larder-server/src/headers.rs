//! The one mapping between HTTP header fields and Larder's typed options: request fields to
//! [`Preconditions`], ranges and put options (parsed by the core's parsers), and an object's
//! [`Meta`] to response fields.
//!
//! Only `Content-Type` and `X-Larder-Meta-*` fields are ever stored with an object: conditional,
//! hop-by-hop and credential fields never reach the store.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use larder::meta::http_date;
use larder::precondition::{parse_date_condition, parse_etag_condition};
use larder::range::{parse_range_header, RangeHeader};
use larder::{ETag, Error, GetOptions, IfRange, Meta, Preconditions, PutOptions, Result};

pub use larder::wire::header::{DEFAULT_CONTENT_TYPE, EXPECT_ETAG, META_PREFIX, REPR_DIGEST, TTL};

/// The names of the native API's own single fields, parsed once.
static TTL_FIELD: HeaderName = HeaderName::from_static(TTL);
static REPR_DIGEST_FIELD: HeaderName = HeaderName::from_static(REPR_DIGEST);
static EXPECT_ETAG_FIELD: HeaderName = HeaderName::from_static(EXPECT_ETAG);

/// Every value of a field, as text; a value that is not visible ASCII is malformed.
fn values(h: &HeaderMap, name: impl header::AsHeaderName) -> Result<Vec<&str>> {
    h.get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::InvalidInput("a header field is not visible ASCII".into()))
        })
        .collect()
}

/// The value of a field that may appear once. (Named by a [`HeaderName`] where one exists: a
/// `&str` name is parsed again on every call.)
fn single<N>(h: &HeaderMap, name: N) -> Result<Option<&str>>
where
    N: header::AsHeaderName + std::fmt::Display + Copy,
{
    let mut all = values(h, name)?;
    match all.len() {
        0 => Ok(None),
        1 => Ok(all.pop()),
        _ => Err(Error::InvalidInput(format!(
            "{name} appears more than once"
        ))),
    }
}

/// `If-Match`, `If-None-Match` (every repeated field combined), `If-Modified-Since` and
/// `If-Unmodified-Since` (an invalid date is ignored, as RFC 9110 13.1.3 requires).
pub fn preconditions(h: &HeaderMap) -> Result<Preconditions> {
    Ok(Preconditions {
        if_match: parse_etag_condition(values(h, header::IF_MATCH)?)?,
        if_none_match: parse_etag_condition(values(h, header::IF_NONE_MATCH)?)?,
        if_modified_since: parse_date_condition(values(h, header::IF_MODIFIED_SINCE)?),
        if_unmodified_since: parse_date_condition(values(h, header::IF_UNMODIFIED_SINCE)?),
    })
}

/// The options of a GET: preconditions, `Range` (one byte range; several are answered 416 by
/// the caller, another unit is ignored) and `If-Range`.
pub fn get_options(h: &HeaderMap) -> Result<(GetOptions, bool)> {
    let preconditions = preconditions(h)?;
    let mut multiple = false;
    let range = match single(h, &header::RANGE)? {
        None => None,
        Some(v) => match parse_range_header(v)? {
            RangeHeader::Single(r) => Some(r),
            RangeHeader::Multiple(_) => {
                multiple = true;
                None
            }
            RangeHeader::OtherUnit => None,
        },
    };
    let if_range = single(h, &header::IF_RANGE)?
        .map(IfRange::parse)
        .transpose()?;
    Ok((
        GetOptions {
            preconditions,
            range,
            if_range,
        },
        multiple,
    ))
}

/// The options of a PUT: preconditions, `Content-Type`, `X-Larder-Meta-*`, the TTL
/// (`X-Larder-TTL: N` or `Cache-Control: max-age=N`) and the expected digest (`Repr-Digest:
/// sha-256=:…:` or `X-Larder-Expect-ETag`).
pub fn put_options(h: &HeaderMap) -> Result<PutOptions> {
    let preconditions = preconditions(h)?;
    let content_type = single(h, &header::CONTENT_TYPE)?.map(str::to_owned);
    let mut metadata = BTreeMap::new();
    for (name, value) in h {
        if let Some(k) = name.as_str().strip_prefix(META_PREFIX) {
            if k.is_empty() {
                return Err(Error::InvalidInput("an empty metadata name".into()));
            }
            let v = value
                .to_str()
                .map_err(|_| Error::InvalidInput(format!("metadata {k:?} is not visible ASCII")))?;
            if metadata.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(Error::InvalidInput(format!(
                    "metadata {k:?} appears more than once"
                )));
            }
        }
    }
    Ok(PutOptions {
        preconditions,
        ttl: ttl(h)?,
        content_type,
        metadata,
        expected_etag: expected_etag(h)?,
    })
}

/// A TTL field's value: a positive number of seconds, at most [`larder::meta::MAX_TTL`].
fn positive_seconds(what: &str, v: &str) -> Result<Duration> {
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => {
            let ttl = Duration::from_secs(n);
            larder::meta::check_ttl(ttl).map_err(|e| match e {
                Error::InvalidInput(why) => Error::InvalidInput(format!("{what} {v:?}: {why}")),
                e => e,
            })?;
            Ok(ttl)
        }
        _ => Err(Error::InvalidInput(format!(
            "{what} {v:?}: a positive number of seconds"
        ))),
    }
}

fn ttl(h: &HeaderMap) -> Result<Option<Duration>> {
    if let Some(v) = single(h, &TTL_FIELD)? {
        return positive_seconds("X-Larder-TTL", v).map(Some);
    }
    for v in values(h, header::CACHE_CONTROL)? {
        for directive in v.split(',') {
            if let Some((name, n)) = directive.split_once('=') {
                if name.trim().eq_ignore_ascii_case("max-age") {
                    return positive_seconds("Cache-Control max-age", n.trim_matches('"'))
                        .map(Some);
                }
            }
        }
    }
    Ok(None)
}

fn expected_etag(h: &HeaderMap) -> Result<Option<ETag>> {
    let from_digest = match single(h, &REPR_DIGEST_FIELD)? {
        None => None,
        Some(v) => {
            let sha = v.split(',').find_map(|d| {
                let (alg, val) = d.split_once('=')?;
                alg.trim()
                    .eq_ignore_ascii_case("sha-256")
                    .then_some(val.trim())
            });
            match sha {
                // Other algorithms can't be checked against a SHA-256 ETag; ignored per RFC 9530.
                None => None,
                Some(val) => {
                    let bad = || Error::InvalidInput(format!("malformed Repr-Digest {v:?}"));
                    let b64 = val
                        .strip_prefix(':')
                        .and_then(|s| s.strip_suffix(':'))
                        .ok_or_else(bad)?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| bad())?;
                    let digest: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
                    Some(ETag::from_sha256(&digest))
                }
            }
        }
    };
    let from_header = single(h, &EXPECT_ETAG_FIELD)?
        .map(ETag::parse)
        .transpose()?;
    match (from_digest, from_header) {
        (Some(a), Some(b)) if !a.strong_eq(&b) => Err(Error::InvalidInput(
            "Repr-Digest and X-Larder-Expect-ETag disagree".into(),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// The `ETag` field of `etag`: [`ETag::to_wire`], one buffer of the right size (through
/// `Display`, the formatting machinery was a twentieth of a GET).
pub fn etag_value(etag: &ETag) -> Option<HeaderValue> {
    HeaderValue::try_from(etag.to_wire()).ok()
}

fn set_etag(h: &mut HeaderMap, etag: &ETag) {
    if let Some(v) = etag_value(etag) {
        h.insert(header::ETAG, v);
    }
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Like [`set`], taking a value built for the field: its buffer becomes the field's, uncopied.
fn set_owned(h: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        h.insert(name, v);
    }
}

/// The fields of a write's answer, in every API that writes: the new version's `ETag` (the
/// token for the next `If-Match`) and its `Last-Modified`.
pub fn write_headers(meta: &Meta) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    add_write_headers(&mut h, meta);
    h
}

/// Adds the fields of [`write_headers`] to `h`.
pub(crate) fn add_write_headers(h: &mut HeaderMap, meta: &Meta) {
    set_etag(h, &meta.etag);
    set_owned(h, header::LAST_MODIFIED, http_date(meta.last_modified));
}

/// The fields that describe a stored object, sent with a 200, 206, 304 and HEAD: `ETag`,
/// `Last-Modified`, `Content-Type`, `Cache-Control`/`Expires` for an object with a TTL, and the
/// user metadata.
pub fn validator_headers(h: &mut HeaderMap, meta: &Meta) {
    set_etag(h, &meta.etag);
    // Dates go through `http_date`, which clamps what no HTTP date can carry (a record stored
    // with an expiry past the year 9999 is still served).
    set_owned(h, header::LAST_MODIFIED, http_date(meta.last_modified));
    match meta.content_type.as_deref() {
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
            );
        }
        Some(t) => set(h, header::CONTENT_TYPE, t),
    }
    if let Some(expires) = meta.expires_at {
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        set_owned(h, header::EXPIRES, http_date(expires));
        set_owned(
            h,
            header::CACHE_CONTROL,
            format!("max-age={}", left.as_secs()),
        );
    }
    for (k, v) in &meta.metadata {
        if let Ok(name) = HeaderName::from_bytes(format!("{META_PREFIX}{k}").as_bytes()) {
            set(h, name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder::ETagCondition;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn repeated_condition_fields_are_combined() {
        let p =
            preconditions(&map(&[("if-match", "\"a\""), ("if-match", "\"b\", \"c\"")])).unwrap();
        match p.if_match {
            Some(ETagCondition::Tags(t)) => assert_eq!(t.len(), 3),
            other => panic!("{other:?}"),
        }
        assert!(
            preconditions(&map(&[("if-none-match", "*"), ("if-none-match", "\"a\"")])).is_err()
        );
        // An invalid date is ignored, not an error.
        let p = preconditions(&map(&[("if-modified-since", "yesterday")])).unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn only_metadata_and_content_type_are_kept() {
        let o = put_options(&map(&[
            ("content-type", "text/plain"),
            ("x-larder-meta-owner", "ops"),
            ("authorization", "Bearer secret"),
            ("cookie", "a=b"),
            ("connection", "keep-alive"),
            ("if-match", "\"x\""),
        ]))
        .unwrap();
        assert_eq!(o.content_type.as_deref(), Some("text/plain"));
        assert_eq!(o.metadata.len(), 1);
        assert_eq!(o.metadata["owner"], "ops");
    }

    #[test]
    fn ttl_and_digest() {
        let o = put_options(&map(&[("cache-control", "public, max-age=60")])).unwrap();
        assert_eq!(o.ttl, Some(Duration::from_secs(60)));
        assert!(put_options(&map(&[("x-larder-ttl", "0")])).is_err());
        // sha-256 of "" in base64.
        let o = put_options(&map(&[(
            "repr-digest",
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
        )]))
        .unwrap();
        assert_eq!(o.expected_etag, Some(ETag::of(b"")));
        assert!(put_options(&map(&[("repr-digest", "sha-256=:bm90:")])).is_err());
    }

    #[test]
    fn etag_fields_are_the_wire_form() {
        for tag in [
            ETag::of(b"x"),
            ETag::weak("v1").unwrap(),
            ETag::strong("").unwrap(),
        ] {
            assert_eq!(etag_value(&tag).unwrap(), tag.to_string().as_str());
        }
    }

    #[test]
    fn ranges() {
        let (o, multi) = get_options(&map(&[("range", "bytes=0-1,5-6")])).unwrap();
        assert!(multi && o.range.is_none());
        let (o, _) = get_options(&map(&[("range", "items=0-1")])).unwrap();
        assert!(o.range.is_none(), "another unit is ignored");
        assert!(get_options(&map(&[("range", "bytes=x")])).is_err());
        assert!(get_options(&map(&[("if-range", "not a date")])).is_err());
    }
}
