//! object_store [`Attributes`] ↔ Larder's content type and user metadata.
//!
//! `ContentType` is Larder's content type and `Metadata(name)` is the user metadata entry
//! `name`. Larder has no fields of its own for `CacheControl`, `ContentDisposition`,
//! `ContentEncoding` and `ContentLanguage`, so they are kept as user metadata under reserved
//! names ([`RESERVED_PREFIX`]`cache-control`, …), which every Larder driver and entry point
//! carries; user metadata names starting with the reserved prefix are refused. `StorageClass`
//! means nothing to Larder and is refused (`NotSupported`), as object_store asks of a store
//! that cannot keep an attribute.

use std::collections::BTreeMap;

use object_store::{Attribute, AttributeValue, Attributes, Error};

/// The prefix of the user metadata names that hold the HTTP attributes Larder has no field for.
pub const RESERVED_PREFIX: &str = "object-store.";

const HTTP_ATTRIBUTES: [(Attribute, &str); 4] = [
    (Attribute::CacheControl, "cache-control"),
    (Attribute::ContentDisposition, "content-disposition"),
    (Attribute::ContentEncoding, "content-encoding"),
    (Attribute::ContentLanguage, "content-language"),
];

/// The content type and metadata that keep `attributes`.
pub(crate) fn to_larder(
    attributes: &Attributes,
) -> Result<(Option<String>, BTreeMap<String, String>), Error> {
    let mut content_type = None;
    let mut metadata = BTreeMap::new();
    for (attribute, value) in attributes {
        let value = value.as_ref().to_owned();
        match attribute {
            Attribute::ContentType => content_type = Some(value),
            Attribute::Metadata(name) => {
                if name.starts_with(RESERVED_PREFIX) {
                    return Err(not_supported(format!(
                        "metadata name {name:?}: names starting with {RESERVED_PREFIX:?} are reserved"
                    )));
                }
                metadata.insert(name.to_string(), value);
            }
            other => match HTTP_ATTRIBUTES.iter().find(|(a, _)| a == other) {
                Some((_, name)) => {
                    metadata.insert(format!("{RESERVED_PREFIX}{name}"), value);
                }
                None => {
                    return Err(not_supported(format!(
                        "attribute {other:?}: Larder keeps no such attribute"
                    )))
                }
            },
        }
    }
    Ok((content_type, metadata))
}

/// The attributes a stored object's metadata holds.
pub(crate) fn from_larder(meta: &larder::Meta) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(ct) = &meta.content_type {
        attributes.insert(Attribute::ContentType, AttributeValue::from(ct.clone()));
    }
    for (name, value) in &meta.metadata {
        let attribute = match name.strip_prefix(RESERVED_PREFIX) {
            Some(rest) => match HTTP_ATTRIBUTES.iter().find(|(_, n)| *n == rest) {
                Some((a, _)) => a.clone(),
                // A reserved name this version does not know: served as plain metadata.
                None => Attribute::Metadata(name.clone().into()),
            },
            None => Attribute::Metadata(name.clone().into()),
        };
        attributes.insert(attribute, AttributeValue::from(value.clone()));
    }
    attributes
}

fn not_supported(msg: String) -> Error {
    Error::NotSupported { source: msg.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_attribute_larder_keeps() {
        let attributes = Attributes::from_iter([
            (Attribute::CacheControl, "max-age=604800"),
            (Attribute::ContentDisposition, "attachment"),
            (Attribute::ContentEncoding, "gzip"),
            (Attribute::ContentLanguage, "en-US"),
            (Attribute::ContentType, "text/html"),
            (Attribute::Metadata("k".into()), "v"),
        ]);
        let (content_type, metadata) = to_larder(&attributes).unwrap();
        assert_eq!(content_type.as_deref(), Some("text/html"));
        assert_eq!(metadata["object-store.content-encoding"], "gzip");
        let meta = larder::Meta {
            key: larder::Key::new("x").unwrap(),
            etag: larder::ETag::of(b""),
            size: 0,
            last_modified: std::time::SystemTime::now(),
            expires_at: None,
            content_type,
            metadata,
        };
        assert_eq!(from_larder(&meta), attributes);
    }

    #[test]
    fn refuses_what_it_cannot_keep() {
        let storage = Attributes::from_iter([(Attribute::StorageClass, "GLACIER")]);
        assert!(matches!(
            to_larder(&storage),
            Err(Error::NotSupported { .. })
        ));
        let reserved = Attributes::from_iter([(
            Attribute::Metadata("object-store.cache-control".into()),
            "x",
        )]);
        assert!(matches!(
            to_larder(&reserved),
            Err(Error::NotSupported { .. })
        ));
    }
}
