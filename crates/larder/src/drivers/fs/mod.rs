//! A store in a local directory: crash-safe (temp file, fsync, rename) and atomic across the
//! processes of one host (a file lock held across evaluate-and-rename).
//!
//! URL: `fs:///abs/path` or `fs://relative/path`, the path taken verbatim, with options after
//! `?`: `fsync=false` skips every fsync. That only loses durability on power loss or a kernel
//! crash (a write that returned may be lost, and the old object may come back); atomicity,
//! preconditions and "old or new, never torn" for a process crash are unaffected. The root is
//! created if missing.
//!
//! # Layout
//!
//! ```text
//! root/objects/<seg>/<seg>/<seg>@   one file per object: header + bytes
//! root/.tmp/                        bodies being written (same filesystem, so rename is atomic)
//! root/.locks/NNN.lock              256 lock stripes, chosen by a stable hash of the key
//! root/.larder-fs                   the format (checked on open: every process using a root
//!                                   must agree on the files, stripes and hash)
//! ```
//!
//! Each key segment is percent-encoded: every byte other than `a-z`, `0-9`, `-`, `_` and `.`
//! (and a leading `.`) becomes `%XX` (upper-case hex). Upper-case letters are encoded too, so two
//! keys never share a file on case-insensitive filesystems. An object's file name is its
//! encoded last segment followed by `@`, which no encoded segment contains, so an object file
//! never collides with a directory: keys `a` and `a/b` coexist (`objects/a@` and
//! `objects/a/b@`). Paths are built only from encoded segments of validated [`Key`]s, below
//! `root/objects`, so nothing outside the root is ever touched.
//!
//! **Segment limit**: an encoded segment may be at most [`MAX_ENCODED_SEGMENT`] (254) bytes,
//! so that with the `@` it fits the 255-byte `NAME_MAX` of common filesystems: 254 characters
//! of `a-z0-9-_.`, or about 84 of anything else (each other byte takes 3). A longer segment is
//! `InvalidKey`. So is a key whose whole file path (root included) would exceed
//! [`MAX_PATH`] (4095) bytes.
//!
//! # Object file
//!
//! ```text
//! 0   8 bytes  magic "LARDFS01"
//! 8   u32 LE   length M of the metadata
//! 12  u64 LE   offset B of the body (>= 20 + M)
//! 20  M bytes  Meta::encode() JSON
//! ..  unused bytes up to B
//! B   the body (Meta.size bytes; the file ends there)
//! ```
//!
//! Metadata and bytes are in one file that is only ever replaced whole (rename), so an ETag and
//! the bytes it was computed from can never disagree. A file whose length, magic or metadata
//! do not agree is reported as a `Backend` error, never served (an unconditional put or delete
//! replaces or removes it). Bodies that arrive within 64 KiB are written right after the
//! header; longer ones are streamed to offset 4096 and the header written in front once the
//! ETag is known. The metadata is at most [`MAX_META_LEN`] (16 MiB) encoded: a put whose
//! content type and user metadata would encode to more is `InvalidInput`, refused before its
//! body is read, and a header claiming more is corrupt.
//!
//! # Atomicity
//!
//! [`capabilities`](Store::capabilities): every condition (`If-Match` with tags or `*`,
//! `If-None-Match` with `*` or tags, `If-Unmodified-Since`) on `put` and on `delete`, TTLs,
//! delimiters, persistent, atomic at [`AtomicScope::Host`]:
//!
//! - `put`: the body streams (hashed by [`BodyReader`](crate::BodyReader)) into a temp file in
//!   `.tmp` with no lock held, is fsynced, then under the key's stripe lock (`flock` on a fresh
//!   open of the stripe file, preceded by an in-process mutex per stripe) the current header is
//!   read, [`Preconditions::evaluate_write`](crate::Preconditions::evaluate_write) decides, the
//!   temp file is renamed over the object and the directory fsynced. Every put condition is
//!   atomic at host scope (all processes using the same root on one host, on a local
//!   filesystem; on network filesystems it is only as good as their `flock`).
//! - `delete`: the same lock, evaluate, unlink; empty parent directories are removed
//!   (creators retry when a directory vanishes under them).
//! - Reads take no lock: they open the file, read its header and stream the body from the same
//!   descriptor, so a concurrent rename cannot mix two versions. A `get` opens, decides and
//!   reads the first MiB in one blocking call (a small object in one `read` with its header).
//! - A crash leaves the old object or the new one. Each writer holds a lock on its temp file;
//!   temp files older than [`STALE_TEMP_AGE`] that nobody holds (their writer died) are removed
//!   when a store is opened, and a failed or cancelled put removes its own.
//! - Last-modified never goes backwards: a put that stamped its body earlier than the version
//!   it replaces (a slower writer, or a clock stepped back) is restamped under the lock, so an
//!   `If-Modified-Since` taken from an older version never answers 304 for a newer one.
//! - TTL: `expires_at` is in the header; expired objects read as `NotFound`, count as absent
//!   for preconditions, are not listed, and are removed lazily under the lock (by a put or
//!   delete of the key, or in the background after a read or listing met them).
//!
//! # Costs and limits
//!
//! - A listing walks the directories below the prefix's last complete segment, skipping those
//!   wholly before the cursor and not descending into those the delimiter folds into one
//!   common prefix (only one live object is looked for below each of those), and reads the
//!   headers only of objects that can appear on the page. Without a delimiter a page costs
//!   `O(keys below that directory)` directory reads; with `/`, `O(entries of that directory)`.
//! - Built for Unix filesystems (`flock`, directory fsync). On network filesystems the
//!   cross-process guarantee is only as good as their `flock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::retry::Attempts;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

