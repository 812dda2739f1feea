//! Larder as an [`object_store::ObjectStore`]: every Larder driver's atomic compare-and-swap
//! for DataFusion, delta-rs, SlateDB, iceberg-rust, lance and anything else that reaches
//! storage through object_store.
//!
//! [`LarderObjectStore`] wraps any [`larder::Store`] (memory, fs, sqlite, postgres, mysql,
//! redis, nats, s3, azure, a Larder server over http, a tiered stack) and implements
//! [`ObjectStore`], [`PaginatedListStore`] and [`MultipartStore`] on it:
//!
//! - **Writes.** `PutMode::Overwrite` writes unconditionally; `PutMode::Create` is Larder's
//!   create-only write (`If-None-Match: *`), [`Error::AlreadyExists`] when the path is taken;
//!   `PutMode::Update` with an `e_tag` is Larder's `If-Match` swap, [`Error::Precondition`]
//!   when the object changed (or is gone). An `Update` with no `e_tag` is
//!   [`Error::NotImplemented`]: Larder decides on content ETags, and the write is never made
//!   unconditional. The store decides each condition in the same atomic step as the write,
//!   with the backend's own primitive, so `Update` works on every driver, across processes on
//!   `fs://` and across hosts on the networked ones.
//! - **ETags.** [`ObjectMeta::e_tag`](object_store::ObjectMeta) and `PutResult::e_tag` are
//!   Larder's content ETag in its quoted HTTP form, `"<sha-256 hex>"`: the same string
//!   `larder serve` sends in its `ETag` header and the CLI prints, so one object has one tag
//!   through every entry point. Conditions accept it quoted, as an RFC 9110 list, or bare.
//!   `version` is always `None` (Larder keeps only the current version; a get asking for a
//!   version is `NotSupported`).
//! - **Reads.** `if_match`, `if_none_match` ([`Error::NotModified`]), `if_modified_since`,
//!   `if_unmodified_since`, every [`GetRange`] form and `head` are
//!   passed to the store, whose one evaluator decides them on the version it serves; bodies
//!   stream. Dates compare at HTTP's whole-second resolution.
//! - **Listing** pages through Larder's listing (`list`, `list_with_offset`,
//!   `list_with_delimiter`, and [`PaginatedListStore::list_paginated`] with Larder's cursor as
//!   the page token). Larder resumes a listing only after a cursor one of its pages returned,
//!   so offsets are applied to the listed keys, not sent as cursors.
//! - **Copy and rename** stream the source version into the destination, checked against the
//!   source's ETag; `copy_if_not_exists` / `rename_if_not_exists` are create-only writes, so
//!   two racing renames onto one path cannot both win. A rename then deletes the source only
//!   if it is still the version copied (when the store can delete conditionally), so a write
//!   to the source during the rename is never lost: the rename fails with `Precondition`.
//! - **Multipart** uploads ([`ObjectStore::put_multipart_opts`] and [`MultipartStore`]) spool
//!   parts to temporary files and commit them as one Larder write carrying the upload's
//!   condition. object_store's multipart options carry no [`PutMode`]; put one in
//!   `PutMultipartOptions::extensions` to make the upload a create or an update:
//!   see [`LarderObjectStore::put_multipart_mode`].
//! - **Attributes**: content type and user metadata map to Larder's; see [`attrs`] for the rest.
//! - **Errors** map by meaning: `NotFound`, `AlreadyExists`, `Precondition`, `NotModified`,
//!   `NotSupported` (Larder's `Unsupported`), `NotImplemented`, `InvalidPath`; everything else
//!   (range not satisfiable, too large, backend failures) is `Generic` with the
//!   [`larder::Error`] as its source.
//! - **Paths** are keys verbatim (see [`path`](crate#paths)): `Path::as_ref()` is the key, and
//!   a path that cannot be a key is [`Error::InvalidPath`].
//!
//! # Paths
//!
//! A path's encoded string is the Larder key, after the store's optional mount prefix
//! ([`LarderObjectStore::with_prefix`]). Every key is a valid path and maps back to itself, so
//! objects written through Larder's own API, `larder serve` or the CLI are listed here under
//! their keys, and the reverse. Refused paths: the root, paths with a backslash or a
//! non-ASCII control character, and paths over Larder's 1024-byte key limit.
//!
//! # Example
//!
//! ```
//! use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
//! use larder_object_store::LarderObjectStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = LarderObjectStore::open("memory://").await?;
//! let path = Path::from("tables/events/_manifest");
//!
//! // Only one writer can create the manifest...
//! let v1 = store.put_opts(&path, "v1".into(), PutMode::Create.into()).await?;
//! let again = store.put_opts(&path, "v1'".into(), PutMode::Create.into()).await;
//! assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })));
//!
//! // ...and only the holder of the current version can replace it.
//! let update = |r: &object_store::PutResult| PutOptions::from(PutMode::Update(UpdateVersion::from(r.clone())));
//! let v2 = store.put_opts(&path, "v2".into(), update(&v1)).await?;
//! let stale = store.put_opts(&path, "v2'".into(), update(&v1)).await;
//! assert!(matches!(stale, Err(object_store::Error::Precondition { .. })));
//!
//! let head = store.head(&path).await?;
//! assert_eq!(head.e_tag, v2.e_tag); // the quoted SHA-256 of "v2"
//! assert_eq!(store.get(&path).await?.bytes().await?, "v2");
//! # Ok::<_, object_store::Error>(()) }).unwrap();
//! ```

