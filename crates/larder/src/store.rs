//! The `Store` trait, one options struct per operation, and what each operation returns.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;

use crate::body::{Body, ByteStream};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
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

impl HeadOptions {
    /// The answer to a HEAD of `key` whose live version is `current`: its metadata, `NotFound`
    /// without one, or the failed condition (304, 412). What every driver's `head` returns.
    pub fn answer(&self, key: &Key, current: Option<Meta>) -> Result<Meta> {
        let meta = current.ok_or_else(|| Error::not_found(key))?;
        self.preconditions.evaluate_read(&meta)?;
        Ok(meta)
    }
}

/// Options of [`Store::get`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use larder::drivers::memory::MemoryStore;
/// use larder::{ByteRange, GetOptions, IfRange, Key, Store, StoreExt};
///
/// let store = MemoryStore::new();
/// let key = Key::new("video.bin")?;
/// let meta = store.put_bytes(&key, "0123456789".into()).await?;
/// // Bytes 2 to 5 inclusive (`Range: bytes=2-5`).
/// let opts = GetOptions {
///     range: Some(ByteRange::Bounded { first: 2, last: 5 }),
///     ..Default::default()
/// };
/// let part = store.get(&key, opts).await?;
/// assert_eq!(part.range, Some(2..6));
/// assert_eq!(part.bytes().await?, "2345");
/// // The last 3 bytes, but only if the object is still the version we saw (`If-Range`);
/// // otherwise the whole (new) object.
/// let opts = GetOptions {
///     range: Some(ByteRange::Suffix(3)),
///     if_range: Some(IfRange::ETag(meta.etag)),
///     ..Default::default()
/// };
/// assert_eq!(store.get(&key, opts).await?.bytes().await?, "789");
/// # Ok::<(), larder::Error>(()) }).unwrap();
/// ```
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
        self.range_of(current)
    }

    /// [`evaluate`](Self::evaluate) of a snapshot the caller gives up: a failed condition's
    /// error takes `current` rather than a copy of it.
    pub(crate) fn evaluate_owned(&self, current: Meta) -> Result<(Meta, Option<Range<u64>>)> {
        let current = self.preconditions.evaluate_read_owned(current)?;
        let range = self.range_of(&current)?;
        Ok((current, range))
    }

    /// `If-Range`, then the range, of a read whose preconditions held.
    fn range_of(&self, current: &Meta) -> Result<Option<Range<u64>>> {
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
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use larder::drivers::memory::MemoryStore;
/// use larder::{Body, Error, Key, PutOptions, Store};
///
/// let store = MemoryStore::new();
/// let key = Key::new("sessions/abc123")?;
/// let opts = PutOptions {
///     ttl: Some(Duration::from_millis(50)),
///     content_type: Some("application/json".into()),
///     metadata: [("user".to_string(), "ada".to_string())].into(),
///     ..Default::default()
/// };
/// let put = store.put(&key, Body::from(r#"{"cart":[]}"#), opts).await?;
/// assert!(put.created && put.meta.expires_at.is_some());
/// assert_eq!(put.meta.metadata["user"], "ada");
/// std::thread::sleep(Duration::from_millis(100));
/// // Expired: gone for reads, conditions and listings alike.
/// assert!(matches!(store.head(&key, Default::default()).await, Err(Error::NotFound { .. })));
/// # Ok::<(), larder::Error>(()) }).unwrap();
/// ```
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
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use larder::drivers::memory::MemoryStore;
/// use larder::{DeleteOptions, Error, Key, Preconditions, Store, StoreExt};
///
/// let store = MemoryStore::new();
/// let key = Key::new("leases/job-7")?;
/// let lease = store.put_bytes(&key, "worker-1".into()).await?;
/// store.put_bytes(&key, "worker-2".into()).await?; // someone took the lease over
/// // Release only the lease we hold: refused, the object is another version now.
/// let release = DeleteOptions { preconditions: Preconditions::if_match(lease.etag) };
/// let r = store.delete(&key, release).await;
/// assert!(matches!(r, Err(Error::PreconditionFailed { .. })));
/// # Ok::<(), larder::Error>(()) }).unwrap();
/// ```
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
    /// The answer to a GET of an object whose bytes are all at hand, `data` being the version
    /// `meta` describes: the range `opts` asks for (after its conditions), served from `data`
    /// without a copy.
    pub fn from_bytes(meta: Meta, data: bytes::Bytes, opts: &GetOptions) -> Result<GetResult> {
        let (meta, range) = opts.evaluate_owned(meta)?;
        let data = match &range {
            Some(r) => data.slice(r.start as usize..r.end as usize),
            None => data,
        };
        Ok(GetResult {
            meta,
            range,
            body: Box::pin(futures::stream::once(std::future::ready(Ok(data)))),
        })
    }

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

    /// The object at `key`, or a range of it, as a stream. A conditional read that finds the
    /// version the caller already has is `NotModified` (HTTP 304), with no body.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{ETagCondition, Error, GetOptions, Key, Preconditions, Store, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("feeds/latest.json")?;
    /// let cached = store.put_bytes(&key, "[]".into()).await?;
    /// // `If-None-Match: "<etag>"`: send the body only if it changed.
    /// let revalidate = GetOptions {
    ///     preconditions: Preconditions {
    ///         if_none_match: Some(ETagCondition::tag(cached.etag.clone())),
    ///         ..Default::default()
    ///     },
    ///     ..Default::default()
    /// };
    /// match store.get(&key, revalidate.clone()).await {
    ///     Err(Error::NotModified(meta)) => assert_eq!(meta.etag, cached.etag),
    ///     other => panic!("{other:?}"),
    /// }
    /// store.put_bytes(&key, "[1]".into()).await?;
    /// assert_eq!(store.get(&key, revalidate).await?.bytes().await?, "[1]");
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult>;

    /// The answer [`get`](Store::get) would give now, when the store can give it without
    /// awaiting anything (a store holding its objects in-process); `None` (the default) when it
    /// cannot, and then the caller asks [`get`](Store::get).
    ///
    /// An implementation that answers gives exactly what `get` would: the same result or error,
    /// decided in one atomic step (conditions evaluated on the version whose bytes are
    /// served), with the same effects (a bounded store's access order, counters). It never
    /// blocks on I/O or waits for another task, only for in-process locks held briefly.
    /// Answering is all or nothing: a store that returns `None` has had no effect.
    ///
    /// It saves a boxed future per read, so a store built on another (tiers, mounts) can ask
    /// the inner store with it first.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{GetOptions, Key, Store, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("config")?;
    /// store.put_bytes(&key, "v1".into()).await?;
    /// let opts = GetOptions::default();
    /// let r = match store.get_now(&key, &opts) {
    ///     Some(r) => r?,
    ///     None => store.get(&key, opts).await?, // a store that must await
    /// };
    /// assert_eq!(r.bytes().await?, "v1");
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    fn get_now(&self, key: &Key, opts: &GetOptions) -> Option<Result<GetResult>> {
        let _ = (key, opts);
        None
    }

    /// The whole body of `key`'s current version if its ETag is strongly `etag`, given without
    /// awaiting and without building the version's metadata, for a caller that has it already
    /// (a tiered store serving a copy it validated). Counts as a read of the object, as
    /// [`get`](Store::get) does.
    ///
    /// `None` (the default) when the store cannot answer so, or has no live version with that
    /// ETag: the caller then reads with `get_now` or `get`, which say why. Like `get_now`, a
    /// store that returns `None` has had no effect.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Key, Store, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("config")?;
    /// let v1 = store.put_bytes(&key, "v1".into()).await?;
    /// assert_eq!(store.get_version_now(&key, &v1.etag).unwrap(), "v1");
    /// store.put_bytes(&key, "v2".into()).await?;
    /// assert_eq!(store.get_version_now(&key, &v1.etag), None);
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    fn get_version_now(&self, key: &Key, etag: &ETag) -> Option<bytes::Bytes> {
        let _ = (key, etag);
        None
    }

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
/// [`Error::Backend`] that [`Store::check`] returns for it.
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
