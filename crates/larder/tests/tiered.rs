//! Tiered stores and mounts: the conformance kit on tiered stacks and on a mount store, then
//! one test per pitfall of cachew's tiered cache, named after it, and the replica tests.

#![cfg(all(feature = "tiered", feature = "memory", feature = "fs"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use larder::conformance::{delimited, fresh_prefix, key, Holding};
use larder::drivers::fs::{FsConfig, FsStore};
use larder::drivers::memory::MemoryStore;
use larder::tiered::{
    open_config, Invalidator, MemoryInvalidator, MountStore, Tier, TierConfig, TieredStore,
    DEFAULT_ACK_TIMEOUT,
};
use larder::{
    Body, ByteRange, DeleteOptions, ETag, ETagCondition, Error, GetOptions, GetResult, HeadOptions,
    IfRange, Key, ListOptions, ListPage, Meta, Preconditions, PutOptions, PutResult, Store,
    StoreExt,
};
use tempfile::TempDir;

async fn fs_tier() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

fn mem() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

const WINDOW: Duration = Duration::from_secs(30);

/// A kind of tier in a [`stack`].
#[derive(Clone, Copy, Debug)]
enum Layer {
    Memory,
    Fs,
    #[cfg(feature = "sqlite")]
    Sqlite,
}

/// A tiered store over tiers of `layers` (nearest first) with the revalidation `window`,
/// keeping the temporary directories of its fs and sqlite tiers alive.
async fn stack(layers: &[Layer], window: Duration) -> Option<Arc<dyn Store>> {
    let (mut tiers, mut dirs) = (Vec::new(), Vec::new());
    for layer in layers {
        match layer {
            Layer::Memory => tiers.push(mem()),
            Layer::Fs => {
                let (fs, dir) = fs_tier().await;
                tiers.push(fs);
                dirs.push(dir);
            }
            #[cfg(feature = "sqlite")]
            Layer::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/auth.db", dir.path().display());
                tiers.push(larder::open(&url).await.unwrap());
                dirs.push(dir);
            }
        }
    }
    let store = TieredStore::with_stores(tiers, window).unwrap();
    Some(Arc::new(Holding::new(store, dirs)))
}

