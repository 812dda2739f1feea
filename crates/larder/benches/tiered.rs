//! Hot-read throughput of tiered stacks against their tiers alone.
//!
//! `cargo bench -p larder --features tiered --bench tiered`. Each stack holds the same keys;
//! after one warm-up pass (which backfills the nearer tiers), reads of random keys are timed,
//! by one task and by several. Figures are reported as reads per second and as ratios to the
//! memory store alone, measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use larder::drivers::fs::{FsConfig, FsStore};
use larder::drivers::memory::MemoryStore;
use larder::tiered::TieredStore;
use larder::{Key, Store, StoreExt};

const KEYS: usize = 256;
const SIZE: usize = 4096;
const RUN: Duration = Duration::from_secs(2);

fn mem() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn fs(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
    Arc::new(
        FsStore::open(FsConfig::new(dir.path().join(name)))
            .await
            .unwrap(),
    )
}

async fn reads_per_sec(store: Arc<dyn Store>, tasks: usize) -> f64 {
    let keys: Arc<Vec<Key>> = Arc::new(
        (0..KEYS)
            .map(|i| Key::new(format!("bench/{i:04}")).unwrap())
            .collect(),
    );
    for (i, k) in keys.iter().enumerate() {
        store
            .put_bytes(k, Bytes::from(vec![i as u8; SIZE]))
            .await
            .unwrap();
    }
    for k in keys.iter() {
        store.get_bytes(k).await.unwrap(); // warm-up: backfill
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, keys) = (store.clone(), keys.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut x = 0x9e3779b97f4a7c15u64 ^ t as u64;
            while start.elapsed() < RUN {
                for _ in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (data, _) = store.get_bytes(&keys[x as usize % KEYS]).await.unwrap();
                    assert_eq!(data.len(), SIZE);
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let window = Duration::from_secs(30);
        for tasks in [1, 4] {
            let stacks: Vec<(&str, Arc<dyn Store>)> = vec![
                ("memory", mem()),
                ("fs", fs(&dir, &format!("fs-{tasks}")).await),
                (
                    "memory->fs",
                    Arc::new(
                        TieredStore::with_stores(
                            vec![mem(), fs(&dir, &format!("t2-{tasks}")).await],
                            window,
                        )
                        .unwrap(),
                    ),
                ),
                #[cfg(feature = "sqlite")]
                (
                    "sqlite",
                    larder::open(&format!("sqlite://{}/s-{tasks}.db", dir.path().display()))
                        .await
                        .unwrap(),
                ),
                #[cfg(feature = "sqlite")]
                (
                    "memory->fs->sqlite",
                    Arc::new(
                        TieredStore::with_stores(
                            vec![
                                mem(),
                                fs(&dir, &format!("t3s-{tasks}")).await,
                                larder::open(&format!(
                                    "sqlite://{}/t3s-{tasks}.db",
                                    dir.path().display()
                                ))
                                .await
                                .unwrap(),
                            ],
                            window,
                        )
                        .unwrap(),
                    ),
                ),
                (
                    "memory->fs->fs",
                    Arc::new(
                        TieredStore::with_stores(
                            vec![
                                mem(),
                                fs(&dir, &format!("t3a-{tasks}")).await,
                                fs(&dir, &format!("t3b-{tasks}")).await,
                            ],
                            window,
                        )
                        .unwrap(),
                    ),
                ),
                (
                    "memory->fs (window 0: revalidate every read)",
                    Arc::new(
                        TieredStore::with_stores(
                            vec![mem(), fs(&dir, &format!("t0-{tasks}")).await],
                            Duration::ZERO,
                        )
                        .unwrap(),
                    ),
                ),
            ];
            let mut base = None;
            println!("hot reads, {KEYS} keys x {SIZE} B, {tasks} task(s), {RUN:?} each:");
            for (name, store) in stacks {
                let r = reads_per_sec(store, tasks).await;
                let b = *base.get_or_insert(r);
                println!("  {name:<46} {r:>12.0} reads/s   x{:.3} of memory", r / b);
            }
        }
    });
}
