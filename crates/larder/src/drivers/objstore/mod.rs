//! Object stores (S3 and Azure Blob Storage) through the `object_store` crate: the logic both
//! drivers share. [`s3`] and [`azure`] only build the backend client from a URL.
//!
//! Layout: the object at key `k` is the blob `<prefix>/k`. Larder's metadata (content ETag,
//! write time, expiry, content type, user metadata) is one user-metadata entry named `larder`
//! (`x-amz-meta-larder` / `x-ms-meta-larder`): percent-encoded JSON, so any UTF-8 survives
//! HTTP headers and signing. The key and size are not repeated there (the blob has both), which
//! keeps the entry well under S3's 2 KiB user-metadata limit.
//!
//! Atomicity (cluster-wide, held by the backend): a write heads the blob (backend ETag and
//! Larder metadata), decides with [`Preconditions::evaluate_write`], and then writes with the
//! backend's own condition: `If-None-Match: *` when there was no blob, `If-Match: <backend
//! ETag>` when there was one. If the blob changed in between, the backend answers 412/409 and
//! the write is decided again from a fresh head (at most [`MAX_ATTEMPTS`] times); no write after
//! a head is ever unguarded. A conditional delete is the same: head, decide, then `DELETE` with
//! `If-Match: <backend ETag>`. Caveat on S3: its ETag is the MD5 of the bytes, so a concurrent
//! rewrite with the same bytes and different Larder metadata (content type, expiry, write time)
//! does not change it; content-ETag conditions are unaffected (same bytes, same content ETag),
//! `If-Unmodified-Since` and expiry decisions could see the older metadata.
//!
//! Large bodies: up to [`MULTIPART_THRESHOLD`] a body is held in memory and sent as one PUT.
//! Beyond it, the body is hashed into a temporary file ([`spool`]), uploaded in parts, and the
//! condition goes on the completion (S3 `CompleteMultipartUpload`, Azure `Put Block List`), the
//! one request that makes the parts the blob. A refused completion is decided again and
//! completed again with the new guard, without uploading the parts again (unless the backend
//! dropped them).
//!
//! Conditional requests are sent once: conditional PUTs through a second `object_store` client
//! with retries turned off, the raw requests ([`native`]) by hand. When the outcome is unknown
//! (a timeout, a 5xx), the blob tells whether this write landed (a unique write id in the
//! metadata entry); the write is never sent again blindly. A refusal that turns out to answer a
//! write of ours that landed (a retry below us) is also recognised by the write id.
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
//! Listing: on Azure, List Blobs returns each blob's metadata, so a page of up to 5,000 blobs is
//! one request. S3's listing has no user metadata, so every listed blob is headed: one request
//! per object on the page, run 16 at a time.

#[cfg(feature = "azure")]
pub mod azure;
pub mod native;
#[cfg(feature = "s3")]
pub mod s3;
mod spool;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMode, PutPayload, UpdateVersion,
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities, ConditionSupport};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::{from_millis, to_millis, Meta};
use crate::precondition::Preconditions;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};
use native::{BlobHeaders, Guard, Native, NativeError};
use spool::Spool;

/// How many times a write is decided again after the backend refused it because the blob
/// changed since it was read.
pub const MAX_ATTEMPTS: usize = 16;

/// Default largest object. Bodies over [`MULTIPART_THRESHOLD`] are spooled to a temporary file
/// before upload, so this much temporary disk space is needed per concurrent large write.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 64 * 1024 * 1024 * 1024;

/// Bodies up to this size are held in memory and sent as one PUT; larger ones are uploaded in
/// parts (when the backend has [`Native`] operations).
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// Smallest part of a multipart upload (S3 wants at least 5 MiB for all but the last).
const MIN_PART_SIZE: u64 = MULTIPART_THRESHOLD as u64;

/// Most parts in one upload (S3's limit; Azure allows 50,000 blocks).
const MAX_PARTS: u64 = 10_000;

/// Parts uploaded concurrently: memory per large write is about this many parts.
const PARTS_IN_FLIGHT: usize = 4;

/// The user-metadata entry holding Larder's metadata.
const META_ATTR: &str = "larder";

