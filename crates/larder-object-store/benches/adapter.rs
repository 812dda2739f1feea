//! What the adapter costs: get, put and compare-and-swap through `LarderObjectStore` over
//! Larder's memory store, against calling the memory store directly (the baseline: the
//! adapter's own overhead is the difference) and against object_store's `InMemory` (what an
//! object_store user has today), all in one run; for 4 KiB objects, then for 1-byte objects,
//! where Larder's SHA-256 of the body costs next to nothing and the adapter's share shows.
//!
//! `cargo bench -p larder-object-store --bench adapter` (never in CI). The dev-dependencies
//! (every driver, the server) make the first release build long; the hot path alone needs
//! optimizing, e.g. `--config 'profile.bench.package."*".opt-level=0'` plus
//! `--config 'profile.bench.package.<crate>.opt-level=3'` for object_store, bytes, futures-*,
//! tokio, sha2 (the workspace crates keep the bench profile). Each figure is the median of
//! interleaved rounds, in nanoseconds per operation, on one current-thread runtime.

use std::cell::RefCell;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use larder::drivers::memory::MemoryStore;
use larder::{Key, StoreExt};
use larder_object_store::LarderObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};

const SIZE: usize = 4096;
const OPS: u32 = 5_000;
const ROUNDS: usize = 21;

/// `OPS` and `ROUNDS`, overridden by `LARDER_BENCH_OPS` / `LARDER_BENCH_ROUNDS` (e.g. one
/// short round under `valgrind --tool=callgrind`, whose instruction counts per `round`
/// instantiation do not depend on the machine's load).
fn ops() -> u32 {
    std::env::var("LARDER_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(OPS)
}

fn rounds() -> usize {
    std::env::var("LARDER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

/// Nanoseconds per call of `op` (given the call's index) over one round of `OPS` calls.
fn round<F, Fut>(rt: &tokio::runtime::Runtime, op: &mut F) -> f64
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..ops() {
            op(i).await;
        }
        start.elapsed().as_nanos() as f64 / f64::from(ops())
    })
}

/// Median nanoseconds per call of each of three ops, measured in interleaved rounds so that
/// load from elsewhere on the machine falls on all three alike.
fn measure3<A, B, C, FA, FB, FC>(
    rt: &tokio::runtime::Runtime,
    mut a: A,
    mut b: B,
    mut c: C,
) -> [f64; 3]
where
    A: FnMut(u32) -> FA,
    B: FnMut(u32) -> FB,
    C: FnMut(u32) -> FC,
    FA: Future<Output = ()>,
    FB: Future<Output = ()>,
    FC: Future<Output = ()>,
{
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds() {
        samples[0].push(round(rt, &mut a));
        samples[1].push(round(rt, &mut b));
        samples[2].push(round(rt, &mut c));
    }
    samples.map(|mut r| {
        r.sort_by(|x, y| x.total_cmp(y));
        r[r.len() / 2]
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "ns/op (median of {} interleaved rounds of {} ops, one thread)",
        rounds(),
        ops()
    );
    // 4 KiB, as asked; then 1 byte, where Larder's SHA-256 of the body costs next to nothing
    // and the adapter's own overhead stands out of the noise.
    for size in [SIZE, 1] {
        run(&rt, size);
    }
}

/// The three rows (get, put, CAS) for objects of `size` bytes.
fn run(rt: &tokio::runtime::Runtime, size: usize) {
    let data = Bytes::from(vec![0x5a; size]);
    let payload = || PutPayload::from(data.clone());

    let larder: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let adapter = LarderObjectStore::new(Arc::new(MemoryStore::new()));
    let in_memory = InMemory::new();
    let key = Key::new("bench/object").unwrap();
    let path = Path::from("bench/object");

    rt.block_on(async {
        larder.put_bytes(&key, data.clone()).await.unwrap();
        adapter.put(&path, payload()).await.unwrap();
        in_memory.put(&path, payload()).await.unwrap();
    });

    let get = measure3(
        rt,
        |_| async {
            black_box(larder.get_bytes(&key).await.unwrap());
        },
        |_| async {
            black_box(adapter.get(&path).await.unwrap().bytes().await.unwrap());
        },
        |_| async {
            black_box(in_memory.get(&path).await.unwrap().bytes().await.unwrap());
        },
    );

    let put = measure3(
        rt,
        |_| async {
            black_box(larder.put_bytes(&key, data.clone()).await.unwrap());
        },
        |_| async {
            black_box(adapter.put(&path, payload()).await.unwrap());
        },
        |_| async {
            black_box(in_memory.put(&path, payload()).await.unwrap());
        },
    );

    // Compare-and-swap chains: each write is conditional on the version the previous one made.
    // The bodies alternate so that every swap changes the content (and its ETag).
    let bodies = [data.clone(), Bytes::from(vec![0xa5; size])];
    let cas = {
        let etag = RefCell::new(
            rt.block_on(larder.put_bytes(&key, data.clone()))
                .unwrap()
                .etag,
        );
        let versions = [&adapter as &dyn ObjectStore, &in_memory].map(|store| {
            let first = rt.block_on(store.put(&path, payload())).unwrap();
            RefCell::new(UpdateVersion::from(first))
        });
        let swap_through = |store: &'static str| {
            let (store, version): (&dyn ObjectStore, _) = match store {
                "adapter" => (&adapter, &versions[0]),
                _ => (&in_memory, &versions[1]),
            };
            let path = &path;
            let bodies = &bodies;
            move |i: u32| {
                let body = PutPayload::from(bodies[(i % 2) as usize].clone());
                async move {
                    let mode = PutMode::Update(version.borrow().clone());
                    let r = store.put_opts(path, body, mode.into()).await.unwrap();
                    *version.borrow_mut() = UpdateVersion::from(r);
                }
            }
        };
        measure3(
            rt,
            |i| {
                let body = bodies[(i % 2) as usize].clone();
                let (larder, key, etag) = (&larder, &key, &etag);
                async move {
                    let current = etag.borrow().clone();
                    let next = larder.swap(key, &current, body).await.unwrap().etag;
                    *etag.borrow_mut() = next;
                }
            },
            swap_through("adapter"),
            swap_through("in_memory"),
        )
    };

    println!("\n{size}-byte objects");
    println!(
        "{:<5} {:>14} {:>22} {:>18} {:>18} {:>20}",
        "op",
        "larder memory",
        "LarderObjectStore",
        "adapter overhead",
        "adapter/larder",
        "adapter/InMemory"
    );
    for (name, [direct, through, native]) in [("get", get), ("put", put), ("cas", cas)] {
        println!(
            "{name:<5} {direct:>14.0} {through:>22.0} {:>15.0} ns {:>18.2} {:>20.2}   (InMemory {native:.0})",
            through - direct,
            through / direct,
            through / native,
        );
    }
}
