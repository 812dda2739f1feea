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
use larder::meta::{http_date, renderable_seconds};
use larder::precondition::{parse_date_condition, parse_etag_condition};
use larder::range::{parse_range_header, RangeHeader};
use larder::{ETag, Error, GetOptions, IfRange, Meta, Preconditions, PutOptions, Result};

pub use larder::wire::header::{DEFAULT_CONTENT_TYPE, EXPECT_ETAG, META_PREFIX, REPR_DIGEST, TTL};

/// The names of the native API's own single fields, parsed once.
static TTL_FIELD: HeaderName = HeaderName::from_static(TTL);
static REPR_DIGEST_FIELD: HeaderName = HeaderName::from_static(REPR_DIGEST);
static EXPECT_ETAG_FIELD: HeaderName = HeaderName::from_static(EXPECT_ETAG);

/// A field's value as text; a value that is not visible ASCII is malformed.
fn text(v: &HeaderValue) -> Result<&str> {
    v.to_str()
        .map_err(|_| Error::InvalidInput("a header field is not visible ASCII".into()))
}

/// The values of a field, in order: the first apart, so the usual single value needs no `Vec`.
type Values<'a> = std::iter::Chain<std::option::IntoIter<&'a str>, std::vec::IntoIter<&'a str>>;

/// Every value of a field, as text (see [`text`]).
fn values(h: &HeaderMap, name: impl header::AsHeaderName) -> Result<Values<'_>> {
    let mut all = h.get_all(name).into_iter();
    let first = all.next().map(text).transpose()?;
    let rest = all.map(text).collect::<Result<Vec<_>>>()?;
    Ok(first.into_iter().chain(rest))
}

/// The value of a field that may appear once. (Named by a [`HeaderName`] where one exists: a
/// `&str` name is parsed again on every call.)
fn single<N>(h: &HeaderMap, name: N) -> Result<Option<&str>>
where
    N: header::AsHeaderName + std::fmt::Display + Copy,
{
    let mut all = values(h, name)?;
    let first = all.next();
    match all.next() {
        None => Ok(first),
        Some(_) => Err(Error::InvalidInput(format!(
            "{name} appears more than once"
        ))),
    }
}

/// Which of the fields a request's options come from it carries, found in one pass over its
/// field names: each absent field is then never looked up (a hash and probe per name, most of
/// the parsing of a request without conditions).
#[derive(Clone, Copy, Default)]
struct Present(u16);

impl Present {
    const IF_MATCH: u16 = 1;
    const IF_NONE_MATCH: u16 = 1 << 1;
    const IF_MODIFIED_SINCE: u16 = 1 << 2;
    const IF_UNMODIFIED_SINCE: u16 = 1 << 3;
    const RANGE: u16 = 1 << 4;
    const IF_RANGE: u16 = 1 << 5;
    const CONTENT_TYPE: u16 = 1 << 6;
    const CACHE_CONTROL: u16 = 1 << 7;
    const TTL: u16 = 1 << 8;
    const REPR_DIGEST: u16 = 1 << 9;
    const EXPECT_ETAG: u16 = 1 << 10;

    /// The fields among `h`'s names.
    fn of(h: &HeaderMap) -> Self {
        let mut p = Present::default();
        for name in h.keys() {
            p.note(name);
        }
        p
    }

