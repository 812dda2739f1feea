//! The JSON bodies of the native API (docs/http-api.md): object metadata, listing pages, errors.

use std::collections::BTreeMap;
use std::time::SystemTime;

use larder::{ListPage, Meta};
use serde::Serialize;

/// An object's metadata: the body of a PUT's response, a listing entry, `current` in a 412.
#[derive(Debug, Serialize)]
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
    pub expires_at: Option<String>,
    /// The stored media type, or null.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Clamped into what RFC 3339 can carry first, so a stored record with an odd time is still
/// listed and described.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(larder::meta::renderable(t)).to_string()
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

/// A listing page.
#[derive(Debug, Serialize)]
pub struct ListJson {
    /// Objects, in key order.
    pub objects: Vec<MetaJson>,
    /// Common prefixes under the delimiter.
    pub common_prefixes: Vec<String>,
    /// The cursor of the next page, or null on the last.
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
#[derive(Debug, Serialize)]
pub struct ErrorJson {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// A stable code (`not_found`, `precondition_failed`, …).
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The current object, on a 412 when one exists.
    pub current: Option<MetaJson>,
}