/// Heads run concurrently while listing.
const LIST_HEADS: usize = 16;

/// Runs between the decision and the completion request of a multipart upload.
type CompletionHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A store on any `object_store` backend whose conditional PUT (`PutMode::Create` and
/// `PutMode::Update`) is atomic on the server, as S3's and Azure's are.
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
    before_completion: Option<CompletionHook>,
}

impl std::fmt::Debug for ObjStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjStore")
            .field("name", &self.name)
            .field("inner", &self.inner)
            .field("native", &self.native)
            .field("prefix", &self.prefix)
            .field("max_object_size", &self.max_object_size)
            .finish_non_exhaustive()
    }
}

/// What a fresh head decided about a guarded write.
enum Decision {
    /// This write already landed (a refusal answered a retry of it); `created` as first decided.
    Landed { created: bool },
    /// Write with this guard.
    Write {
        guard: Guard,
        /// The backend version beside the ETag (for `object_store`'s `UpdateVersion`).
        version: Option<String>,
        created: bool,
        /// The Last-Modified of the version the write would replace (for
        /// [`Meta::next_version`]).
        replaces: Option<SystemTime>,
    },
}

/// A multipart upload whose parts are all uploaded.
struct Upload {
    id: String,
    parts: Vec<PartId>,
    /// The body's size.
    size: u64,
}

/// Larder's metadata as stored in the `larder` entry.
#[derive(Serialize, Deserialize)]
struct Stored {
    etag: ETag,
    modified_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    /// Unique per write: tells a write that landed from an equal one by another writer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    write_id: String,
}

/// A blob as a head saw it: the backend's view, and Larder's metadata (`None`: foreign blob).
struct Blob {
    backend: ObjectMeta,
    meta: Option<Meta>,
    write_id: String,
}

