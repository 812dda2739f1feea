//! Object stores (S3 and Azure Blob Storage) through the `object_store` crate: the logic both
//! drivers share. [`s3`] and [`azure`] only build the backend client from a URL.
//!
//! Layout: the object at key `k` is the blob `<prefix>/k`, with Larder's metadata in one
//! user-metadata entry (`metadata`).
//!
//! The driver, by job:
//! - `metadata`: Larder's metadata on a blob, and the write id;
//! - `guard`: atomicity (cluster-wide, held by the backend): head, decide, write with the
//!   backend's own condition on the version seen, decide again on a refusal (at most
//!   [`MAX_ATTEMPTS`] times), and settle a write whose outcome is unknown by its write id. A
//!   conditional delete is the same, with `DELETE` and `If-Match`. Caveat on S3: its ETag is the
//!   MD5 of the bytes, so a concurrent rewrite with the same bytes and different Larder metadata
//!   (content type, expiry, write time) does not change it; content-ETag conditions are
//!   unaffected (same bytes, same content ETag), `If-Unmodified-Since` and expiry decisions
//!   could see the older metadata;
//! - `single`: a body up to [`MULTIPART_THRESHOLD`], held in memory and sent as one PUT;
//! - `multipart`: a larger body, hashed into a temporary file (`spool`) and uploaded in
//!   parts, the condition on the completion;
//! - `listing`: pages of keys from the backend's paginated, delimited listing, one request
//!   per page, with one head per object on the page where the listing has no metadata (S3);
//! - [`native`]: the raw requests `object_store` cannot express (guarded delete, conditional
//!   completion), signed by its own authorizers; [`s3`] and [`azure`] build the clients from a
//!   URL.
//!
//! Conditional requests are sent once: conditional PUTs through a second `object_store` client
//! with retries turned off, the raw requests by hand.
//!
//! Unsupported: conditional delete on a backend configured without it (`conditional_delete=false`
//! for S3-compatibles that ignore `If-Match` on `DELETE`), and bodies over the size limit.
//!
//! Last-Modified never goes backwards: each decision's head gives the current version's write
//! time, and the metadata written is stamped after it ([`Meta::next_version`]), so a guarded
//! write's version is never older than the one it replaced. For a multipart upload the metadata
//! travels with the upload, so it is stamped after the version seen when the upload starts: a
//! version another writer commits while the parts upload may carry a later time than the one
//! that replaces it (best effort there, as S3 itself dates a multipart object by its start).
//!
//! TTL: the expiry is in the metadata; an expired blob is absent to every read, condition and
//! listing, and is overwritten or deleted like a missing one. Nothing sweeps expired blobs
//! (use a bucket lifecycle rule for that).
//!
//! Foreign blobs (without the `larder` entry, written by other tools) are refused with a
//! backend error naming the key, and skipped by listing.
//!

#[cfg(feature = "azure")]
pub mod azure;
mod config;
mod guard;
mod listing;
mod metadata;
mod multipart;
pub mod native;
#[cfg(feature = "s3")]
pub mod s3;
mod single;
mod spool;

use std::sync::Arc;

use async_trait::async_trait;
#[cfg(any(test, feature = "test-util"))]
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attributes, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities, ConditionSupport};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::retry::Attempts;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};
pub use config::{NetworkBounds, ObjStoreOptions, Secret};
use native::{Guard, Native, NativeError};
use spool::Spool;

/// How many times a write is decided again after the backend refused it because the blob
/// changed since it was read.
pub const MAX_ATTEMPTS: u32 = 16;

/// Default largest object. Bodies over [`MULTIPART_THRESHOLD`] are spooled to a temporary file
/// before upload, so this much temporary disk space is needed per concurrent large write.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 64 * 1024 * 1024 * 1024;

/// Bodies up to this size are held in memory and sent as one PUT; larger ones are uploaded in
/// parts (when the backend has [`Native`] operations).
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// Runs between the decision and the completion request of a multipart upload.
#[cfg(any(test, feature = "test-util"))]
struct CompletionHook(Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>);

