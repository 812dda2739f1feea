//! The native HTTP API's wire format (docs/http-api.md), defined once for both ends: the server
//! (`larder-server`) writes it and the [`http`](crate::drivers::http) driver reads it. Header
//! names, the JSON of object metadata, listing pages, errors and capabilities.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::capabilities::{AtomicScope, Capabilities, ConditionSupport};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::ListPage;
use crate::meta::Meta;

/// Header names of the native API beyond RFC 9110's own.
pub mod header {
    /// Prefix of the fields that carry user metadata (`X-Larder-Meta-<name>: <value>`).
    pub const META_PREFIX: &str = "x-larder-meta-";
    /// TTL in whole seconds, beside `Cache-Control: max-age=N`.
    pub const TTL: &str = "x-larder-ttl";
    /// The ETag the body must hash to, beside `Repr-Digest`.
    pub const EXPECT_ETAG: &str = "x-larder-expect-etag";
    /// RFC 9530's digest of the representation.
    pub const REPR_DIGEST: &str = "repr-digest";
    /// Media type served for objects stored without one (and read back as "none").
    pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
}

/// The path of the capabilities route.
pub const CAPABILITIES_PATH: &str = "/v1/capabilities";

/// An object's metadata: the body of a PUT's response, a listing entry, `current` in a 412.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaJson {
    /// The key.
    pub key: String,
    /// The ETag, quoted, as in the `ETag` header.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// RFC 3339, UTC, milliseconds.
    pub last_modified: String,
    /// RFC 3339, or null for no expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The stored media type, or null.
    #[serde(default)]
    pub content_type: Option<String>,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A time as the API writes it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(RFC3339_LEN);
    push_rfc3339(&mut out, t);
    String::from_utf8(out).expect("an RFC 3339 date is ASCII")
}

/// The length of [`rfc3339`]'s text: `YYYY-MM-DDTHH:MM:SS.mmmZ` (every renderable year has
/// four digits).
const RFC3339_LEN: usize = 24;

/// Appends [`rfc3339`]'s text to `out`. The text up to the seconds is humantime's, kept per
/// thread for the last whole second asked (a write's answer, a listing's entries: formatting
/// the calendar date was most of the JSON answer); the key is the whole second itself, so a
/// cached prefix is only ever reused for the very second it spells.
fn push_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static LAST: std::cell::Cell<Option<(i64, [u8; 19])>> = const { std::cell::Cell::new(None) };
    }
    // Clamped into what RFC 3339 can carry, so a stored record with an odd time is still
    // listed and described.
    let ms = crate::meta::to_millis(crate::meta::renderable(t));
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let prefix = match LAST.get() {
        Some((s, prefix)) if s == secs => prefix,
        _ => {
            let text =
                humantime::format_rfc3339_millis(crate::meta::from_millis(secs * 1000)).to_string();
            let prefix: [u8; 19] = text.as_bytes()[..19]
                .try_into()
                .expect("an RFC 3339 date has 19 bytes up to its seconds");
            LAST.set(Some((secs, prefix)));
            prefix
        }
    };
    out.extend_from_slice(&prefix);
    // `renderable` times are whole milliseconds from the epoch on: `millis` is 0..=999.
    let m = millis as u32;
    out.extend_from_slice(&[
        b'.',
        b'0' + (m / 100) as u8,
        b'0' + (m / 10 % 10) as u8,
        b'0' + (m % 10) as u8,
        b'Z',
    ]);
}

impl MetaJson {
    /// The JSON text of `MetaJson::from(m)`, as `serde_json` writes it (the same text, fields
    /// in the same order), written straight into one buffer from `m`'s borrowed fields: the
    /// owned `MetaJson` and its strings were most of a write's answer.
    pub fn json_of(m: &Meta) -> Vec<u8> {
        let mut out = Vec::with_capacity(192 + m.key.as_str().len());
        write_meta_json(&mut out, m);
        out
    }
}

/// Appends [`MetaJson::json_of`]'s text to `out`.
fn write_meta_json(out: &mut Vec<u8>, m: &Meta) {
    out.extend_from_slice(b"{\"key\":");
    push_json_str(out, &[m.key.as_str()]);
    out.extend_from_slice(b",\"etag\":");
    push_json_etag(out, &m.etag);
    out.extend_from_slice(b",\"size\":");
    push_u64(out, m.size);
    out.extend_from_slice(b",\"last_modified\":\"");
    push_rfc3339(out, m.last_modified);
    out.extend_from_slice(b"\",\"expires_at\":");
    match m.expires_at {
        None => out.extend_from_slice(b"null"),
        Some(t) => {
            out.push(b'"');
            push_rfc3339(out, t);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b",\"content_type\":");
    match &m.content_type {
        None => out.extend_from_slice(b"null"),
        Some(t) => push_json_str(out, &[t]),
    }
    out.extend_from_slice(b",\"metadata\":{");
    for (i, (k, v)) in m.metadata.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, &[k]);
        out.push(b':');
        push_json_str(out, &[v]);
    }
    out.extend_from_slice(b"}}");
}

