//! In-process memory store, optionally bounded in bytes (least recently used evicted first) and
//! with a default TTL.
//!
//! Atomicity: every write holds the store's write lock across evaluate-and-mutate: atomic within
//! the process that owns the store. Reads of an unbounded store share a read lock (a bounded one
//! writes its access order, so it takes the write lock).
//!
//! Layout: an entry keeps what it cannot rebuild, compactly (the ETag as its 32-byte digest,
//! times in milliseconds, rarely set fields out of line); the [`Meta`] a caller gets is built
//! from it on the way out.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::{from_millis, to_millis, Meta};
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Settings of a [`MemoryStore`].
#[derive(Clone, Debug, Default)]
pub struct MemoryConfig {
    /// Evict least recently used objects to keep the stored bytes under this.
    pub max_bytes: Option<u64>,
    /// TTL of objects written without one.
    pub default_ttl: Option<Duration>,
}

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    config: MemoryConfig,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<Key, Entry>,
    /// Access order of a bounded store (empty when unbounded): tick → key; the smallest tick
    /// is the least recently used.
    lru: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    data: Bytes,
    /// SHA-256 of `data`: the ETag, without its 64-character text.
    digest: [u8; 32],
    /// `last_modified` in milliseconds, the resolution every time is stored with.
    modified_ms: i64,
    /// Fields most objects don't set, out of line so that an entry stays small.
    extra: Option<Box<Extra>>,
    /// Its key in [`Inner::lru`] (bounded stores only).
    tick: u64,
}

#[derive(Debug)]
struct Extra {
    expires_at: Option<SystemTime>,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl Entry {
    /// The entry of a new version; `meta` is what [`Meta::next_version`] made for `data`,
    /// `digest` the SHA-256 its ETag spells (kept from the hasher: no decoding of the text),
    /// `tick` its place in the access order.
    fn new(meta: &Meta, digest: [u8; 32], data: Bytes, tick: u64) -> Entry {
        let extra =
            (meta.expires_at.is_some() || meta.content_type.is_some() || !meta.metadata.is_empty())
                .then(|| {
                    Box::new(Extra {
                        expires_at: meta.expires_at,
                        content_type: meta.content_type.clone(),
                        metadata: meta.metadata.clone(),
                    })
                });
        Entry {
            data,
            digest,
            modified_ms: to_millis(meta.last_modified),
            extra,
            tick,
        }
    }

    fn expires_at(&self) -> Option<SystemTime> {
        self.extra.as_ref().and_then(|x| x.expires_at)
    }

    /// Whether it has expired: reads the clock only for an entry with an expiry.
    fn is_expired(&self) -> bool {
        self.expires_at().is_some_and(|t| t <= SystemTime::now())
    }

    fn last_modified(&self) -> SystemTime {
        from_millis(self.modified_ms)
    }

    fn meta(&self, key: &Key) -> Meta {
        let (content_type, metadata) = match &self.extra {
            Some(x) => (x.content_type.clone(), x.metadata.clone()),
            None => (None, BTreeMap::new()),
        };
        Meta {
            key: key.clone(),
            etag: ETag::from_sha256(&self.digest),
            size: self.data.len() as u64,
            last_modified: self.last_modified(),
            expires_at: self.expires_at(),
            content_type,
            metadata,
        }
    }
}

impl Inner {
    /// The live entry at `key`, dropping it if it has expired.
    fn live(&mut self, key: &Key) -> Option<&mut Entry> {
        if self.objects.get(key).is_some_and(Entry::is_expired) {
            self.remove(key);
            return None;
        }
        self.objects.get_mut(key)
    }

