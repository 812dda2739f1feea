//! Compare-and-swap through Larder's PostgreSQL and MySQL drivers against the same optimistic
//! protocol written by hand on the same server, printed as `bench/run` rows
//! (`section\tcase\timplementation\tmin\tmedian\tunit`, the baseline first in each case).
//! Needs `LARDER_TEST_POSTGRES_URL` / `LARDER_TEST_MYSQL_URL` (a database missing is skipped).
//!
//! ```text
//! cargo bench -p larder --features postgres,mysql --bench sql_cas
//! ```
//!
//! - `swap, 1 task`: µs per swap of a 100-byte value, one after another. Baseline: one guarded
//!   `UPDATE … SET body = ?, etag = ? WHERE k = ? AND etag = ?` (etag: SHA-256 of the body, as
//!   Larder's), from a pool of the same size as Larder's.
//! - `CAS increment, 8 workers, one key`: successful increments per second. Baseline: the
//!   hand-written loop (`SELECT body, etag`, then the guarded `UPDATE`, again on 0 rows); Larder
//!   does `get_bytes` then `swap`, again on 412; for context, the database's own `n = n + 1`.
//!   Every run checks that no increment was lost.

mod contended;

use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::{ETag, Key, StoreExt};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

const WORKERS: usize = 8;
const RUN: Duration = Duration::from_secs(2);
const SWAPS: u32 = 500;
const REPEATS: usize = 5;

/// A 100-byte value holding `n`.
fn value(n: u64) -> String {
    format!("{n:0>100}")
}

fn parse(b: &[u8]) -> u64 {
    std::str::from_utf8(b).unwrap().parse().unwrap()
}

/// `(min, median)` of `xs`.
fn stats(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (xs[0], xs[xs.len() / 2])
}

fn row(case: &str, imp: &str, xs: Vec<f64>, unit: &str) {
    let (min, med) = stats(xs);
    println!("sql\t{case}\t{imp}\t{min:.1}\t{med:.1}\t{unit}");
}

/// The statements of the hand-written protocol in one dialect.
struct Hand {
    setup: &'static [&'static str],
    reset: &'static str,
    read: &'static str,
    swap: &'static str,
    native: &'static str,
}