#[cfg(any(test, feature = "test-util"))]
impl std::fmt::Debug for CompletionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompletionHook")
    }
}

/// A store on any `object_store` backend whose conditional PUT (`PutMode::Create` and
/// `PutMode::Update`) is atomic on the server, as S3's and Azure's are.
#[derive(Debug)]
pub struct ObjStore {
    name: &'static str,
    inner: Arc<dyn ObjectStore>,
    /// The same backend without retries, for conditional PUTs: a conditional write whose
    /// outcome is unknown is settled by reading the blob, never by sending it again.
    writer: Arc<dyn ObjectStore>,
    /// Guarded delete and multipart upload; without it, conditional deletes are `Unsupported`
    /// and bodies are limited to one PUT.
    native: Option<Arc<dyn Native>>,
    /// Blob-name prefix, without slashes at either end; empty for the bucket root.
    prefix: String,
    max_object_size: u64,
    /// The backend's listing order once known ([`native::ListOrder`], see [`listing`]).
    list_order: std::sync::atomic::AtomicU8,
    /// Test seam, see [`ObjStore::with_before_completion`].
    #[cfg(any(test, feature = "test-util"))]
    before_completion: Option<CompletionHook>,
}

impl ObjStore {
    /// Wraps a backend. `name` is the driver name in capabilities; `prefix` is prepended (with
    /// `/`) to every key; `max_object_size` bounds the buffered body.
    pub fn new(
        name: &'static str,
        inner: Arc<dyn ObjectStore>,
        prefix: &str,
        max_object_size: u64,
    ) -> Result<Self> {
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            Key::new(prefix.as_str())
                .map_err(|e| Error::InvalidInput(format!("store prefix: {e}")))?;
        }
        Ok(ObjStore {
            name,
            writer: inner.clone(),
            inner,
            native: None,
            prefix,
            max_object_size,
            list_order: std::sync::atomic::AtomicU8::new(listing::ORDER_UNKNOWN),
            #[cfg(any(test, feature = "test-util"))]
            before_completion: None,
        })
    }

    /// Sends conditional PUTs through `writer`, a client of the same backend that does not
    /// retry (by default they go through the main client).
    pub fn with_writer(mut self, writer: Arc<dyn ObjectStore>) -> Self {
        self.writer = writer;
        self
    }

    /// Adds the backend's native operations: conditional delete and multipart upload with the
    /// condition at completion.
    pub fn with_native(mut self, native: Arc<dyn Native>) -> Self {
        self.native = Some(native);
        self
    }

    /// Test seam (feature `test-util`): `hook` runs after a multipart write is decided and
    /// before its completion is sent, so a test can change the blob in that window and see the
    /// backend refuse.
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_before_completion(
        mut self,
        hook: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        self.before_completion = Some(CompletionHook(Arc::new(hook)));
        self
    }

    /// The backend client.
    pub fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The backend's native operations (exposed for tests that check the backend's guards).
    pub fn native(&self) -> Option<&Arc<dyn Native>> {
        self.native.as_ref()
    }

    /// For the fuzz targets: the decoder of the stored `larder` entry. Not an API.
    #[doc(hidden)]
    pub fn fuzz_decode_value(
        key: &Key,
        size: u64,
        value: Option<&str>,
    ) -> Result<Option<(Meta, String)>> {
        metadata::decode(key, size, value)
    }

    /// The blob path of `key` (exposed for tests that inspect the backend).
    pub fn path(&self, key: &Key) -> Result<Path> {
        self.join(key.as_str())
    }

    fn join(&self, rest: &str) -> Result<Path> {
        let full = if self.prefix.is_empty() {
            rest.to_owned()
        } else if rest.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{rest}", self.prefix)
        };
        Path::parse(&full).map_err(|e| Error::InvalidInput(format!("blob path {full:?}: {e}")))
    }

    /// Heads the blob at `key`: its backend metadata and attributes, `None` when there is none.
    async fn stat_raw(&self, key: &Key) -> Result<Option<(ObjectMeta, Attributes)>> {
        let path = self.path(key)?;
        let opts = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        match self.inner.get_opts(&path, opts).await {
            Ok(r) => Ok(Some((r.meta, r.attributes))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// Settings of an [`ObjStore`] on a backend this crate builds the client for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ObjStoreConfig {
    /// S3 or an S3-compatible store.
    #[cfg(feature = "s3")]
    S3(s3::S3Config),
    /// Azure Blob Storage (or Azurite).
    #[cfg(feature = "azure")]
    Azure(azure::AzureConfig),
}

#[cfg(feature = "s3")]
impl From<s3::S3Config> for ObjStoreConfig {
    fn from(config: s3::S3Config) -> Self {
        ObjStoreConfig::S3(config)
    }
}

#[cfg(feature = "azure")]
impl From<azure::AzureConfig> for ObjStoreConfig {
    fn from(config: azure::AzureConfig) -> Self {
        ObjStoreConfig::Azure(config)
    }
}

impl ObjStoreConfig {
    /// From a store URL: `s3://…` ([`s3::S3Config::from_url`]) or `azure://…`
    /// ([`azure::AzureConfig::from_url`]), as far as their features are on.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            #[cfg(feature = "s3")]
            Some("s3") => Ok(s3::S3Config::from_url(url)?.into()),
            #[cfg(feature = "azure")]
            Some("azure") => Ok(azure::AzureConfig::from_url(url)?.into()),
            _ => Err(Error::unsupported(format!(
                "object store URL {url:?}: not s3:// or azure://, or its cargo feature is off"
            ))),
        }
    }
}

