//! Object metadata, and the one encoding of it that drivers store beside the bytes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;

/// What is known about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Where it is.
    pub key: Key,
    /// Strong content ETag (SHA-256 of the bytes).
    pub etag: ETag,
    /// Length in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: SystemTime,
    /// When it expires, if it was written with a TTL.
    pub expires_at: Option<SystemTime>,
    /// Media type given when it was written.
    pub content_type: Option<String>,
    /// User metadata given when it was written (never request headers wholesale).
    pub metadata: BTreeMap<String, String>,
}

impl Meta {
    /// Whether the object has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Whether the object has expired now.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(SystemTime::now())
    }

    /// Encodes the metadata (JSON) for drivers that store it beside the bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&StoredMeta::from(self)).expect("metadata always serializes")
    }

    /// Decodes what [`Meta::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Meta> {
        let stored: StoredMeta = serde_json::from_slice(bytes)
            .map_err(|e| Error::backend(format!("corrupt stored metadata: {e}")))?;
        stored.try_into()
    }
}

/// Milliseconds since the Unix epoch (the storage resolution of times).
pub fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The inverse of [`to_millis`].
pub fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The current time at storage resolution (whole milliseconds), so a time read back from any
/// driver equals the one returned by the write.
pub fn now_millis() -> SystemTime {
    from_millis(to_millis(SystemTime::now()))
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    key: String,
    etag: ETag,
    size: u64,
    modified_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

impl From<&Meta> for StoredMeta {
    fn from(m: &Meta) -> Self {
        StoredMeta {
            key: m.key.as_str().to_owned(),
            etag: m.etag.clone(),
            size: m.size,
            modified_ms: to_millis(m.last_modified),
            expires_ms: m.expires_at.map(to_millis),
            content_type: m.content_type.clone(),
            metadata: m.metadata.clone(),
        }
    }
}

impl TryFrom<StoredMeta> for Meta {
    type Error = Error;
    fn try_from(s: StoredMeta) -> Result<Meta> {
        Ok(Meta {
            key: Key::new(s.key)?,
            etag: s.etag,
            size: s.size,
            last_modified: from_millis(s.modified_ms),
            expires_at: s.expires_ms.map(from_millis),
            content_type: s.content_type,
            metadata: s.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips() {
        let m = Meta {
            key: Key::new("a/b").unwrap(),
            etag: ETag::of(b"x"),
            size: 1,
            last_modified: now_millis(),
            expires_at: Some(from_millis(-5)),
            content_type: Some("text/plain".into()),
            metadata: [("k".to_string(), "v".to_string())].into(),
        };
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
        assert!(m.is_expired());
    }
}
