//! Side-by-side benchmarks: Larder vs object_store vs OpenDAL vs a plain floor.
//!
//! Each subcommand prints TSV lines `group\tcase\timpl\tmin\tmedian\tunit` that `bench/run` turns
//! into BENCHMARKS.md. Timings: one warm-up pass, then `RUNS` timed passes; min and median.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use larder::{Body, ContentHasher, ETag, Key, Store, StoreExt};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

const RUNS: usize = 5;

/// One key/blob backend under test. `cas` is a compare-and-swap on the caller's last tag.
#[async_trait]
trait Kv: Send + Sync {
    async fn put(&self, k: &str, v: Bytes) -> String;
    async fn get(&self, k: &str) -> usize;
    /// `None` when the backend has no atomic conditional write.
    async fn cas(&self, k: &str, tag: &str, v: Bytes) -> Option<String>;
}

struct LarderKv(Arc<dyn Store>);
#[async_trait]
impl Kv for LarderKv {
    async fn put(&self, k: &str, v: Bytes) -> String {
        self.0.put_bytes(&Key::new(k).unwrap(), v).await.unwrap().etag.to_string()
    }
    async fn get(&self, k: &str) -> usize {
        self.0.get_bytes(&Key::new(k).unwrap()).await.unwrap().0.len()
    }
    async fn cas(&self, k: &str, tag: &str, v: Bytes) -> Option<String> {
        let t = ETag::parse(tag).unwrap();
        Some(self.0.swap(&Key::new(k).unwrap(), &t, v).await.unwrap().etag.to_string())
    }
}

struct OsKv(Arc<dyn ObjectStore>);
#[async_trait]
impl Kv for OsKv {
    async fn put(&self, k: &str, v: Bytes) -> String {
        let r = self.0.put(&k.into(), PutPayload::from(v)).await.unwrap();
        r.e_tag.unwrap_or_default()
    }
    async fn get(&self, k: &str) -> usize {
        self.0.get(&k.into()).await.unwrap().bytes().await.unwrap().len()
    }
    async fn cas(&self, k: &str, tag: &str, v: Bytes) -> Option<String> {
        let opts = PutOptions {
            mode: PutMode::Update(UpdateVersion { e_tag: Some(tag.to_string()), version: None }),
            ..Default::default()
        };
        let r = self.0.put_opts(&k.into(), PutPayload::from(v), opts).await.ok()?;
        Some(r.e_tag.unwrap_or_default())
    }
}

struct DalKv(opendal::Operator);
#[async_trait]
impl Kv for DalKv {
    async fn put(&self, k: &str, v: Bytes) -> String {
        self.0.write(k, v).await.unwrap();
        String::new()
    }
    async fn get(&self, k: &str) -> usize {
        self.0.read(k).await.unwrap().len()
    }
    async fn cas(&self, _k: &str, _tag: &str, _v: Bytes) -> Option<String> {
        // OpenDAL's memory and fs services declare no write_with_if_match: no atomic CAS.
        None
    }
}

/// The floor of a put: SHA-256 of the body alone (every Larder write hashes its body), no
/// storage. Only its put is timed.
struct ShaKv;
#[async_trait]
impl Kv for ShaKv {
    async fn put(&self, _k: &str, v: Bytes) -> String {
        use sha2::Digest;
        std::hint::black_box(sha2::Sha256::digest(&v));
        String::new()
    }
    async fn get(&self, _k: &str) -> usize {
        0
    }
    async fn cas(&self, _: &str, _: &str, _: Bytes) -> Option<String> {
        None
    }
}