#![deny(missing_docs)]

pub mod attrs;
mod error;
mod multipart;
mod path;

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use larder::{
    Body, ByteRange, DeleteOptions, ETag, ETagCondition, HeadOptions, Key, ListOptions,
    Preconditions, Store,
};
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, Error, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartId, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, RenameTargetMode, Result,
};

use crate::error::{generic, map, Op};
use crate::multipart::{Spool, Upload};
use crate::path::Mount;

/// The store name in `Generic` errors.
const STORE: &str = "Larder";

/// Concurrent deletes in flight in `delete_stream`.
const DELETE_CONCURRENCY: usize = 8;

/// An [`ObjectStore`] over a [`larder::Store`]. Cheap to clone (clones share the store and the
/// multipart uploads in progress).
#[derive(Clone)]
pub struct LarderObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    mount: Mount,
    spool_dir: PathBuf,
    /// [`MultipartStore`] uploads in progress, by id.
    uploads: Mutex<HashMap<MultipartId, Arc<Pending>>>,
}

/// A [`MultipartStore`] upload in progress.
#[derive(Debug)]
struct Pending {
    location: Path,
    request: WriteRequest,
    spool: Arc<Spool>,
}

/// What a write asks of the store besides its body: the condition and the attributes.
#[derive(Clone, Debug)]
pub(crate) struct WriteRequest {
    mode: PutMode,
    attributes: object_store::Attributes,
}

impl std::fmt::Debug for LarderObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LarderObjectStore")
            .field("store", &self.inner.store)
            .field("prefix", &self.inner.mount.prefix())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for LarderObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.inner.store.capabilities().name;
        match self.inner.mount.prefix() {
            "" => write!(f, "LarderObjectStore({name})"),
            p => write!(f, "LarderObjectStore({name}, prefix {p:?})"),
        }
    }
}