    /// Moves `key` to the most recently used end (bounded stores only).
    fn touch(&mut self, key: &Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.objects.get_mut(key) {
            // The key moves from its old place to the new one: no copy of it.
            let k = self.lru.remove(&e.tick).unwrap_or_else(|| key.clone());
            e.tick = tick;
            self.lru.insert(tick, k);
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.objects.remove(key)?;
        self.lru.remove(&e.tick);
        self.bytes -= e.data.len() as u64;
        Some(e)
    }

    fn evict_to(&mut self, max: u64) {
        while self.bytes > max {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some(e) = self.objects.remove(&key) {
                self.bytes -= e.data.len() as u64;
            }
        }
    }
}

impl MemoryConfig {
    /// From a store URL: `memory://?max_bytes=N&ttl=SECONDS` (both optional).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = crate::open::parse_store_url(url, "memory store", &["memory"])?;
        let mut config = MemoryConfig::default();
        for (k, v) in parsed.query_pairs() {
            let n: u64 = v.parse().map_err(|_| {
                Error::InvalidInput(format!("memory store: {k}={v} is not a number"))
            })?;
            match &*k {
                "max_bytes" => config.max_bytes = Some(n),
                "ttl" => config.default_ttl = Some(Duration::from_secs(n)),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "memory store: unknown option {k}"
                    )))
                }
            }
        }
        Ok(config)
    }
}

impl MemoryStore {
    /// An unbounded memory store without a default TTL (the same as
    /// `MemoryStore::open(MemoryConfig::default())`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A memory store with the given settings; `InvalidInput` when the default TTL is zero or
    /// over [`MAX_TTL`](crate::meta::MAX_TTL).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use larder::drivers::memory::{MemoryConfig, MemoryStore};
    ///
    /// let store = MemoryStore::open(MemoryConfig {
    ///     max_bytes: Some(64 << 20),                     // evict LRU past 64 MiB
    ///     default_ttl: Some(Duration::from_secs(3600)),  // objects written without a TTL
    /// })
    /// .await?;
    /// assert_eq!(store.bytes_used(), 0);
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    pub async fn open(config: MemoryConfig) -> Result<Self> {
        if let Some(ttl) = config.default_ttl {
            crate::meta::check_ttl(ttl)?;
        }
        Ok(MemoryStore {
            config,
            inner: RwLock::default(),
        })
    }