/// The floor: a HashMap behind a lock, CAS by comparing a counter under the same lock.
struct MapKv(Mutex<HashMap<String, (u64, Bytes)>>);
#[async_trait]
impl Kv for MapKv {
    async fn put(&self, k: &str, v: Bytes) -> String {
        let mut m = self.0.lock().unwrap();
        let e = m.entry(k.to_string()).or_insert((0, Bytes::new()));
        e.0 += 1;
        e.1 = v;
        e.0.to_string()
    }
    async fn get(&self, k: &str) -> usize {
        self.0.lock().unwrap().get(k).unwrap().1.len()
    }
    async fn cas(&self, k: &str, tag: &str, v: Bytes) -> Option<String> {
        let mut m = self.0.lock().unwrap();
        let e = m.get_mut(k)?;
        if e.0.to_string() != tag {
            return None;
        }
        e.0 += 1;
        e.1 = v;
        Some(e.0.to_string())
    }
}

fn stats(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (xs[0], xs[xs.len() / 2])
}

fn emit(group: &str, case: &str, imp: &str, xs: Vec<f64>, unit: &str) {
    let (min, med) = stats(xs);
    println!("{group}\t{case}\t{imp}\t{min:.3}\t{med:.3}\t{unit}");
}

/// Runs `ops` operations split over `tasks` tasks; returns microseconds per operation
/// (wall time / total ops, so lower is better and concurrency shows as throughput).
async fn timed<F, Fut>(tasks: usize, ops: usize, f: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let t0 = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let f = f.clone();
        hs.push(tokio::spawn(async move {
            for i in 0..ops / tasks {
                f(t, i).await;
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    t0.elapsed().as_secs_f64() * 1e6 / ops as f64
}

/// What a [`bench_kv`] implementation is timed on.
struct KvCase {
    name: &'static str,
    kv: Arc<dyn Kv>,
    get: bool,
    cas: bool,
}

/// Puts, gets and CAS by 1 and 8 tasks, for every implementation. The passes of all
/// implementations are interleaved (pass 1 of each, then pass 2 of each, ...), so that the load
/// of a shared machine drifting during the run weighs on each alike: the ratios of one case are
/// of the same moments.
async fn bench_kv(group: &str, impls: &[KvCase], size: usize, ops: usize) {
    let val = Bytes::from(vec![7u8; size]);
    for tasks in [1usize, 8] {
        for op in ["put", "get", "cas"] {
            let mut xs: Vec<Vec<f64>> = impls.iter().map(|_| Vec::new()).collect();
            for run in 0..=RUNS {
                for (c, xs) in impls.iter().zip(xs.iter_mut()) {
                    let us = match op {
                        "put" => kv_pass(c.kv.clone(), &val, tasks, ops, false).await,
                        "get" if c.get => kv_pass(c.kv.clone(), &val, tasks, ops, true).await,
                        "cas" if c.cas => cas_pass(c.kv.clone(), &val, tasks, ops).await,
                        _ => continue,
                    };
                    if run > 0 {
                        xs.push(us);
                    }
                }
            }
            for (c, xs) in impls.iter().zip(xs) {
                if !xs.is_empty() {
                    emit(group, &format!("{op} {size}B x{tasks}"), c.name, xs, "us/op");
                }
            }
        }
    }
}

/// One pass of puts (each task overwrites its own 64 keys round-robin) or gets of those keys.
async fn kv_pass(kv: Arc<dyn Kv>, val: &Bytes, tasks: usize, ops: usize, get: bool) -> f64 {
    let val = val.clone();
    timed(tasks, ops, move |t, i| {
        let (kv, val) = (kv.clone(), val.clone());
        async move {
            let k = format!("k{t}/{}", i % 64);
            if get {
                kv.get(&k).await;
            } else {
                kv.put(&k, val).await;
            }
        }
    })
    .await
}

/// One pass of CAS: each task swaps its own key, carrying the tag it got back (uncontended
/// If-Match).
async fn cas_pass(kv: Arc<dyn Kv>, val: &Bytes, tasks: usize, ops: usize) -> f64 {
    let mut tags = Vec::new();
    for t in 0..tasks {
        tags.push(Arc::new(Mutex::new(kv.put(&format!("c{t}"), val.clone()).await)));
    }
    let (tags, val) = (Arc::new(tags), val.clone());
    timed(tasks, ops, move |t, _i| {
        let (kv, val, tags) = (kv.clone(), val.clone(), tags.clone());
        async move {
            let cur = tags[t].lock().unwrap().clone();
            let new = kv.cas(&format!("c{t}"), &cur, val).await.expect("cas lost");
            *tags[t].lock().unwrap() = new;
        }
    })
    .await
}

fn object_store_fs(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap())
}

fn dal_mem() -> opendal::Operator {
    opendal::Operator::new(opendal::services::Memory::default()).unwrap().finish()
}

fn dal_fs(dir: &std::path::Path) -> opendal::Operator {
    opendal::Operator::new(opendal::services::Fs::default().root(dir.to_str().unwrap()))
        .unwrap()
        .finish()
}

async fn mem() {
    let ops = 20_000;
    let case = |name, kv, get, cas| KvCase { name, kv, get, cas };
    let impls = [
        // First, so it is the base of the put cases: the target is a put within 1 µs of hashing.
        case("sha256 of the body alone (put floor)", Arc::new(ShaKv) as Arc<dyn Kv>, false, false),
        case("hashmap+lock (floor)", Arc::new(MapKv(Mutex::new(HashMap::new()))), true, true),
        case("larder memory", Arc::new(LarderKv(larder::open("memory://").await.unwrap())), true, true),
        case("object_store InMemory", Arc::new(OsKv(Arc::new(object_store::memory::InMemory::new()))), true, true),
        case("opendal memory (no CAS)", Arc::new(DalKv(dal_mem())), true, false),
    ];
    bench_kv("memory", &impls, 4096, ops).await;
}

/// The fs floor: `std::fs` write + rename (with or without fsync of the file and of the
/// directory), and `std::fs::read`, each in one `spawn_blocking` awaited from the calling task:
/// the same runtime context as a store call (which also makes one blocking call per get). A
/// read hands its bytes to the calling task, as a store's get does (the third field `false`:
/// dropped in the blocking thread instead, the floor before the fifth round, for context: a
/// 1 MiB buffer freed on the thread that allocated it is reused there at once, where one freed
/// on another thread goes back to that thread's heap).
struct RawFs(std::path::PathBuf, bool, bool);
#[async_trait]
impl Kv for RawFs {
    async fn put(&self, k: &str, v: Bytes) -> String {
        let (dir, sync) = (self.0.clone(), self.1);
        let k = k.replace('/', "_");
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let tmp = dir.join(format!("{k}.tmp"));
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(&v).unwrap();
            if sync {
                f.sync_all().unwrap();
            }
            std::fs::rename(&tmp, dir.join(&k)).unwrap();
            if sync {
                std::fs::File::open(&dir).unwrap().sync_all().unwrap();
            }
        })
        .await
        .unwrap();
        String::new()
    }
    async fn get(&self, k: &str) -> usize {
        let p = self.0.join(k.replace('/', "_"));
        if !self.2 {
            return tokio::task::spawn_blocking(move || std::fs::read(p).unwrap().len()).await.unwrap();
        }
        tokio::task::spawn_blocking(move || std::fs::read(p).unwrap()).await.unwrap().len()
    }
    async fn cas(&self, _: &str, _: &str, _: Bytes) -> Option<String> {
        None
    }
}

/// One fs case: `ops` puts (each task overwrites its own 64 keys) or gets of those keys.
async fn fs_pass(kv: Arc<dyn Kv>, put: bool, val: Bytes, tasks: usize, ops: usize) -> f64 {
    timed(tasks, ops, move |t, i| {
        let (kv, val) = (kv.clone(), val.clone());
        async move {
            let k = format!("k{t}/{}", i % 64);
            if put {
                kv.put(&k, val).await;
            } else {
                kv.get(&k).await;
            }
        }
    })
    .await
}

/// Filesystem stores. Each case compares like with like, floor first: puts without fsync (the
/// peers do not fsync), puts with fsync (file, rename, directory), and gets of the same keys
/// (warm page cache, same sizes). Implementations take turns within each pass, in a rotating
/// order, so a load change on this shared machine hits them alike. `FS_ONLY=substring` keeps the matching rows
/// (for profiling one implementation).
async fn fs() {
    let base = std::env::var("BENCH_TMP").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let only = std::env::var("FS_ONLY").ok();
    let runs: usize = std::env::var("FS_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(RUNS);
    for (size, ops) in [(4096usize, 400usize), (1 << 20, 400)] {
        let mk = || tempfile::tempdir_in(&base).unwrap();
        let (d1, d2, d3, d4, d5, d6) = (mk(), mk(), mk(), mk(), mk(), mk());
        let floor: Arc<dyn Kv> = Arc::new(RawFs(d1.path().into(), false, true));
        let floor_dropped: Arc<dyn Kv> = Arc::new(RawFs(d1.path().into(), false, false));
        let floor_sync: Arc<dyn Kv> = Arc::new(RawFs(d2.path().into(), true, true));
        let open = |url: String| async move { Arc::new(LarderKv(larder::open(&url).await.unwrap())) as Arc<dyn Kv> };
        let larder_nosync = open(format!("fs://{}?fsync=false", d3.path().display())).await;
        let larder_sync = open(format!("fs://{}", d4.path().display())).await;
        let os: Arc<dyn Kv> = Arc::new(OsKv(object_store_fs(d5.path())));
        let dal: Arc<dyn Kv> = Arc::new(DalKv(dal_fs(d6.path())));
        let val = Bytes::from(vec![7u8; size]);
        for tasks in [1usize, 8] {
            let cases: Vec<(String, bool, Vec<(&str, Arc<dyn Kv>)>)> = vec![
                (format!("put {size}B x{tasks}, no fsync"), true, vec![
                    ("std::fs write+rename (floor)", floor.clone()),
                    ("larder fs fsync=false", larder_nosync.clone()),
                    ("object_store LocalFileSystem", os.clone()),
                    ("opendal fs", dal.clone()),
                ]),
                (format!("put {size}B x{tasks}, fsync"), true, vec![
                    ("std::fs write+fsync+rename+dir fsync (floor)", floor_sync.clone()),
                    ("larder fs (fsync)", larder_sync.clone()),
                ]),
                (format!("get {size}B x{tasks}"), false, vec![
                    ("std::fs::read (floor)", floor.clone()),
                    ("larder fs", larder_sync.clone()),
                    ("std::fs::read, bytes dropped in the blocking thread", floor_dropped.clone()),
                    ("object_store LocalFileSystem", os.clone()),
                    ("opendal fs", dal.clone()),
                ]),
            ];
            for (case, put, impls) in cases {
                let impls: Vec<_> = impls
                    .into_iter()
                    .filter(|(name, _)| only.as_deref().is_none_or(|o| name.contains(o)))
                    .collect();
                let mut xs = vec![Vec::new(); impls.len()];
                for run in 0..=runs {
                    // Each pass starts with the next implementation: whoever goes first after
                    // a case without fsync pays for flushing its dirty pages (ext4 ordered mode).
                    for n in (0..impls.len()).map(|i| (i + run) % impls.len()) {
                        let us = fs_pass(impls[n].1.clone(), put, val.clone(), tasks, ops).await;
                        if run > 0 {
                            xs[n].push(us);
                        }
                    }
                }
                for ((name, _), xs) in impls.iter().zip(xs) {
                    emit("fs", &case, name, xs, "us/op");
                }
            }
        }
    }
}

async fn hash() {
    let buf: Vec<u8> = (0..64u32 << 20).map(|i| i as u8).collect(); // 64 MiB
    let mb = buf.len() as f64 / (1 << 20) as f64;
    let mut flat = Vec::new();
    let mut chunked = Vec::new();
    let mut reader = Vec::new();
    for run in 0..=RUNS {
        let t = Instant::now();
        use sha2::Digest;
        std::hint::black_box(sha2::Sha256::digest(&buf));
        let a = mb / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut h = ContentHasher::new();
        for c in buf.chunks(64 << 10) {
            h.update(c);
        }
        std::hint::black_box(h.finish());
        let b = mb / t.elapsed().as_secs_f64();
        let chunks: Vec<larder::Result<Bytes>> =
            buf.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let t = Instant::now();
        let mut r = Body::from_stream(futures::stream::iter(chunks)).reader(None);
        while let Some(c) = r.next_chunk().await.unwrap() {
            std::hint::black_box(c);
        }
        std::hint::black_box(r.finish(None).unwrap());
        let c = mb / t.elapsed().as_secs_f64();
        if run > 0 {
            flat.push(a);
            chunked.push(b);
            reader.push(c);
        }
    }
    // Throughput: higher is better; `stats` min is the worst run here.
    emit("hash", "sha256 64 MiB", "sha2 flat buffer (baseline)", flat, "MiB/s");
    emit("hash", "sha256 64 MiB", "larder ContentHasher 64 KiB chunks", chunked, "MiB/s");
    emit("hash", "sha256 64 MiB", "larder Body::reader 64 KiB chunks", reader, "MiB/s");
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Bytes of RSS per entry after writing 1,000,000 100-byte entries (run in its own process).
async fn rss(imp: &str) {
    let n = 1_000_000usize;
    let kv: Arc<dyn Kv> = match imp {
        "hashmap" => Arc::new(MapKv(Mutex::new(HashMap::new()))),
        "larder" => Arc::new(LarderKv(larder::open("memory://").await.unwrap())),
        "object_store" => Arc::new(OsKv(Arc::new(object_store::memory::InMemory::new()))),
        "opendal" => Arc::new(DalKv(dal_mem())),
        _ => panic!("unknown impl {imp}"),
    };
    let before = rss_kib();
    for i in 0..n {
        // Distinct content per entry, as real data would be.
        let mut v = vec![b'x'; 100];
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        kv.put(&format!("key/{i:08}"), Bytes::from(v)).await;
    }
    let after = rss_kib();
    println!("{}", (after - before) * 1024 / n as u64);
}

/// The number in environment variable `name`, or `default` when it is unset or not a number.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The stores of the tiered part, by name: the memory store alone (baseline), its tiers alone,
/// and tiered stacks, each in its own files under `dir`.
async fn tiered_stack(name: &str, dir: &std::path::Path, tag: &str, window: std::time::Duration) -> Arc<dyn Store> {
    use larder::tiered::TieredStore;
    let fs = |n: &str| format!("fs://{}/{n}-{tag}", dir.display());
    let sqlite = |n: &str| format!("sqlite://{}/{n}-{tag}.db", dir.display());
    let mem = || "memory://".to_string();
    let (urls, window) = match name {
        "memory" => (vec![mem()], window),
        "fs" => (vec![fs("fs")], window),
        "sqlite" => (vec![sqlite("s")], window),
        "memory->fs" => (vec![mem(), fs("t2")], window),
        "memory->fs->sqlite" => (vec![mem(), fs("t3s"), sqlite("t3s")], window),
        "memory->fs->fs" => (vec![mem(), fs("t3a"), fs("t3b")], window),
        "memory->fs (window 0: revalidate every read)" => (vec![mem(), fs("t0")], std::time::Duration::ZERO),
        _ => panic!("unknown stack {name}"),
    };
    let mut stores = Vec::new();
    for u in &urls {
        stores.push(larder::open(u).await.unwrap());
    }
    if stores.len() == 1 {
        return stores.pop().unwrap();
    }
    Arc::new(TieredStore::with_stores(stores, window).unwrap())
}

const TIERED_KEYS: usize = 256;
const TIERED_SIZE: usize = 4096;

/// Writes the tiered part's keys and reads each once (which backfills the nearer tiers).
async fn tiered_fill(store: &Arc<dyn Store>) -> Arc<Vec<Key>> {
    let keys: Arc<Vec<Key>> =
        Arc::new((0..TIERED_KEYS).map(|i| Key::new(format!("bench/{i:04}")).unwrap()).collect());
    for (i, k) in keys.iter().enumerate() {
        store.put_bytes(k, Bytes::from(vec![i as u8; TIERED_SIZE])).await.unwrap();
    }
    for k in keys.iter() {
        store.get_bytes(k).await.unwrap();
    }
    keys
}

/// Hot reads of random keys through each stack, by 1 and 4 tasks: reads/s, memory alone first.
/// The passes of all stacks are interleaved (pass 1 of each, then pass 2 of each, ...), so that
/// the load of a shared machine drifting during the run weighs on every stack alike.
/// `TIERED_PASSES` (default 9) and `TIERED_PASS_MS` (default 250) set how many passes are
/// measured and how long each is, for comparing two builds on a noisy machine.
async fn tiered() {
    const STACKS: [&str; 7] = [
        "memory",
        "memory->fs->sqlite",
        "memory->fs",
        "memory->fs->fs",
        "memory->fs (window 0: revalidate every read)",
        "fs",
        "sqlite",
    ];
    let passes = env_or("TIERED_PASSES", 9);
    let dir = tempfile::tempdir().unwrap();
    let run = std::time::Duration::from_millis(env_or("TIERED_PASS_MS", 250) as u64);
    for tasks in [1usize, 4] {
        let mut stacks = Vec::new();
        for name in STACKS {
            let store = tiered_stack(name, dir.path(), &tasks.to_string(), std::time::Duration::from_secs(30)).await;
            let keys = tiered_fill(&store).await;
            stacks.push((name, store, keys, Vec::new()));
        }
        for pass in 0..=passes {
            for (_, store, keys, xs) in stacks.iter_mut() {
                let start = Instant::now();
                let mut hs = Vec::new();
                for t in 0..tasks {
                    let (store, keys) = (store.clone(), keys.clone());
                    hs.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        let mut x = 0x9e3779b97f4a7c15u64 ^ (t as u64 + 1);
                        while start.elapsed() < run {
                            for _ in 0..64 {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let (data, _) = store.get_bytes(&keys[x as usize % TIERED_KEYS]).await.unwrap();
                                assert_eq!(data.len(), TIERED_SIZE);
                                n += 1;
                            }
                        }
                        n
                    }));
                }
                let mut total = 0;
                for h in hs {
                    total += h.await.unwrap();
                }
                if pass > 0 {
                    xs.push(total as f64 / start.elapsed().as_secs_f64());
                }
            }
        }
        for (name, _, _, xs) in stacks {
            // Higher is better: the report's min column is the worst pass.
            emit("tiered", &format!("hot reads {TIERED_SIZE}B, {tasks} task(s)"), name, xs, "reads/s");
        }
    }
}