mod listing;
mod names;
mod record;

use names::object_path;
pub use record::MAX_META_LEN;
use record::{
    check_meta_fits, decode_header, encode_meta, header_bytes, read_record, Record, FIXED_HEADER,
    HEADER_PROBE,
};

/// Longest encoded key segment, in bytes (255-byte `NAME_MAX` minus the object suffix).
pub const MAX_ENCODED_SEGMENT: usize = 254;

/// Longest file path the store makes (Linux `PATH_MAX` is 4096 with the NUL).
pub const MAX_PATH: usize = 4095;

/// Number of lock stripes (files under `.locks`).
pub const LOCK_STRIPES: usize = 256;

/// Temp files older than this whose writer is gone are removed when a store is opened.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Bodies up to this size are buffered and written right after the header.
const INLINE_MAX: usize = 64 << 10;
/// Longer (streamed) bodies start at this offset, leaving room for the header.
const RESERVED_HEADER: u64 = 4096;
/// Writes are batched to about this size.
const WRITE_BATCH: usize = 256 << 10;
/// Bodies are read in chunks of this size; the first in the same blocking call as the header.
const READ_CHUNK: u64 = 1 << 20;
/// A `get` of a file up to this size reads it whole in its first `read` (header and body).
const GET_PROBE: usize = INLINE_MAX + RESERVED_HEADER as usize;
/// The marker file naming the on-disk format, and its content.
const FORMAT_FILE: &str = ".larder-fs";
const FORMAT: &str = "larder fs store v1: LARDFS01 object files, 256 lock stripes by FNV-1a\n";
const OBJECTS_DIR: &str = "objects";
const TMP_DIR: &str = ".tmp";
const LOCKS_DIR: &str = ".locks";

/// Settings of an [`FsStore`].
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// The store's directory, created if missing (taken as given: relative paths are relative
    /// to the working directory when the store is opened).
    pub root: PathBuf,
    /// fsync temp files before rename and directories after (default `true`). Off, a power
    /// loss may lose recent writes; atomicity and crash-consistency for process crashes hold.
    pub fsync: bool,
}

