//! Larder's errors as object_store's, by meaning, with the Larder error kept as the source.

use object_store::Error;

/// What the failed call was, for the one Larder error whose meaning depends on it: a failed
/// precondition is `AlreadyExists` for a create, `Precondition` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// A read, or a write with `If-Match`.
    Other,
    /// A create-only write (`If-None-Match: *`).
    Create,
}

/// Maps a Larder error on `path` (the object_store path, as the caller named it).
pub(crate) fn map(e: larder::Error, path: &str, op: Op) -> Error {
    let path = path.to_owned();
    match e {
        larder::Error::NotFound { .. } => Error::NotFound {
            path,
            source: Box::new(e),
        },
        larder::Error::NotModified(_) => Error::NotModified {
            path,
            source: Box::new(e),
        },
        larder::Error::PreconditionFailed { .. } if op == Op::Create => Error::AlreadyExists {
            path,
            source: Box::new(e),
        },
        larder::Error::PreconditionFailed { .. } => Error::Precondition {
            path,
            source: Box::new(e),
        },
        larder::Error::Unsupported { .. } => Error::NotSupported {
            source: Box::new(e),
        },
        larder::Error::InvalidKey { ref key, reason } => {
            crate::path::invalid_path(&key.clone(), reason)
        }
        // Range not satisfiable, invalid input, too large, backend failures: object_store has
        // no variant for these meanings, so they are `Generic` with Larder's error inside.
        other => Error::Generic {
            store: crate::STORE,
            source: Box::new(other),
        },
    }
}

/// A `Generic` error with a message.
pub(crate) fn generic(msg: impl Into<String>) -> Error {
    Error::Generic {
        store: crate::STORE,
        source: msg.into().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_by_meaning_and_keeps_the_source() {
        let e = map(larder::Error::not_found("k"), "p", Op::Other);
        assert!(matches!(&e, Error::NotFound { path, .. } if path == "p"));
        let e = map(larder::Error::precondition_failed(None), "p", Op::Create);
        assert!(matches!(e, Error::AlreadyExists { .. }));
        let e = map(larder::Error::precondition_failed(None), "p", Op::Other);
        assert!(matches!(e, Error::Precondition { .. }));
        let e = map(larder::Error::unsupported("x"), "p", Op::Other);
        assert!(matches!(e, Error::NotSupported { .. }));
        let e = map(larder::Error::TooLarge { limit: 7 }, "p", Op::Other);
        match e {
            Error::Generic { source, .. } => {
                let inner = source.downcast_ref::<larder::Error>().unwrap();
                assert!(matches!(inner, larder::Error::TooLarge { limit: 7 }));
            }
            other => panic!("{other}"),
        }
        let e = map(
            larder::Error::InvalidKey {
                key: "a\\b".into(),
                reason: "key contains a backslash",
            },
            "a\\b",
            Op::Other,
        );
        assert!(matches!(e, Error::InvalidPath { .. }));
    }
}