/// An id no other write (in this or another process) uses.
fn write_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{nanos:x}-{n:x}", std::process::id())
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

    /// Test seam: `hook` runs after a multipart write is decided and before its completion is
    /// sent, so a test can change the blob in that window and see the backend refuse.
    #[doc(hidden)]
    pub fn with_before_completion(
        mut self,
        hook: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        self.before_completion = Some(Arc::new(hook));
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

    /// The key of a listed blob, if it lies under the prefix.
    fn key_of(&self, location: &str) -> Option<Key> {
        let s = location;
        let rest = if self.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
        };
        Key::new(rest).ok()
    }

    /// The `larder` metadata entry's value for `meta` written by `write_id`.
    fn meta_value(meta: &Meta, write_id: &str) -> String {
        let stored = Stored {
            etag: meta.etag.clone(),
            modified_ms: to_millis(meta.last_modified),
            expires_ms: meta.expires_at.map(to_millis),
            content_type: meta.content_type.clone(),
            metadata: meta.metadata.clone(),
            write_id: write_id.to_owned(),
        };
        let json = serde_json::to_string(&stored).expect("metadata always serializes");
        utf8_percent_encode(&json, NON_ALPHANUMERIC).to_string()
    }

    fn attributes(meta: &Meta, write_id: &str) -> Attributes {
        let mut attrs = Attributes::new();
        attrs.insert(
            Attribute::Metadata(META_ATTR.into()),
            AttributeValue::from(Self::meta_value(meta, write_id)),
        );
        if let Some(ct) = &meta.content_type {
            // Also the blob's own Content-Type, for tools reading the bucket directly.
            attrs.insert(Attribute::ContentType, AttributeValue::from(ct.clone()));
        }
        attrs
    }

    /// Larder's metadata of a blob, `None` if it has none.
    fn decode(key: &Key, backend: &ObjectMeta, attrs: &Attributes) -> Result<Option<Meta>> {
        Ok(Self::decode_write(key, backend, attrs)?.map(|(m, _)| m))
    }

    /// Larder's metadata of a blob and the id of the write that made it.
    fn decode_write(
        key: &Key,
        backend: &ObjectMeta,
        attrs: &Attributes,
    ) -> Result<Option<(Meta, String)>> {
        let value = attrs.get(&Attribute::Metadata(META_ATTR.into()));
        Self::decode_value(key, backend.size, value.map(|v| v.as_ref()))
    }

    /// Larder's metadata from the `larder` entry's value (`None`: a foreign blob) and the
    /// blob's size, with the id of the write that made it.
    fn decode_value(key: &Key, size: u64, value: Option<&str>) -> Result<Option<(Meta, String)>> {
        let Some(value) = value else {
            return Ok(None);
        };
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::backend(format!("{key}: corrupt Larder metadata on the blob: {e}"))
        };
        let json = percent_decode_str(value)
            .decode_utf8()
            .map_err(|e| corrupt(&e))?;
        let s: Stored = serde_json::from_str(&json).map_err(|e| corrupt(&e))?;
        let meta = Meta {
            key: key.clone(),
            etag: s.etag,
            size,
            last_modified: from_millis(s.modified_ms),
            expires_at: s.expires_ms.map(from_millis),
            content_type: s.content_type,
            metadata: s.metadata,
        };
        Ok(Some((meta, s.write_id)))
    }

    /// For the fuzz targets: [`ObjStore::decode_value`]. Not an API.
    #[doc(hidden)]
    pub fn fuzz_decode_value(
        key: &Key,
        size: u64,
        value: Option<&str>,
    ) -> Result<Option<(Meta, String)>> {
        Self::decode_value(key, size, value)
    }

    fn foreign(key: &Key) -> Error {
        Error::backend(format!(
            "{key}: the blob has no Larder metadata (written by another tool); Larder does not \
             serve or overwrite it conditionally"
        ))
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

    /// Heads the blob at `key`: `None` when there is none.
    async fn stat(&self, key: &Key) -> Result<Option<Blob>> {
        match self.stat_raw(key).await? {
            Some((backend, attrs)) => {
                let decoded = Self::decode_write(key, &backend, &attrs)?;
                let (meta, write_id) = match decoded {
                    Some((m, id)) => (Some(m), id),
                    None => (None, String::new()),
                };
                Ok(Some(Blob {
                    backend,
                    meta,
                    write_id,
                }))
            }
            None => Ok(None),
        }
    }

    /// The live (unexpired, Larder-written) object at `key`, with its backend view.
    async fn live(&self, key: &Key) -> Result<(Meta, ObjectMeta)> {
        let blob = self.stat(key).await?.ok_or_else(|| not_found(key))?;
        let meta = blob.meta.ok_or_else(|| Self::foreign(key))?;
        if meta.is_expired() {
            return Err(not_found(key));
        }
        Ok((meta, blob.backend))
    }

    /// The metadata of a listed blob, `None` when it vanished, is foreign or has expired.
    async fn list_entry(&self, key: Key) -> Result<Option<Meta>> {
        let Some((backend, attrs)) = self.stat_raw(&key).await? else {
            return Ok(None);
        };
        // A blob with unreadable metadata is skipped like a foreign one; backend failures are
        // not (a listing must not silently come back short).
        match Self::decode(&key, &backend, &attrs) {
            Ok(Some(meta)) if !meta.is_expired() => Ok(Some(meta)),
            Ok(_) | Err(_) => Ok(None),
        }
    }
}

impl ObjStore {
    /// Decides a guarded write from a fresh head. `refused` is `created` of the last attempt
    /// the backend refused, if any: if a layer below us retried a write that landed, the
    /// refusal answered the retry.
    async fn decide(
        &self,
        key: &Key,
        preconditions: &Preconditions,
        this_write: &str,
        refused: Option<bool>,
    ) -> Result<Decision> {
        let Some(blob) = self.stat(key).await? else {
            preconditions.evaluate_write(None)?;
            return Ok(Decision::Write {
                guard: Guard::Absent,
                version: None,
                created: true,
                replaces: None,
            });
        };
        let m = blob.meta.ok_or_else(|| Self::foreign(key))?;
        if let Some(created) = refused.filter(|_| blob.write_id == this_write) {
            return Ok(Decision::Landed { created });
        }
        let current = (!m.is_expired()).then_some(&m);
        preconditions.evaluate_write(current)?;
        let etag = blob.backend.e_tag.ok_or_else(|| {
            Error::backend(format!(
                "{key}: the backend gave no ETag, so the write cannot be guarded"
            ))
        })?;
        Ok(Decision::Write {
            guard: Guard::Match(etag),
            version: blob.backend.version,
            created: current.is_none(),
            replaces: Some(m.last_modified),
        })
    }