impl FsConfig {
    /// The defaults for a store rooted at `root`: fsync on.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsConfig {
            root: root.into(),
            fsync: true,
        }
    }

    /// From a store URL: `fs:///abs/path` or `fs://rel/path` (the path taken verbatim, not
    /// URL-decoded), then options after `?` (`fsync=true|false`).
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .get(..5)
            .filter(|s| s.eq_ignore_ascii_case("fs://"))
            .map(|_| &url[5..])
            .ok_or_else(|| {
                Error::InvalidInput(format!("fs store URL {url:?}: the scheme must be fs://"))
            })?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(Error::InvalidInput(
                "fs store URL has no path (fs:///abs/path or fs://rel/path)".into(),
            ));
        }
        let mut config = FsConfig::new(path);
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "fsync" => {
                    config.fsync = match &*v {
                        "true" | "1" | "on" => true,
                        "false" | "0" | "off" => false,
                        _ => {
                            return Err(Error::InvalidInput(format!(
                                "fs store: fsync={v} is not true or false"
                            )))
                        }
                    }
                }
                _ => return Err(Error::InvalidInput(format!("fs store: unknown option {k}"))),
            }
        }
        Ok(config)
    }
}

/// A store in a local directory. See the [module docs](self).
#[derive(Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
    config: FsConfig,
    stripes: Vec<tokio::sync::Mutex<()>>,
    tmp_counter: AtomicU64,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore")
            .field("root", &self.inner.root)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl FsStore {
    /// Opens (creating it if missing) the store rooted at `config.root`, and removes temp
    /// files left by writers that died. The file system work runs on a blocking thread.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::fs::{FsConfig, FsStore};
    /// use larder::{Key, StoreExt};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = FsStore::open(FsConfig {
    ///     fsync: false, // tests and caches: atomic and crash-consistent, not power-loss durable
    ///     ..FsConfig::new(dir.path().join("data"))
    /// })
    /// .await?;
    /// let key = Key::new("notes/today")?;
    /// store.put_bytes(&key, "hello".into()).await?;
    /// assert!(store.object_path(&key)?.starts_with(store.root()));
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    pub async fn open(config: FsConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| Error::backend(format!("opening the fs store: {e}")))?
    }

    /// From a store URL, as [`FsConfig::from_url`] reads it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::fs::FsStore;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let url = format!("fs://{}?fsync=false", dir.path().display());
    /// let store = FsStore::from_url(&url).await?;
    /// assert_eq!(store.root(), dir.path().canonicalize().unwrap());
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(FsConfig::from_url(url)?).await
    }

    fn open_blocking(config: FsConfig) -> Result<Self> {
        let root = config.root.as_path();
        fs::create_dir_all(root).map_err(|e| io_context(e, "creating the root", root))?;
        let root = fs::canonicalize(root).map_err(|e| io_context(e, "resolving", root))?;
        let inner = Inner {
            objects: root.join(OBJECTS_DIR),
            tmp: root.join(TMP_DIR),
            locks: root.join(LOCKS_DIR),
            root,
            config,
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            tmp_counter: AtomicU64::new(0),
        };
        for dir in [&inner.objects, &inner.tmp, &inner.locks] {
            fs::create_dir_all(dir).map_err(|e| io_context(e, "creating", dir))?;
        }
        inner.check_format()?;
        inner.clean_stale_temps()?;
        Ok(FsStore {
            inner: Arc::new(inner),
        })
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file holding the object at `key` (whether or not it exists). `InvalidKey` when a
    /// segment is too long for the filesystem.
    pub fn object_path(&self, key: &Key) -> Result<PathBuf> {
        self.inner.object_path(key)
    }

    /// Runs `f` holding the key's stripe lock: the in-process mutex (waited for here), then
    /// `flock` (in a blocking task).
    async fn with_lock<T, F>(&self, key: &Key, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let stripe = stripe_of(key.as_str());
        let _guard = self.inner.stripes[stripe].lock().await;
        let inner = self.inner.clone();
        blocking(move || inner.flocked(stripe, f)).await
    }

    /// Removes the object at `key` if it is (still) expired, under the lock.
    fn reap_expired(&self, key: &Key) {
        let store = self.clone();
        let key = key.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let k = key.clone();
                let r = store
                    .with_lock(&key, move |inner| {
                        let path = inner.object_path(&k)?;
                        match read_record(&path, &k, HEADER_PROBE) {
                            Ok(Some(record)) if record.meta.is_expired() => {
                                inner.unlink_object(&path)
                            }
                            _ => Ok(()),
                        }
                    })
                    .await;
                if let Err(e) = r {
                    tracing::debug!("fs store: removing expired {key}: {e}");
                }
            });
        }
    }

    /// Opens the live object at `key`: `NotFound` when missing or expired.
    /// In one blocking call: opens the object at `key` (reading it whole with its header if
    /// it is at most `probe` bytes), and hands it to `serve` if it is live. `NotFound` when
    /// missing or expired.
    async fn with_live<T, F>(&self, key: &Key, probe: usize, serve: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Record) -> Result<T> + Send + 'static,
    {
        enum Found<T> {
            Missing,
            Expired,
            Live(T),
        }
        let inner = self.inner.clone();
        let k = key.clone();
        let found = blocking(move || {
            let path = inner.object_path(&k)?;
            match read_record(&path, &k, probe)? {
                None => Ok(Found::Missing),
                Some(record) if record.meta.is_expired() => Ok(Found::Expired),
                Some(record) => serve(record).map(Found::Live),
            }
        })
        .await?;
        match found {
            Found::Missing => Err(Error::not_found(key)),
            Found::Expired => {
                self.reap_expired(key);
                Err(Error::not_found(key))
            }
            Found::Live(t) => Ok(t),
        }
    }

    /// Streams `body` into a fresh temp file holding header + bytes, fsynced, with no lock
    /// held; then, in the same blocking call if the key's stripe is free in this process,
    /// commits it (else the caller waits for the lock and commits).
    async fn write_temp(&self, key: &Key, body: Body, opts: &Arc<PutOptions>) -> Result<Staged> {
        let mut reader = body.reader(None);
        // Chunks as they came (not copied), until the batch is full or the body ends.
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        let mut ended = false;
        while buffered < INLINE_MAX {
            match reader.next_chunk().await? {
                Some(chunk) => {
                    buffered += chunk.len();
                    chunks.push(chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        // Stamped now; restamped under the lock if the version it replaces is newer.
        let make_meta = |etag, size| Meta::next_version(key, etag, size, None, opts);
        let fsync = self.inner.config.fsync;
        if ended {
            let (etag, size) = reader.finish(opts.expected_etag.as_ref())?;
            let meta = make_meta(etag, size)?;
            let encoded = encode_meta(&meta)?;
            let (inner, key, opts) = (self.inner.clone(), key.clone(), opts.clone());
            return blocking(move || {
                let mut temp = inner.create_temp()?;
                temp.body_offset = (FIXED_HEADER + encoded.len()) as u64;
                // Header and body in one write.
                let mut bytes = header_bytes(&encoded, temp.body_offset, buffered);
                for chunk in &chunks {
                    bytes.extend_from_slice(chunk);
                }
                temp.file.write_all(&bytes)?;
                if fsync {
                    temp.file.sync_data()?;
                }
                inner.commit_if_free(&key, temp, meta, &opts)
            })
            .await;
        }
        // A long body: write it from RESERVED_HEADER on, then the header in front.
        let mut temp: Option<Temp> = None;
        loop {
            while buffered < WRITE_BATCH && !ended {
                match reader.next_chunk().await? {
                    Some(chunk) => {
                        buffered += chunk.len();
                        chunks.push(chunk);
                    }
                    None => ended = true,
                }
            }
            let batch = std::mem::take(&mut chunks);
            buffered = 0;
            if ended {
                let (etag, size) = reader.finish(opts.expected_etag.as_ref())?;
                let meta = make_meta(etag, size)?;
                let (inner, key, opts) = (self.inner.clone(), key.clone(), opts.clone());
                return blocking(move || {
                    let mut temp = inner.streamed_temp(temp, &batch)?;
                    temp = inner.place_header(temp, &meta)?;
                    if fsync {
                        temp.file.sync_data()?;
                    }
                    inner.commit_if_free(&key, temp, meta, &opts)
                })
                .await;
            }
            let inner = self.inner.clone();
            temp = Some(blocking(move || inner.streamed_temp(temp, &batch)).await?);
        }
    }
}

/// A put's temp file, written and fsynced: committed already, or waiting for the lock.
enum Staged {
    Committed { created: bool, meta: Meta },
    Waiting { temp: Temp, meta: Meta },
}

impl Inner {
    fn object_path(&self, key: &Key) -> Result<PathBuf> {
        object_path(&self.objects, key)
    }

    /// Runs `f` holding the `flock` of lock stripe `stripe`, taken on a fresh open of its file
    /// (closing the descriptor releases it). The caller holds the stripe's in-process mutex.
    fn flocked<T>(&self, stripe: usize, f: impl FnOnce(&Inner) -> Result<T>) -> Result<T> {
        let path = self.locks.join(format!("{stripe:03}.lock"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_context(e, "opening lock", &path))?;
        lock.lock().map_err(|e| io_context(e, "locking", &path))?;
        let r = f(self);
        drop(lock);
        r
    }

    /// In a blocking task: commits `temp` now if no task of this process holds or waits for
    /// the key's stripe (saving a second blocking call), else hands it back to wait in line.
    fn commit_if_free(
        &self,
        key: &Key,
        temp: Temp,
        meta: Meta,
        opts: &PutOptions,
    ) -> Result<Staged> {
        let stripe = stripe_of(key.as_str());
        // Fails while another task holds the mutex or waits for it: no overtaking.
        let Ok(_guard) = self.stripes[stripe].try_lock() else {
            return Ok(Staged::Waiting { temp, meta });
        };
        let (created, meta) = self.flocked(stripe, |inner| inner.commit(key, temp, meta, opts))?;
        Ok(Staged::Committed { created, meta })
    }

    /// Appends `batch` to the body of a streamed temp file, creating it (body at
    /// [`RESERVED_HEADER`]) on the first batch.
    fn streamed_temp(&self, temp: Option<Temp>, batch: &[Bytes]) -> Result<Temp> {
        let mut temp = match temp {
            Some(temp) => temp,
            None => {
                let mut temp = self.create_temp()?;
                temp.body_offset = RESERVED_HEADER;
                temp.file.seek(SeekFrom::Start(RESERVED_HEADER))?;
                temp
            }
        };
        for chunk in batch {
            temp.file.write_all(chunk)?;
        }
        Ok(temp)
    }

    /// Writes the format marker into a new root, or checks that an existing root's marker is
    /// this one: processes that disagreed on the file format, the lock stripes or the hash
    /// choosing them would not exclude each other.
    fn check_format(&self) -> Result<()> {
        let marker = self.root.join(FORMAT_FILE);
        let read = || fs::read(&marker).map_err(|e| io_context(e, "reading", &marker));
        if !marker.exists() {
            // Written whole under another name, then linked into place: readers never see a
            // partial marker, and of two processes creating it one wins.
            let temp = self.create_temp()?;
            let tmp_path = temp.path.clone().expect("a new temp file");
            fs::write(&tmp_path, FORMAT.as_bytes())
                .map_err(|e| io_context(e, "writing", &tmp_path))?;
            match fs::hard_link(&tmp_path, &marker) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_context(e, "creating", &marker)),
            }
        }
        let found = read()?;
        if found != FORMAT.as_bytes() {
            return Err(Error::backend(format!(
                "fs store: {marker:?} says {:?}; this build uses {FORMAT:?}",
                String::from_utf8_lossy(&found).trim_end()
            )));
        }
        Ok(())
    }

    /// Writes the header for `meta` in front of the temp file's body: in place when it fits
    /// before the body, else into a new temp file laid out for it (the body is copied).
    fn place_header(&self, temp: Temp, meta: &Meta) -> Result<Temp> {
        let encoded = encode_meta(meta)?;
        let header_len = (FIXED_HEADER + encoded.len()) as u64;
        if header_len <= temp.body_offset {
            let mut temp = temp;
            temp.file.seek(SeekFrom::Start(0))?;
            temp.file
                .write_all(&header_bytes(&encoded, temp.body_offset, 0))?;
            return Ok(temp);
        }
        let mut old = temp;
        let mut temp = self.create_temp()?;
        temp.body_offset = header_len;
        temp.file
            .write_all(&header_bytes(&encoded, header_len, 0))?;
        old.file.seek(SeekFrom::Start(old.body_offset))?;
        let copied = io::copy(&mut (&mut old.file).take(meta.size), &mut temp.file)?;
        if copied != meta.size {
            return Err(Error::backend("fs store: temp file shrank while copying"));
        }
        Ok(temp)
    }

    fn create_temp(&self) -> Result<Temp> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp
            .join(format!("{}-{nanos:x}-{n}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_context(e, "creating temp file", &path))?;
        let temp = Temp {
            path: Some(path),
            file,
            body_offset: 0,
        };
        // Held until the temp file is renamed or removed: tells cleaners the writer is alive.
        temp.file
            .try_lock()
            .map_err(|e| Error::backend(format!("fs store: locking a new temp file: {e}")))?;
        Ok(temp)
    }

    /// Removes temp files older than [`STALE_TEMP_AGE`] whose writer no longer holds their lock.
    fn clean_stale_temps(&self) -> Result<()> {
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= STALE_TEMP_AGE));
            if !old {
                continue;
            }
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::info!("fs store: removed stale temp file {path:?}"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_context(e, "removing stale temp", &path)),
                }
            }
        }
        Ok(())
    }

    /// Under the lock: evaluates the write against the current object and renames the temp
    /// file (holding `meta`) over it. Returns whether no live object was there, and the
    /// written metadata.
    fn commit(&self, key: &Key, temp: Temp, meta: Meta, opts: &PutOptions) -> Result<(bool, Meta)> {
        let preconditions = &opts.preconditions;
        let path = self.object_path(key)?;
        let found = match read_record(&path, key, HEADER_PROBE) {
            Ok(found) => found.map(|record| record.meta),
            // An unconditional write may replace a corrupt file; a conditional one can't be
            // decided against it.
            Err(e) if preconditions.is_empty() => {
                tracing::warn!("fs store: overwriting unreadable {path:?}: {e}");
                None
            }
            Err(e) => return Err(e),
        };
        let current = found.as_ref().filter(|m| !m.is_expired());
        preconditions.evaluate_write(current)?;
        let mut temp = temp;
        let mut meta = meta;
        // Versions replace each other in commit order, and their times must not go backwards
        // (a writer that stamped its body earlier may commit later; clocks may step back):
        // else an If-Modified-Since of the older version could answer 304 for the newer one.
        if let Some(previous) = &found {
            if previous.last_modified > meta.last_modified {
                meta = Meta::next_version(
                    key,
                    meta.etag,
                    meta.size,
                    Some(previous.last_modified),
                    opts,
                )?;
                temp = self.place_header(temp, &meta)?;
                if self.config.fsync {
                    temp.file.sync_data()?;
                }
            }
        }
        let parent = path.parent().expect("object paths have a parent");
        let tmp_path = temp.path.clone().expect("temp not yet committed");
        // Renamed first, directories made only when it fails for want of them (usually they
        // exist: no stat on the common path).
        let rename = || fs::rename(&tmp_path, &path);
        // No parent yet, or a delete of a sibling removed the (empty) directory in between:
        // make it and retry.
        let make_parent = |e| {
            if !tmp_path.exists() {
                return Err(io_context(e, "renaming vanished temp file", &tmp_path));
            }
            create_dir_all_racing(parent)
        };
        let ((), lost) = despite_deletes("renaming into", &path, rename, make_parent)?;
        let created_dirs = lost > 0;
        temp.path = None; // renamed: nothing to clean up
        if self.config.fsync {
            sync_dir(parent)?;
            if created_dirs {
                let mut dir = parent;
                while let Some(up) = dir.parent() {
                    sync_dir(up)?;
                    if up == self.objects {
                        break;
                    }
                    dir = up;
                }
            }
        }
        Ok((current.is_none(), meta))
    }

    /// Under the lock: unlinks the object file and its now-empty parent directories.
    fn unlink_object(&self, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_context(e, "removing", path)),
        }
        let parent = path.parent().expect("object paths have a parent");
        if self.config.fsync {
            match sync_dir(parent) {
                // A delete of a sibling (another stripe) removed the emptied directory.
                Err(Error::Backend { source, .. })
                    if source
                        .downcast_ref::<io::Error>()
                        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {}
                r => r?,
            }
        }
        let mut dir = parent;
        while dir != self.objects && dir.starts_with(&self.objects) {
            // Fails (and stops) when the directory is not empty, or is already gone.
            if fs::remove_dir(dir).is_err() {
                break;
            }
            match dir.parent() {
                Some(up) => dir = up,
                None => break,
            }
        }
        Ok(())
    }
}