    /// Notes `name` if it is one of the fields.
    fn note(&mut self, name: &HeaderName) {
        // Standard names compare as enum values; the native ones only when lengths agree.
        let bit = if *name == header::IF_MATCH {
            Self::IF_MATCH
        } else if *name == header::IF_NONE_MATCH {
            Self::IF_NONE_MATCH
        } else if *name == header::IF_MODIFIED_SINCE {
            Self::IF_MODIFIED_SINCE
        } else if *name == header::IF_UNMODIFIED_SINCE {
            Self::IF_UNMODIFIED_SINCE
        } else if *name == header::RANGE {
            Self::RANGE
        } else if *name == header::IF_RANGE {
            Self::IF_RANGE
        } else if *name == header::CONTENT_TYPE {
            Self::CONTENT_TYPE
        } else if *name == header::CACHE_CONTROL {
            Self::CACHE_CONTROL
        } else if *name == TTL_FIELD {
            Self::TTL
        } else if *name == REPR_DIGEST_FIELD {
            Self::REPR_DIGEST
        } else if *name == EXPECT_ETAG_FIELD {
            Self::EXPECT_ETAG
        } else {
            0
        };
        self.0 |= bit;
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// `If-Match`, `If-None-Match` (every repeated field combined), `If-Modified-Since` and
/// `If-Unmodified-Since` (an invalid date is ignored, as RFC 9110 13.1.3 requires).
pub fn preconditions(h: &HeaderMap) -> Result<Preconditions> {
    preconditions_of(h, Present::of(h))
}

/// [`preconditions`], `p` saying which of the fields `h` has.
fn preconditions_of(h: &HeaderMap, p: Present) -> Result<Preconditions> {
    const ANY: u16 = Present::IF_MATCH
        | Present::IF_NONE_MATCH
        | Present::IF_MODIFIED_SINCE
        | Present::IF_UNMODIFIED_SINCE;
    if !p.has(ANY) {
        return Ok(Preconditions::default());
    }
    let etags = |bit, name| match p.has(bit) {
        true => parse_etag_condition(values(h, name)?),
        false => Ok(None),
    };
    let date = |bit, name| match p.has(bit) {
        true => Ok(parse_date_condition(values(h, name)?)),
        false => Ok::<_, Error>(None),
    };
    Ok(Preconditions {
        if_match: etags(Present::IF_MATCH, header::IF_MATCH)?,
        if_none_match: etags(Present::IF_NONE_MATCH, header::IF_NONE_MATCH)?,
        if_modified_since: date(Present::IF_MODIFIED_SINCE, header::IF_MODIFIED_SINCE)?,
        if_unmodified_since: date(Present::IF_UNMODIFIED_SINCE, header::IF_UNMODIFIED_SINCE)?,
    })
}

/// The options of a GET: preconditions, `Range` (one byte range; several are answered 416 by
/// the caller, another unit is ignored) and `If-Range`.
pub fn get_options(h: &HeaderMap) -> Result<(GetOptions, bool)> {
    let p = Present::of(h);
    let preconditions = preconditions_of(h, p)?;
    let mut multiple = false;
    let range = match p.has(Present::RANGE) {
        false => None,
        true => match single(h, &header::RANGE)? {
            None => None,
            Some(v) => match parse_range_header(v)? {
                RangeHeader::Single(r) => Some(r),
                RangeHeader::Multiple(_) => {
                    multiple = true;
                    None
                }
                RangeHeader::OtherUnit => None,
            },
        },
    };
    let if_range = match p.has(Present::IF_RANGE) {
        false => None,
        true => single(h, &header::IF_RANGE)?
            .map(IfRange::parse)
            .transpose()?,
    };
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
    // One pass finds both the metadata fields and which other fields to parse.
    let mut p = Present::default();
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
        } else {
            p.note(name);
        }
    }
    let preconditions = preconditions_of(h, p)?;
    let content_type = match p.has(Present::CONTENT_TYPE) {
        false => None,
        true => single(h, &header::CONTENT_TYPE)?.map(str::to_owned),
    };
    Ok(PutOptions {
        preconditions,
        ttl: ttl(h, p)?,
        content_type,
        metadata,
        expected_etag: expected_etag(h, p)?,
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

fn ttl(h: &HeaderMap, p: Present) -> Result<Option<Duration>> {
    if !p.has(Present::TTL | Present::CACHE_CONTROL) {
        return Ok(None);
    }
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

fn expected_etag(h: &HeaderMap, p: Present) -> Result<Option<ETag>> {
    if !p.has(Present::REPR_DIGEST | Present::EXPECT_ETAG) {
        return Ok(None);
    }
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

/// The HTTP date of `t` as a field value ([`http_date`]'s text). An HTTP date has whole
/// seconds, so the value is kept per thread for the last two seconds asked (an object's
/// `Last-Modified` and `Expires`, or the writes of one second) and shared, uncopied, by every
/// answer that carries the same second: formatting a date was a third of a GET's fields. The
/// key is the second itself, so a kept value is only ever the text of that second.
fn date_value(t: SystemTime) -> Option<HeaderValue> {
    type Slot = Option<(i64, HeaderValue)>;
    thread_local! {
        /// The two seconds last formatted, the most recent first.
        static LAST: std::cell::RefCell<[Slot; 2]> = const { std::cell::RefCell::new([None, None]) };
    }
    let secs = renderable_seconds(t);
    LAST.with_borrow_mut(|last| {
        if let Some((_, v)) = last.iter().flatten().find(|(s, _)| *s == secs) {
            return Some(v.clone());
        }
        let v = HeaderValue::try_from(http_date(t)).ok()?;
        last.swap(0, 1);
        last[0] = Some((secs, v.clone()));
        Some(v)
    })
}

fn set_date(h: &mut HeaderMap, name: HeaderName, t: SystemTime) {
    if let Some(v) = date_value(t) {
        h.insert(name, v);
    }
}

/// Adds the fields of a write's answer, in every API that writes, to `h`: the new version's
/// `ETag` (the token for the next `If-Match`) and its `Last-Modified`.
pub fn add_write_headers(h: &mut HeaderMap, meta: &Meta) {
    set_etag(h, &meta.etag);
    set_date(h, header::LAST_MODIFIED, meta.last_modified);
}

/// The fields that describe a stored object, sent with a 200, 206, 304 and HEAD: `ETag`,
/// `Last-Modified`, `Content-Type`, `Cache-Control`/`Expires` for an object with a TTL, and the
/// user metadata.
pub fn validator_headers(h: &mut HeaderMap, meta: &Meta) {
    let content_type = meta
        .content_type
        .as_deref()
        .map(|t| HeaderValue::from_str(t).ok());
    validators(
        h,
        etag_value(&meta.etag),
        content_type,
        meta.last_modified,
        meta.expires_at,
        &meta.metadata,
    );
}

/// [`validator_headers`] of a `meta` the caller gives up (a GET's, a 304's): its ETag and
/// content type become the fields' values without being copied.
pub fn validator_headers_owned(h: &mut HeaderMap, meta: Meta) {
    let Meta {
        etag,
        content_type,
        last_modified,
        expires_at,
        metadata,
        ..
    } = meta;
    let content_type = content_type.map(|t| HeaderValue::try_from(t).ok());
    let etag = HeaderValue::try_from(etag.into_wire()).ok();
    validators(h, etag, content_type, last_modified, expires_at, &metadata);
}

/// The fields of [`validator_headers`], from the values made for them: `content_type` is `None`
/// for an object stored without one (the default is sent), `Some(None)` for one that no field
/// can carry (left out, as an ETag that no field can carry is).
fn validators(
    h: &mut HeaderMap,
    etag: Option<HeaderValue>,
    content_type: Option<Option<HeaderValue>>,
    last_modified: SystemTime,
    expires_at: Option<SystemTime>,
    metadata: &BTreeMap<String, String>,
) {
    if let Some(v) = etag {
        h.insert(header::ETAG, v);
    }
    // Dates go through `http_date` (by `date_value`), which clamps what no HTTP date can carry
    // (a record stored with an expiry past the year 9999 is still served).
    set_date(h, header::LAST_MODIFIED, last_modified);
    match content_type {
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
            );
        }
        Some(Some(v)) => {
            h.insert(header::CONTENT_TYPE, v);
        }
        Some(None) => {}
    }
    if let Some(expires) = expires_at {
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        set_date(h, header::EXPIRES, expires);
        set_owned(
            h,
            header::CACHE_CONTROL,
            format!("max-age={}", left.as_secs()),
        );
    }
    for (k, v) in metadata {
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
    fn dates_are_http_dates_at_every_second_boundary() {
        use larder::meta::{from_millis, to_millis};
        // One thread, one cache: each time right after the one before it, so every kept
        // second is asked again just before and after it changes.
        let mut times = vec![
            -1_000, -1, 0, 1, 999, 1_000, 1_001, 59_999, 60_000, 86_399_999,
        ];
        times.extend([86_400_000, 1_767_225_599_999, 1_767_225_600_000, i64::MAX]);
        times.extend([253_402_300_799_999, 253_402_300_800_000]);
        let now = to_millis(SystemTime::now());
        times.extend((0..3000).map(|i| now - 1500 + i * 7 % 2500));
        for (i, &ms) in times.iter().enumerate() {
            let t = from_millis(ms);
            assert_eq!(date_value(t).unwrap(), http_date(t).as_str(), "{ms}");
            // Interleaved with another time, as Last-Modified and Expires are.
            let other = from_millis(times[(i * 5) % times.len()]);
            assert_eq!(date_value(other).unwrap(), http_date(other).as_str());
        }
    }

    #[test]
    fn absent_fields_give_the_empty_options() {
        let unrelated = map(&[
            ("host", "h"),
            ("accept", "*/*"),
            ("x-larder-metadata", "no"),
        ]);
        let (o, multiple) = get_options(&unrelated).unwrap();
        assert!(!multiple && o.range.is_none() && o.if_range.is_none());
        assert!(o.preconditions.is_empty());
        let o = put_options(&unrelated).unwrap();
        assert!(o.preconditions.is_empty() && o.ttl.is_none());
        assert!(o.content_type.is_none() && o.expected_etag.is_none() && o.metadata.is_empty());
        // Each field is still found among others, and a repeated one still refused.
        let o = put_options(&map(&[
            ("host", "h"),
            ("x-larder-expect-etag", "\"a\""),
            ("x-larder-ttl", "5"),
            ("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("content-type", "a/b"),
        ]))
        .unwrap();
        assert_eq!(o.expected_etag, Some(ETag::strong("a").unwrap()));
        assert_eq!(o.ttl, Some(Duration::from_secs(5)));
        assert!(o.preconditions.if_unmodified_since.is_some());
        assert!(put_options(&map(&[("content-type", "a/b"), ("content-type", "c/d")])).is_err());
        let (o, _) = get_options(&map(&[("accept", "*/*"), ("range", "bytes=0-1")])).unwrap();
        assert!(o.range.is_some());
        assert!(get_options(&map(&[("if-range", "\"a\""), ("if-range", "\"b\"")])).is_err());
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
