//! The one error type. Each variant is a meaning the caller can act on, and each maps to one
//! HTTP status in the server.

use crate::meta::Meta;

/// Result with Larder's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`Store`](crate::Store) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No (unexpired) object at the key. HTTP 404.
    #[error("not found: {key}")]
    NotFound {
        /// The key that was asked for.
        key: String,
    },
    /// A read's `If-None-Match` / `If-Modified-Since` matched: the caller's copy is current.
    /// Carries the stored metadata so a 304 can repeat the validators. HTTP 304.
    #[error("not modified")]
    NotModified(Box<Meta>),
    /// A precondition was false. `current` is the object as it was when the condition was
    /// evaluated (`None` when there was none). HTTP 412.
    #[error("precondition failed")]
    PreconditionFailed {
        /// The current object, if one exists.
        current: Option<Box<Meta>>,
    },
    /// The requested range does not overlap the object. HTTP 416.
    #[error("range not satisfiable: object is {size} bytes")]
    RangeNotSatisfiable {
        /// The object's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The backend cannot do this (atomically, or at all). Never silently ignored. HTTP 501.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// The key is malformed. HTTP 400.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A malformed argument or header, or a body whose digest was not the expected one. HTTP 400.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The body is over the store's size limit. HTTP 413.
    #[error("too large: the limit is {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The backend is out of space: a full disk or file system quota, a full database. Nothing
    /// was written; the previous version, if any, is intact. HTTP 507.
    #[error("storage full: {source}")]
    StorageFull {
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed. `retryable` says whether the same call may succeed if repeated (a
    /// conditional write is only retried by callers that re-read first).
    #[error("backend error: {source}")]
    Backend {
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether repeating the call may succeed.
        retryable: bool,
    },
}

impl Error {
    /// A permanent backend failure.
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Backend {
            source: source.into(),
            retryable: false,
        }
    }

    /// A backend failure that may pass if the call is repeated.
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Backend {
            source: source.into(),
            retryable: true,
        }
    }

    /// `StorageFull` from the backend's own error.
    pub fn storage_full(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::StorageFull {
            source: source.into(),
        }
    }

    /// `NotFound` for a key.
    pub fn not_found(key: impl std::fmt::Display) -> Self {
        Error::NotFound {
            key: key.to_string(),
        }
    }

    /// `PreconditionFailed` carrying the current object.
    pub fn precondition_failed(current: Option<&Meta>) -> Self {
        Error::PreconditionFailed {
            current: current.map(|m| Box::new(m.clone())),
        }
    }

    /// `Unsupported` with a description of what was asked.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }

    /// Whether repeating the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                retryable: true,
                ..
            }
        )
    }
}

/// `e` with its chain of causes, `: `-separated, leaving out a cause whose text the message
/// already holds (reqwest's and hyper's own messages hide their causes; others repeat them).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Whether an I/O error means "no space left" (`ENOSPC`) or "quota exceeded" (`EDQUOT`).
pub fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        if is_storage_full(&e) {
            return Error::storage_full(e);
        }
        let retryable = matches!(
            e.kind(),
            Interrupted | TimedOut | WouldBlock | ConnectionReset | ConnectionAborted
        );
        Error::Backend {
            source: Box::new(e),
            retryable,
        }
    }
}