    /// Whether a live object or a foreign blob is at `key` (for `created` of unguarded writes),
    /// and the Last-Modified of the Larder version there (for [`Meta::next_version`]).
    async fn occupied(&self, key: &Key) -> Result<(bool, Option<SystemTime>)> {
        Ok(match self.stat(key).await? {
            Some(Blob { meta: Some(m), .. }) => (!m.is_expired(), Some(m.last_modified)),
            Some(Blob { meta: None, .. }) => (true, None),
            None => (false, None),
        })
    }

    /// `meta` stamped again by [`Meta::next_version`], as the successor of a version last
    /// modified at `replaces`.
    fn restamp(meta: Meta, replaces: Option<SystemTime>, opts: &PutOptions) -> Result<Meta> {
        Meta::next_version(&meta.key, meta.etag, meta.size, replaces, opts)
    }

    /// After a guarded write failed with `error`: when the outcome may be unknown (a timeout, a
    /// 5xx), the blob tells whether this write landed (its write id). The write is never sent
    /// again blindly; if it did not land, the error says the outcome was uncertain.
    async fn settle(&self, key: &Key, this_write: &str, error: Error) -> Result<()> {
        if !error.is_retryable() {
            return Err(error);
        }
        match self.stat(key).await {
            Ok(Some(blob)) if blob.write_id == this_write => Ok(()),
            _ => Err(Error::transient(format!(
                "{key}: the write's outcome is unknown and it is not the current object \
                 (not written, or overwritten since): {error}"
            ))),
        }
    }

    /// A body held in memory: one PUT, guarded by the backend's condition.
    async fn put_single(
        &self,
        key: &Key,
        bytes: bytes::Bytes,
        meta: Meta,
        opts: &PutOptions,
        this_write: &str,
    ) -> Result<PutResult> {
        let path = self.path(key)?;
        let payload = PutPayload::from(bytes);
        let put = |meta: &Meta, mode: PutMode| object_store::PutOptions {
            mode,
            attributes: Self::attributes(meta, this_write),
            ..Default::default()
        };
        let mut meta = meta;

        if opts.preconditions.is_empty() {
            // Unconditional: the head only tells `created` and the time not to stamp before,
            // which are therefore informative, not atomic with the write.
            let (existed, replaces) = self.occupied(key).await?;
            meta = Self::restamp(meta, replaces, opts)?;
            self.inner
                .put_opts(&path, payload, put(&meta, PutMode::Overwrite))
                .await
                .map_err(map_err)?;
            return Ok(PutResult {
                meta,
                created: !existed,
            });
        }

        // Create-only is tried directly first: when the key is free, no head is needed.
        let mut try_create = opts.preconditions == Preconditions::if_absent();
        let mut refused: Option<bool> = None;
        for _ in 0..MAX_ATTEMPTS {
            let (mode, created) = if std::mem::take(&mut try_create) {
                (PutMode::Create, true)
            } else {
                match self
                    .decide(key, &opts.preconditions, this_write, refused)
                    .await?
                {
                    Decision::Landed { created } => return Ok(PutResult { meta, created }),
                    Decision::Write {
                        guard: Guard::Match(e_tag),
                        version,
                        created,
                        replaces,
                    } => {
                        meta = Self::restamp(meta, replaces, opts)?;
                        (
                            PutMode::Update(UpdateVersion {
                                e_tag: Some(e_tag),
                                version,
                            }),
                            created,
                        )
                    }
                    Decision::Write { created, .. } => (PutMode::Create, created),
                }
            };
            match self
                .writer
                .put_opts(&path, payload.clone(), put(&meta, mode))
                .await
            {
                Ok(_) => return Ok(PutResult { meta, created }),
                Err(e) if changed(&e) => refused = Some(created),
                Err(e) => {
                    return self
                        .settle(key, this_write, map_err(e))
                        .await
                        .map(|()| PutResult { meta, created })
                }
            }
        }
        Err(kept_changing(key))
    }

