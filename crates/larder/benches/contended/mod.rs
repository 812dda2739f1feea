//! Racing workers for the contention benches (`cas_contention`, `sql_cas`): every measured loop
//! there is `WORKERS` tasks repeating one step for a fixed time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::{Error, Key, Store, StoreExt};

/// `workers` tasks each repeat `step` (one attempt: whether it counted, e.g. a swap that did not
/// lose its race) for `run`: counted steps per second over them all, and how many counted.
pub async fn rate<F, Fut>(workers: usize, run: Duration, step: F) -> (f64, u64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let step = Arc::new(step);
    let start = Instant::now();
    let worker = |step: Arc<F>| async move {
        let mut counted = 0;
        while start.elapsed() < run {
            counted += u64::from(step().await);
        }
        counted
    };
    let tasks: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(worker(step.clone())))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total as f64 / start.elapsed().as_secs_f64(), total)
}

/// One read-modify-swap increment of the counter at `key` (its value, a number as text, written
/// by `format`): whether the swap won its race.
pub async fn swap_increment(store: &dyn Store, key: &Key, format: fn(u64) -> String) -> bool {
    let (bytes, meta) = store.get_bytes(key).await.unwrap();
    let n: u64 = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
    match store.swap(key, &meta.etag, format(n + 1).into()).await {
        Ok(_) => true,
        Err(Error::PreconditionFailed { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}
