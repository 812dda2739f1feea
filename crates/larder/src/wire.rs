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
    // Clamped into what RFC 3339 can carry, so a stored record with an odd time is still
    // listed and described.
    humantime::format_rfc3339_millis(crate::meta::renderable(t)).to_string()
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