impl ObjStore {
    /// Opens the bucket or container in `config` (no request is made yet): an
    /// [`s3::S3Config`] or an [`azure::AzureConfig`] (see theirs for examples).
    pub async fn open(config: impl Into<ObjStoreConfig>) -> Result<Self> {
        match config.into() {
            #[cfg(feature = "s3")]
            ObjStoreConfig::S3(config) => s3::open(config),
            #[cfg(feature = "azure")]
            ObjStoreConfig::Azure(config) => azure::open(config),
        }
    }

    /// Opens the store a URL names, as [`ObjStoreConfig::from_url`] reads it.
    ///
    /// ```no_run
    /// # async fn example() -> larder::Result<()> {
    /// use larder::drivers::objstore::ObjStore;
    ///
    /// let minio = ObjStore::from_url(
    ///     "s3://my-bucket/myapp?endpoint=http://127.0.0.1:9000&allow_http=true&region=us-east-1",
    /// )
    /// .await?;
    /// let azure = ObjStore::from_url("azure://my-container/myapp?account=myaccount").await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(ObjStoreConfig::from_url(url)?).await
    }
}

/// The error of a write that lost every one of its `attempts`.
fn kept_changing<T>(attempts: Attempts, key: &Key) -> Result<T> {
    attempts.exhausted(format_args!(
        "{key}: the object kept changing; the write was not done"
    ))
}

fn not_found(key: &Key) -> Error {
    Error::NotFound {
        key: key.to_string(),
    }
}

/// Maps a backend error that is not a decision (missing, changed) to `Backend`.
fn map_err(e: object_store::Error) -> Error {
    match e {
        // Network and server errors come back as `Generic`: repeating may pass.
        object_store::Error::Generic { .. } => Error::transient(e),
        _ => Error::backend(e),
    }
}

/// Whether the backend refused a conditional write because the blob changed since it was read.
fn changed(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotFound { .. }
    )
}