/// The pieces of one string, quoted and escaped exactly as `serde_json` does: text without a
/// byte it escapes (`"`, `\\`, controls below 0x20) goes out as it is, any other through
/// `serde_json` itself, so the two can't differ.
fn push_json_str(out: &mut Vec<u8>, parts: &[&str]) {
    if parts.iter().all(|p| json_plain(p)) {
        out.push(b'"');
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
        out.push(b'"');
    } else {
        let whole = parts.concat();
        serde_json::to_writer(&mut *out, &whole).expect("a string serializes into a Vec");
    }
}

/// Whether `s` has no byte that JSON escapes (`"`, `\\`, controls below 0x20). Checked
/// without a branch per byte, so that it vectorizes (every write's answer checks its key and
/// ETag).
fn json_plain(s: &str) -> bool {
    s.bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
}

/// An ETag's wire form (`"…"` or `W/"…"`) as a JSON string, as `serde_json` writes it: the
/// quotes escaped, the opaque value as it is when it needs no escape (a content ETag never
/// does); otherwise through [`push_json_str`]. (Through `push_json_str` alone, the quotes
/// sent every ETag to `serde_json`: a third of a write's answer.)
fn push_json_etag(out: &mut Vec<u8>, etag: &ETag) {
    let opaque = etag.opaque();
    if !json_plain(opaque) {
        return push_json_str(out, &etag.wire_parts());
    }
    let open: &[u8] = if etag.is_weak() {
        b"\"W/\\\""
    } else {
        b"\"\\\""
    };
    out.extend_from_slice(open);
    out.extend_from_slice(opaque.as_bytes());
    out.extend_from_slice(b"\\\"\"");
}

/// `n` in decimal, as `serde_json` writes an integer (with the same `itoa`).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A time the API wrote: RFC 3339 in UTC (`Z` or `+00:00`).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime> {
    let utc = match s.strip_suffix("+00:00") {
        Some(rest) => format!("{rest}Z"),
        None => s.to_owned(),
    };
    humantime::parse_rfc3339(&utc)
        .map_err(|e| Error::backend(format!("the server sent a bad time {s:?}: {e}")))
}

impl From<&Meta> for MetaJson {
    fn from(m: &Meta) -> Self {
        MetaJson {
            key: m.key.to_string(),
            etag: m.etag.to_string(),
            size: m.size,
            last_modified: rfc3339(m.last_modified),
            expires_at: m.expires_at.map(rfc3339),
            content_type: m.content_type.clone(),
            metadata: m.metadata.clone(),
        }
    }
}

impl MetaJson {
    /// The metadata, under `key` (the caller maps the wire key, e.g. removing a prefix).
    pub fn into_meta(self, key: Key) -> Result<Meta> {
        Ok(Meta {
            key,
            etag: ETag::parse(&self.etag)?,
            size: self.size,
            last_modified: parse_rfc3339(&self.last_modified)?,
            expires_at: self.expires_at.as_deref().map(parse_rfc3339).transpose()?,
            content_type: self.content_type,
            metadata: self.metadata,
        })
    }
}

/// A listing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListJson {
    /// Objects, in key order.
    #[serde(default)]
    pub objects: Vec<MetaJson>,
    /// Common prefixes under the delimiter.
    #[serde(default)]
    pub common_prefixes: Vec<String>,
    /// The cursor of the next page, or null on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

impl From<&ListPage> for ListJson {
    fn from(p: &ListPage) -> Self {
        ListJson {
            objects: p.objects.iter().map(MetaJson::from).collect(),
            common_prefixes: p.common_prefixes.clone(),
            next_cursor: p.next_cursor.clone(),
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong. Clients read the typed fields, never the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code (`not_found`, `precondition_failed`, …).
    pub code: String,
    /// For people.
    #[serde(default)]
    pub message: String,
    /// The current object, on a 412 when one exists.
    #[serde(default)]
    pub current: Option<MetaJson>,
    /// The size limit in bytes, on a 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Why the key is invalid, on a 400 `invalid_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ErrorDetail {
    /// An error with `code` and `message` and no typed fields.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            current: None,
            limit: None,
            reason: None,
        }
    }
}

/// Which write conditions a store decides atomically (see [`ConditionSupport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionsJson {
    /// `If-Match` with tags.
    pub if_match: bool,
    /// `If-Match: *`.
    pub if_match_any: bool,
    /// `If-None-Match: *`.
    pub if_none_match_any: bool,
    /// `If-None-Match` with tags.
    pub if_none_match: bool,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: bool,
}