/// `mod $name`: the conformance kit on a [`stack`] of `$layer`s with `$window`.
macro_rules! stack_kit {
    ($(#[$attr:meta])* $name:ident: [$($layer:ident),*], $window:expr) => {
        $(#[$attr])*
        mod $name {
            use super::*;
            larder::conformance_tests!(stack(&[$(Layer::$layer),*], $window));
        }
    };
}

/// memory -> fs
async fn memory_fs() -> Option<Arc<dyn Store>> {
    stack(&[Layer::Memory, Layer::Fs], WINDOW).await
}

larder::conformance_tests!(memory_fs());

stack_kit!(
    /// memory -> fs -> sqlite.
    #[cfg(feature = "sqlite")]
    memory_fs_sqlite: [Memory, Fs, Sqlite], WINDOW
);
stack_kit!(
    /// fs -> fs.
    fs_fs: [Fs, Fs], WINDOW
);
stack_kit!(
    /// memory -> fs -> fs, three tiers.
    memory_fs_fs: [Memory, Fs, Fs], WINDOW
);
stack_kit!(
    /// Every nearer copy revalidated on every read (window zero).
    memory_fs_no_window: [Memory, Fs], Duration::ZERO
);

/// A mount store: `kit/` on a tiered memory -> fs stack, `kit/listing/` on memory, the rest on
/// memory.
mod mounts {
    use super::*;
    async fn store() -> Option<Arc<dyn Store>> {
        let (fs, dir) = fs_tier().await;
        let tiered: Arc<dyn Store> =
            Arc::new(TieredStore::with_stores(vec![mem(), fs], WINDOW).unwrap());
        let store = MountStore::new(vec![
            (String::new(), mem()),
            ("kit/".into(), tiered),
            ("kit/listing/".into(), mem()),
        ])
        .unwrap();
        Some(Arc::new(Holding::new(store, dir)))
    }
    larder::conformance_tests!(store());
}

#[cfg(feature = "postgres")]
mod memory_postgres {
    use super::*;
    async fn store() -> Option<Arc<dyn Store>> {
        let url = match std::env::var("LARDER_TEST_POSTGRES_URL") {
            Ok(u) => u,
            Err(_) => {
                return larder::conformance::skip_or_fail(
                    "PostgreSQL",
                    "LARDER_TEST_POSTGRES_URL unset",
                )
            }
        };
        let pg = match larder::open(&url).await {
            Ok(s) => s,
            Err(e) => return larder::conformance::skip_or_fail("PostgreSQL", e),
        };
        Some(Arc::new(
            TieredStore::with_stores(vec![mem(), pg], WINDOW).unwrap(),
        ))
    }
    larder::conformance_tests!(store());
}

// ---------------------------------------------------------------------------------------------
// Helpers for the pitfall tests.

fn k(name: &str) -> Key {
    key(&fresh_prefix("tiered"), name)
}

async fn body(r: GetResult) -> Bytes {
    r.bytes().await.unwrap()
}

async fn has(store: &Arc<dyn Store>, key: &Key) -> Option<ETag> {
    store.stat(key).await.unwrap().map(|m| m.etag)
}

fn get_if(p: Preconditions) -> GetOptions {
    GetOptions {
        preconditions: p,
        ..Default::default()
    }
}

fn none_match(tag: &ETag) -> Preconditions {
    Preconditions {
        if_none_match: Some(ETagCondition::tag(tag.clone())),
        ..Default::default()
    }
}

/// How the authoritative store in [`Faulty`] damages bodies.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Ends the body early without an error (a lost connection read as EOF).
    Truncate,
    /// Yields an error after the first half.
    Error,
    /// Serves other bytes of the same length.
    Corrupt,
}

/// An authoritative store whose full-body reads can be damaged.
#[derive(Debug)]
struct Faulty {
    inner: MemoryStore,
    fault: std::sync::Mutex<Fault>,
}

impl Faulty {
    fn new() -> Arc<Self> {
        Arc::new(Faulty {
            inner: MemoryStore::new(),
            fault: std::sync::Mutex::new(Fault::None),
        })
    }
    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
}

#[async_trait]
impl Store for Faulty {
    fn capabilities(&self) -> larder::Capabilities {
        self.inner.capabilities()
    }
    async fn head(&self, key: &Key, opts: HeadOptions) -> larder::Result<Meta> {
        self.inner.head(key, opts).await
    }
    async fn get(&self, key: &Key, opts: GetOptions) -> larder::Result<GetResult> {
        let r = self.inner.get(key, opts).await?;
        let fault = *self.fault.lock().unwrap();
        let data = r.bytes_peek().await;
        let half = data.len() / 2;
        let body: larder::ByteStream = match fault {
            Fault::None => futures::stream::iter(vec![Ok(data.0)]).boxed(),
            Fault::Truncate => futures::stream::iter(vec![Ok(data.0.slice(..half))]).boxed(),
            Fault::Error => futures::stream::iter(vec![
                Ok(data.0.slice(..half)),
                Err(Error::transient("connection reset")),
            ])
            .boxed(),
            Fault::Corrupt => {
                let mut v = data.0.to_vec();
                v[0] ^= 0xff;
                futures::stream::iter(vec![Ok(Bytes::from(v))]).boxed()
            }
        };
        Ok(GetResult {
            meta: data.1,
            range: data.2,
            body,
        })
    }
    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> larder::Result<PutResult> {
        self.inner.put(key, body, opts).await
    }
    async fn delete(&self, key: &Key, opts: DeleteOptions) -> larder::Result<()> {
        self.inner.delete(key, opts).await
    }
    async fn list(&self, opts: ListOptions) -> larder::Result<ListPage> {
        self.inner.list(opts).await
    }
}

/// Reads a result fully, keeping its meta and range.
trait Peek {
    async fn bytes_peek(self) -> Buffered;
}
struct Buffered(Bytes, Meta, Option<std::ops::Range<u64>>);
impl Peek for GetResult {
    async fn bytes_peek(self) -> Buffered {
        let meta = self.meta.clone();
        let range = self.range.clone();
        Buffered(self.bytes().await.unwrap(), meta, range)
    }
}
impl std::ops::Deref for Buffered {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.0
    }
}

/// A memory tier and an authoritative memory store, with the tiered store over them.
fn two_tier(window: Duration) -> (TieredStore, Arc<dyn Store>, Arc<dyn Store>) {
    let near = mem();
    let auth = mem();
    let t = TieredStore::with_stores(vec![near.clone(), auth.clone()], window).unwrap();
    (t, near, auth)
}

// ---------------------------------------------------------------------------------------------
// One test per pitfall.