/// A temp file being written; removed on drop unless it was renamed into place.
struct Temp {
    path: Option<PathBuf>,
    file: File,
    /// Where its body starts.
    body_offset: u64,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("fs store: removing temp file {path:?}: {e}");
            }
        }
    }
}

#[async_trait]
impl Store for FsStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::full("fs", AtomicScope::Host, true)
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        self.with_live(key, HEADER_PROBE, move |record| {
            opts.preconditions.evaluate_read(&record.meta)?;
            Ok(record.meta)
        })
        .await
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        // One blocking call opens the file, decodes the header, decides, and reads the first
        // chunk (a small object's header and body come in one `read`); later chunks stream.
        let (meta, range, first, rest) = self
            .with_live(key, GET_PROBE, move |mut record| {
                let range = opts.evaluate(&record.meta)?;
                let (start, len) = match &range {
                    Some(r) => (r.start, r.end - r.start),
                    None => (0, record.meta.size),
                };
                let n = len.min(READ_CHUNK);
                let first = record.body(start, n as usize)?;
                Ok(if n == len {
                    (record.meta, range, first, None)
                } else {
                    let meta = record.meta.clone();
                    (meta, range, first, Some((record, start + n, len - n)))
                })
            })
            .await?;
        let first = futures::stream::iter((!first.is_empty()).then_some(Ok(first)));
        let rest = futures::stream::try_unfold(rest, |rest| async move {
            let Some((mut record, at, remaining)) = rest else {
                return Ok(None);
            };
            let n = remaining.min(READ_CHUNK);
            let (record, chunk) = blocking(move || {
                let chunk = record.body(at, n as usize)?;
                Ok((record, chunk))
            })
            .await?;
            let next = (remaining > n).then_some((record, at + n, remaining - n));
            Ok(Some((chunk, next)))
        });
        Ok(GetResult {
            meta,
            range,
            body: first.chain(rest).boxed(),
        })
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        // Refuse a key too long, or metadata too long to read back, before reading the body.
        self.inner.object_path(key)?;
        check_meta_fits(key, &opts)?;
        let opts = Arc::new(opts);
        let (created, meta) = match self.write_temp(key, body, &opts).await? {
            Staged::Committed { created, meta } => (created, meta),
            Staged::Waiting { temp, meta } => {
                let k = key.clone();
                self.with_lock(key, move |inner| inner.commit(&k, temp, meta, &opts))
                    .await?
            }
        };
        Ok(PutResult { meta, created })
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        self.inner.object_path(key)?;
        let k = key.clone();
        self.with_lock(key, move |inner| {
            let path = inner.object_path(&k)?;
            let current = match read_record(&path, &k, HEADER_PROBE) {
                Ok(found) => found.map(|record| record.meta),
                Err(e) if opts.preconditions.is_empty() => {
                    tracing::warn!("fs store: deleting unreadable {path:?}: {e}");
                    return inner.unlink_object(&path);
                }
                Err(e) => return Err(e),
            };
            match current {
                None => Err(Error::not_found(&k)),
                Some(meta) if meta.is_expired() => {
                    inner.unlink_object(&path)?;
                    Err(Error::not_found(&k))
                }
                Some(meta) => {
                    opts.preconditions.evaluate_write(Some(&meta))?;
                    inner.unlink_object(&path)
                }
            }
        })
        .await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let inner = self.inner.clone();
        let (page, expired) = blocking(move || inner.list(&opts)).await?;
        for key in &expired {
            self.reap_expired(key);
        }
        Ok(page)
    }
}

