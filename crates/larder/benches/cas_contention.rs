//! Contended compare-and-swap increments per second through Larder's SQL drivers, against the
//! database's own atomic increment (`UPDATE counters SET n = n + 1`) measured in the same run,
//! printed as a ratio. Needs LARDER_TEST_POSTGRES_URL / LARDER_TEST_MYSQL_URL.
//!
//! `cargo bench -p larder --features postgres,mysql --bench cas_contention`

use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::{Error, Key, Store, StoreExt};

const WORKERS: usize = 4;
const RUN: Duration = Duration::from_secs(3);

/// Increments of one counter object per second by `WORKERS` racing read-modify-swap loops.
async fn larder_rate(store: Arc<dyn Store>) -> f64 {
    let key = Key::new(format!("bench/cas/{}", std::process::id())).unwrap();
    store.put_bytes(&key, "0".into()).await.unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while start.elapsed() < RUN {
                    let (bytes, meta) = store.get_bytes(&key).await.unwrap();
                    let n: u64 = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
                    match store
                        .swap(&key, &meta.etag, (n + 1).to_string().into())
                        .await
                    {
                        Ok(_) => done += 1,
                        Err(Error::PreconditionFailed { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let (bytes, _) = store.get_bytes(&key).await.unwrap();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), total.to_string());
    total as f64 / start.elapsed().as_secs_f64()
}

/// The same workers running the database's native increment.
async fn native_rate<DB: sqlx::Database>(pool: sqlx::Pool<DB>, increment: &'static str) -> f64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while start.elapsed() < RUN {
                    let mut conn = pool.acquire().await.unwrap();
                    sqlx::query(increment).execute(&mut *conn).await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    if let Ok(url) = std::env::var("LARDER_TEST_POSTGRES_URL") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(WORKERS as u32)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS larder_bench_counters (id INT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO larder_bench_counters VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
            .execute(&pool)
            .await
            .unwrap();
        let native = native_rate(
            pool,
            "UPDATE larder_bench_counters SET n = n + 1 WHERE id = 1",
        )
        .await;
        let store = larder::open(&format!(
            "{url}?table=larder_bench&max_connections={WORKERS}"
        ))
        .await
        .unwrap();
        let cas = larder_rate(store).await;
        println!(
            "postgres: {WORKERS} workers, larder CAS {cas:.0}/s, native UPDATE n=n+1 {native:.0}/s, ratio {:.3}",
            cas / native
        );
    }
    if let Ok(url) = std::env::var("LARDER_TEST_MYSQL_URL") {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(WORKERS as u32)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS larder_bench_counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB")
            .execute(&pool).await.unwrap();
        sqlx::query("INSERT IGNORE INTO larder_bench_counters VALUES (1, 0)")
            .execute(&pool)
            .await
            .unwrap();
        let native = native_rate(
            pool,
            "UPDATE larder_bench_counters SET n = n + 1 WHERE id = 1",
        )
        .await;
        let store = larder::open(&format!(
            "{url}?table=larder_bench&max_connections={WORKERS}"
        ))
        .await
        .unwrap();
        let cas = larder_rate(store).await;
        println!(
            "mysql: {WORKERS} workers, larder CAS {cas:.0}/s, native UPDATE n=n+1 {native:.0}/s, ratio {:.3}",
            cas / native
        );
    }
}