    /// A spooled body: a multipart upload, the condition on its completion.
    async fn put_multipart(
        &self,
        native: &dyn Native,
        key: &Key,
        spool: &Spool,
        meta: Meta,
        opts: &PutOptions,
        this_write: &str,
    ) -> Result<PutResult> {
        let path = self.path(key)?;
        // Fail before uploading gigabytes; the decision that counts is the one at completion.
        // The metadata travels with the upload, so its time is stamped after the version seen
        // now (best effort: a version committed during the upload may be newer).
        let replaces = if opts.preconditions.is_empty() {
            self.occupied(key).await?.1
        } else {
            match self
                .decide(key, &opts.preconditions, this_write, None)
                .await?
            {
                Decision::Write { replaces, .. } => replaces,
                Decision::Landed { .. } => None,
            }
        };
        let meta = Self::restamp(meta, replaces, opts)?;
        let headers = BlobHeaders {
            larder: Self::meta_value(&meta, this_write),
            content_type: meta.content_type.clone(),
        };
        let mut upload = self
            .upload_parts(native, &path, spool, meta.size, &headers)
            .await?;
        let result = self
            .complete(
                native,
                key,
                &path,
                spool,
                &headers,
                &mut upload,
                opts,
                this_write,
            )
            .await;
        match result {
            Ok(created) => Ok(PutResult { meta, created }),
            Err(e) => {
                native.abort_upload(&path, &upload.id).await;
                Err(e)
            }
        }
    }