impl LarderObjectStore {
    /// An object store over `store`, its paths at the store's root.
    pub fn new(store: Arc<dyn Store>) -> Self {
        LarderObjectStore {
            inner: Arc::new(Inner {
                store,
                mount: Mount::default(),
                spool_dir: std::env::temp_dir(),
                uploads: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Opens the Larder store a URL names ([`larder::open`]: `memory://`, `fs:///path`,
    /// `sqlite://…`, `postgres://…`, `redis://…`, `nats://…`, `s3://…`, `azure://…`,
    /// `http://…`, with the drivers this crate's features enable). With the `tiered` feature,
    /// a path ending in `.toml` opens the tiered stack (and mounts) the file describes, in
    /// the `[[tiers]]` / `[[mounts]]` form of `larder::tiered::TierConfig`.
    pub async fn open(url: &str) -> Result<Self> {
        #[cfg(feature = "tiered")]
        if url.ends_with(".toml") {
            let text = tokio::fs::read_to_string(url)
                .await
                .map_err(|e| generic(format!("reading {url}: {e}")))?;
            let config: larder::tiered::TierConfig =
                toml::from_str(&text).map_err(|e| generic(format!("{url}: {e}")))?;
            let store = larder::tiered::open_config(&config)
                .await
                .map_err(|e| map(e, url, Op::Other))?;
            return Ok(Self::new(store));
        }
        let store = larder::open(url)
            .await
            .map_err(|e| map(e, url, Op::Other))?;
        Ok(Self::new(store))
    }

    /// The same store with every path under `prefix` (a valid Larder key; `""` is the root):
    /// the path `a/b` is the key `prefix/a/b`, and listings see only what is under the prefix.
    pub fn with_prefix(self, prefix: &str) -> Result<Self> {
        let mount = Mount::new(prefix).map_err(|e| map(e, prefix, Op::Other))?;
        Ok(self.rebuild(|i| Inner { mount, ..i }))
    }

    /// Where multipart parts are spooled (default: the system temporary directory).
    pub fn with_spool_dir(self, dir: impl Into<PathBuf>) -> Self {
        let spool_dir = dir.into();
        self.rebuild(|i| Inner { spool_dir, ..i })
    }

    fn rebuild(self, f: impl FnOnce(Inner) -> Inner) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            store: Arc::clone(&shared.store),
            mount: shared.mount.clone(),
            spool_dir: shared.spool_dir.clone(),
            uploads: Mutex::new(HashMap::new()),
        });
        LarderObjectStore {
            inner: Arc::new(f(inner)),
        }
    }

    /// The Larder store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The Larder key of `path` (see [Paths](crate#paths)).
    pub fn key(&self, path: &Path) -> Result<Key> {
        self.inner.mount.key(path)
    }

    /// The path of the Larder key `key` (`InvalidPath`-free for keys under the prefix).
    pub fn path(&self, key: &Key) -> Result<Path> {
        self.inner.mount.path(key.as_str())
    }

    /// A multipart upload that commits with `mode`'s condition: a `Create` that fails with
    /// `AlreadyExists` at completion if the path was taken meanwhile, or an `Update` that fails
    /// with `Precondition` if the object changed. Equivalent to `put_multipart_opts` with
    /// `mode` in `opts.extensions`.
    pub async fn put_multipart_mode(
        &self,
        location: &Path,
        mode: PutMode,
        mut opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        opts.extensions.insert(mode);
        self.put_multipart_opts(location, opts).await
    }

    /// Writes `body` at `location` as `request` asks, in one Larder put.
    pub(crate) async fn write(
        &self,
        location: &Path,
        body: Body,
        request: WriteRequest,
    ) -> Result<PutResult> {
        let key = self.key(location)?;
        let loc = location.as_ref();
        let (preconditions, op) = write_condition(&request.mode, loc)?;
        let (content_type, metadata) = attrs::to_larder(&request.attributes)?;
        let opts = larder::PutOptions {
            preconditions,
            content_type,
            metadata,
            ..Default::default()
        };
        let r = self
            .inner
            .store
            .put(&key, body, opts)
            .await
            .map_err(|e| map(e, loc, op))?;
        Ok(put_result(&r.meta))
    }

    fn request(mode: PutMode, opts: &PutMultipartOptions) -> WriteRequest {
        WriteRequest {
            mode: opts.extensions.get::<PutMode>().cloned().unwrap_or(mode),
            attributes: opts.attributes.clone(),
        }
    }

    /// Objects from Larder's listing with `opts`, every page, as a stream.
    fn list_pages(&self, opts: Result<ListOptions>) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = Arc::clone(&self.inner.store);
        let mount = self.inner.mount.clone();
        let start = match opts {
            Ok(o) => Some(Ok(o)),
            Err(e) => Some(Err(e)),
        };
        stream::unfold(start, move |state| {
            let store = Arc::clone(&store);
            let mount = mount.clone();
            async move {
                let opts = match state? {
                    Ok(o) => o,
                    Err(e) => return Some((vec![Err(e)], None)),
                };
                match store.list(opts.clone()).await {
                    Ok(page) => {
                        let next = page.next_cursor.map(|c| {
                            Ok(ListOptions {
                                cursor: Some(c),
                                ..opts
                            })
                        });
                        let items = page
                            .objects
                            .iter()
                            .map(|m| Ok(object_meta(mount.path(m.key.as_str())?, m)))
                            .collect::<Vec<_>>();
                        Some((items, next))
                    }
                    Err(e) => Some((vec![Err(map(e, &opts.prefix, Op::Other))], None)),
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }

    /// Copies `from` to `to` (create-only if `create`); returns the source version copied.
    async fn copy_version(&self, from: &Path, to: &Path, create: bool) -> Result<larder::Meta> {
        let src = self.key(from)?;
        let dst = self.key(to)?;
        let got = self
            .inner
            .store
            .get(&src, larder::GetOptions::default())
            .await
            .map_err(|e| map(e, from.as_ref(), Op::Other))?;
        let meta = got.meta;
        let ttl = meta
            .expires_at
            .and_then(|t| t.duration_since(SystemTime::now()).ok());
        let (preconditions, op) = if create {
            (Preconditions::if_absent(), Op::Create)
        } else {
            (Preconditions::none(), Op::Other)
        };
        let opts = larder::PutOptions {
            preconditions,
            ttl,
            content_type: meta.content_type.clone(),
            metadata: meta.metadata.clone(),
            // The bytes streamed are checked against the version read: a torn or mixed read
            // stores nothing.
            expected_etag: Some(meta.etag.clone()),
        };
        self.inner
            .store
            .put(&dst, Body::Stream(got.body), opts)
            .await
            .map_err(|e| map(e, to.as_ref(), op))?;
        Ok(meta)
    }

    fn pending(&self, location: &Path, id: &MultipartId) -> Result<Arc<Pending>> {
        let uploads = self.inner.uploads.lock().expect("uploads lock");
        match uploads.get(id) {
            Some(p) if p.location == *location => Ok(Arc::clone(p)),
            Some(_) => Err(generic(format!(
                "multipart upload {id} is for another path than {location}"
            ))),
            None => Err(Error::NotFound {
                path: location.to_string(),
                source: format!("no multipart upload {id} in progress").into(),
            }),
        }
    }
}

/// The Larder condition of a put mode, and how its failure reads.
fn write_condition(mode: &PutMode, location: &str) -> Result<(Preconditions, Op)> {
    match mode {
        PutMode::Overwrite => Ok((Preconditions::none(), Op::Other)),
        PutMode::Create => Ok((Preconditions::if_absent(), Op::Create)),
        PutMode::Update(v) => match &v.e_tag {
            Some(tag) => match parse_tag(tag) {
                Some(tag) => Ok((Preconditions::if_match(tag), Op::Other)),
                // No Larder object has this tag, so the condition is false whatever is stored.
                None => Err(Error::Precondition {
                    path: location.to_owned(),
                    source: format!("{tag:?} is not an entity tag").into(),
                }),
            },
            None => Err(Error::NotImplemented {
                operation: "put_opts with PutMode::Update without an e_tag (Larder swaps on \
                            content ETags; it keeps no versions)"
                    .into(),
                implementer: "LarderObjectStore".into(),
            }),
        },
    }
}

/// An entity tag as object_store users hold it: quoted (`"…"`, `W/"…"`) or bare.
fn parse_tag(tag: &str) -> Option<ETag> {
    ETag::parse(tag).or_else(|_| ETag::strong(tag.trim())).ok()
}

/// An `If-Match` / `If-None-Match` value: an RFC 9110 list, or object_store's looser
/// comma-separated tags. Elements that are no entity tag match nothing.
fn etag_condition(value: &str) -> ETagCondition {
    if let Ok(Some(c)) = larder::precondition::parse_etag_condition([value]) {
        return c;
    }
    let mut tags = Vec::new();
    for element in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if element == "*" {
            return ETagCondition::Any;
        }
        tags.extend(parse_tag(element));
    }
    ETagCondition::Tags(tags)
}

fn read_conditions(o: &GetOptions) -> Preconditions {
    Preconditions {
        if_match: o.if_match.as_deref().map(etag_condition),
        if_none_match: o.if_none_match.as_deref().map(etag_condition),
        if_modified_since: o.if_modified_since.map(SystemTime::from),
        if_unmodified_since: o.if_unmodified_since.map(SystemTime::from),
    }
}

fn byte_range(range: &GetRange) -> Result<ByteRange> {
    Ok(match range {
        GetRange::Bounded(r) if r.start >= r.end => {
            return Err(generic(format!(
                "range {}..{} is empty or inverted",
                r.start, r.end
            )))
        }
        GetRange::Bounded(r) => ByteRange::Bounded {
            first: r.start,
            last: r.end - 1,
        },
        GetRange::Offset(n) => ByteRange::From(*n),
        GetRange::Suffix(n) => ByteRange::Suffix(*n),
    })
}

/// The wire form of a stored object's ETag, `"<hex>"` (as `Display` writes it, built directly:
/// it is on every call's path, and the formatting machinery costs more than the copy).
fn e_tag(etag: &ETag) -> String {
    if etag.is_weak() {
        return etag.to_string();
    }
    let opaque = etag.opaque();
    let mut s = String::with_capacity(opaque.len() + 2);
    s.push('"');
    s.push_str(opaque);
    s.push('"');
    s
}

/// Adds a Larder listing page's objects and common prefixes to `result`, as paths under `mount`.
fn append_page(
    result: &mut ListResult,
    mount: &Mount,
    page: &larder::ListPage,
) -> object_store::Result<()> {
    for m in &page.objects {
        result
            .objects
            .push(object_meta(mount.path(m.key.as_str())?, m));
    }
    for p in &page.common_prefixes {
        result.common_prefixes.push(mount.path(p)?);
    }
    Ok(())
}

fn object_meta(location: Path, meta: &larder::Meta) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: meta.last_modified.into(),
        size: meta.size,
        e_tag: Some(e_tag(&meta.etag)),
        version: None,
    }
}

fn put_result(meta: &larder::Meta) -> PutResult {
    PutResult {
        e_tag: Some(e_tag(&meta.etag)),
        version: None,
        extensions: Default::default(),
    }
}

fn payload_body(payload: PutPayload) -> Body {
    if payload.iter().count() <= 1 {
        return Body::Bytes(payload.iter().next().cloned().unwrap_or_default());
    }
    let chunks: Vec<larder::Result<Bytes>> = payload.into_iter().map(Ok).collect();
    Body::from_stream(stream::iter(chunks))
}

fn new_upload_id() -> MultipartId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl ObjectStore for LarderObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        // Tags are not kept: object_store asks stores without tagging to ignore them.
        let request = WriteRequest {
            mode: opts.mode,
            attributes: opts.attributes,
        };
        self.write(location, payload_body(payload), request).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let request = Self::request(PutMode::Overwrite, &opts);
        // Refuse what the commit would refuse before any part is spooled.
        self.key(location)?;
        write_condition(&request.mode, location.as_ref())?;
        attrs::to_larder(&request.attributes)?;
        Ok(Box::new(Upload {
            store: self.clone(),
            location: location.clone(),
            request,
            spool: Some(Spool::new(&self.inner.spool_dir)?),
            next: 0,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let key = self.key(location)?;
        let loc = location.to_string();
        if options.version.is_some() {
            return Err(Error::NotSupported {
                source: "reading an object version: Larder keeps only the current version".into(),
            });
        }
        let preconditions = read_conditions(&options);
        if options.head {
            let meta = self
                .inner
                .store
                .head(&key, HeadOptions { preconditions })
                .await
                .map_err(|e| map(e, &loc, Op::Other))?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                attributes: attrs::from_larder(&meta),
                meta: object_meta(location.clone(), &meta),
                extensions: Default::default(),
            });
        }
        let range = options.range.as_ref().map(byte_range).transpose()?;
        let got = self
            .inner
            .store
            .get(
                &key,
                larder::GetOptions {
                    preconditions,
                    range,
                    if_range: None,
                },
            )
            .await
            .map_err(|e| map(e, &loc, Op::Other))?;
        let served: Range<u64> = got.range.clone().unwrap_or(0..got.meta.size);
        let body = got.body.map_err(move |e| map(e, &loc, Op::Other)).boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(body),
            range: served,
            attributes: attrs::from_larder(&got.meta),
            meta: object_meta(location.clone(), &got.meta),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .map(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let key = this.key(&location)?;
                    this.inner
                        .store
                        .delete(&key, DeleteOptions::default())
                        .await
                        .map_err(|e| map(e, location.as_ref(), Op::Other))?;
                    Ok(location)
                }
            })
            .buffered(DELETE_CONCURRENCY)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let opts = self.inner.mount.dir_prefix(prefix).map(ListOptions::prefix);
        self.list_pages(opts)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        // Larder resumes a listing only after a cursor its own pages returned, so the offset
        // is applied here, as object_store's default does, rather than passed as a cursor.
        let offset = offset.clone();
        self.list(prefix)
            .try_filter(move |m| futures::future::ready(m.location > offset))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mount = &self.inner.mount;
        let mut opts = ListOptions {
            delimiter: Some('/'),
            ..ListOptions::prefix(mount.dir_prefix(prefix)?)
        };
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        loop {
            let page = self
                .inner
                .store
                .list(opts.clone())
                .await
                .map_err(|e| map(e, &opts.prefix, Op::Other))?;
            append_page(&mut result, mount, &page)?;
            match page.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => return Ok(result),
            }
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let create = matches!(options.mode, CopyMode::Create);
        self.copy_version(from, to, create).await.map(|_| ())
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let create = matches!(options.target_mode, RenameTargetMode::Create);
        let copied = self.copy_version(from, to, create).await?;
        let src = self.key(from)?;
        let conditional = self.inner.store.capabilities().delete_conditions.if_match;
        // Delete the source only if it is still the version copied; a store that cannot delete
        // conditionally deletes it plainly, as object_store's rename contract allows.
        let opts = DeleteOptions {
            preconditions: if conditional {
                Preconditions::if_match(copied.etag)
            } else {
                Preconditions::none()
            },
        };
        match self.inner.store.delete(&src, opts).await {
            Ok(()) | Err(larder::Error::NotFound { .. }) => Ok(()),
            Err(e @ larder::Error::PreconditionFailed { .. }) => Err(Error::Precondition {
                path: from.to_string(),
                source: format!(
                    "{from} was rewritten during the rename: {to} holds the version copied, \
                     and the new {from} was kept ({e})"
                )
                .into(),
            }),
            Err(e) => Err(map(e, from.as_ref(), Op::Other)),
        }
    }
}