impl From<ConditionSupport> for ConditionsJson {
    fn from(c: ConditionSupport) -> Self {
        ConditionsJson {
            if_match: c.if_match,
            if_match_any: c.if_match_any,
            if_none_match_any: c.if_none_match_any,
            if_none_match: c.if_none_match,
            if_unmodified_since: c.if_unmodified_since,
        }
    }
}

impl From<ConditionsJson> for ConditionSupport {
    fn from(c: ConditionsJson) -> Self {
        ConditionSupport {
            if_match: c.if_match,
            if_match_any: c.if_match_any,
            if_none_match_any: c.if_none_match_any,
            if_none_match: c.if_none_match,
            if_unmodified_since: c.if_unmodified_since,
        }
    }
}

/// What the server's store can do: the body of `GET /v1/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesJson {
    /// The driver serving (`fs`, `s3`, `tiered`, …).
    pub driver: String,
    /// `none`, `process`, `host` or `cluster`.
    pub atomic_scope: String,
    /// Conditions decided atomically on PUT.
    pub put_conditions: ConditionsJson,
    /// Conditions decided atomically on DELETE.
    pub delete_conditions: ConditionsJson,
    /// Whether objects can expire.
    pub ttl: bool,
    /// Whether listing groups by a delimiter.
    pub list_delimiter: bool,
    /// The largest object, in bytes, or null for no limit of the store's own.
    pub max_object_size: Option<u64>,
    /// Whether objects outlive the server's process.
    pub persistent: bool,
}

impl From<&Capabilities> for CapabilitiesJson {
    fn from(c: &Capabilities) -> Self {
        let scope = match c.atomic_scope {
            AtomicScope::None => "none",
            AtomicScope::Process => "process",
            AtomicScope::Host => "host",
            AtomicScope::Cluster => "cluster",
        };
        CapabilitiesJson {
            driver: c.name.to_owned(),
            atomic_scope: scope.to_owned(),
            put_conditions: c.put_conditions.into(),
            delete_conditions: c.delete_conditions.into(),
            ttl: c.ttl,
            list_delimiter: c.list_delimiter,
            max_object_size: c.max_object_size,
            persistent: c.persistent,
        }
    }
}