    /// From a store URL, as [`MemoryConfig::from_url`] reads it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use larder::drivers::memory::MemoryStore;
    ///
    /// let store = MemoryStore::from_url("memory://?max_bytes=1048576&ttl=60").await?;
    /// # let _ = store;
    /// # Ok::<(), larder::Error>(()) }).unwrap();
    /// ```
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(MemoryConfig::from_url(url)?).await
    }

    /// Bytes currently held.
    pub fn bytes_used(&self) -> u64 {
        self.read().bytes
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-applied change (every change is one
        // map operation), so a poisoned lock is still consistent.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// What [`Store::get`] and [`Store::get_now`] answer (one implementation, synchronous).
    fn read_object(&self, key: &Key, opts: &GetOptions) -> Result<GetResult> {
        // Conditions are decided on the metadata of the version whose bytes are served.
        let (meta, data) = self.snapshot(key)?;
        GetResult::from_bytes(meta, data, opts)
    }

    /// The metadata and bytes at `key`, from one version; the least recently used order is
    /// updated in a bounded store.
    fn snapshot(&self, key: &Key) -> Result<(Meta, Bytes)> {
        if self.config.max_bytes.is_some() {
            let mut inner = self.lock();
            let entry = inner.live(key).ok_or_else(|| Error::not_found(key))?;
            let found = (entry.meta(key), entry.data.clone());
            inner.touch(key);
            return Ok(found);
        }
        {
            let inner = self.read();
            match inner.objects.get(key) {
                None => return Err(Error::not_found(key)),
                Some(e) if !e.is_expired() => return Ok((e.meta(key), e.data.clone())),
                Some(_) => {}
            }
        }
        // Expired: dropped under the write lock (unless rewritten meanwhile).
        let mut inner = self.lock();
        let entry = inner.live(key).ok_or_else(|| Error::not_found(key))?;
        Ok((entry.meta(key), entry.data.clone()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_object_size: self.config.max_bytes,
            ..Capabilities::full("memory", AtomicScope::Process, false)
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let meta = {
            let inner = self.read();
            match inner.objects.get(key) {
                Some(e) if !e.is_expired() => e.meta(key),
                _ => return Err(Error::not_found(key)),
            }
        };
        opts.preconditions.evaluate_read_owned(meta)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        self.read_object(key, &opts)
    }

    /// Always answers: a read is one step under the store's lock.
    fn get_now(&self, key: &Key, opts: &GetOptions) -> Option<Result<GetResult>> {
        Some(self.read_object(key, opts))
    }

    /// The version is told by the digest the entry keeps: no ETag text is made.
    fn get_version_now(&self, key: &Key, etag: &ETag) -> Option<Bytes> {
        if self.config.max_bytes.is_some() {
            let mut inner = self.lock();
            let entry = inner.objects.get(key)?;
            if entry.is_expired() || !etag.is_sha256_of(&entry.digest) {
                // Expired entries are left to `get`, which drops them.
                return None;
            }
            let data = entry.data.clone();
            inner.touch(key);
            return Some(data);
        }
        let inner = self.read();
        let entry = inner.objects.get(key)?;
        (!entry.is_expired() && etag.is_sha256_of(&entry.digest)).then(|| entry.data.clone())
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        let caps = self.capabilities();
        caps.check_put(&opts)?;
        let (limit, expected) = (caps.max_object_size, opts.expected_etag.as_ref());
        let (data, etag, digest, size) = match body.collect_digest_now(limit, expected) {
            Ok(collected) => collected?,
            // A stream, collected in a future of its own: this one (allocated and moved per
            // write) stays small.
            Err(stream) => Box::pin(stream.reader(limit).collect_digest(expected)).await?,
        };
        let opts = PutOptions {
            ttl: opts.ttl.or(self.config.default_ttl),
            ..opts
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Evaluated and stamped under the lock: the check and the write are one step, and a
        // later write never gets an earlier Last-Modified. One search of the key: the entry
        // found is decided on and, in the common case of an overwrite, replaced where it lies.
        let mut expired = false;
        let current = match inner.objects.get_mut(key) {
            Some(e) if e.is_expired() => {
                expired = true;
                None
            }
            found => found,
        };
        let (meta, created) = match current {
            Some(e) => {
                if !opts.preconditions.is_empty() {
                    opts.preconditions.evaluate_write(Some(&e.meta(key)))?;
                }
                let meta = Meta::next_version(key, etag, size, Some(e.last_modified()), &opts)?;
                // The map keeps its copy of the key, and `touch` below finds the old entry's
                // place in the access order through the tick the new one inherits.
                let old = std::mem::replace(e, Entry::new(&meta, digest, data, e.tick));
                inner.bytes = inner.bytes - old.data.len() as u64 + size;
                (meta, false)
            }
            None => {
                if expired {
                    inner.remove(key);
                }
                if !opts.preconditions.is_empty() {
                    opts.preconditions.evaluate_write(None)?;
                }
                let meta = Meta::next_version(key, etag, size, None, &opts)?;
                let entry = Entry::new(&meta, digest, data, 0);
                inner.objects.insert(key.clone(), entry);
                inner.bytes += size;
                (meta, true)
            }
        };
        if let Some(max) = self.config.max_bytes {
            inner.touch(key);
            inner.evict_to(max);
        }
        Ok(PutResult { meta, created })
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let mut inner = self.lock();
        let entry = inner.live(key).ok_or_else(|| Error::not_found(key))?;
        if !opts.preconditions.is_empty() {
            opts.preconditions.evaluate_write(Some(&entry.meta(key)))?;
        }
        inner.remove(key);
        Ok(())
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let inner = self.read();
        // From the later of the cursor and the prefix (a cursor before the prefix must not end
        // the scan at the first key outside the prefix).
        let start = match &opts.cursor {
            Some(c) if *c > opts.prefix => c.clone(),
            _ => opts.prefix.clone(),
        };
        let candidates = inner
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(start.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&opts.prefix))
            .map(|(k, e)| e.meta(k));
        Ok(paginate(candidates, &opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreExt;

    /// `get_now` always answers, with what `get` answers, and counts as a use of the object.
    #[tokio::test]
    async fn get_now_answers_as_get() {
        let store = MemoryStore::open(MemoryConfig {
            max_bytes: Some(8),
            default_ttl: None,
        })
        .await
        .unwrap();
        let k = |s: &str| Key::new(s).unwrap();
        let plain = GetOptions::default();
        assert!(matches!(
            store.get_now(&k("a"), &plain),
            Some(Err(Error::NotFound { .. }))
        ));
        let a = store.put_bytes(&k("a"), "aaaa".into()).await.unwrap();
        let now = store.get_now(&k("a"), &plain).unwrap().unwrap();
        let later = store.get(&k("a"), plain.clone()).await.unwrap();
        assert_eq!((&now.meta, &now.range), (&later.meta, &later.range));
        assert_eq!(now.bytes().await.unwrap(), later.bytes().await.unwrap());
        let revalidate = GetOptions {
            preconditions: crate::Preconditions {
                if_none_match: Some(crate::ETagCondition::tag(a.etag.clone())),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(
            store.get_now(&k("a"), &revalidate),
            Some(Err(Error::NotModified(_)))
        ));
        let ranged = GetOptions {
            range: Some(crate::ByteRange::From(2)),
            ..Default::default()
        };
        let r = store.get_now(&k("a"), &ranged).unwrap().unwrap();
        assert_eq!(r.range, Some(2..4));
        assert_eq!(r.bytes().await.unwrap(), "aa");
        // A use, as a `get` is: after b is written, a read of a makes b the one evicted.
        store.put_bytes(&k("b"), "bbbb".into()).await.unwrap();
        store.get_now(&k("a"), &plain).unwrap().unwrap();
        store.put_bytes(&k("c"), "cccc".into()).await.unwrap();
        assert!(store.stat(&k("a")).await.unwrap().is_some());
        assert!(store.stat(&k("b")).await.unwrap().is_none());
    }

    /// `get_version_now` answers for the current version only, in the bounded store and the
    /// unbounded one alike, never for an expired one, and counts as a use of the object.
    #[tokio::test]
    async fn get_version_now_answers_for_the_current_version() {
        let k = |s: &str| Key::new(s).unwrap();
        for max_bytes in [None, Some(8)] {
            let store = MemoryStore::open(MemoryConfig {
                max_bytes,
                default_ttl: None,
            })
            .await
            .unwrap();
            let a1 = store.put_bytes(&k("a"), "a1".into()).await.unwrap();
            assert_eq!(store.get_version_now(&k("a"), &a1.etag).unwrap(), "a1");
            let a2 = store.put_bytes(&k("a"), "aaaa".into()).await.unwrap();
            assert_eq!(store.get_version_now(&k("a"), &a1.etag), None);
            assert_eq!(store.get_version_now(&k("a"), &a2.etag).unwrap(), "aaaa");
            let brief = PutOptions {
                ttl: Some(Duration::from_millis(20)),
                ..Default::default()
            };
            let e = store.put(&k("e"), "e".into(), brief).await.unwrap().meta;
            tokio::time::sleep(Duration::from_millis(40)).await;
            assert_eq!(store.get_version_now(&k("e"), &e.etag), None, "expired");
        }
        // A use, as a `get` is: after b is written, a read of a makes b the one evicted.
        let store = MemoryStore::open(MemoryConfig {
            max_bytes: Some(8),
            default_ttl: None,
        })
        .await
        .unwrap();
        let a = store.put_bytes(&k("a"), "aaaa".into()).await.unwrap();
        store.put_bytes(&k("b"), "bbbb".into()).await.unwrap();
        store.get_version_now(&k("a"), &a.etag).unwrap();
        store.put_bytes(&k("c"), "cccc".into()).await.unwrap();
        assert!(store.stat(&k("a")).await.unwrap().is_some());
        assert!(store.stat(&k("b")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn evicts_least_recently_used() {
        let store = MemoryStore::open(MemoryConfig {
            max_bytes: Some(10),
            default_ttl: None,
        })
        .await
        .unwrap();
        let k = |s: &str| Key::new(s).unwrap();
        store
            .put_bytes(&k("a"), Bytes::from_static(b"aaaa"))
            .await
            .unwrap();
        store
            .put_bytes(&k("b"), Bytes::from_static(b"bbbb"))
            .await
            .unwrap();
        store.get_bytes(&k("a")).await.unwrap(); // a is now more recent than b
        store
            .put_bytes(&k("c"), Bytes::from_static(b"cccc"))
            .await
            .unwrap();
        assert!(store.stat(&k("a")).await.unwrap().is_some());
        assert!(
            store.stat(&k("b")).await.unwrap().is_none(),
            "b was least recently used"
        );
        assert!(store.stat(&k("c")).await.unwrap().is_some());
        assert_eq!(store.bytes_used(), 8);
        let big = store.put_bytes(&k("d"), Bytes::from(vec![0u8; 11])).await;
        assert!(matches!(big, Err(Error::TooLarge { limit: 10 })));
    }
}
