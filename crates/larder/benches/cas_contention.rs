//! Contended compare-and-swap increments per second through Larder's SQL drivers, against the
//! database's own atomic increment (`UPDATE counters SET n = n + 1`) measured in the same run,
//! printed as a ratio. Needs LARDER_TEST_POSTGRES_URL / LARDER_TEST_MYSQL_URL.
//!
//! `cargo bench -p larder --features postgres,mysql --bench cas_contention`

mod contended;

use std::sync::Arc;
use std::time::Duration;

use larder::{Key, Store, StoreExt};
use sqlx::{Database, Executor, IntoArguments, Pool};

const WORKERS: usize = 4;
const RUN: Duration = Duration::from_secs(3);

/// Increments of one counter object per second by `WORKERS` racing read-modify-swap loops.
async fn larder_rate(store: Arc<dyn Store>) -> f64 {
    let key = Key::new(format!("bench/cas/{}", std::process::id())).unwrap();
    store.put_bytes(&key, "0".into()).await.unwrap();
    let step = {
        let key = key.clone();
        let store = store.clone();
        move || {
            let (store, key) = (store.clone(), key.clone());
            async move { contended::swap_increment(&*store, &key, |n| n.to_string()).await }
        }
    };
    let (rate, total) = contended::rate(WORKERS, RUN, step).await;
    let (bytes, _) = store.get_bytes(&key).await.unwrap();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), total.to_string());
    rate
}

/// Larder's rate against the database's native increment, on the `db` server whose URL is in
/// `var` (skipped when unset), its counter table made by `setup`.
async fn compare<DB: Database>(db: &str, var: &str, setup: [&str; 2])
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    let Ok(url) = std::env::var(var) else {
        return;
    };
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(WORKERS as u32)
        .connect(&url)
        .await
        .unwrap();
    for s in setup {
        sqlx::query(s).execute(&pool).await.unwrap();
    }
    let increment = move || {
        let pool = pool.clone();
        async move {
            let increment = "UPDATE larder_bench_counters SET n = n + 1 WHERE id = 1";
            sqlx::query(increment).execute(&pool).await.unwrap();
            true
        }
    };
    let (native, _) = contended::rate(WORKERS, RUN, increment).await;
    let store = larder::open(&format!(
        "{url}?table=larder_bench&max_connections={WORKERS}"
    ))
    .await
    .unwrap();
    let cas = larder_rate(store).await;
    println!(
        "{db}: {WORKERS} workers, larder CAS {cas:.0}/s, native UPDATE n=n+1 {native:.0}/s, ratio {:.3}",
        cas / native
    );
}

#[tokio::main]
async fn main() {
    compare::<sqlx::Postgres>(
        "postgres",
        "LARDER_TEST_POSTGRES_URL",
        [
            "CREATE TABLE IF NOT EXISTS larder_bench_counters (id INT PRIMARY KEY, n BIGINT NOT NULL)",
            "INSERT INTO larder_bench_counters VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        ],
    )
    .await;
    compare::<sqlx::MySql>(
        "mysql",
        "LARDER_TEST_MYSQL_URL",
        [
            "CREATE TABLE IF NOT EXISTS larder_bench_counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
            "INSERT IGNORE INTO larder_bench_counters VALUES (1, 0)",
        ],
    )
    .await;
}