    /// Starts an upload and uploads every part of `spool` (`size` bytes).
    async fn upload_parts(
        &self,
        native: &dyn Native,
        path: &Path,
        spool: &Spool,
        size: u64,
        headers: &BlobHeaders,
    ) -> Result<Upload> {
        let id = native.begin_upload(path, headers).await?;
        let part_size = part_size(size);
        let parts = futures::stream::iter(0..size.div_ceil(part_size))
            .map(|i| {
                let id = &id;
                async move {
                    let offset = i * part_size;
                    let len = part_size.min(size - offset) as usize;
                    let data = spool.read(offset, len).await?;
                    native
                        .put_part(path, id, i as usize, PutPayload::from(data))
                        .await
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        match parts {
            Ok(parts) => Ok(Upload { id, parts, size }),
            Err(e) => {
                native.abort_upload(path, &id).await;
                Err(e)
            }
        }
    }

    /// Completes `upload` under the guard decided from a fresh head, deciding again after each
    /// refusal. Returns `created`.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        native: &dyn Native,
        key: &Key,
        path: &Path,
        spool: &Spool,
        headers: &BlobHeaders,
        upload: &mut Upload,
        opts: &PutOptions,
        this_write: &str,
    ) -> Result<bool> {
        let mut refused: Option<bool> = None;
        for _ in 0..MAX_ATTEMPTS {
            let (guard, created) = if opts.preconditions.is_empty() {
                (Guard::Always, !self.occupied(key).await?.0)
            } else {
                match self
                    .decide(key, &opts.preconditions, this_write, refused)
                    .await?
                {
                    Decision::Landed { created } => return Ok(created),
                    Decision::Write { guard, created, .. } => (guard, created),
                }
            };
            if let Some(hook) = &self.before_completion {
                hook().await;
            }
            match native
                .complete_upload(path, &upload.id, &upload.parts, &guard, headers)
                .await
            {
                Ok(()) => return Ok(created),
                Err(NativeError::Changed) => refused = Some(created),
                Err(NativeError::UploadGone) => {
                    // Another writer's commit discarded our parts (Azure), or the upload
                    // expired: upload them again from the spool, then decide again.
                    *upload = self
                        .upload_parts(native, path, spool, upload.size, headers)
                        .await?;
                    refused = Some(created);
                }
                Err(NativeError::Failed(e)) => {
                    return self.settle(key, this_write, e).await.map(|()| created)
                }
            }
        }
        Err(kept_changing(key))
    }
}

/// Part size for a body of `size` bytes: at least [`MIN_PART_SIZE`], and large enough that the
/// body fits in [`MAX_PARTS`] parts (whole MiB).
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    MIN_PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

fn kept_changing(key: &Key) -> Error {
    Error::transient(format!(
        "{key}: the object kept changing; the write was not done"
    ))
}

/// The backend's client twice, from one builder: with `object_store`'s retries (reads,
/// unconditional writes, parts) and without (conditional PUTs, see [`ObjStore::with_writer`]).
#[allow(dead_code)] // used by whichever of the s3 and azure features is on
fn clients<B: Clone, S>(
    builder: B,
    with_retry: fn(B, object_store::RetryConfig) -> B,
    build: fn(B) -> object_store::Result<S>,
    what: &str,
) -> Result<(Arc<S>, Arc<S>)> {
    let no_retries = object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    };
    let invalid = |e: object_store::Error| Error::InvalidInput(format!("{what}: {e}"));
    let writer = build(with_retry(builder.clone(), no_retries)).map_err(invalid)?;
    let client = build(builder).map_err(invalid)?;
    Ok((Arc::new(client), Arc::new(writer)))
}

/// A boolean URL parameter.
#[allow(dead_code)] // used by whichever of the s3 and azure features is on
fn parse_bool(k: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::InvalidInput(format!(
            "store URL: {k}={v:?} is not true or false"
        ))),
    }
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
            let meta =
                Self::decode(key, &r.meta, &r.attributes)?.ok_or_else(|| Self::foreign(key))?;
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
        for _ in 0..MAX_ATTEMPTS {
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
        Err(Error::transient(format!(
            "{key}: the object kept changing while being read"
        )))
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
        let this_write = write_id();
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
                None => return Err(Self::foreign(key)),
            };
            self.inner.delete(&path).await.map_err(map_err)?;
            if expired {
                return Err(not_found(key));
            }
            return Ok(());
        };
        for _ in 0..MAX_ATTEMPTS {
            let blob = self.stat(key).await?.ok_or_else(|| not_found(key))?;
            let meta = blob.meta.ok_or_else(|| Self::foreign(key))?;
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
        Err(Error::transient(format!(
            "{key}: the object kept changing; the delete was not done"
        )))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        if let Some(native) = self.native.as_ref().filter(|n| n.lists_metadata()) {
            return self.list_with_metadata(native.as_ref(), &opts).await;
        }
        // The backend lists by whole segments: list the deepest folder holding the prefix and
        // let `paginate` filter by the string prefix.
        let folder = match opts.prefix.rfind('/') {
            Some(i) => &opts.prefix[..i],
            None => "",
        };
        let folder = self.join(folder)?;
        let folder = (!folder.as_ref().is_empty()).then_some(folder);
        let offset = opts.cursor.as_deref().and_then(|c| self.join(c).ok());
        let listing = match &offset {
            Some(o) => self.inner.list_with_offset(folder.as_ref(), o),
            None => self.inner.list(folder.as_ref()),
        };
        let keys = listing.map_err(map_err).try_filter_map(|o| {
            futures::future::ready(Ok(self.listed_key(o.location.as_ref(), &opts)))
        });
        let mut metas = keys
            .map_ok(|k| self.list_entry(k))
            .try_buffered(LIST_HEADS)
            .try_filter_map(|m| futures::future::ready(Ok(m)))
            .boxed();
        let mut seen: Vec<Meta> = Vec::new();
        while let Some(meta) = metas.try_next().await? {
            seen.push(meta);
            // Stop as soon as the page is full and one more entry proves there is a next page.
            if seen.len().is_multiple_of(64) {
                let page = paginate(seen.iter().cloned(), &opts);
                if page.next_cursor.is_some() {
                    return Ok(page);
                }
            }
        }
        Ok(paginate(seen, &opts))
    }
}

impl ObjStore {
    /// The key of a listed blob if it belongs in the listing: under the prefix, past the cursor
    /// and not inside the common prefix the cursor names.
    fn listed_key(&self, name: &str, opts: &ListOptions) -> Option<Key> {
        self.key_of(name).filter(|k| {
            k.starts_with(&opts.prefix)
                && opts.cursor.as_deref().is_none_or(|c| {
                    k.as_str() > c
                        && !(opts.delimiter.is_some_and(|d| c.ends_with(d)) && k.starts_with(c))
                })
        })
    }

