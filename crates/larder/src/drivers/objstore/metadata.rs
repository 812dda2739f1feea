//! Larder's metadata on a blob: one user-metadata entry named `larder` (`x-amz-meta-larder` /
//! `x-ms-meta-larder`) holding percent-encoded JSON, so any UTF-8 survives HTTP headers and
//! signing. The key and size are not repeated there (the blob has both), which keeps the entry
//! well under S3's 2 KiB user-metadata limit. A unique write id in it tells a write that landed
//! from an equal one by another writer (see [`super::guard`]).

use object_store::{Attribute, AttributeValue, Attributes};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::meta::{Meta, StoredMeta};

/// The user-metadata entry holding Larder's metadata.
pub(crate) const META_ATTR: &str = "larder";

/// An id no other write (in this or another process) uses.
pub(crate) fn write_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{nanos:x}-{n:x}", std::process::id())
}

/// The `larder` entry's value for `meta` written by `write_id`.
pub(crate) fn encode(meta: &Meta, write_id: &str) -> String {
    let stored = StoredMeta::of_blob(meta, write_id);
    let json = serde_json::to_string(&stored).expect("metadata always serializes");
    utf8_percent_encode(&json, NON_ALPHANUMERIC).to_string()
}

/// The attributes of a PUT: the `larder` entry, and the content type also as the blob's own
/// `Content-Type`, for tools reading the bucket directly.
pub(crate) fn attributes(meta: &Meta, write_id: &str) -> Attributes {
    let mut attrs = Attributes::new();
    attrs.insert(
        Attribute::Metadata(META_ATTR.into()),
        AttributeValue::from(encode(meta, write_id)),
    );
    if let Some(ct) = &meta.content_type {
        attrs.insert(Attribute::ContentType, AttributeValue::from(ct.clone()));
    }
    attrs
}

/// The `larder` entry's value among a blob's attributes.
pub(crate) fn entry(attrs: &Attributes) -> Option<&str> {
    attrs
        .get(&Attribute::Metadata(META_ATTR.into()))
        .map(|v| v.as_ref())
}

/// Larder's metadata from the `larder` entry's value (`None`: a foreign blob) and the blob's
/// size, with the id of the write that made it.
pub(crate) fn decode(key: &Key, size: u64, value: Option<&str>) -> Result<Option<(Meta, String)>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let corrupt = |e: &dyn std::fmt::Display| {
        Error::backend(format!("{key}: corrupt Larder metadata on the blob: {e}"))
    };
    let json = percent_decode_str(value)
        .decode_utf8()
        .map_err(|e| corrupt(&e))?;
    let mut s: StoredMeta = serde_json::from_str(&json).map_err(|e| corrupt(&e))?;
    let write_id = std::mem::take(&mut s.write_id);
    Ok(Some((s.into_meta(key.clone(), size), write_id)))
}

/// The error for a blob without the `larder` entry.
pub(crate) fn foreign(key: &Key) -> Error {
    Error::backend(format!(
        "{key}: the blob has no Larder metadata (written by another tool); Larder does not \
         serve or overwrite it conditionally"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta::sample()
    }

    #[test]
    fn round_trips_any_utf8_as_a_plain_ascii_header_value() {
        let meta = sample();
        let value = encode(&meta, "w1");
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'%'),
            "{value}"
        );
        let (back, id) = decode(&meta.key, 1, Some(&value)).unwrap().unwrap();
        assert_eq!((back, id.as_str()), (meta, "w1"));
    }

    #[test]
    fn size_comes_from_the_blob_and_the_content_type_is_also_the_blobs() {
        let meta = sample();
        let attrs = attributes(&meta, "w");
        let (back, _) = decode(&meta.key, 7, entry(&attrs)).unwrap().unwrap();
        assert_eq!(back.size, 7);
        assert_eq!(
            attrs.get(&Attribute::ContentType).map(|v| v.as_ref()),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn foreign_and_corrupt_entries() {
        let k = Key::new("k").unwrap();
        assert!(decode(&k, 0, None).unwrap().is_none());
        assert!(entry(&Attributes::new()).is_none());
        for bad in ["%FF", "not%20json", "%7B%7D"] {
            let e = decode(&k, 0, Some(bad)).unwrap_err();
            assert!(e.to_string().contains("corrupt Larder metadata"), "{e}");
        }
    }

    #[test]
    fn write_ids_differ() {
        let ids: std::collections::BTreeSet<_> = (0..100).map(|_| write_id()).collect();
        assert_eq!(ids.len(), 100);
    }
}