const PG: Hand = Hand {
    setup: &[
        "CREATE TABLE IF NOT EXISTS larder_bench_hand (k TEXT PRIMARY KEY, etag TEXT NOT NULL, body BYTEA NOT NULL)",
        "CREATE TABLE IF NOT EXISTS larder_bench_counters (id INT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO larder_bench_counters VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    ],
    reset: "INSERT INTO larder_bench_hand (k, etag, body) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET etag = excluded.etag, body = excluded.body",
    read: "SELECT body, etag FROM larder_bench_hand WHERE k = $1",
    swap: "UPDATE larder_bench_hand SET body = $1, etag = $2 WHERE k = $3 AND etag = $4",
    native: "UPDATE larder_bench_counters SET n = n + 1 WHERE id = 1",
};

const MY: Hand = Hand {
    setup: &[
        "CREATE TABLE IF NOT EXISTS larder_bench_hand (k VARBINARY(255) PRIMARY KEY, etag VARCHAR(128) NOT NULL, body LONGBLOB NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS larder_bench_counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
        "INSERT IGNORE INTO larder_bench_counters VALUES (1, 0)",
    ],
    reset: "REPLACE INTO larder_bench_hand (k, etag, body) VALUES (?, ?, ?)",
    read: "SELECT body, etag FROM larder_bench_hand WHERE k = ?",
    swap: "UPDATE larder_bench_hand SET body = ?, etag = ? WHERE k = ? AND etag = ?",
    native: "UPDATE larder_bench_counters SET n = n + 1 WHERE id = 1",
};

/// The rows a statement affected, in either database.
trait Affected {
    fn affected(&self) -> u64;
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// One hand-written swap: the guarded UPDATE; whether it applied.
async fn hand_swap<DB: Database>(pool: &Pool<DB>, h: &Hand, k: &str, old: &str, new: &str) -> bool
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    DB::QueryResult: Affected,
{
    let etag = ETag::of(new.as_bytes());
    let done = sqlx::query(h.swap)
        .bind(new.as_bytes())
        .bind(etag.opaque())
        .bind(k)
        .bind(old)
        .execute(pool)
        .await
        .unwrap();
    done.affected() == 1
}

async fn bench_db<DB: Database>(db: &str, url: &str, h: &'static Hand)
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'r> (Vec<u8>, String): sqlx::FromRow<'r, DB::Row>,
    DB::QueryResult: Affected,
{
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(WORKERS as u32)
        .connect(url)
        .await
        .unwrap();
    for s in h.setup {
        sqlx::query(s).execute(&pool).await.unwrap();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = larder::open(&format!(
        "{url}{sep}table=larder_bench_cas&max_connections={WORKERS}"
    ))
    .await
    .unwrap();
    let tag = std::process::id();

    // Uncontended swaps: baseline and Larder interleaved, REPEATS passes each.
    let (mut hand, mut lard) = (Vec::new(), Vec::new());
    let hk = format!("swap-{tag}");
    let lk = Key::new(format!("bench/swap/{tag}")).unwrap();
    for pass in 0..=REPEATS {
        let v0 = value(0);
        let mut old = ETag::of(v0.as_bytes()).opaque().to_owned();
        sqlx::query(h.reset)
            .bind(hk.as_str())
            .bind(old.as_str())
            .bind(v0.as_bytes())
            .execute(&pool)
            .await
            .unwrap();
        let t = Instant::now();
        for n in 1..=u64::from(SWAPS) {
            let v = value(n);
            assert!(hand_swap(&pool, h, &hk, &old, &v).await);
            old = ETag::of(v.as_bytes()).opaque().to_owned();
        }
        let hand_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(SWAPS);
        let mut meta = store.put_bytes(&lk, value(0).into()).await.unwrap();
        let t = Instant::now();
        for n in 1..=u64::from(SWAPS) {
            meta = store.swap(&lk, &meta.etag, value(n).into()).await.unwrap();
        }
        let larder_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(SWAPS);
        if pass > 0 {
            // pass 0 warms both up.
            hand.push(hand_us);
            lard.push(larder_us);
        }
    }
    let case = format!("{db} swap, 1 task, 100 B");
    row(
        &case,
        "hand-written guarded UPDATE … WHERE k = ? AND etag = ?",
        hand,
        "µs/op",
    );
    row(&case, "larder swap (If-Match)", lard, "µs/op");

    // Contended increments.
    let (mut hand, mut lard, mut native) = (Vec::new(), Vec::new(), Vec::new());
    for pass in 0..REPEATS {
        let hk: Arc<str> = format!("cas-{tag}-{pass}").into();
        let v0 = value(0);
        sqlx::query(h.reset)
            .bind(&*hk)
            .bind(ETag::of(v0.as_bytes()).opaque())
            .bind(v0.as_bytes())
            .execute(&pool)
            .await
            .unwrap();
        let read = move |pool: Pool<DB>, hk: Arc<str>| async move {
            let row: (Vec<u8>, String) = sqlx::query_as(h.read)
                .bind(&*hk)
                .fetch_one(&pool)
                .await
                .unwrap();
            row
        };
        let hand_step = {
            let (pool, hk) = (pool.clone(), hk.clone());
            move || {
                let (pool, hk) = (pool.clone(), hk.clone());
                async move {
                    let (body, etag) = read(pool.clone(), hk.clone()).await;
                    hand_swap(&pool, h, &hk, &etag, &value(parse(&body) + 1)).await
                }
            }
        };
        let (rate, done) = contended::rate(WORKERS, RUN, hand_step).await;
        let (body, _) = read(pool.clone(), hk).await;
        assert_eq!(parse(&body), done, "hand loop lost updates");
        hand.push(rate);

        let lk = Key::new(format!("bench/cas/{tag}/{pass}")).unwrap();
        store.put_bytes(&lk, value(0).into()).await.unwrap();
        let larder_step = {
            let (store, lk) = (store.clone(), lk.clone());
            move || {
                let (store, lk) = (store.clone(), lk.clone());
                async move { contended::swap_increment(&*store, &lk, value).await }
            }
        };
        let (rate, done) = contended::rate(WORKERS, RUN, larder_step).await;
        let (bytes, _) = store.get_bytes(&lk).await.unwrap();
        assert_eq!(parse(&bytes), done, "larder lost updates");
        lard.push(rate);

        let native_step = {
            let pool = pool.clone();
            move || {
                let pool = pool.clone();
                async move {
                    sqlx::query(h.native).execute(&pool).await.unwrap();
                    true
                }
            }
        };
        native.push(contended::rate(WORKERS, RUN, native_step).await.0);
    }
    let case = format!("{db} CAS increment, {WORKERS} workers, one key");
    row(
        &case,
        "hand-written loop: SELECT, guarded UPDATE",
        hand,
        "incr/s",
    );
    row(&case, "larder get_bytes + swap", lard, "incr/s");
    row(
        &case,
        "native UPDATE n = n + 1 (context, not a CAS)",
        native,
        "incr/s",
    );
}

#[tokio::main]
async fn main() {
    match std::env::var("LARDER_TEST_POSTGRES_URL") {
        Ok(url) => bench_db::<sqlx::Postgres>("postgres", &url, &PG).await,
        Err(_) => eprintln!("postgres skipped: LARDER_TEST_POSTGRES_URL is not set"),
    }
    match std::env::var("LARDER_TEST_MYSQL_URL") {
        Ok(url) => bench_db::<sqlx::MySql>("mysql", &url, &MY).await,
        Err(_) => eprintln!("mysql skipped: LARDER_TEST_MYSQL_URL is not set"),
    }
}
