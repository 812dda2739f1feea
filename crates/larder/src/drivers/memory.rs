//! In-process memory store, optionally bounded in bytes (least recently used evicted first) and
//! with a default TTL.
//!
//! Atomicity: every operation holds one mutex across evaluate-and-mutate: atomic within the
//! process that owns the store.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::list::{paginate, ListOptions, ListPage};
use crate::meta::{now_millis, Meta};
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
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<Key, Entry>,
    /// Access order: tick → key; the smallest tick is the least recently used.
    lru: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    meta: Meta,
    data: Bytes,
    tick: u64,
}

impl Inner {
    /// The live entry at `key`, dropping it if it has expired.
    fn live(&mut self, key: &Key, now: SystemTime) -> Option<&mut Entry> {
        if self
            .objects
            .get(key)
            .is_some_and(|e| e.meta.is_expired_at(now))
        {
            self.remove(key);
        }
        self.objects.get_mut(key)
    }

    fn touch(&mut self, key: &Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.objects.get_mut(key) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, key.clone());
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
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("memory store URL {url:?}: {e}")))?;
        if parsed.scheme() != "memory" {
            return Err(Error::InvalidInput(format!(
                "memory store URL {url:?}: the scheme must be memory"
            )));
        }
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
            inner: Mutex::default(),
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
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-applied change (every change is one
        // map operation), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut inner = self.lock();
        let entry = inner
            .live(key, SystemTime::now())
            .ok_or_else(|| Error::not_found(key))?;
        opts.preconditions.evaluate_read(&entry.meta)?;
        Ok(entry.meta.clone())
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        let (meta, range, data) = {
            let mut inner = self.lock();
            let entry = inner
                .live(key, SystemTime::now())
                .ok_or_else(|| Error::not_found(key))?;
            let range = opts.evaluate(&entry.meta)?;
            let data = match &range {
                Some(r) => entry.data.slice(r.start as usize..r.end as usize),
                None => entry.data.clone(),
            };
            let meta = entry.meta.clone();
            inner.touch(key);
            (meta, range, data)
        };
        Ok(GetResult {
            meta,
            range,
            body: futures::stream::once(async move { Ok(data) }).boxed(),
        })
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        let caps = self.capabilities();
        caps.check_put(&opts)?;
        let (data, etag, size) = body
            .reader(caps.max_object_size)
            .collect(opts.expected_etag.as_ref())
            .await?;
        let opts = PutOptions {
            ttl: opts.ttl.or(self.config.default_ttl),
            ..opts
        };
        let mut inner = self.lock();
        // Stamped under the lock, so a later write never gets an earlier Last-Modified.
        let current = inner.live(key, now_millis()).map(|e| &e.meta);
        opts.preconditions.evaluate_write(current)?;
        let replaces = current.map(|c| c.last_modified);
        let meta = Meta::next_version(key, etag, size, replaces, &opts)?;
        let created = inner.remove(key).is_none();
        inner.bytes += size;
        inner.objects.insert(
            key.clone(),
            Entry {
                meta: meta.clone(),
                data,
                tick: 0,
            },
        );
        inner.touch(key);
        if let Some(max) = self.config.max_bytes {
            inner.evict_to(max);
        }
        Ok(PutResult { meta, created })
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let mut inner = self.lock();
        let entry = inner
            .live(key, SystemTime::now())
            .ok_or_else(|| Error::not_found(key))?;
        opts.preconditions.evaluate_write(Some(&entry.meta))?;
        inner.remove(key);
        Ok(())
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let inner = self.lock();
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
            .map(|(_, e)| e.meta.clone());
        Ok(paginate(candidates, &opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreExt;

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