/// A read through `Store::get` itself (the path a server takes, which awaits the store's
/// boxed future), for callgrind's `--toggle-collect`: the size of the body read. Boxed, so that
/// its polling stays a function of its own (the box costs the same for every store).
fn get_via_store<'a>(
    store: &'a Arc<dyn Store>,
    k: &'a Key,
) -> futures::future::BoxFuture<'a, usize> {
    Box::pin(async move {
        let r = store.get(k, larder::GetOptions::default()).await.unwrap();
        r.bytes().await.unwrap().len()
    })
}

/// `n` operations of one kind on one thread, for callgrind: instructions per operation are the
/// difference between two runs with different `n`, divided by the difference in `n`.
async fn ops(imp: &str, op: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let val = Bytes::from(vec![7u8; 4096]);
    if imp == "sha" {
        for _ in 0..n {
            use sha2::Digest;
            std::hint::black_box(sha2::Sha256::digest(&val));
        }
        return;
    }
    if imp.contains("->") || imp == "memory" {
        // A window longer than any run under valgrind: every read is a hit, whatever the speed.
        let store = tiered_stack(imp, dir.path(), "ops", std::time::Duration::from_secs(3600)).await;
        let keys = tiered_fill(&store).await;
        for i in 0..n {
            let k = &keys[i % TIERED_KEYS];
            match op {
                "get" => assert_eq!(store.get_bytes(k).await.unwrap().0.len(), TIERED_SIZE),
                "get-async" => assert_eq!(get_via_store(&store, k).await, TIERED_SIZE),
                "put" => drop(store.put_bytes(k, val.clone()).await.unwrap()),
                _ => panic!("op get|get-async|put"),
            }
        }
        return;
    }
    let kv: Arc<dyn Kv> = match imp {
        "larder" => Arc::new(LarderKv(larder::open("memory://").await.unwrap())),
        "object_store" => Arc::new(OsKv(Arc::new(object_store::memory::InMemory::new()))),
        "hashmap" => Arc::new(MapKv(Mutex::new(HashMap::new()))),
        _ => panic!("unknown impl {imp}"),
    };
    for i in 0..64 {
        kv.put(&format!("k/{i}"), val.clone()).await;
    }
    for i in 0..n {
        match op {
            "get" => drop(kv.get(&format!("k/{}", i % 64)).await),
            "put" => drop(kv.put(&format!("k/{}", i % 64), val.clone()).await),
            _ => panic!("op get|put"),
        }
    }
}

