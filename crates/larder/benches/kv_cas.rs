//! Contended CAS increments per second through Larder, against the backend's own atomic
//! increment, on the real servers (`LARDER_TEST_REDIS_URL`, `LARDER_TEST_NATS_URL`; the local
//! defaults otherwise). Not a test: run it with
//!
//! ```text
//! cargo bench -p larder --features redis,nats --bench kv_cas
//! ```
//!
//! Each row: `W` concurrent tasks on one store (one connection) increment one counter until
//! `OPS` increments landed in total. Larder does a read-modify-write with `If-Match` and retries
//! on 412 ([`larder::conformance::increment`]). The baselines, on a connection of the same kind:
//!
//! - redis: `INCR` (one command, atomic in the server: the ceiling for any CAS), and the same
//!   optimistic protocol as Larder's without its metadata (`GET`, then a compare-and-set Lua
//!   script, retried when it finds another value);
//! - nats: the KV client's own CAS loop (`entry` then `update(key, value, revision)`, retried on
//!   a wrong revision: the same protocol Larder uses, without Larder's metadata), and a plain
//!   `put` (not atomic: increments are lost; the raw write rate).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::conformance::{fresh_prefix, increment, key, read_counter};
use larder::Store;

const OPS: u32 = 2000;
const WORKER_COUNTS: [u32; 2] = [1, 8];

struct Row {
    backend: &'static str,
    workers: u32,
    what: String,
    elapsed: Duration,
    ops: u32,
    conflicts: u32,
}

impl Row {
    fn rate(&self) -> f64 {
        f64::from(self.ops) / self.elapsed.as_secs_f64()
    }
}

