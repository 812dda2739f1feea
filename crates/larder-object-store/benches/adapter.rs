//! What the adapter costs: get, put and compare-and-swap of 4 KiB objects through
//! `LarderObjectStore` over Larder's memory store, against calling the memory store directly
//! (the baseline: the adapter's own overhead is the difference) and against object_store's
//! `InMemory` (what an object_store user has today), all in one run.
//!
//! `cargo bench -p larder-object-store --bench adapter` (never in CI). Each figure is the median
//! of several rounds, in nanoseconds per operation, on one current-thread runtime.

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
const OPS: u32 = 20_000;
const ROUNDS: usize = 7;

/// Median nanoseconds per call of `op` (given the call's index) over `ROUNDS` rounds of `OPS`.
fn measure<F, Fut>(rt: &tokio::runtime::Runtime, mut op: F) -> f64
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..OPS {
                    op(i).await;
                }
                start.elapsed().as_nanos() as f64 / f64::from(OPS)
            })
        })
        .collect();
    rounds.sort_by(|a, b| a.total_cmp(b));
    rounds[ROUNDS / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = Bytes::from(vec![0x5a; SIZE]);
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

    let get = [
        measure(&rt, |_| async {
            black_box(larder.get_bytes(&key).await.unwrap());
        }),
        measure(&rt, |_| async {
            black_box(adapter.get(&path).await.unwrap().bytes().await.unwrap());
        }),
        measure(&rt, |_| async {
            black_box(in_memory.get(&path).await.unwrap().bytes().await.unwrap());
        }),
    ];

    let put = [
        measure(&rt, |_| async {
            black_box(larder.put_bytes(&key, data.clone()).await.unwrap());
        }),
        measure(&rt, |_| async {
            black_box(adapter.put(&path, payload()).await.unwrap());
        }),
        measure(&rt, |_| async {
            black_box(in_memory.put(&path, payload()).await.unwrap());
        }),
    ];

    // Compare-and-swap chains: each write is conditional on the version the previous one made.
    // The bodies alternate so that every swap changes the content (and its ETag).
    let bodies = [data.clone(), Bytes::from(vec![0xa5; SIZE])];
    let cas = {
        let etag = RefCell::new(
            rt.block_on(larder.put_bytes(&key, data.clone()))
                .unwrap()
                .etag,
        );
        let larder_cas = measure(&rt, |i| {
            let body = bodies[(i % 2) as usize].clone();
            let (larder, key, etag) = (&larder, &key, &etag);
            async move {
                let current = etag.borrow().clone();
                let next = larder.swap(key, &current, body).await.unwrap().etag;
                *etag.borrow_mut() = next;
            }
        });
        let cas_with = |store: &dyn ObjectStore| {
            let first = rt.block_on(store.put(&path, payload())).unwrap();
            let version = RefCell::new(UpdateVersion::from(first));
            measure(&rt, |i| {
                let body = PutPayload::from(bodies[(i % 2) as usize].clone());
                let (path, version) = (&path, &version);
                async move {
                    let mode = PutMode::Update(version.borrow().clone());
                    let r = store.put_opts(path, body, mode.into()).await.unwrap();
                    *version.borrow_mut() = UpdateVersion::from(r);
                }
            })
        };
        [larder_cas, cas_with(&adapter), cas_with(&in_memory)]
    };

    println!("4 KiB objects, ns/op (median of {ROUNDS} rounds of {OPS} ops, one thread)\n");
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