impl CapabilitiesJson {
    /// The capabilities, as a store named `name` (a client's driver name) reports them.
    pub fn into_capabilities(self, name: &'static str) -> Result<Capabilities> {
        let atomic_scope = match self.atomic_scope.as_str() {
            "none" => AtomicScope::None,
            "process" => AtomicScope::Process,
            "host" => AtomicScope::Host,
            "cluster" => AtomicScope::Cluster,
            other => {
                return Err(Error::backend(format!(
                    "the server sent an unknown atomic scope {other:?}"
                )))
            }
        };
        Ok(Capabilities {
            name,
            atomic_scope,
            put_conditions: self.put_conditions.into(),
            delete_conditions: self.delete_conditions.into(),
            ttl: self.ttl,
            list_delimiter: self.list_delimiter,
            max_object_size: self.max_object_size,
            persistent: self.persistent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_through_json() {
        let meta = Meta::sample();
        let json = serde_json::to_string(&MetaJson::from(&meta)).unwrap();
        let back: MetaJson = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key, meta.key.as_str());
        assert_eq!(back.into_meta(meta.key.clone()).unwrap(), meta);
        assert_eq!(
            parse_rfc3339("2026-11-23T08:00:00.123+00:00").unwrap(),
            parse_rfc3339("2026-11-23T08:00:00.123Z").unwrap()
        );
        assert!(parse_rfc3339("yesterday").is_err());
    }

    /// The JSON the server wrote before [`meta_json`]: an owned [`MetaJson`] with humantime's
    /// dates, through `serde_json`. [`MetaJson::json_of`] must write exactly this text.
    fn reference_json(m: &Meta) -> Vec<u8> {
        let date = |t| humantime::format_rfc3339_millis(crate::meta::renderable(t)).to_string();
        let json = MetaJson {
            key: m.key.to_string(),
            etag: m.etag.to_string(),
            size: m.size,
            last_modified: date(m.last_modified),
            expires_at: m.expires_at.map(date),
            content_type: m.content_type.clone(),
            metadata: m.metadata.clone(),
        };
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn json_of_is_serde_jsons_text() {
        let sample = Meta::sample();
        let controls: String = (0u8..0x20).map(char::from).collect();
        let odd = Meta {
            key: Key::new("\"q\"/ü\u{2028}/\u{10ffff}").unwrap(),
            etag: ETag::weak("a\\b").unwrap(),
            size: u64::MAX,
            last_modified: crate::meta::from_millis(-1),
            expires_at: Some(crate::meta::from_millis(i64::MAX)),
            content_type: Some(format!("{controls}\"\\/")),
            metadata: [
                (String::new(), String::new()),
                ("a".into(), controls.clone()),
                ("ü\"".into(), "\u{2028}\u{2029}".into()),
            ]
            .into(),
        };
        let bare = Meta {
            expires_at: None,
            content_type: None,
            metadata: BTreeMap::new(),
            size: 0,
            ..Meta::sample()
        };
        for m in [sample, odd, bare] {
            assert_eq!(
                String::from_utf8(MetaJson::json_of(&m)).unwrap(),
                String::from_utf8(reference_json(&m)).unwrap()
            );
        }
    }

    #[test]
    fn rfc3339_at_second_boundaries() {
        // One thread, one cache: each time right after the one before it, across seconds,
        // minutes, days, years and the clamped ends.
        let edges = [
            -1_000_001,
            -1,
            0,
            1,
            999,
            1000,
            59_999,
            60_000,
            86_399_999,
            86_400_000,
            951_782_399_999, // 2000-02-28T23:59:59.999Z
            951_782_400_000,
            1_767_225_599_999, // 2025-12-31T23:59:59.999Z
            1_767_225_600_000,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MAX,
        ];
        for ms in edges.iter().flat_map(|&e| [e, e.saturating_add(1), e]) {
            let t = crate::meta::from_millis(ms);
            assert_eq!(
                rfc3339(t),
                humantime::format_rfc3339_millis(crate::meta::renderable(t)).to_string(),
                "{ms}"
            );
        }
    }

    proptest::proptest! {
        /// Any time is written as humantime writes it, whatever the thread's cache held.
        #[test]
        fn rfc3339_is_humantimes(ms in proptest::num::i64::ANY, step in 0i64..3000) {
            for ms in [ms, ms.saturating_add(step), ms.saturating_sub(step)] {
                let t = crate::meta::from_millis(ms);
                proptest::prop_assert_eq!(
                    rfc3339(t),
                    humantime::format_rfc3339_millis(crate::meta::renderable(t)).to_string()
                );
            }
        }

        /// Any metadata a store can hold (any key `Key` accepts, any strings) is written as
        /// `serde_json` writes its `MetaJson`.
        #[test]
        fn json_of_matches_serde_json(
            key in "\\PC{1,40}",
            weak in proptest::bool::ANY,
            opaque in "[!#-~\u{80}-\u{10ffff}]{0,70}",
            size in proptest::num::u64::ANY,
            modified in proptest::num::i64::ANY,
            expires in proptest::option::of(proptest::num::i64::ANY),
            content_type in proptest::option::of("\\PC{0,30}|[\\x00-\\x7f]{0,30}"),
            metadata in proptest::collection::btree_map("\\PC{0,12}|[\\x00-\\x7f]{0,12}", "(?s).{0,20}", 0..4),
        ) {
            let Ok(key) = Key::new(key) else { return Ok(()) };
            let etag = if weak { ETag::weak(opaque) } else { ETag::strong(opaque) }.unwrap();
            let m = Meta {
                key,
                etag,
                size,
                last_modified: crate::meta::from_millis(modified),
                expires_at: expires.map(crate::meta::from_millis),
                content_type,
                metadata,
            };
            proptest::prop_assert_eq!(MetaJson::json_of(&m), reference_json(&m));
        }
    }

    #[test]
    fn error_fields_are_typed_and_optional() {
        let mut e = ErrorDetail::new("too_large", "too large: the limit is 10 bytes");
        e.limit = Some(10);
        let json = serde_json::to_string(&ErrorJson { error: e.clone() }).unwrap();
        assert!(!json.contains("reason"), "{json}");
        let back: ErrorJson = serde_json::from_str(&json).unwrap();
        assert_eq!(back.error, e);
        // A server that sends only code and message still parses.
        let old: ErrorJson = serde_json::from_str(r#"{"error":{"code":"x"}}"#).unwrap();
        assert_eq!(old.error, ErrorDetail::new("x", ""));
    }

    #[test]
    fn capabilities_round_trip() {
        for caps in [
            Capabilities::full("s3", AtomicScope::Cluster, true),
            Capabilities {
                delete_conditions: ConditionSupport::NONE,
                max_object_size: Some(7),
                ..Capabilities::full("fs", AtomicScope::Host, false)
            },
        ] {
            let json = serde_json::to_string(&CapabilitiesJson::from(&caps)).unwrap();
            let back: CapabilitiesJson = serde_json::from_str(&json).unwrap();
            assert_eq!(back.driver, caps.name);
            assert_eq!(back.into_capabilities(caps.name).unwrap(), caps);
        }
    }
}