/// Runs `workers` tasks, each calling `step` until `OPS` calls succeeded in total; `step`
/// returns how many attempts lost a race.
async fn run<F, Fut>(workers: u32, step: F) -> (Duration, u32)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u32> + Send,
{
    let step = Arc::new(step);
    let done = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (step, done) = (step.clone(), done.clone());
            tokio::spawn(async move {
                let mut conflicts = 0;
                while done.fetch_add(1, Ordering::Relaxed) < OPS {
                    conflicts += step().await;
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    (started.elapsed(), conflicts)
}

async fn larder_rows(backend: &'static str, store: Arc<dyn Store>, rows: &mut Vec<Row>) {
    for workers in WORKER_COUNTS {
        let k = key(&fresh_prefix("bench"), "counter");
        let (s, kk) = (store.clone(), k.clone());
        let (elapsed, conflicts) = run(workers, move || {
            let (s, kk) = (s.clone(), kk.clone());
            async move { increment(&*s, &kk, 1).await.unwrap() }
        })
        .await;
        assert_eq!(
            read_counter(&*store, &k).await,
            u64::from(OPS),
            "lost updates"
        );
        rows.push(Row {
            backend,
            workers,
            what: "larder If-Match increment".into(),
            elapsed,
            ops: OPS,
            conflicts,
        });
    }
}

#[cfg(feature = "redis")]
async fn redis_rows(url: &str, rows: &mut Vec<Row>) {
    let store = match larder::drivers::redis::RedisStore::from_url(url).await {
        Ok(s) => Arc::new(s),
        Err(e) => return eprintln!("redis skipped: {e}"),
    };
    larder_rows("redis", store, rows).await;
    let client = redis::Client::open(url).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    for workers in WORKER_COUNTS {
        let k = format!("larder-bench:incr:{}", fresh_prefix("incr"));
        let (c, kk) = (conn.clone(), k.clone());
        let (elapsed, _) = run(workers, move || {
            let (mut c, kk) = (c.clone(), kk.clone());
            async move {
                let _: i64 = redis::cmd("INCR")
                    .arg(&kk)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                0
            }
        })
        .await;
        let mut c = conn.clone();
        let n: u32 = redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap();
        assert_eq!(n, OPS);
        let _: () = redis::cmd("DEL").arg(&k).query_async(&mut c).await.unwrap();
        rows.push(Row {
            backend: "redis",
            workers,
            what: "native INCR".into(),
            elapsed,
            ops: OPS,
            conflicts: 0,
        });
    }
    // The same protocol as Larder's without its metadata: GET, then a compare-and-set script.
    let cas = Arc::new(redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end",
    ));
    for workers in WORKER_COUNTS {
        let k = format!("larder-bench:cas:{}", fresh_prefix("cas"));
        let mut c = conn.clone();
        let _: () = redis::cmd("SET")
            .arg(&k)
            .arg("0")
            .query_async(&mut c)
            .await
            .unwrap();
        let (c, kk, cas2) = (conn.clone(), k.clone(), cas.clone());
        let (elapsed, conflicts) = run(workers, move || {
            let (mut c, kk, cas) = (c.clone(), kk.clone(), cas2.clone());
            async move {
                let mut lost = 0;
                loop {
                    let v: String = redis::cmd("GET")
                        .arg(&kk)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    let next = (v.parse::<u64>().unwrap() + 1).to_string();
                    let ok: i64 = cas
                        .key(&kk)
                        .arg(&v)
                        .arg(&next)
                        .invoke_async(&mut c)
                        .await
                        .unwrap();
                    if ok == 1 {
                        return lost;
                    }
                    lost += 1;
                }
            }
        })
        .await;
        let mut c = conn.clone();
        let n: u32 = redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap();
        assert_eq!(n, OPS);
        let _: () = redis::cmd("DEL").arg(&k).query_async(&mut c).await.unwrap();
        rows.push(Row {
            backend: "redis",
            workers,
            what: "native GET + Lua compare-and-set".into(),
            elapsed,
            ops: OPS,
            conflicts,
        });
    }
}

#[cfg(feature = "nats")]
async fn nats_rows(url: &str, rows: &mut Vec<Row>) {
    use async_nats::jetstream::kv::UpdateErrorKind;
    use bytes::Bytes;

    let bucket = "larder-bench";
    let sep = if url.contains('?') { '&' } else { '?' };
    let store =
        match larder::drivers::nats::NatsStore::from_url(&format!("{url}{sep}bucket={bucket}"))
            .await
        {
            Ok(s) => Arc::new(s),
            Err(e) => return eprintln!("nats skipped: {e}"),
        };
    larder_rows("nats", store, rows).await;
    let client = async_nats::connect(url.split('?').next().unwrap())
        .await
        .unwrap();
    let kv = Arc::new(
        async_nats::jetstream::new(client)
            .get_key_value(bucket)
            .await
            .unwrap(),
    );
    for workers in WORKER_COUNTS {
        let k = format!("native-{}", std::process::id()).replace('.', "-")
            + &format!("-{workers}-{}", rand_suffix());
        let (kv2, kk) = (kv.clone(), k.clone());
        let (elapsed, conflicts) = run(workers, move || {
            let (kv, kk) = (kv2.clone(), kk.clone());
            async move {
                let mut lost = 0;
                loop {
                    let (v, rev) = match kv.entry(kk.as_str()).await.unwrap() {
                        Some(e) => (
                            std::str::from_utf8(&e.value)
                                .unwrap()
                                .parse::<u64>()
                                .unwrap(),
                            e.revision,
                        ),
                        None => (0, 0),
                    };
                    match kv
                        .update(kk.as_str(), Bytes::from((v + 1).to_string()), rev)
                        .await
                    {
                        Ok(_) => return lost,
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => lost += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        })
        .await;
        let got = kv.get(k.as_str()).await.unwrap().unwrap();
        assert_eq!(std::str::from_utf8(&got).unwrap(), OPS.to_string());
        kv.purge(k.as_str()).await.unwrap();
        rows.push(Row {
            backend: "nats",
            workers,
            what: "native KV entry+update(revision)".into(),
            elapsed,
            ops: OPS,
            conflicts,
        });
        let k = format!("{k}-put");
        let (kv2, kk) = (kv.clone(), k.clone());
        let (elapsed, _) = run(workers, move || {
            let (kv, kk) = (kv2.clone(), kk.clone());
            async move {
                kv.put(kk.as_str(), Bytes::from_static(b"1")).await.unwrap();
                0
            }
        })
        .await;
        kv.purge(k.as_str()).await.unwrap();
        rows.push(Row {
            backend: "nats",
            workers,
            what: "native KV put (not atomic)".into(),
            elapsed,
            ops: OPS,
            conflicts: 0,
        });
    }
}

#[cfg(feature = "nats")]
fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        #[cfg(feature = "redis")]
        {
            let url = std::env::var("LARDER_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
            redis_rows(&url, &mut rows).await;
        }
        #[cfg(feature = "nats")]
        {
            let url = std::env::var("LARDER_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
            nats_rows(&url, &mut rows).await;
        }
    });
    println!(
        "{:<6} {:>3} {:<34} {:>10} {:>10} {:>9}",
        "store", "W", "operation", "ops/s", "conflicts", "vs native"
    );
    for r in &rows {
        // The ratio is to the first native row of the same backend and worker count.
        let native = rows
            .iter()
            .find(|n| {
                n.backend == r.backend && n.workers == r.workers && n.what.starts_with("native")
            })
            .map(Row::rate);
        println!(
            "{:<6} {:>3} {:<34} {:>10.0} {:>10} {:>9}",
            r.backend,
            r.workers,
            r.what,
            r.rate(),
            r.conflicts,
            native.map_or("-".into(), |n| format!("{:.2}", r.rate() / n)),
        );
    }
}