    /// Listing where the backend returns each blob's metadata with its name (Azure): one
    /// request per page of blobs instead of one per blob.
    async fn list_with_metadata(
        &self,
        native: &dyn Native,
        opts: &ListOptions,
    ) -> Result<ListPage> {
        let prefix = if self.prefix.is_empty() {
            opts.prefix.clone()
        } else {
            format!("{}/{}", self.prefix, opts.prefix)
        };
        let mut marker: Option<String> = None;
        let mut seen: Vec<Meta> = Vec::new();
        loop {
            let (blobs, next) = native.list_metadata(&prefix, marker.as_deref()).await?;
            for blob in blobs {
                let Some(key) = self.listed_key(&blob.name, opts) else {
                    continue;
                };
                // Foreign, unreadable and expired blobs are skipped, as when heading them.
                if let Ok(Some((meta, _))) =
                    Self::decode_value(&key, blob.size, blob.larder.as_deref())
                {
                    if !meta.is_expired() {
                        seen.push(meta);
                    }
                }
            }
            let page = paginate(seen.iter().cloned(), opts);
            match next {
                Some(m) if page.next_cursor.is_none() => marker = Some(m),
                _ => return Ok(page),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use object_store::memory::InMemory;
    use object_store::{ListResult, MultipartUpload, PutMultipartOptions};

    use super::*;
    use crate::StoreExt;

    /// An in-memory backend whose next conditional PUT fails like a lost response: after
    /// writing (`lands`) or without writing. Counts conditional PUTs.
    #[derive(Debug, Default)]
    struct LosesResponses {
        inner: InMemory,
        fail_next: std::sync::atomic::AtomicBool,
        lands: bool,
        conditional_puts: AtomicUsize,
    }

    impl std::fmt::Display for LosesResponses {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LosesResponses")
        }
    }

    #[async_trait]
    impl ObjectStore for LosesResponses {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if matches!(opts.mode, PutMode::Overwrite) {
                return self.inner.put_opts(location, payload, opts).await;
            }
            self.conditional_puts.fetch_add(1, Ordering::SeqCst);
            if !self.fail_next.swap(false, Ordering::SeqCst) {
                return self.inner.put_opts(location, payload, opts).await;
            }
            if self.lands {
                self.inner.put_opts(location, payload, opts).await?;
            }
            Err(object_store::Error::Generic {
                store: "test",
                source: "connection reset".into(),
            })
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A conditional PUT whose response is lost is sent once; the blob's write id settles it:
    /// success if it landed, an "outcome unknown" error if it did not.
    #[tokio::test]
    async fn lost_response_is_settled_by_the_write_id_not_resent() {
        for lands in [true, false] {
            let backend = Arc::new(LosesResponses {
                lands,
                ..Default::default()
            });
            let store = ObjStore::new("test", backend.clone(), "p", 1 << 20).unwrap();
            let k = Key::new("k").unwrap();
            let first = store.put_bytes(&k, "one".into()).await.unwrap();
            backend.fail_next.store(true, Ordering::SeqCst);
            let before = backend.conditional_puts.load(Ordering::SeqCst);
            let opts = PutOptions {
                preconditions: Preconditions::if_match(first.etag.clone()),
                ..Default::default()
            };
            let r = store.put(&k, "two".into(), opts).await;
            assert_eq!(backend.conditional_puts.load(Ordering::SeqCst) - before, 1);
            let now = store.get_bytes(&k).await.unwrap().0;
            if lands {
                let r = r.unwrap();
                assert_eq!((r.created, &now[..]), (false, &b"two"[..]));
            } else {
                let e = r.unwrap_err();
                assert!(
                    e.is_retryable() && e.to_string().contains("outcome is unknown"),
                    "{e}"
                );
                assert_eq!(&now[..], b"one");
            }
        }
    }

    #[test]
    fn part_sizes_fit_the_part_limit() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size(9 * MIB), MIN_PART_SIZE);
        assert_eq!(part_size(64 * MIB), MIN_PART_SIZE);
        let huge = 5 * 1024 * 1024 * MIB; // 5 TiB
        let p = part_size(huge);
        assert!(
            huge.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(MIB),
            "{p}"
        );
    }
}
