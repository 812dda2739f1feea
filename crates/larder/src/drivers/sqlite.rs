//! A store in one SQLite database file: the embedded default for metadata-heavy use.
//!
//! URL: `sqlite:///abs/path.db`, `sqlite://rel/path.db` (path verbatim, created if missing),
//! `sqlite::memory:` (a private in-memory database), with options
//! `?table=larder_objects&sweep=60&max_connections=8&synchronous=full`.
//!
//! # Layout
//!
//! One table (default `larder_objects`): `key TEXT PRIMARY KEY, etag TEXT, expires_at INTEGER
//! (ms, NULL = never), meta TEXT (Meta::encode JSON), body BLOB`, in WAL mode. A second table
//! `larder_schema` records the layout version of each object table, and opening a table written
//! by a newer layout is refused instead of misread.
//!
//! # Atomicity
//!
//! Every conditional write runs in a `BEGIN IMMEDIATE` transaction: SQLite takes the database's
//! write lock when the transaction begins, so reading the current row, deciding with the shared
//! [`Preconditions::evaluate_write`](crate::Preconditions::evaluate_write) and writing are one
//! step for every connection of every process on the host that opens the file
//! ([`AtomicScope::Host`]; SQLite's locks don't hold over network file systems). The writes
//! themselves are still guarded in SQL (`UPDATE … WHERE key = ? AND etag = ?`), so even a
//! writer that bypassed the lock could not overwrite a version it did not decide on. Every
//! condition is supported on put and delete.
//!
//! Bodies are buffered in memory on the way in (SQLite takes a blob whole); reads of a range
//! fetch only that range (`substr`), checked against the ETag the decision was made on, so meta
//! and bytes always belong to one version. SQLite's blob limit (1 GB by default) bounds objects
//! at [`MAX_OBJECT_SIZE`].
//!
//! # TTL
//!
//! Expired rows are absent for every read, listing and condition, and a background task deletes
//! them every `sweep` seconds (default 60; 0 = never) for as long as the store lives.

use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Connection;

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::drivers::ranged::{bind_span, get_decided};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{scan_page, ListOptions, ListPage, ScanFrom};
use crate::meta::{now_millis, to_millis, Meta};
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Largest object: SQLite's default `SQLITE_MAX_LENGTH` is 1,000,000,000 bytes per value.
pub const MAX_OBJECT_SIZE: u64 = 1_000_000_000;

/// The layout version this driver writes.
const SCHEMA_VERSION: i64 = 1;

/// Settings of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file (`None`: a private in-memory database).
    pub path: Option<PathBuf>,
    /// The object table's name (letters, digits and `_`).
    pub table: String,
    /// How often expired rows are deleted (`None`: never; they are still never served).
    pub sweep_interval: Option<Duration>,
    /// Pool size.
    pub max_connections: u32,
    /// `PRAGMA synchronous`: `true` is FULL (every commit fsynced), `false` NORMAL (WAL: a
    /// power loss may drop the last commits, never tear one).
    pub synchronous_full: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: None,
            table: "larder_objects".into(),
            sweep_interval: Some(Duration::from_secs(60)),
            max_connections: 8,
            synchronous_full: true,
        }
    }
}

/// A store in a SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    table: String,
    sql: Statements,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(s) = &self.sweeper {
            s.abort();
        }
    }
}