#[async_trait]
impl PaginatedListStore for LarderObjectStore {
    async fn list_paginated(
        &self,
        prefix: Option<&str>,
        opts: PaginatedListOptions,
    ) -> Result<PaginatedListResult> {
        let mount = &self.inner.mount;
        let delimiter = match opts.delimiter.as_deref() {
            None => None,
            Some(d) if d.chars().count() == 1 => d.chars().next(),
            Some(d) => {
                return Err(Error::NotSupported {
                    source: format!("delimiter {d:?}: Larder groups on a single character").into(),
                })
            }
        };
        let mut list = ListOptions {
            prefix: mount.raw_prefix(prefix.unwrap_or(""))?,
            delimiter,
            limit: opts.max_keys,
            cursor: opts.page_token.clone(),
        };
        // Larder resumes only after cursors of its own pages, so a first page from an offset
        // is found by reading pages until one has entries past it. (Later pages come after
        // those entries, past the offset too.)
        let offset = match opts.page_token {
            None => opts.offset.map(|o| format!("{}{o}", mount.prefix())),
            Some(_) => None,
        };
        let page = loop {
            let mut page = self
                .inner
                .store
                .list(list.clone())
                .await
                .map_err(|e| map(e, &list.prefix, Op::Other))?;
            let Some(offset) = &offset else { break page };
            page.objects.retain(|m| m.key.as_str() > offset.as_str());
            // A common prefix may hold keys past the offset if it sorts after it or the offset
            // lies inside it.
            page.common_prefixes
                .retain(|p| p.as_str() > offset.as_str() || offset.starts_with(p.as_str()));
            if !page.objects.is_empty() || !page.common_prefixes.is_empty() {
                break page;
            }
            match page.next_cursor {
                Some(c) => list.cursor = Some(c),
                None => break page,
            }
        };
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        append_page(&mut result, mount, &page)?;
        Ok(PaginatedListResult {
            result,
            page_token: page.next_cursor,
        })
    }
}

