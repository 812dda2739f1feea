//! Object keys: validated once, at the edge, and trusted everywhere after.

use std::fmt;

use crate::error::{Error, Result};

/// Longest key accepted, in bytes (the S3 limit, so every backend can hold every key).
pub const MAX_KEY_LEN: usize = 1024;

/// A validated object key: a `/`-separated UTF-8 path.
///
/// A key is never empty, has no empty, `.` or `..` segment (so no leading, trailing or doubled
/// `/`), no control character and no backslash, and is at most [`MAX_KEY_LEN`] bytes. Because
/// every driver receives only `Key`s, no driver can be asked to touch a path outside its root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Validates `key` and wraps it.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        match check(&key) {
            Ok(()) => Ok(Key(key)),
            Err(reason) => Err(Error::InvalidKey { key, reason }),
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether this key lies under `prefix` (plain string prefix, as listing uses it).
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix)
    }

    /// The owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Every reason [`Error::InvalidKey`] gives for a key Larder refuses, so that a reason received
/// as text (from a Larder server) maps back to the same value.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
const REASONS: &[&str] = &[
    "key is empty",
    "key is longer than 1024 bytes",
    "key contains a control character",
    "key contains a backslash",
    "key has an empty segment (leading, trailing or doubled '/')",
    "key has a '.' or '..' segment",
    "prefix is only '/'",
    "key is not UTF-8 once percent-decoded",
];

/// The reason among [`REASONS`] equal to `reason`.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn known_reason(reason: &str) -> Option<&'static str> {
    REASONS.iter().copied().find(|r| *r == reason)
}

/// Why a key is invalid, or `Ok` when it is valid.
fn check(key: &str) -> std::result::Result<(), &'static str> {
    if key.is_empty() {
        return Err("key is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("key is longer than 1024 bytes");
    }
    if key.chars().any(char::is_control) {
        return Err("key contains a control character");
    }
    if key.contains('\\') {
        return Err("key contains a backslash");
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("key has an empty segment (leading, trailing or doubled '/')"),
            "." | ".." => return Err("key has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Validates a listing prefix: empty, or a key-like string that may end in `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if body.is_empty() {
        return Err(Error::InvalidKey {
            key: prefix.to_owned(),
            reason: "prefix is only '/'",
        });
    }
    // The last segment of a prefix may be partial ("a/b" matches "a/bc"), but "." and ".."
    // segments never name anything, so they are refused like in keys.
    check(body).map_err(|reason| Error::InvalidKey {
        key: prefix.to_owned(),
        reason,
    })
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Keys order and compare exactly as their strings do, so maps keyed by `Key` can be searched
/// by `&str` (listing ranges).
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Key {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        Key::new(value)
    }
}

impl TryFrom<String> for Key {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Key::new(value)
    }
}

impl std::str::FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Key::new(s)
    }
}

/// Keys [`Key::new`] refuses, one of each fault (empty, path escapes, empty segments, control
/// characters, backslash): for its tests and the conformance kit's.
#[cfg(any(test, feature = "conformance"))]
pub(crate) const INVALID_EXAMPLES: &[&str] = &[
    "",
    "../../etc/passwd",
    "a/./b",
    "a/../b",
    "..",
    ".",
    "/abs",
    "trailing/",
    "a//b",
    "nul\0byte",
    "new\nline",
    "back\\slash",
    "del\u{7f}",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "a",
            "a/b/c",
            "with space/ü/日本",
            "a.b/..c/c..",
            ".hidden/x",
            "x".repeat(1024).as_str(),
        ] {
            assert_eq!(Key::new(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn refuses_escapes_and_garbage() {
        for k in INVALID_EXAMPLES {
            let r = Key::new(*k);
            assert!(matches!(r, Err(Error::InvalidKey { .. })), "{k:?}: {r:?}");
        }
        assert!(Key::new("x".repeat(1025)).is_err());
    }

    #[test]
    fn prefixes() {
        for ok in ["", "a", "a/", "a/b", "a/b/"] {
            validate_prefix(ok).unwrap();
        }
        for bad in ["/", "../", "a//", "a/../"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// No accepted key can name anything but a descendant of the root.
        #[test]
        fn valid_keys_never_escape(s in "[a-z./\\\\\u{0}-\u{1f}]{0,12}") {
            if let Ok(k) = Key::new(s.clone()) {
                prop_assert!(!k.as_str().starts_with('/'));
                prop_assert!(k.segments().all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                prop_assert!(!k.as_str().chars().any(|c| c.is_control() || c == '\\'));
            }
        }
    }

    #[test]
    fn every_reason_is_known() {
        let long = "a".repeat(MAX_KEY_LEN + 1);
        for bad in ["", long.as_str(), "a\u{7}", "a\\b", "a//b", "a/../b"] {
            match Key::new(bad) {
                Err(Error::InvalidKey { reason, .. }) => {
                    assert_eq!(known_reason(reason), Some(reason), "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(known_reason("something else"), None);
    }
}