fn db_error(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Io(io) if crate::error::is_storage_full(io) => Error::storage_full(e),
        // SQLITE_FULL: "database or disk is full" (the disk, or max_page_count).
        sqlx::Error::Database(d) if d.code().as_deref() == Some("13") => Error::storage_full(e),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Error::transient(e),
        // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout: another writer held the lock.
        sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "6" | "517")) => {
            Error::transient(e)
        }
        _ => Error::backend(e),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database and table that `config` names.
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        if config.table.is_empty()
            || !config
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::InvalidInput(format!(
                "sqlite store: table name {:?} must be letters, digits and _",
                config.table
            )));
        }
        let mut opts = match &config.path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| Error::backend(format!("creating {}: {e}", dir.display())))?;
                }
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
            }
            None => SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_error)?,
        };
        opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if config.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            // Writers queue on the database lock; under heavy contention that can take a while.
            .busy_timeout(Duration::from_secs(30));
        let mut pool_opts = SqlitePoolOptions::new().max_connections(config.max_connections);
        if config.path.is_none() {
            // Each connection to `:memory:` is its own database: keep exactly one, forever.
            pool_opts = pool_opts
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool_opts.connect_with(opts).await.map_err(db_error)?;
        let table = config.table.clone();
        Self::migrate(&pool, &table).await?;
        let sweeper = config.sweep_interval.filter(|d| !d.is_zero()).map(|every| {
            let pool = pool.clone();
            let sql = format!("DELETE FROM {table} WHERE expires_at <= ?");
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let now = to_millis(now_millis());
                    if let Err(e) = sqlx::query(&sql).bind(now).execute(&pool).await {
                        tracing::warn!(error = %e, "sqlite store: sweeping expired objects");
                    }
                }
            })
        });
        Ok(SqliteStore {
            pool,
            sql: Statements::new(&table),
            table,
            sweeper,
        })
    }

    /// From a URL: `sqlite:///abs.db`, `sqlite://rel.db`, `sqlite::memory:`, with the options
    /// in the module docs.
    pub async fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("sqlite:"))
            .map(|_| &url[7..])
            .ok_or_else(|| Error::InvalidInput(format!("not a sqlite URL: {url}")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = match location {
            ":memory:" | "//:memory:" => None,
            l => match l.strip_prefix("//") {
                Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "sqlite store URL {url:?}: expected sqlite:///abs/path.db, sqlite://rel.db or sqlite::memory:"
                    )))
                }
            },
        };
        let mut config = SqliteConfig {
            path,
            ..Default::default()
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let number = || {
                v.parse::<u64>().map_err(|_| {
                    Error::InvalidInput(format!("sqlite store: {k}={v} is not a number"))
                })
            };
            match &*k {
                "table" => config.table = v.to_string(),
                "sweep" => config.sweep_interval = Some(Duration::from_secs(number()?)),
                "max_connections" => config.max_connections = number()?.clamp(1, 1024) as u32,
                "synchronous" => {
                    config.synchronous_full = match &*v {
                        "full" => true,
                        "normal" => false,
                        _ => {
                            return Err(Error::InvalidInput(format!(
                                "sqlite store: synchronous={v} (full or normal)"
                            )))
                        }
                    }
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "sqlite store: unknown option {k}"
                    )))
                }
            }
        }
        Self::open(config).await
    }

    async fn migrate(pool: &SqlitePool, table: &str) -> Result<()> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS larder_schema (tbl TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM larder_schema WHERE tbl = ?")
                .bind(table)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(Error::backend(format!(
                    "sqlite table {table} has layout version {v}; this build reads {SCHEMA_VERSION}"
                )))
            }
            None => {
                sqlx::query(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        key TEXT PRIMARY KEY NOT NULL,
                        etag TEXT NOT NULL,
                        expires_at INTEGER,
                        meta TEXT NOT NULL,
                        body BLOB NOT NULL
                    ) WITHOUT ROWID"
                ))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query(&format!(
                    "CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires_at) WHERE expires_at IS NOT NULL"
                ))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query("INSERT INTO larder_schema (tbl, version) VALUES (?, ?)")
                    .bind(table)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        tx.commit().await.map_err(db_error)
    }

    /// The live (unexpired) object's metadata at `key`, read with `exec`.
    async fn current<'e, E>(&self, exec: E, key: &Key) -> Result<Option<Meta>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        let meta: Option<String> = sqlx::query_scalar(&format!(
            "SELECT meta FROM {} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            self.table
        ))
        .bind(key.as_str())
        .bind(to_millis(now_millis()))
        .fetch_optional(exec)
        .await
        .map_err(db_error)?;
        meta.map(|m| Meta::decode(m.as_bytes())).transpose()
    }

    /// `span` of the body of `key`, if the object there still has `etag`.
    async fn read_span(&self, key: &Key, etag: ETag, span: Range<u64>) -> Result<Option<Vec<u8>>> {
        // substr on a BLOB counts bytes, from 1.
        let sql = format!(
            "SELECT substr(body, ?, ?) FROM {} WHERE key = ? AND etag = ?",
            self.table
        );
        let q = bind_span(sqlx::query_scalar(&sql), key, &etag, span);
        q.fetch_optional(&self.pool).await.map_err(db_error)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_object_size: Some(MAX_OBJECT_SIZE),
            ..Capabilities::full("sqlite", AtomicScope::Host, true)
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let meta = self
            .current(&self.pool, key)
            .await?
            .ok_or_else(|| Error::not_found(key))?;
        opts.preconditions.evaluate_read(&meta)?;
        Ok(meta)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        let bytes = |etag, span| self.read_span(key, etag, span);
        get_decided(key, &opts, || self.current(&self.pool, key), bytes).await
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        let caps = self.capabilities();
        caps.check_put(&opts)?;
        let (data, etag, size) = body
            .reader(caps.max_object_size)
            .collect(opts.expected_etag.as_ref())
            .await?;
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let result = self.put_in(&mut conn, key, data, etag, size, opts).await;
        discard_if_failed(&mut conn, &result);
        result
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        self.capabilities().check_delete(&opts)?;
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let result = self.delete_in(&mut conn, key, opts).await;
        discard_if_failed(&mut conn, &result);
        result
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let now = to_millis(now_millis());
        scan_page(&opts, |from, end, n| async move {
            let (op, start) = match from {
                ScanFrom::After(s) => (">", s),
                ScanFrom::At(s) => (">=", s),
            };
            sqlx::query_scalar::<_, String>(&format!(
                "SELECT meta FROM {} WHERE key {op} ? AND (? IS NULL OR key < ?)
                 AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
                self.table
            ))
            .bind(start)
            .bind(end.as_deref())
            .bind(end.as_deref())
            .bind(now)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(|json| Meta::decode(json.as_bytes()))
            .collect()
        })
        .await
    }
}