/// The lock stripe of a key: FNV-1a 64, stable across processes, builds and Rust versions
/// (unlike std's hashers), as the format marker promises.
fn stripe_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % LOCK_STRIPES as u64) as usize
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(format!("fs store: blocking task failed: {e}")))?
}

fn io_context(e: io::Error, what: &str, path: &Path) -> Error {
    if crate::error::is_storage_full(&e) {
        return Error::storage_full(io::Error::new(e.kind(), format!("{what} {path:?}: {e}")));
    }
    let retryable = Error::from(io::Error::from(e.kind())).is_retryable();
    let source = io::Error::new(e.kind(), format!("{what} {path:?}: {e}"));
    Error::Backend {
        source: Box::new(source),
        retryable,
    }
}

/// For the fuzz targets: the header decoder on a whole object file held in memory, and the
/// file name decoder. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The header of the object file `bytes` holding `key`.
    pub fn decode_object_file(bytes: &[u8], key: &Key) -> std::result::Result<(Meta, u64), String> {
        decode_header(bytes, bytes.len() as u64, key)
    }

    /// The key segment a file or directory name stands for.
    pub fn decode_name(name: &str) -> Option<String> {
        names::decode_segment(name)
    }
}

/// How many times a step is tried whose path a concurrent delete can pull away (it removes a
/// directory once empty) before the step gives up.
const DELETE_RACE_ATTEMPTS: u32 = 100;

