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
use crate::store::{DeleteOptions, GetOptions, HeadOptions, PutOptions, Store};

/// How many times [`StoreExt::update`] reads, computes and writes before giving up: enough for
/// heavy contention, and a bound on a livelock.
pub const UPDATE_ATTEMPTS: u32 = 1000;

/// Convenience calls, implemented for every [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// The whole object and its metadata.
    async fn get_bytes(&self, key: &Key) -> Result<(Bytes, Meta)> {
        let r = self.get(key, GetOptions::default()).await?;
        let meta = r.meta.clone();
        Ok((r.bytes().await?, meta))
    }

    /// The metadata, or `None` when there is no object.
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

    /// Writes only if nothing exists at the key (`If-None-Match: *`).
    async fn create(&self, key: &Key, data: Bytes) -> Result<Meta> {
        let opts = PutOptions {
            preconditions: Preconditions::if_absent(),
            ..Default::default()
        };
        Ok(self.put(key, Body::Bytes(data), opts).await?.meta)
    }

    /// Replaces the object only if its ETag is still `expected` (`If-Match`).
    async fn swap(&self, key: &Key, expected: &ETag, data: Bytes) -> Result<Meta> {
        let opts = PutOptions {
            preconditions: Preconditions::if_match(expected.clone()),
            ..Default::default()
        };
        Ok(self.put(key, Body::Bytes(data), opts).await?.meta)
    }

    /// Deletes unconditionally.
    async fn remove(&self, key: &Key) -> Result<()> {
        self.delete(key, DeleteOptions::default()).await
    }

    /// Read-modify-write with optimistic concurrency: reads the object (or `None`), computes the
    /// new value, and writes it with `If-Match` (or `If-None-Match: *`), retrying from the read
    /// whenever another writer got there first, at most [`UPDATE_ATTEMPTS`] times. Returns the
    /// written metadata and how many attempts lost a race.
    async fn update<F>(&self, key: &Key, f: F) -> Result<(Meta, u32)>
    where
        F: FnMut(Option<&Bytes>) -> Bytes + Send,
    {
        self.update_within(key, UPDATE_ATTEMPTS, f).await
    }

    /// [`StoreExt::update`] with at most `attempts` attempts; when every one lost its race, a
    /// retryable [`Error::Backend`] saying so (nothing was written by this call).
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