/// A statement that failed inside a transaction may have ended it within SQLite (SQLITE_FULL
/// and I/O errors roll it back), after which sqlx still counts it open and refuses every later
/// `BEGIN` on that connection: such a connection is closed rather than returned to the pool.
fn discard_if_failed<T>(conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>, result: &Result<T>) {
    if matches!(
        result,
        Err(Error::StorageFull { .. } | Error::Backend { .. })
    ) {
        conn.close_on_drop();
    }
}

impl SqliteStore {
    async fn put_in(
        &self,
        conn: &mut SqliteConnection,
        key: &Key,
        data: Bytes,
        etag: ETag,
        size: u64,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let current = self.current(&mut *tx, key).await?;
        opts.preconditions.evaluate_write(current.as_ref())?;
        // Stamped under the write lock, and never before the version it replaces.
        let replaces = current.as_ref().map(|c| c.last_modified);
        let meta = Meta::next_version(key, etag, size, replaces, &opts)?;
        let encoded = meta.encode();
        let expires = meta.expires_at.map(to_millis);
        // Bound as an owned buffer (taken from the collected body without a copy when it is
        // the only reference): a borrowed one is copied again to cross to sqlx's worker thread.
        let data = Vec::from(data);
        let done = match &current {
            // Guarded by the version decided on, as well as by the lock.
            Some(c) => sqlx::query(&self.sql.update)
                .bind(meta.etag.opaque())
                .bind(expires)
                .bind(&encoded)
                .bind(data)
                .bind(key.as_str())
                .bind(c.etag.opaque()),
            // No live object: a missing row, or an expired one that is replaced.
            None => sqlx::query(&self.sql.insert)
                .bind(key.as_str())
                .bind(meta.etag.opaque())
                .bind(expires)
                .bind(&encoded)
                .bind(data)
                .bind(to_millis(meta.last_modified)),
        }
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() != 1 {
            // Only reachable if something wrote without taking the lock.
            return Err(Error::precondition_failed(None));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(PutResult {
            meta,
            created: current.is_none(),
        })
    }

    async fn delete_in(
        &self,
        conn: &mut SqliteConnection,
        key: &Key,
        opts: DeleteOptions,
    ) -> Result<()> {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let current = self
            .current(&mut *tx, key)
            .await?
            .ok_or_else(|| Error::not_found(key))?;
        opts.preconditions.evaluate_write(Some(&current))?;
        sqlx::query(&format!(
            "DELETE FROM {} WHERE key = ? AND etag = ?",
            self.table
        ))
        .bind(key.as_str())
        .bind(current.etag.opaque())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
}

/// The statements that name the table, formatted once.
#[derive(Debug)]
struct Statements {
    update: String,
    insert: String,
}

impl Statements {
    fn new(t: &str) -> Self {
        Statements {
            update: format!(
                "UPDATE {t} SET etag = ?, expires_at = ?, meta = ?, body = ? WHERE key = ? AND etag = ?"
            ),
            insert: format!(
                "INSERT INTO {t} (key, etag, expires_at, meta, body) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, expires_at = excluded.expires_at,
                   meta = excluded.meta, body = excluded.body
                 WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at <= ?"
            ),
        }
    }
}

/// `sqlite:` URL detection for [`open`](crate::open).
pub(crate) fn is_sqlite_url(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("sqlite:"))
}