/// 8 clients incrementing one key by CAS over HTTP (GET, PUT If-Match, retry on 412).
async fn cas_http(base: &str, secs: u64) {
    let client = reqwest::Client::new();
    let url = format!("{base}/counter");
    let r = client.put(&url).body("0").send().await.unwrap();
    assert!(r.status().is_success(), "seed PUT: {}", r.status());
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    let mut hs = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        hs.push(tokio::spawn(async move {
            let (mut ok, mut lost) = (0u64, 0u64);
            while Instant::now() < deadline {
                let r = client.get(&url).send().await.unwrap();
                let tag = r.headers()["etag"].to_str().unwrap().to_string();
                let n: u64 = r.text().await.unwrap().trim().parse().unwrap();
                let r = client.put(&url).header("if-match", tag).body((n + 1).to_string()).send().await.unwrap();
                match r.status().as_u16() {
                    200..=299 => ok += 1,
                    412 => lost += 1,
                    s => panic!("unexpected status {s}"),
                }
            }
            (ok, lost)
        }));
    }
    let (mut ok, mut lost) = (0, 0);
    for h in hs {
        let (a, b) = h.await.unwrap();
        ok += a;
        lost += b;
    }
    let final_n: u64 = client.get(&url).send().await.unwrap().text().await.unwrap().trim().parse().unwrap();
    assert_eq!(final_n, ok, "lost update: counter {final_n} != successful CAS {ok}");
    println!("{:.1}\t{:.1}", ok as f64 / secs as f64, lost as f64 / secs as f64);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("mem") => mem().await,
        Some("fs") => fs().await,
        Some("hash") => hash().await,
        Some("rss") => rss(&args[2]).await,
        Some("tiered") => tiered().await,
        Some("ops") => ops(&args[2], &args[3], args[4].parse().unwrap()).await,
        Some("cas-http") => cas_http(&args[2], args.get(3).map_or(10, |s| s.parse().unwrap())).await,
        _ => eprintln!("usage: larder-bench mem|fs|hash|tiered|rss <hashmap|larder|object_store|opendal>|cas-http <base-url> [secs]"),
    }
}