#[async_trait]
impl Store for ObjStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: self.name,
            atomic_scope: AtomicScope::Cluster,
            put_conditions: ConditionSupport::ALL,
            delete_conditions: match &self.native {
                Some(n) if n.conditional_delete() => ConditionSupport::ALL,
                _ => ConditionSupport::NONE,
            },
            ttl: true,
            list_delimiter: true,
            max_object_size: Some(self.max_object_size),
            persistent: true,
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let (meta, _) = self.live(key).await?;
        opts.preconditions.evaluate_read(&meta)?;
        Ok(meta)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        let path = self.path(key)?;
        if opts.range.is_none() {
            // One GET: metadata and body come in the same response, so from the same version.
            let r = match self.inner.get_opts(&path, Default::default()).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Err(not_found(key)),
                Err(e) => return Err(map_err(e)),
            };
            let meta = metadata::decode(key, r.meta.size, metadata::entry(&r.attributes))?
                .map(|(m, _)| m)
                .ok_or_else(|| metadata::foreign(key))?;
            if meta.is_expired() {
                return Err(not_found(key));
            }
            opts.evaluate(&meta)?;
            let body = r.into_stream().map_err(map_err).boxed();
            return Ok(GetResult {
                meta,
                range: None,
                body,
            });
        }
        // A range is decided on the metadata, then read with `If-Match` on the backend ETag
        // seen, so the bytes are of the version the decision was made on.
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let (meta, backend) = self.live(key).await?;
            let range = opts.evaluate(&meta)?;
            let get = object_store::GetOptions {
                if_match: backend.e_tag.clone(),
                range: range.clone().map(GetRange::Bounded),
                ..Default::default()
            };
            match self.inner.get_opts(&path, get).await {
                Ok(r) => {
                    return Ok(GetResult {
                        meta,
                        range,
                        body: r.into_stream().map_err(map_err).boxed(),
                    })
                }
                Err(e) if changed(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        attempts.exhausted(format_args!(
            "{key}: the object kept changing while being read"
        ))
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        // Without native multipart, everything must fit one PUT.
        let threshold = match self.native {
            Some(_) => MULTIPART_THRESHOLD,
            None => usize::try_from(self.max_object_size).unwrap_or(usize::MAX),
        };
        let (spool, etag, size) = spool::spool(
            body,
            self.max_object_size,
            threshold,
            opts.expected_etag.as_ref(),
        )
        .await?;
        // Stamped again once a decision has seen the version it replaces.
        let meta = Meta::next_version(key, etag, size, None, &opts)?;
        let this_write = metadata::write_id();
        match (&spool, &self.native) {
            (Spool::Memory(bytes), _) => {
                self.put_single(key, bytes.clone(), meta, &opts, &this_write)
                    .await
            }
            (Spool::File(_), Some(native)) => {
                self.put_multipart(native.as_ref(), key, &spool, meta, &opts, &this_write)
                    .await
            }
            (Spool::File(_), None) => Err(Error::TooLarge {
                limit: self.max_object_size,
            }),
        }
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let path = self.path(key)?;
        let Some(native) = self
            .native
            .as_ref()
            .filter(|_| !opts.preconditions.is_empty())
        else {
            // Unconditional: the head only decides `NotFound`.
            let blob = self.stat(key).await?.ok_or_else(|| not_found(key))?;
            let expired = match &blob.meta {
                Some(m) => m.is_expired(),
                None => return Err(metadata::foreign(key)),
            };
            self.inner.delete(&path).await.map_err(map_err)?;
            if expired {
                return Err(not_found(key));
            }
            return Ok(());
        };
        let attempts = Attempts::new(MAX_ATTEMPTS);
        for _ in attempts {
            let blob = self.stat(key).await?.ok_or_else(|| not_found(key))?;
            let meta = blob.meta.ok_or_else(|| metadata::foreign(key))?;
            // An expired object is absent (to conditions too); the guarded delete below only
            // removes the dead blob.
            let expired = meta.is_expired();
            if !expired {
                opts.preconditions.evaluate_write(Some(&meta))?;
            }
            let etag = blob.backend.e_tag.ok_or_else(|| {
                Error::backend(format!(
                    "{key}: the backend gave no ETag, so the delete cannot be guarded"
                ))
            })?;
            match native.delete(&path, &Guard::Match(etag)).await {
                Ok(()) if expired => return Err(not_found(key)),
                Ok(()) => return Ok(()),
                Err(NativeError::Changed | NativeError::UploadGone) if !expired => continue,
                Err(NativeError::Changed | NativeError::UploadGone) => return Err(not_found(key)),
                Err(NativeError::Failed(e)) => return Err(e),
            }
        }
        attempts.exhausted(format_args!(
            "{key}: the object kept changing; the delete was not done"
        ))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        self.list_page(&opts).await
    }
}