#[async_trait]
impl MultipartStore for LarderObjectStore {
    async fn create_multipart(&self, path: &Path) -> Result<MultipartId> {
        self.create_multipart_opts(path, PutMultipartOptions::default())
            .await
    }

    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> Result<MultipartId> {
        let request = Self::request(PutMode::Overwrite, &opts);
        self.key(path)?;
        write_condition(&request.mode, path.as_ref())?;
        attrs::to_larder(&request.attributes)?;
        let pending = Pending {
            location: path.clone(),
            request,
            spool: Spool::new(&self.inner.spool_dir)?,
        };
        let id = new_upload_id();
        self.inner
            .uploads
            .lock()
            .expect("uploads lock")
            .insert(id.clone(), Arc::new(pending));
        Ok(id)
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result<PartId> {
        let pending = self.pending(path, id)?;
        Arc::clone(&pending.spool)
            .write_part(part_idx, data)
            .await?;
        Ok(PartId {
            content_id: part_idx.to_string(),
        })
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<PutResult> {
        let pending = self.pending(path, id)?;
        let order = parts
            .iter()
            .map(|p| {
                p.content_id
                    .parse::<usize>()
                    .map_err(|_| generic(format!("part id {:?} is not ours", p.content_id)))
            })
            .collect::<Result<Vec<usize>>>()?;
        let body = pending.spool.body(order)?;
        let result = self.write(path, body, pending.request.clone()).await;
        // The upload is over whether the write succeeded or its condition failed.
        self.inner.uploads.lock().expect("uploads lock").remove(id);
        result
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> Result<()> {
        self.pending(path, id)?;
        self.inner.uploads.lock().expect("uploads lock").remove(id);
        Ok(())
    }
}