/// Runs `step` (`what` on `path`) until it succeeds, or fails other than with `NotFound` (a
/// directory on its way removed by a concurrent delete); after each `NotFound`, `repair` runs
/// first (and may end it with an error). Returns `step`'s value and how many attempts failed.
fn despite_deletes<T>(
    what: &str,
    path: &Path,
    mut step: impl FnMut() -> io::Result<T>,
    mut repair: impl FnMut(io::Error) -> Result<()>,
) -> Result<(T, u32)> {
    let attempts = Attempts::new(DELETE_RACE_ATTEMPTS);
    for lost in attempts {
        match step() {
            Ok(value) => return Ok((value, lost)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => repair(e)?,
            Err(e) => return Err(io_context(e, what, path)),
        }
    }
    attempts.exhausted(format_args!(
        "{what} {path:?}: concurrent deletes kept removing a directory on its way"
    ))
}

/// `create_dir_all` that survives a concurrent delete removing empty directories on the way.
fn create_dir_all_racing(dir: &Path) -> Result<()> {
    let create = || fs::create_dir_all(dir);
    despite_deletes("creating directory", dir, create, |_| Ok(())).map(|((), _)| ())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_context(e, "syncing directory", dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    // Directories cannot be opened for syncing here; rename durability is the OS's.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_fnv1a_and_never_change() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; of "" the offset basis 0xcbf29ce484222325.
        assert_eq!(stripe_of("a"), 0x8c);
        assert_eq!(stripe_of(""), 0x25);
        assert_eq!(stripe_of("refs/HEAD"), stripe_of("refs/HEAD"));
    }
}
