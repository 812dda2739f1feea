//! A store that keeps nothing: writes succeed and are discarded, reads find nothing.
//! Useful to measure the cost of everything around a store, and as a disabled tier.

use async_trait::async_trait;

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// The store that keeps nothing.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use larder::drivers::null::NullStore;
/// use larder::{Error, ETag, Key, StoreExt};
///
/// let store = NullStore::from_url("null://").await?;
/// let key = Key::new("k")?;
/// let meta = store.put_bytes(&key, "hi".into()).await?;
/// assert_eq!(meta.etag, ETag::of(b"hi")); // the body was read and hashed...
/// assert!(matches!(store.get_bytes(&key).await, Err(Error::NotFound { .. }))); // ...and dropped
/// # Ok::<(), Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NullStore;

/// Settings of a [`NullStore`]: there are none.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullConfig;

impl NullConfig {
    /// From a store URL: `null://`, without options.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = crate::open::parse_store_url(url, "null store", &["null"])?;
        if let Some((k, _)) = parsed.query_pairs().next() {
            return Err(Error::InvalidInput(format!(
                "null store: unknown option {k}"
            )));
        }
        Ok(NullConfig)
    }
}

impl NullStore {
    /// The store (the same as the value `NullStore`).
    pub async fn open(_config: NullConfig) -> Result<Self> {
        Ok(NullStore)
    }

    /// From a store URL, as [`NullConfig::from_url`] reads it.
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(NullConfig::from_url(url)?).await
    }
}

#[async_trait]
impl Store for NullStore {
    fn capabilities(&self) -> Capabilities {
        // Conditions are trivially atomic: the current object is always "none".
        Capabilities {
            ttl: true,
            ..Capabilities::full("null", AtomicScope::Cluster, false)
        }
    }

    async fn head(&self, key: &Key, _opts: HeadOptions) -> Result<Meta> {
        Err(Error::not_found(key))
    }

    async fn get(&self, key: &Key, _opts: GetOptions) -> Result<GetResult> {
        Err(Error::not_found(key))
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        opts.preconditions.evaluate_write(None)?;
        // The body is still read and hashed, so the returned ETag is the real one.
        let mut reader = body.reader(None);
        while reader.next_chunk().await?.is_some() {}
        let (etag, size) = reader.finish(opts.expected_etag.as_ref())?;
        Ok(PutResult {
            meta: Meta::next_version(key, etag, size, None, &opts)?,
            created: true,
        })
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        Err(Error::not_found(key))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        Ok(ListPage::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::ETag;
    use crate::precondition::Preconditions;
    use crate::StoreExt;

    #[tokio::test]
    async fn keeps_nothing_but_answers_truthfully() {
        let k = Key::new("a").unwrap();
        let meta = NullStore.put_bytes(&k, "hi".into()).await.unwrap();
        assert_eq!(meta.etag, ETag::of(b"hi"));
        assert!(matches!(
            NullStore.get_bytes(&k).await,
            Err(Error::NotFound { .. })
        ));
        let swap = NullStore.swap(&k, &meta.etag, "x".into()).await;
        assert!(matches!(
            swap,
            Err(Error::PreconditionFailed { current: None })
        ));
        let opts = PutOptions {
            preconditions: Preconditions::if_absent(),
            ..Default::default()
        };
        assert!(
            NullStore
                .put(&k, Body::from("x"), opts)
                .await
                .unwrap()
                .created
        );
    }
}
