//! The sqlite driver: the conformance kit on a database file and in memory, then what is
//! specific to it: reopening, two stores on one file, the schema version, the sweeper, listing
//! against the memory store as a reference, URLs.

#![cfg(all(feature = "sqlite", feature = "memory"))]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder::drivers::memory::MemoryStore;
use larder::drivers::sqlite::{SqliteConfig, SqliteStore};
use larder::{Error, Key, PutOptions, Store, StoreExt};

/// A fresh database file under the target directory's scratch space.
fn db_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{name}-{}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn file_config(name: &str) -> SqliteConfig {
    SqliteConfig {
        path: Some(db_path(name)),
        ..Default::default()
    }
}

async fn store() -> Option<Arc<dyn Store>> {
    Some(Arc::new(
        SqliteStore::open(file_config("kit")).await.unwrap(),
    ))
}

larder::conformance_tests!(store());

mod in_memory {
    use super::*;

    async fn store() -> Option<Arc<dyn Store>> {
        Some(larder::open("sqlite::memory:").await.unwrap())
    }

    larder::conformance_tests!(store());
}

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

#[tokio::test]
async fn objects_survive_reopening() {
    let config = file_config("reopen");
    let store = SqliteStore::open(config.clone()).await.unwrap();
    let put = store.put_bytes(&k("a/b"), "kept".into()).await.unwrap();
    drop(store);
    let store = SqliteStore::open(config).await.unwrap();
    let (bytes, meta) = store.get_bytes(&k("a/b")).await.unwrap();
    assert_eq!(&bytes[..], b"kept");
    assert_eq!(meta, put);
}

#[tokio::test]
async fn two_stores_on_one_file_agree() {
    let path = db_path("shared");
    let url = format!("sqlite://{}", path.display());
    let one = larder::open(&url).await.unwrap();
    let two = larder::open(&url).await.unwrap();
    let v1 = one.create(&k("doc"), "v1".into()).await.unwrap();
    assert_eq!(two.stat(&k("doc")).await.unwrap().unwrap().etag, v1.etag);
    let v2 = two.swap(&k("doc"), &v1.etag, "v2".into()).await.unwrap();
    match one.swap(&k("doc"), &v1.etag, "stale".into()).await {
        Err(Error::PreconditionFailed { current }) => {
            assert_eq!(
                current.unwrap().etag,
                v2.etag,
                "412 carries the current ETag"
            )
        }
        other => panic!("a stale swap through the other store: {other:?}"),
    }
    assert_eq!(&one.get_bytes(&k("doc")).await.unwrap().0[..], b"v2");
}

