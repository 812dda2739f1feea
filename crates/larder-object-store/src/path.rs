//! The mapping between object_store [`Path`]s and Larder [`Key`]s.
//!
//! A path's encoded string (`Path::as_ref`, the form object_store itself stores and lists) is
//! the key, verbatim, after the store's mount prefix: `Path::from_iter(["a", "b/c"])` is
//! `a/b%2Fc` in object_store and the key `a/b%2Fc` in Larder. Every Larder key is a valid
//! path (no empty, `.` or `..` segment, no control character), so `Path::parse(key)` always
//! succeeds and gives back the same string: the mapping round-trips both ways.
//!
//! The paths that are not keys are refused with [`Error::InvalidPath`]: the root (an object
//! needs a name), paths holding a backslash or a non-ASCII control character (which
//! `Path::parse` lets through but Larder keys refuse), and paths longer than Larder's
//! 1024-byte key limit (mount prefix included).

use object_store::path::{self, Path};
use object_store::Error;

use larder::Key;

/// Where a [`LarderObjectStore`](crate::LarderObjectStore)'s paths live in the Larder store:
/// at the root, or under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mount {
    /// `""`, or a valid key followed by `/`.
    prefix: String,
}

impl Mount {
    /// Paths under `prefix` (a valid key, or empty for the root).
    pub(crate) fn new(prefix: &str) -> larder::Result<Self> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Ok(Mount::default());
        }
        Key::new(prefix)?;
        Ok(Mount {
            prefix: format!("{prefix}/"),
        })
    }

    /// The mount prefix (`""` or ending in `/`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the object at `path`.
    pub(crate) fn key(&self, path: &Path) -> Result<Key, Error> {
        let raw = path.as_ref();
        if raw.is_empty() {
            return Err(invalid_path(raw, "the root path names no object"));
        }
        let mut key = String::with_capacity(self.prefix.len() + raw.len());
        key.push_str(&self.prefix);
        key.push_str(raw);
        Key::new(key).map_err(|e| match e {
            larder::Error::InvalidKey { reason, .. } => invalid_path(raw, reason),
            other => invalid_path(raw, &other.to_string()),
        })
    }

    /// The path of the object at `key` (a key this mount listed).
    pub(crate) fn path(&self, key: &str) -> Result<Path, Error> {
        let rest = key
            .strip_prefix(&self.prefix)
            .ok_or_else(|| Error::Generic {
                store: crate::STORE,
                source: format!("listed key {key:?} is outside the mount {:?}", self.prefix).into(),
            })?;
        Ok(Path::parse(rest)?)
    }

    /// The Larder listing prefix of the objects under `prefix`, segment-wise as object_store
    /// lists (`foo` lists `foo/x`, not `foo.bar/y`).
    pub(crate) fn dir_prefix(&self, prefix: Option<&Path>) -> Result<String, Error> {
        match prefix.filter(|p| !p.as_ref().is_empty()) {
            None => Ok(self.prefix.clone()),
            Some(p) => Ok(format!("{}/", self.key(p)?)),
        }
    }

    /// The Larder listing prefix for a raw string prefix (not segment-wise: `fo` lists `foo/x`).
    pub(crate) fn raw_prefix(&self, prefix: &str) -> Result<String, Error> {
        let full = format!("{}{prefix}", self.prefix);
        larder::key::validate_prefix(&full).map_err(|e| match e {
            larder::Error::InvalidKey { reason, .. } => invalid_path(prefix, reason),
            other => invalid_path(prefix, &other.to_string()),
        })?;
        Ok(full)
    }
}

/// `InvalidPath` for a path that is not a Larder key, saying why.
pub(crate) fn invalid_path(raw: &str, reason: &str) -> Error {
    Error::InvalidPath {
        source: path::Error::InvalidPath {
            path: format!("{raw} (not a Larder key: {reason})").into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_are_keys_verbatim() {
        let root = Mount::default();
        for (path, key) in [
            (Path::from("a/b.parquet"), "a/b.parquet"),
            (
                Path::from_iter(["a", "b/c", "foo.file"]),
                "a/b%2Fc/foo.file",
            ),
            (
                Path::parse("%48%45%4C%4C%4F/x").unwrap(),
                "%48%45%4C%4C%4F/x",
            ),
            // `Path::from` percent-encodes non-ASCII; `Path::parse` takes it as it is.
            (
                Path::from("🙀/😀.parquet"),
                "%F0%9F%99%80/%F0%9F%98%80.parquet",
            ),
            (Path::parse("🙀/😀.parquet").unwrap(), "🙀/😀.parquet"),
            (Path::from("I'm a < & weird path"), "I'm a %3C & weird path"),
        ] {
            let k = root.key(&path).unwrap();
            assert_eq!(k.as_str(), key);
            assert_eq!(root.path(k.as_str()).unwrap(), path);
        }
        let mounted = Mount::new("tenants/t1/").unwrap();
        let k = mounted.key(&Path::from("a/b")).unwrap();
        assert_eq!(k.as_str(), "tenants/t1/a/b");
        assert_eq!(mounted.path(k.as_str()).unwrap(), Path::from("a/b"));
        assert!(mounted.path("tenants/t2/a").is_err());
        assert_eq!(mounted.dir_prefix(None).unwrap(), "tenants/t1/");
        assert_eq!(
            mounted.dir_prefix(Some(&Path::from("a"))).unwrap(),
            "tenants/t1/a/"
        );
        assert_eq!(mounted.raw_prefix("fo").unwrap(), "tenants/t1/fo");
        assert!(Mount::new("../x").is_err());
    }

    #[test]
    fn paths_that_are_not_keys_are_invalid_paths() {
        let root = Mount::default();
        for raw in ["", "a\\b", "x\u{85}y"] {
            let path = Path::parse(raw).unwrap();
            let err = root.key(&path).unwrap_err();
            assert!(matches!(err, Error::InvalidPath { .. }), "{raw:?}: {err}");
            assert!(err.to_string().contains("not a Larder key"), "{err}");
        }
        let long = Path::from("x".repeat(1025).as_str());
        assert!(matches!(root.key(&long), Err(Error::InvalidPath { .. })));
        // The mount prefix counts towards the key limit.
        let fits = Path::from("x".repeat(1021).as_str());
        assert!(root.key(&fits).is_ok());
        assert!(
            Mount::new("mnt").unwrap().key(&fits).is_err(),
            "mnt/ + 1021 bytes"
        );
    }

    proptest! {
        /// Every key maps to a path whose string is the key, and back.
        #[test]
        fn keys_round_trip(s in "[a-z%.~<>|#{}*? 😀\u{85}\\\\/]{1,24}") {
            if let Ok(key) = Key::new(s.clone()) {
                let path = Path::parse(key.as_str()).expect("every key is a path");
                prop_assert_eq!(path.as_ref(), key.as_str());
                prop_assert_eq!(Mount::default().key(&path).unwrap(), key);
            }
        }

        /// Every path built from arbitrary parts maps to a key that maps back to the same path.
        #[test]
        fn paths_round_trip(parts in proptest::collection::vec("\\PC{1,8}", 1..4)) {
            let path = Path::from_iter(parts.iter().map(String::as_str));
            match Mount::default().key(&path) {
                Ok(key) => prop_assert_eq!(Mount::default().path(key.as_str()).unwrap(), path),
                // Only the rules the module docs name refuse a path.
                Err(_) => prop_assert!(path.as_ref().chars().any(|c| c == '\\' || c.is_control())
                    || path.as_ref().len() > larder::key::MAX_KEY_LEN),
            }
        }
    }
}
