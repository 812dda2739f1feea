//! Convenience calls over any [`Store`], written once so drivers can't get them wrong.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::body::Body;
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::ListOptions;
use crate::meta::Meta;
use crate::precondition::Preconditions;
use crate::retry::Attempts;
use crate::store::{DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, Store};

/// How many times [`StoreExt::update`] reads, computes and writes before giving up: enough for
/// heavy contention, and a bound on a livelock.
pub const UPDATE_ATTEMPTS: u32 = 1000;

/// Convenience calls, implemented for every [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// The whole object and its metadata.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("docs/readme.txt")?;
    /// let written = store.put_bytes(&key, "hello".into()).await?;
    /// let (bytes, meta) = store.get_bytes(&key).await?;
    /// assert_eq!(bytes, "hello");
    /// assert_eq!((meta.etag, meta.size), (written.etag, 5));
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn get_bytes(&self, key: &Key) -> Result<(Bytes, Meta)> {
        let opts = GetOptions::default();
        // Without awaiting the store's read where it can answer so (no boxed future).
        let r = match self.get_now(key, &opts) {
            Some(r) => r,
            None => self.get(key, opts).await,
        };
        let GetResult { meta, body, .. } = r?;
        Ok((crate::body::collect_stream(body).await?, meta))
    }

    /// The metadata, or `None` when there is no object.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("maybe")?;
    /// assert!(store.stat(&key).await?.is_none());
    /// store.put_bytes(&key, "x".into()).await?;
    /// assert_eq!(store.stat(&key).await?.map(|m| m.size), Some(1));
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn stat(&self, key: &Key) -> Result<Option<Meta>> {
        match self.head(key, HeadOptions::default()).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes unconditionally.
    async fn put_bytes(&self, key: &Key, data: Bytes) -> Result<Meta> {
        Ok(self
            .put(key, Body::Bytes(data), PutOptions::default())
            .await?
            .meta)
    }

    /// Writes only if nothing exists at the key (`If-None-Match: *`): of several writers
    /// racing to create, exactly one wins.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Error, Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let lock = Key::new("locks/nightly-job")?;
    /// let mine = store.create(&lock, "worker-1".into()).await?;
    /// match store.create(&lock, "worker-2".into()).await {
    ///     // The loser learns who holds it.
    ///     Err(Error::PreconditionFailed { current }) => assert_eq!(current.unwrap().etag, mine.etag),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn create(&self, key: &Key, data: Bytes) -> Result<Meta> {
        let opts = PutOptions {
            preconditions: Preconditions::if_absent(),
            ..Default::default()
        };
        Ok(self.put(key, Body::Bytes(data), opts).await?.meta)
    }

    /// Replaces the object only if its ETag is still `expected` (`If-Match`): a
    /// compare-and-swap on the content ETag.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Error, Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("config.json")?;
    /// let v1 = store.put_bytes(&key, r#"{"replicas":1}"#.into()).await?;
    /// let v2 = store.swap(&key, &v1.etag, r#"{"replicas":2}"#.into()).await?;
    /// // A second writer that also read v1 is refused, and nothing is written.
    /// let stale = store.swap(&key, &v1.etag, r#"{"replicas":9}"#.into()).await;
    /// assert!(matches!(stale, Err(Error::PreconditionFailed { .. })));
    /// assert_eq!(store.get_bytes(&key).await?.1.etag, v2.etag);
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn swap(&self, key: &Key, expected: &ETag, data: Bytes) -> Result<Meta> {
        let opts = PutOptions {
            preconditions: Preconditions::if_match(expected.clone()),
            ..Default::default()
        };
        Ok(self.put(key, Body::Bytes(data), opts).await?.meta)
    }

    /// Deletes unconditionally (`NotFound` when there is nothing to delete).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Error, Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("tmp/scratch")?;
    /// store.put_bytes(&key, "x".into()).await?;
    /// store.remove(&key).await?;
    /// assert!(matches!(store.remove(&key).await, Err(Error::NotFound { .. })));
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn remove(&self, key: &Key) -> Result<()> {
        self.delete(key, DeleteOptions::default()).await
    }

    /// Read-modify-write with optimistic concurrency: reads the object (or `None`), computes the
    /// new value, and writes it with `If-Match` (or `If-None-Match: *`), retrying from the read
    /// whenever another writer got there first, at most [`UPDATE_ATTEMPTS`] times. Returns the
    /// written metadata and how many attempts lost a race.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let counter = Key::new("stats/visits")?;
    /// for _ in 0..3 {
    ///     store
    ///         .update(&counter, |current| {
    ///             let n: u64 = current.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
    ///             Bytes::from((n + 1).to_string())
    ///         })
    ///         .await?;
    /// }
    /// assert_eq!(store.get_bytes(&counter).await?.0, "3");
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn update<F>(&self, key: &Key, f: F) -> Result<(Meta, u32)>
    where
        F: FnMut(Option<&Bytes>) -> Bytes + Send,
    {
        self.update_within(key, UPDATE_ATTEMPTS, f).await
    }

    /// [`StoreExt::update`] with at most `attempts` attempts; when every one lost its race, a
    /// retryable [`Error::Backend`] saying so (nothing was written by this call).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// let key = Key::new("journal")?;
    /// // At most 5 attempts: under heavy contention, give up and let the caller decide.
    /// let (meta, lost) = store
    ///     .update_within(&key, 5, |current| {
    ///         let mut next = current.map(|b| b.to_vec()).unwrap_or_default();
    ///         next.extend_from_slice(b"entry\n");
    ///         Bytes::from(next)
    ///     })
    ///     .await?;
    /// assert_eq!((meta.size, lost), (6, 0));
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    async fn update_within<F>(&self, key: &Key, attempts: u32, mut f: F) -> Result<(Meta, u32)>
    where
        F: FnMut(Option<&Bytes>) -> Bytes + Send,
    {
        let budget = Attempts::new(attempts);
        for lost in budget {
            let (current, preconditions) = match self.get_bytes(key).await {
                Ok((data, meta)) => (Some(data), Preconditions::if_match(meta.etag)),
                Err(Error::NotFound { .. }) => (None, Preconditions::if_absent()),
                Err(e) => return Err(e),
            };
            let next = f(current.as_ref());
            let opts = PutOptions {
                preconditions,
                ..Default::default()
            };
            match self.put(key, Body::Bytes(next), opts).await {
                Ok(r) => return Ok((r.meta, lost)),
                Err(Error::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        budget.exhausted(format_args!(
            "{key}: every read-modify-write attempt lost its race"
        ))
    }

    /// Every object under `prefix`, following pages.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use futures::TryStreamExt;
    /// use larder::drivers::memory::MemoryStore;
    /// use larder::{Key, StoreExt};
    ///
    /// let store = MemoryStore::new();
    /// for name in ["logs/a", "logs/b", "other/c"] {
    ///     store.put_bytes(&Key::new(name)?, "x".into()).await?;
    /// }
    /// let logs: Vec<_> = store.list_all("logs/").try_collect().await?;
    /// let keys: Vec<&str> = logs.iter().map(|m| m.key.as_str()).collect();
    /// assert_eq!(keys, ["logs/a", "logs/b"]);
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    fn list_all(&self, prefix: &str) -> BoxStream<'_, Result<Meta>> {
        let start = Some(ListOptions::prefix(prefix));
        stream::unfold(start, move |state| async move {
            let opts = state?;
            match self.list(opts.clone()).await {
                Ok(page) => {
                    let next = page.next_cursor.map(|c| ListOptions {
                        cursor: Some(c),
                        ..opts
                    });
                    let items: Vec<Result<Meta>> = page.objects.into_iter().map(Ok).collect();
                    Some((stream::iter(items), next))
                }
                Err(e) => Some((stream::iter(vec![Err(e)]), None)),
            }
        })
        .flatten()
        .boxed()
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
