//! The `Store` trait, one options struct per operation, and what each operation returns.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;

use crate::body::{Body, ByteStream};
use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::precondition::{IfRange, Preconditions};
use crate::range::ByteRange;

/// Options of [`Store::head`].
#[derive(Clone, Debug, Default)]
pub struct HeadOptions {
    /// Conditions, evaluated as for a GET.
    pub preconditions: Preconditions,
}

/// Options of [`Store::get`].
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    /// Conditions: a failed `If-Match` is `PreconditionFailed`, a matched `If-None-Match` is
    /// `NotModified`.
    pub preconditions: Preconditions,
    /// Serve only this byte range.
    pub range: Option<ByteRange>,
    /// Serve the range only if this holds; otherwise serve the whole object.
    pub if_range: Option<IfRange>,
}

impl GetOptions {
    /// Decides a read of `current`, the object as it is in the snapshot being served: evaluates
    /// the preconditions, then `If-Range`, then resolves the range. Returns the byte range to
    /// serve (`None`: the whole object). Every driver's `get` calls this, and only this.
    pub fn evaluate(&self, current: &Meta) -> Result<Option<Range<u64>>> {
        self.preconditions.evaluate_read(current)?;
        let Some(range) = &self.range else {
            return Ok(None);
        };
        if let Some(if_range) = &self.if_range {
            if !if_range.holds(current) {
                return Ok(None);
            }
        }
        range.resolve(current.size).map(Some)
    }
}

/// Options of [`Store::put`].
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Conditions, evaluated atomically with the write: `If-None-Match: *` creates only,
    /// `If-Match` swaps.
    pub preconditions: Preconditions,
    /// Expire the object this long after the write: positive and at most
    /// [`MAX_TTL`](crate::meta::MAX_TTL) (100 years); otherwise the put is `InvalidInput`.
    pub ttl: Option<Duration>,
    /// Media type to store and serve back.
    pub content_type: Option<String>,
    /// User metadata to store and serve back.
    pub metadata: BTreeMap<String, String>,
    /// The content ETag the caller expects; a body that hashes otherwise is refused
    /// (`InvalidInput`) and nothing is stored.
    pub expected_etag: Option<ETag>,
}

/// Options of [`Store::delete`].
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Conditions, evaluated atomically with the delete.
    pub preconditions: Preconditions,
}

/// What a `get` returns: the object's metadata and its body (or the requested part of it),
/// both from the same version of the object.
pub struct GetResult {
    /// The object's metadata.
    pub meta: Meta,
    /// The bytes being served, when a range was served (`None`: the whole object).
    pub range: Option<Range<u64>>,
    /// The body.
    pub body: ByteStream,
}

impl GetResult {
    /// Reads the whole body into memory.
    pub async fn bytes(self) -> Result<bytes::Bytes> {
        crate::body::collect_stream(self.body).await
    }
}

impl std::fmt::Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What a `put` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The stored object's metadata; its `etag` is the token for the next `If-Match`.
    pub meta: Meta,
    /// Whether no object existed at the key before this write.
    pub created: bool,
}

/// A key/blob store in which every write can be a compare-and-swap.
///
/// Implementations evaluate preconditions with [`Preconditions`] (writes) and
/// [`GetOptions::evaluate`] (reads) inside the same atomic step as the operation, using the
/// backend's own primitive, and return `Unsupported` for any condition they cannot honour
/// atomically (see [`Capabilities`]). Convenience calls are in [`StoreExt`](crate::StoreExt).
///
/// The metadata of a version a `put` stores is made by [`Meta::next_version`], and by nothing
/// else, so these hold in every driver:
/// - **Last-Modified never goes backwards**: a new version's `last_modified` is never earlier than
///   that of the version it replaces (a slower writer or a clock stepped back is restamped).
/// - **Expiry arithmetic cannot overflow**: `expires_at` is `last_modified + ttl` with a TTL of
///   at most [`MAX_TTL`](crate::meta::MAX_TTL), checked; a longer one is `InvalidInput`.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// What this store can do, and how atomically.
    fn capabilities(&self) -> Capabilities;

    /// The metadata of the object at `key`.
    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta>;

    /// The object at `key`, or a range of it, as a stream.
    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult>;

    /// Writes the object at `key`, streaming `body` in. Nothing is stored unless the whole body
    /// arrived and the preconditions held.
    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult>;

    /// Deletes the object at `key` (`NotFound` if there is none).
    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()>;

    /// One page of the objects whose keys start with the prefix, in key order.
    async fn list(&self, opts: ListOptions) -> Result<ListPage>;

    /// Whether the store can serve requests now (a readiness check): its backend is reachable
    /// and answering. The default reads the metadata of [`READINESS_PROBE_KEY`] (absent is
    /// fine), which goes through the same path as a request; stores made of parts (tiers,
    /// mounts) check each part and name the one that fails with a [`PartError`].
    async fn check(&self) -> Result<()> {
        let probe = Key::new(READINESS_PROBE_KEY).expect("a valid key");
        match self.head(&probe, HeadOptions::default()).await {
            Ok(_) | Err(crate::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The key [`Store::check`] reads by default (nothing needs to exist there).
pub const READINESS_PROBE_KEY: &str = ".larder/readiness-probe";

/// The part of a composite store (a tier, a mount) whose check failed: the `source` of the
/// [`Error::Backend`](crate::Error::Backend) that [`Store::check`] returns for it.
#[derive(Debug)]
pub struct PartError {
    /// Which part, e.g. `tier 2 of 2 (redis)` or `mount "cache/" (memory)`; nested parts are
    /// joined with ` / `.
    pub part: String,
    /// Why it failed.
    pub source: crate::Error,
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.part, self.source)
    }
}

impl std::error::Error for PartError {}

impl PartError {
    /// `error`, from the part named `part`, as the error of the whole: a retryable
    /// `Backend` error when `error` is retryable (or not a backend error at all: a check
    /// that fails for another reason is still an outage of that part).
    pub fn wrap(part: impl Into<String>, error: crate::Error) -> crate::Error {
        let mut part = part.into();
        let retryable = !matches!(
            error,
            crate::Error::Backend {
                retryable: false,
                ..
            }
        );
        // A part inside a part: one error naming the path to it.
        let source = match error {
            crate::Error::Backend { source, retryable } => match source.downcast::<PartError>() {
                Ok(inner) => {
                    part = format!("{part} / {}", inner.part);
                    inner.source
                }
                Err(source) => crate::Error::Backend { source, retryable },
            },
            other => other,
        };
        crate::Error::Backend {
            source: Box::new(PartError { part, source }),
            retryable,
        }
    }
}