#[tokio::test]
async fn a_newer_layout_is_refused() {
    let config = file_config("schema");
    drop(SqliteStore::open(config.clone()).await.unwrap());
    let path = config.path.clone().unwrap();
    {
        use sqlx::sqlite::SqliteConnectOptions;
        use sqlx::ConnectOptions;
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query("UPDATE larder_schema SET version = 99 WHERE tbl = 'larder_objects'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let err = SqliteStore::open(config).await.unwrap_err();
    assert!(
        err.to_string().contains("layout version 99"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn the_sweeper_deletes_expired_rows() {
    let mut config = file_config("sweep");
    config.sweep_interval = Some(Duration::from_millis(200));
    let path = config.path.clone().unwrap();
    let store = SqliteStore::open(config).await.unwrap();
    let opts = PutOptions {
        ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    store.put(&k("short"), "x".into(), opts).await.unwrap();
    store.put_bytes(&k("long"), "y".into()).await.unwrap();
    let rows = || async {
        use sqlx::sqlite::SqliteConnectOptions;
        use sqlx::ConnectOptions;
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM larder_objects ORDER BY key")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        keys
    };
    assert_eq!(rows().await, ["long", "short"]);
    let mut swept = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if rows().await == ["long"] {
            swept = true;
            break;
        }
    }
    assert!(
        swept,
        "the expired row is still in the table: {:?}",
        rows().await
    );
}

/// Listing in SQL (batched, jumping over common prefixes) gives exactly what the memory store
/// gives, page by page, for every combination of prefix, delimiter, page size and cursor.
#[tokio::test]
async fn listing_matches_the_reference_store() {
    let sqlite = SqliteStore::open(file_config("list")).await.unwrap();
    let reference = MemoryStore::new();
    let mut keys = vec![
        "a".to_string(),
        "a/1".into(),
        "a/2/x".into(),
        "a/2/y".into(),
        "a0".into(),
        "ab/c".into(),
        "b/\u{10FFFF}".into(),
        "b/\u{10FFFF}/z".into(),
        "é/1".into(),
        "z".into(),
    ];
    keys.extend((0..30).map(|i| format!("many/{:02}/leaf", i % 7)));
    keys.extend((0..30).map(|i| format!("many/{i:02}")));
    for key in &keys {
        let body = Bytes::from(key.clone());
        sqlite.put_bytes(&k(key), body.clone()).await.unwrap();
        reference.put_bytes(&k(key), body).await.unwrap();
    }
    for prefix in ["", "a", "a/", "many/", "many/0", "b/", "nothing"] {
        larder::conformance::same_pages_every_way(&sqlite, &reference, prefix).await;
    }
}

#[tokio::test]
async fn urls_are_checked() {
    for bad in [
        "sqlite://",
        "sqlite:relative.db",
        "sqlite::memory:?table=x;drop",
        "sqlite::memory:?bogus=1",
        "sqlite::memory:?sweep=soon",
        "sqlite::memory:?synchronous=sometimes",
        // The bound every SQL driver shares: 60 characters.
        &format!("sqlite::memory:?table={}", "t".repeat(61)),
    ] {
        assert!(
            matches!(larder::open(bad).await, Err(Error::InvalidInput(_))),
            "{bad} should be refused"
        );
    }
    let path = db_path("url");
    let url = format!(
        "sqlite://{}?table=other&sweep=0&max_connections=2&synchronous=normal",
        path.display()
    );
    let store = larder::open(&url).await.unwrap();
    store.put_bytes(&k("x"), "1".into()).await.unwrap();
    assert_eq!(store.capabilities().name, "sqlite");
    assert_eq!(store.capabilities().atomic_scope, larder::AtomicScope::Host);
}

#[tokio::test]
async fn a_layout_1_table_is_carried_over() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;

    // A record as this build writes it, in a table of its own ...
    let mut config = file_config("layout1");
    config.table = "source".into();
    let path = config.path.clone().unwrap();
    let source = SqliteStore::open(config.clone()).await.unwrap();
    let v1 = source
        .put_bytes(&k("kept"), "old layout".into())
        .await
        .unwrap();
    drop(source);
    // ... copied into a table of layout 1 (WITHOUT ROWID), as an older build made it.
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE larder_objects (key TEXT PRIMARY KEY NOT NULL, etag TEXT NOT NULL,
           expires_at INTEGER, meta TEXT NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
         CREATE INDEX larder_objects_expires ON larder_objects (expires_at) WHERE expires_at IS NOT NULL;
         INSERT INTO larder_objects SELECT key, etag, expires_at, meta, body FROM source;
         INSERT INTO larder_schema (tbl, version) VALUES ('larder_objects', 1);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    config.table = "larder_objects".into();
    let store = SqliteStore::open(config.clone()).await.unwrap();
    let (bytes, meta) = store.get_bytes(&k("kept")).await.unwrap();
    assert_eq!((&bytes[..], meta), (&b"old layout"[..], v1.clone()));
    let v2 = store
        .swap(&k("kept"), &v1.etag, "new layout".into())
        .await
        .unwrap();
    drop(store);
    let store = SqliteStore::open(config).await.unwrap();
    let (bytes, meta) = store.get_bytes(&k("kept")).await.unwrap();
    assert_eq!((&bytes[..], meta), (&b"new layout"[..], v2));
}

/// Bodies of every size land in the row exactly (written in place, in 1 MiB pieces).
#[tokio::test]
async fn bodies_are_written_whole() {
    let store = SqliteStore::open(file_config("bodies")).await.unwrap();
    for size in [
        0usize,
        1,
        4096,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
    ] {
        let body: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let key = k(&format!("size-{size}"));
        let meta = store.put_bytes(&key, body.clone().into()).await.unwrap();
        assert_eq!(meta.size, size as u64);
        let (got, _) = store.get_bytes(&key).await.unwrap();
        assert!(got[..] == body[..], "size {size}");
        // Replacing with a shorter body leaves nothing of the longer one.
        let meta = store.swap(&key, &meta.etag, "short".into()).await.unwrap();
        assert_eq!(store.get_bytes(&key).await.unwrap().0, &b"short"[..]);
        assert_eq!(meta.size, 5);
    }
}