#[tokio::test]
async fn no_backfill_from_truncated_stream() {
    let auth = Faulty::new();
    let near = mem();
    let t = TieredStore::with_stores(vec![near.clone(), auth.clone()], WINDOW).unwrap();
    let key = k("blob");
    let data = Bytes::from(vec![7u8; 4096]);
    auth.put_bytes(&key, data.clone()).await.unwrap();

    for fault in [Fault::Truncate, Fault::Error, Fault::Corrupt] {
        auth.set(fault);
        let r = t.get(&key, GetOptions::default()).await.unwrap();
        let mut s = r.body;
        while let Some(c) = s.next().await {
            if c.is_err() {
                break;
            }
        }
        assert_eq!(
            has(&near, &key).await,
            None,
            "{fault:?} body was backfilled"
        );
    }
    assert_eq!(t.stats()[0].backfills, 0);
    // A sound body is backfilled, and then served from the nearer tier.
    auth.set(Fault::None);
    assert_eq!(
        body(t.get(&key, GetOptions::default()).await.unwrap()).await,
        data
    );
    assert_eq!(has(&near, &key).await, Some(ETag::of(&data)));
    auth.set(Fault::Truncate);
    assert_eq!(
        body(t.get(&key, GetOptions::default()).await.unwrap()).await,
        data
    );
    assert_eq!(t.stats()[0].backfills, 1);
    assert_eq!(t.stats()[0].hits, 1);
}

#[tokio::test]
async fn no_backfill_from_range() {
    let (t, near, auth) = two_tier(WINDOW);
    let key = k("blob");
    let data = Bytes::from((0..=255u8).collect::<Vec<_>>());
    auth.put_bytes(&key, data.clone()).await.unwrap();
    let tenth_to_nineteenth = GetOptions {
        range: Some(ByteRange::Bounded {
            first: 10,
            last: 19,
        }),
        ..Default::default()
    };
    let r = t.get(&key, tenth_to_nineteenth.clone()).await.unwrap();
    assert_eq!(r.range, Some(10..20));
    assert_eq!(body(r).await, data.slice(10..20));
    assert_eq!(has(&near, &key).await, None, "a range was backfilled");
    // If-Range failing serves the whole body: that one may be backfilled.
    let opts = GetOptions {
        if_range: Some(IfRange::ETag(ETag::of(b"other"))),
        ..tenth_to_nineteenth
    };
    let r = t.get(&key, opts).await.unwrap();
    assert_eq!(r.range, None);
    assert_eq!(body(r).await, data);
    assert_eq!(has(&near, &key).await, Some(ETag::of(&data)));
    // And a range is then served from the full nearer copy.
    let r = t
        .get(
            &key,
            GetOptions {
                range: Some(ByteRange::Suffix(5)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(body(r).await, data.slice(251..));
    assert_eq!(t.stats()[0].hits, 1);
}

/// A nearer tier holding v1 while the authoritative tier has v2, and no record of a recent
/// validation (a restarted replica over a persistent cache, or a write through another
/// replica without invalidation).
async fn stale_setup() -> (TieredStore, Arc<dyn Store>, Key, Meta, Meta) {
    let near = mem();
    let auth = mem();
    let key = k("obj");
    let v1 = near.put_bytes(&key, "v1".into()).await.unwrap();
    let v2 = auth.put_bytes(&key, "v2".into()).await.unwrap();
    let t = TieredStore::with_stores(vec![near.clone(), auth], WINDOW).unwrap();
    (t, near, key, v1, v2)
}

#[tokio::test]
async fn no_304_from_stale_nearer_tier() {
    let (t, near, key, v1, v2) = stale_setup().await;
    let r = t.get(&key, get_if(none_match(&v1.etag))).await.unwrap();
    assert_eq!(r.meta.etag, v2.etag);
    assert_eq!(body(r).await, "v2");
    assert_eq!(t.stats()[0].stale_reads_refused, 1);
    assert_ne!(
        has(&near, &key).await,
        Some(v1.etag.clone()),
        "stale copy kept"
    );
    let r = t
        .head(
            &key,
            HeadOptions {
                preconditions: none_match(&v1.etag),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.etag, v2.etag);
    // Date conditions too: If-Modified-Since is decided on the authoritative date.
    let (t, _, key, _, v2) = stale_setup().await;
    let p = Preconditions {
        if_modified_since: Some(v2.last_modified - Duration::from_secs(10)),
        ..Default::default()
    };
    assert_eq!(body(t.get(&key, get_if(p)).await.unwrap()).await, "v2");
}

#[tokio::test]
async fn no_if_match_from_stale_nearer_tier() {
    let (t, _, key, v1, v2) = stale_setup().await;
    match t
        .get(&key, get_if(Preconditions::if_match(v1.etag.clone())))
        .await
    {
        Err(Error::PreconditionFailed { current }) => {
            assert_eq!(current.unwrap().etag, v2.etag)
        }
        other => panic!("If-Match on the stale ETag: {other:?}"),
    }
    // A write with If-Match: v1 is decided by the authoritative tier alone.
    let (t, _, key, v1, v2) = stale_setup().await;
    match t.swap(&key, &v1.etag, Bytes::from_static(b"v3")).await {
        Err(Error::PreconditionFailed { current }) => {
            assert_eq!(current.unwrap().etag, v2.etag)
        }
        other => panic!("swap on the stale ETag: {other:?}"),
    }
    t.swap(&key, &v2.etag, Bytes::from_static(b"v3"))
        .await
        .unwrap();
}

#[tokio::test]
async fn pinned_version_not_answered_by_first_tier() {
    // If-None-Match: v2 must be 304 (the authoritative copy is v2), though the nearer tier has v1.
    let (t, _, key, _, v2) = stale_setup().await;
    match t.get(&key, get_if(none_match(&v2.etag))).await {
        Err(Error::NotModified(m)) => assert_eq!(m.etag, v2.etag),
        other => panic!("If-None-Match v2: {other:?}"),
    }
    // If-Match: v2 serves v2, not the nearer v1.
    let (t, _, key, _, v2) = stale_setup().await;
    let r = t
        .get(&key, get_if(Preconditions::if_match(v2.etag.clone())))
        .await
        .unwrap();
    assert_eq!(body(r).await, "v2");
    // If-Range: v2 serves the range of v2.
    let (t, _, key, _, v2) = stale_setup().await;
    let r = t
        .get(
            &key,
            GetOptions {
                range: Some(ByteRange::From(1)),
                if_range: Some(IfRange::ETag(v2.etag.clone())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.range, Some(1..2));
    assert_eq!(body(r).await, "2");
}

#[tokio::test]
async fn single_tier_invalidate_keeps_authoritative_copy() {
    let auth = mem();
    let t = TieredStore::with_stores(vec![auth.clone()], WINDOW).unwrap();
    let key = k("only");
    t.put_bytes(&key, Bytes::from_static(b"x")).await.unwrap();
    t.invalidate(&key).await;
    assert!(
        has(&auth, &key).await.is_some(),
        "the only copy was deleted"
    );
    assert_eq!(t.get_bytes(&key).await.unwrap().0, "x");

    let (t, near, auth) = two_tier(WINDOW);
    t.put_bytes(&key, Bytes::from_static(b"y")).await.unwrap();
    assert!(has(&near, &key).await.is_some(), "written through");
    t.invalidate(&key).await;
    assert_eq!(has(&near, &key).await, None);
    assert!(
        has(&auth, &key).await.is_some(),
        "the authoritative copy was deleted"
    );
    assert_eq!(t.get_bytes(&key).await.unwrap().0, "y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_and_metadata_written_atomically() {
    let (fs, dir) = fs_tier().await;
    let store = TieredStore::with_stores(vec![mem(), fs], Duration::from_millis(5)).unwrap();
    let t = Arc::new(Holding::new(store, dir));
    let key = k("hot");
    t.put_bytes(&key, Bytes::from_static(b"0")).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u32 {
        let (t, key) = (t.clone(), key.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..60u32 {
                let len = 1 + ((i * 7 + w) % 50) as usize * 100;
                let data = Bytes::from(vec![(i + w) as u8; len]);
                t.update(&key, |_| data.clone()).await.unwrap();
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (t, key, stop) = (t.clone(), key.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (data, meta) = t.get_bytes(&key).await.unwrap();
                assert_eq!(
                    ETag::of(&data),
                    meta.etag,
                    "body and metadata of different versions"
                );
                assert_eq!(data.len() as u64, meta.size);
                n += 1;
            }
            n
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    // After the writes, a read through the tiers gives the authoritative version.
    let last = t
        .inner()
        .tiers()
        .last()
        .unwrap()
        .store
        .get_bytes(&key)
        .await
        .unwrap();
    assert_eq!(t.get_bytes(&key).await.unwrap().1.etag, last.1.etag);
}

// ---------------------------------------------------------------------------------------------
// Replicas: two tiered stores sharing one authoritative store, each with its own memory tier.

fn replicas(window: Duration) -> (TieredStore, TieredStore, Arc<dyn Store>) {
    let auth = mem();
    let a = TieredStore::with_stores(vec![mem(), auth.clone()], window).unwrap();
    let b = TieredStore::with_stores(vec![mem(), auth.clone()], window).unwrap();
    (a, b, auth)
}

/// Two replicas as [`replicas`] makes them, publishing through `ia` and `ib`.
async fn invalidated_replicas(
    window: Duration,
    ia: Arc<dyn Invalidator>,
    ib: Arc<dyn Invalidator>,
) -> (TieredStore, TieredStore) {
    let auth = mem();
    let replica = |inv| {
        TieredStore::builder(vec![
            Tier::new(mem(), window),
            Tier::new(auth.clone(), window),
        ])
        .invalidator(inv)
        .build()
    };
    (replica(ia).await.unwrap(), replica(ib).await.unwrap())
}

#[tokio::test]
async fn freshness_window_bounds_staleness_across_replicas() {
    let window = Duration::from_millis(300);
    let (a, b, _) = replicas(window);
    let key = k("shared");
    a.put_bytes(&key, Bytes::from_static(b"v1")).await.unwrap();
    assert_eq!(b.get_bytes(&key).await.unwrap().0, "v1"); // B caches v1
    let v2 = a.put_bytes(&key, Bytes::from_static(b"v2")).await.unwrap();
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let (data, meta) = b.get_bytes(&key).await.unwrap();
    assert_eq!((data, meta.etag), (Bytes::from_static(b"v2"), v2.etag));
    assert_eq!(b.stats()[0].stale_reads_refused, 1);
    // Conditions after the window are decided on v2 too.
    let (a, b, _) = replicas(window);
    let v1 = a.put_bytes(&key, Bytes::from_static(b"v1")).await.unwrap();
    b.get_bytes(&key).await.unwrap();
    a.put_bytes(&key, Bytes::from_static(b"v2")).await.unwrap();
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    assert_eq!(
        body(b.get(&key, get_if(none_match(&v1.etag))).await.unwrap()).await,
        "v2"
    );
}

/// Writes through one replica, then reads through the other with no wait: with an
/// invalidation channel, never stale.
async fn no_stale_read_after_write(a: TieredStore, b: TieredStore) {
    let key = k("pubsub");
    let mut last = a.put_bytes(&key, Bytes::from_static(b"v0")).await.unwrap();
    for i in 1..30u32 {
        assert_eq!(
            b.get_bytes(&key).await.unwrap().1.etag,
            last.etag,
            "round {i}"
        );
        let data = Bytes::from(format!("v{i}"));
        last = if i % 5 == 0 {
            a.remove(&key).await.unwrap();
            assert!(b.stat(&key).await.unwrap().is_none(), "round {i}: deleted");
            a.put_bytes(&key, data).await.unwrap()
        } else {
            a.put_bytes(&key, data).await.unwrap()
        };
    }
    assert!(b.stats()[0].invalidations > 0);
}

#[tokio::test]
async fn memory_pubsub_invalidates_other_replica() {
    let inv = MemoryInvalidator::new();
    let (a, b) = invalidated_replicas(Duration::from_secs(3600), inv.clone(), inv).await;
    no_stale_read_after_write(a, b).await;
}

#[cfg(feature = "tiered-redis")]
#[tokio::test]
async fn redis_pubsub_invalidates_other_replica() {
    use larder::tiered::RedisInvalidator;
    let Ok(url) = std::env::var("LARDER_TEST_REDIS_URL") else {
        return larder::conformance::skip_or_fail("Redis", "LARDER_TEST_REDIS_URL unset")
            .unwrap_or(());
    };
    let channel = fresh_prefix("tiered-invalidate");
    let (ia, ib) = match (
        RedisInvalidator::connect(&url, &channel).await,
        RedisInvalidator::connect(&url, &channel).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return larder::conformance::skip_or_fail("Redis", e).unwrap_or(())
        }
    };
    let (a, b) = invalidated_replicas(Duration::from_secs(3600), ia, ib).await;
    no_stale_read_after_write(a, b).await;
}

// ---------------------------------------------------------------------------------------------
// Writes, deletes and failures of nearer tiers.

#[tokio::test]
async fn writes_pass_preconditions_to_the_authoritative_tier_only() {
    let (t, near, auth) = two_tier(WINDOW);
    let key = k("cas");
    // The nearer tier has an object the authoritative tier lacks: create-only still succeeds.
    near.put_bytes(&key, Bytes::from_static(b"ghost"))
        .await
        .unwrap();
    let v1 = t.create(&key, Bytes::from_static(b"v1")).await.unwrap();
    assert_eq!(
        has(&near, &key).await,
        Some(v1.etag.clone()),
        "written through"
    );
    assert_eq!(has(&auth, &key).await, Some(v1.etag.clone()));
    // Failed preconditions leave every tier alone.
    assert!(matches!(
        t.create(&key, Bytes::from_static(b"v2")).await,
        Err(Error::PreconditionFailed { .. })
    ));
    assert_eq!(has(&near, &key).await, Some(v1.etag.clone()));
    // Delete removes every copy; a conditional delete that fails removes none.
    let stale = DeleteOptions {
        preconditions: Preconditions::if_match(ETag::of(b"x")),
    };
    assert!(matches!(
        t.delete(&key, stale).await,
        Err(Error::PreconditionFailed { .. })
    ));
    assert!(has(&auth, &key).await.is_some());
    t.delete(
        &key,
        DeleteOptions {
            preconditions: Preconditions::if_match(v1.etag.clone()),
        },
    )
    .await
    .unwrap();
    assert_eq!(has(&near, &key).await, None);
    assert_eq!(has(&auth, &key).await, None);
    assert!(matches!(
        t.get_bytes(&key).await,
        Err(Error::NotFound { .. })
    ));
}

/// A nearer tier that refuses every write.
#[derive(Debug)]
struct BrokenWrites(MemoryStore);

#[async_trait]
impl Store for BrokenWrites {
    fn capabilities(&self) -> larder::Capabilities {
        self.0.capabilities()
    }
    async fn head(&self, key: &Key, opts: HeadOptions) -> larder::Result<Meta> {
        self.0.head(key, opts).await
    }
    async fn get(&self, key: &Key, opts: GetOptions) -> larder::Result<GetResult> {
        self.0.get(key, opts).await
    }
    async fn put(&self, _: &Key, _: Body, _: PutOptions) -> larder::Result<PutResult> {
        Err(Error::transient("disk full"))
    }
    async fn delete(&self, key: &Key, opts: DeleteOptions) -> larder::Result<()> {
        self.0.delete(key, opts).await
    }
    async fn list(&self, opts: ListOptions) -> larder::Result<ListPage> {
        self.0.list(opts).await
    }
}

#[tokio::test]
async fn failed_write_through_invalidates_nearer_tier() {
    let near = Arc::new(BrokenWrites(MemoryStore::new()));
    let auth = mem();
    let t = TieredStore::with_stores(vec![near.clone(), auth.clone()], WINDOW).unwrap();
    let key = k("obj");
    near.0
        .put_bytes(&key, Bytes::from_static(b"old"))
        .await
        .unwrap();
    let v = t.put_bytes(&key, Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(near.0.stat(&key).await.unwrap(), None, "stale copy left");
    assert_eq!(t.get_bytes(&key).await.unwrap().1.etag, v.etag);
}

#[tokio::test]
async fn streamed_write_invalidates_and_ttl_carries_over() {
    let (t, near, _) = two_tier(WINDOW);
    let key = k("obj");
    t.put_bytes(&key, Bytes::from_static(b"old")).await.unwrap();
    let body = Body::from_stream(futures::stream::iter(vec![Ok::<_, Error>(
        Bytes::from_static(b"new"),
    )]));
    t.put(&key, body, PutOptions::default()).await.unwrap();
    assert_eq!(has(&near, &key).await, None);
    assert_eq!(t.get_bytes(&key).await.unwrap().0, "new");
    assert!(has(&near, &key).await.is_some(), "backfilled");
    let ttl = PutOptions {
        ttl: Some(Duration::from_secs(100)),
        ..Default::default()
    };
    let v = t.put(&key, Body::from("ttl"), ttl).await.unwrap().meta;
    let n = near.stat(&key).await.unwrap().unwrap();
    assert!(n.expires_at.unwrap() <= v.expires_at.unwrap() + Duration::from_millis(5));
}

#[tokio::test]
async fn builder_settings_hold_in_every_clone() {
    // max_cached_bytes: a bigger object is neither written through nor backfilled, also
    // through a clone of the store.
    let (near, auth) = (mem(), mem());
    let t = TieredStore::builder(vec![
        Tier::new(near.clone(), WINDOW),
        Tier::new(auth, WINDOW),
    ])
    .max_cached_bytes(4)
    .build()
    .await
    .unwrap();
    let shared = t.clone();
    let (small, big) = (k("small"), k("big"));
    shared
        .put_bytes(&small, Bytes::from_static(b"1234"))
        .await
        .unwrap();
    shared
        .put_bytes(&big, Bytes::from_static(b"12345"))
        .await
        .unwrap();
    assert!(has(&near, &small).await.is_some(), "written through");
    assert_eq!(
        has(&near, &big).await,
        None,
        "over the limit, written through"
    );
    assert_eq!(shared.get_bytes(&big).await.unwrap().0, "12345");
    assert_eq!(has(&near, &big).await, None, "over the limit, backfilled");
    // ack_timeout: a subscriber that never acknowledges holds a write for the timeout given,
    // not for the default.
    let inv = MemoryInvalidator::new();
    let _silent = inv.subscribe().await.unwrap();
    let t = TieredStore::builder(vec![Tier::new(mem(), WINDOW), Tier::new(mem(), WINDOW)])
        .invalidator(inv)
        .ack_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    t.clone()
        .put_bytes(&k("acked"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100), "did not wait: {took:?}");
    assert!(took < DEFAULT_ACK_TIMEOUT, "waited the default: {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Mounts.

#[tokio::test]
async fn mounts_route_by_longest_prefix_and_merge_listings() {
    let root = mem();
    let cache = mem();
    let deep = mem();
    let m = MountStore::new(vec![
        (String::new(), root.clone()),
        ("cache/".into(), cache.clone()),
        ("cache/deep/".into(), deep.clone()),
    ])
    .unwrap();
    let names = [
        "a",
        "cache/1",
        "cache/2",
        "cache/deep/x",
        "cache/deep/y/z",
        "cachet",
        "z/1",
        "z/2",
    ];
    for n in names {
        m.put_bytes(&Key::new(n).unwrap(), Bytes::from(n))
            .await
            .unwrap();
    }
    assert!(root
        .stat(&Key::new("cachet").unwrap())
        .await
        .unwrap()
        .is_some());
    assert!(cache
        .stat(&Key::new("cache/1").unwrap())
        .await
        .unwrap()
        .is_some());
    assert!(deep
        .stat(&Key::new("cache/deep/x").unwrap())
        .await
        .unwrap()
        .is_some());
    // Shadowed: written to the root store directly, under a mounted prefix.
    root.put_bytes(&Key::new("cache/hidden").unwrap(), Bytes::from_static(b"h"))
        .await
        .unwrap();

    // Every page size, with and without a delimiter, gives the same merged listing.
    for limit in 1..=9 {
        let mut all = Vec::new();
        let mut opts = ListOptions {
            limit: Some(limit),
            ..Default::default()
        };
        loop {
            let p = m.list(opts.clone()).await.unwrap();
            assert!(p.objects.len() <= limit);
            all.extend(p.objects.iter().map(|o| o.key.to_string()));
            match p.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(all, names, "limit {limit}");

        let mut seen = Vec::new();
        let mut opts = ListOptions {
            delimiter: Some('/'),
            limit: Some(limit),
            ..Default::default()
        };
        loop {
            let p = m.list(opts.clone()).await.unwrap();
            let mut page: Vec<String> = p.objects.iter().map(|o| o.key.to_string()).collect();
            page.extend(p.common_prefixes.iter().cloned());
            page.sort();
            assert!(page.len() <= limit);
            seen.extend(page);
            match p.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "cache/", "cachet", "z/"], "limit {limit}");
    }
    let p = m.list(delimited("cache/")).await.unwrap();
    let objs: Vec<String> = p.objects.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(objs, ["cache/1", "cache/2"]);
    assert_eq!(p.common_prefixes, ["cache/deep/"]);
}

#[tokio::test]
async fn config_opens_tiers_and_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::json!({
        "freshness_secs": 5,
        "tiers": [
            {"store": "memory://?max_bytes=1000000", "freshness_secs": 1},
            {"store": format!("fs://{}/auth", dir.path().display())}
        ],
        "mounts": [{"prefix": "cache/", "store": "memory://"}]
    });
    let cfg: TierConfig = serde_json::from_value(json).unwrap();
    assert_eq!(cfg.tiers[0].freshness_secs, Some(1));
    let s = open_config(&cfg).await.unwrap();
    assert_eq!(s.capabilities().name, "mount");
    let key = Key::new("data/x").unwrap();
    s.put_bytes(&key, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(s.get_bytes(&key).await.unwrap().0, "x");
    // The authoritative fs tier has it: a fresh open over the same directory sees it.
    let cfg2 = TierConfig {
        tiers: vec![cfg.tiers[1].clone()],
        ..Default::default()
    };
    let s2 = open_config(&cfg2).await.unwrap();
    assert_eq!(s2.get_bytes(&key).await.unwrap().0, "x");
    let bad: Result<TierConfig, _> =
        serde_json::from_value(serde_json::json!({"tiers": [], "bogus": 1}));
    assert!(bad.is_err());
    let parts = larder::tiered::open_config_parts(&cfg).await.unwrap();
    parts.store.get_bytes(&key).await.unwrap();
    assert_eq!(parts.tiered.unwrap().stats().len(), 2);
    let empty = open_config(&TierConfig::default()).await;
    assert!(matches!(empty, Err(Error::InvalidInput(_))));
    let _ = Tier::new(mem(), WINDOW);
}

#[tokio::test]
async fn no_stale_backfill_after_concurrent_write() {
    for streamed in [false, true] {
        let (t, near, _) = two_tier(WINDOW);
        let key = k("race");
        let v1 = t.put_bytes(&key, Bytes::from_static(b"v1")).await.unwrap();
        t.invalidate(&key).await;
        // A read of v1 from the authoritative tier is in flight (its body not yet consumed)...
        let r = t.get(&key, GetOptions::default()).await.unwrap();
        assert_eq!(r.meta.etag, v1.etag);
        // ...when v2 is written (written through, or only invalidated when streamed).
        let body = if streamed {
            Body::from_stream(futures::stream::iter(vec![Ok::<_, Error>(
                Bytes::from_static(b"v2"),
            )]))
        } else {
            Body::from("v2")
        };
        let v2 = t.put(&key, body, PutOptions::default()).await.unwrap().meta;
        // The reader finishes: its v1 must not be left in the nearer tier.
        assert_eq!(body_of(r).await, "v1");
        assert_ne!(
            has(&near, &key).await,
            Some(v1.etag.clone()),
            "streamed={streamed}"
        );
        let (data, meta) = t.get_bytes(&key).await.unwrap();
        assert_eq!((data, meta.etag), (Bytes::from_static(b"v2"), v2.etag));
    }
}

async fn body_of(r: GetResult) -> Bytes {
    r.bytes().await.unwrap()
}

/// The read without awaiting answers only a fresh copy in tier 0, and exactly as `get` would
/// (the authoritative metadata, conditions and ranges decided on it, a hit counted); anything
/// else is `None` with nothing counted or dropped, and `get` then decides it.
#[tokio::test]
async fn get_now_answers_fresh_hits_only_and_as_get_would() {
    let (t, near, auth) = two_tier(WINDOW);
    let key = k("now");
    let plain = GetOptions::default();
    // Never validated through this store: not answered now.
    auth.put_bytes(&key, "v1".into()).await.unwrap();
    assert!(t.get_now(&key, &plain).is_none());
    assert_eq!(t.stats()[0].hits + t.stats()[0].misses, 0);
    // Written through: tier 0 holds a fresh copy.
    let typed = PutOptions {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let v2 = t
        .put(&key, Body::Bytes(Bytes::from_static(b"v2")), typed)
        .await
        .unwrap()
        .meta;
    let r = t.get_now(&key, &plain).unwrap().unwrap();
    assert_eq!(r.meta, v2);
    assert_eq!(body(r).await, "v2");
    assert_eq!(t.stats()[0].hits, 1);
    // Tier 0's copy with the same bytes (so the same ETag) but other metadata: served with the
    // authoritative metadata, as `get` serves it.
    near.put_bytes(&key, "v2".into()).await.unwrap();
    let now = t.get_now(&key, &plain).unwrap().unwrap();
    let later = t.get(&key, plain.clone()).await.unwrap();
    assert_eq!(now.meta, v2);
    assert_eq!(later.meta, v2);
    // Conditions and ranges, decided on the authoritative metadata.
    match t.get_now(&key, &get_if(none_match(&v2.etag))) {
        Some(Err(Error::NotModified(m))) => assert_eq!(m.etag, v2.etag),
        other => panic!("{other:?}"),
    }
    let ranged = GetOptions {
        range: Some(ByteRange::Suffix(1)),
        ..Default::default()
    };
    let r = t.get_now(&key, &ranged).unwrap().unwrap();
    assert_eq!(r.range, Some(1..2));
    assert_eq!(body(r).await, "2");
    // Another version in tier 0 (written around the store): not answered now, nothing counted
    // or dropped; `get` refuses it and serves the authoritative one.
    near.put_bytes(&key, "other".into()).await.unwrap();
    let before = t.stats();
    assert!(t.get_now(&key, &plain).is_none());
    assert_eq!(t.stats(), before);
    assert_eq!(
        body(near.get(&key, plain.clone()).await.unwrap()).await,
        "other"
    );
    assert_eq!(body(t.get(&key, plain.clone()).await.unwrap()).await, "v2");
    assert_eq!(
        t.stats()[0].stale_reads_refused,
        before[0].stale_reads_refused + 1
    );
    // A tier 0 that must await (fs) is never asked now; `get` serves its copy.
    let fs_first = stack(&[Layer::Fs, Layer::Memory], WINDOW).await.unwrap();
    fs_first.put_bytes(&key, "on disk".into()).await.unwrap();
    assert!(fs_first.get_now(&key, &plain).is_none());
    assert_eq!(fs_first.get_bytes(&key).await.unwrap().0, "on disk");
}
