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
//! by a newer layout is refused instead of misread. Layout 2 is a rowid table, so a body can be
//! written in place with incremental blob I/O; a layout-1 table (`WITHOUT ROWID`) is copied into
//! layout 2 once, when it is first opened.
//!
//! # Atomicity
//!
//! The decision is the one all SQL drivers share (the [`sql`] module): every conditional write
//! runs in a `BEGIN IMMEDIATE` transaction, so SQLite takes the database's write lock when the
//! transaction begins, and reading the current row, deciding with the shared
//! [`Preconditions::evaluate_write`](crate::Preconditions::evaluate_write) and writing are one
//! step for every connection of every process on the host that opens the file
//! ([`AtomicScope::Host`]; SQLite's locks don't hold over network file systems). The writes
//! themselves are still guarded in SQL (`UPDATE … WHERE key = ? AND etag = ?`), so even a
//! writer that bypassed the lock could not overwrite a version it did not decide on. Every
//! condition is supported on put and delete.
//!
//! Bodies are collected in memory on the way in (the ETag must be known before the commit), then
//! copied straight into the row: the row is written with a zero-filled body of the right length
//! (`zeroblob`) and the bytes are written into it in place (`sqlite3_blob_write`), so a PUT of
//! N bytes holds about N bytes, not the body again in a bound argument and in SQLite's record
//! (`cargo bench --bench sqlite_put_rss` measures it); reads of a range
//! fetch only that range (`substring`), checked against the ETag the decision was made on, so meta
//! and bytes always belong to one version. SQLite's blob limit (1 GB by default) bounds objects
//! at [`MAX_OBJECT_SIZE`].
//!
//! # TTL
//!
//! Expired rows are absent for every read, listing and condition, and a background task deletes
//! them every `sweep` seconds (default 60; 0 = never) for as long as the store lives.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    LockedSqliteHandle, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous,
};

use crate::capabilities::AtomicScope;
use crate::drivers::sql::{
    self, validate_table, write_row, Affected, Backend, Dialect, Layout, Row, Statements, Table,
    TableOptions,
};
use crate::error::{Error, Result};

/// Largest object: SQLite's default `SQLITE_MAX_LENGTH` is 1,000,000,000 bytes per value.
pub const MAX_OBJECT_SIZE: u64 = 1_000_000_000;

/// The layout version this driver writes.
const SCHEMA_VERSION: i64 = 2;

/// SQLite's SQL where it differs: the layout keeps no `size` column, and `BEGIN IMMEDIATE`
/// holds the database's write lock instead of a row lock.
const DIALECT: Dialect = Dialect {
    // length() of a BLOB is its size, read without the blob.
    size: "length(body)",
    for_update: "",
    ..Dialect::STANDARD
};

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
            table: sql::DEFAULT_TABLE.into(),
            sweep_interval: Some(sql::DEFAULT_SWEEP),
            max_connections: sql::DEFAULT_MAX_CONNECTIONS,
            synchronous_full: true,
        }
    }
}

impl SqliteConfig {
    /// Parses a URL: `sqlite:///abs.db`, `sqlite://rel.db` (the path verbatim),
    /// `sqlite::memory:`, with the options in the module docs; an unknown option is refused.
    pub fn from_url(url: &str) -> Result<Self> {
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
            let shared = TableOptions {
                table: &mut config.table,
                sweep_interval: &mut config.sweep_interval,
                max_connections: &mut config.max_connections,
            };
            if shared.take("sqlite", &k, &v)? {
                continue;
            }
            match (&*k, &*v) {
                ("synchronous", "full") => config.synchronous_full = true,
                ("synchronous", "normal") => config.synchronous_full = false,
                ("synchronous", _) => {
                    return Err(Error::InvalidInput(format!(
                        "sqlite store: synchronous={v} (full or normal)"
                    )))
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "sqlite store: unknown option {k}"
                    )))
                }
            }
        }
        validate_table("sqlite", &config.table)?;
        Ok(config)
    }
}

/// A store in a SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    table: Table<sqlx::Sqlite>,
    /// The row id of a key's row, for writing its body in place ([`write_blob`]).
    rowid: String,
}

impl SqliteStore {
    /// Opens (creating if missing) the database and table that `config` names.
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        validate_table("sqlite", &config.table)?;
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
            None => SqliteConnectOptions::from_str("sqlite::memory:").map_err(Self::db_error)?,
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
        let pool = pool_opts.connect_with(opts).await.map_err(Self::db_error)?;
        let t = &config.table;
        let table = Table::open::<Self>(pool, t, MAX_OBJECT_SIZE, config.sweep_interval).await?;
        Ok(SqliteStore {
            table,
            rowid: format!("SELECT rowid FROM {t} WHERE key = ?"),
        })
    }

    /// Opens the store a `sqlite:` URL names (see [`SqliteConfig::from_url`]).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(SqliteConfig::from_url(url)?).await
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Db = sqlx::Sqlite;
    type Text = String;
    const NAME: &'static str = "sqlite";
    const SCOPE: AtomicScope = AtomicScope::Host;
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const DISCARD_FAILED_CONNECTIONS: bool = true;

    fn table(&self) -> &Table<sqlx::Sqlite> {
        &self.table
    }

    async fn migrate(pool: &SqlitePool, t: &str) -> Result<()> {
        let mut tx = pool.begin_with(Self::BEGIN).await.map_err(Self::db_error)?;
        let create = [
            format!(
                "CREATE TABLE {t} (
                    key TEXT PRIMARY KEY NOT NULL,
                    etag TEXT NOT NULL,
                    expires_at INTEGER,
                    meta TEXT NOT NULL,
                    body BLOB NOT NULL
                )"
            ),
            format!("CREATE INDEX {t}_expires ON {t} (expires_at) WHERE expires_at IS NOT NULL"),
        ];
        // Layout 1 was a WITHOUT ROWID table, which incremental blob I/O cannot write into:
        // copied into the layout-2 table once, inside this transaction.
        let mut from_1 = vec![
            format!("ALTER TABLE {t} RENAME TO {t}_v1"),
            format!("DROP INDEX IF EXISTS {t}_expires"),
        ];
        from_1.extend(create.iter().cloned());
        from_1.extend([
            format!(
                "INSERT INTO {t} (key, etag, expires_at, meta, body)
                 SELECT key, etag, expires_at, meta, body FROM {t}_v1"
            ),
            format!("DROP TABLE {t}_v1"),
        ]);
        let layout = Layout {
            version: SCHEMA_VERSION,
            create: create.into(),
            upgrade: Some((1, from_1)),
        };
        sql::migrate::<Self>(&mut tx, &DIALECT, t, layout).await?;
        tx.commit().await.map_err(Self::db_error)
    }

    /// This dialect's statements for `t`. The writes name the values of [`Row::args`] they take by
    /// number (etag, size, expires_at, meta, key, the guard's etag): the body is not bound but
    /// written into the row afterwards ([`write_blob`]), and no put is one statement (this layout
    /// has no `last_modified` column to guard on, and the write lock makes the decision cheap).
    fn statements(t: &str) -> Statements {
        Statements {
            insert: format!(
                "INSERT INTO {t} (etag, expires_at, meta, body, key)
                 VALUES (?1, ?4, ?6, zeroblob(?2), ?8)"
            ),
            update_locked: format!(
                "UPDATE {t} SET etag = ?1, expires_at = ?4, meta = ?6, body = zeroblob(?2)
                 WHERE key = ?8 AND etag = ?9"
            ),
            update_live: None,
            ..Statements::new(t, &DIALECT)
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

    /// A failed COMMIT of an embedded database did not commit: read like any other error.
    fn commit_error(e: sqlx::Error) -> Error {
        Self::db_error(e)
    }

    /// Never: `BEGIN IMMEDIATE` holds the write lock across the decision, so no other writer
    /// can create the row between the read and the insert.
    fn redecide(_: &sqlx::Error) -> bool {
        false
    }

    /// The row is written with a zero-filled body of the right length (`zeroblob`, which
    /// SQLite stores without building it in memory), then the body is copied into it in place
    /// ([`write_blob`]): the body is never bound to a statement, which would copy it twice more
    /// (into sqlx's arguments and into SQLite's record).
    async fn write(&self, tx: &mut SqliteConnection, row: &Row<'_>) -> sqlx::Result<u64> {
        let written = write_row(self, tx, row, &[]).await?;
        if written == 1 && !row.body.is_empty() {
            let rowid: i64 = sqlx::query_scalar(&self.rowid)
                .bind(row.meta.key.as_str())
                .fetch_one(&mut *tx)
                .await?;
            let mut handle = tx.lock_handle().await?;
            write_blob(&mut handle, &self.table.name, rowid, row.body)?;
        }
        Ok(written)
    }
}

impl Affected for SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// How much of a body one `sqlite3_blob_write` call copies.
const BLOB_CHUNK: usize = 1 << 20;

/// Copies `body` into the (zero-filled, exactly as long) body of row `rowid` of `table`, in
/// place, with SQLite's incremental blob I/O, inside the transaction open on the connection.
fn write_blob(
    handle: &mut LockedSqliteHandle<'_>,
    table: &str,
    rowid: i64,
    body: &[u8],
) -> sqlx::Result<()> {
    use libsqlite3_sys as ffi;
    use std::ffi::{c_int, CString};

    let db = handle.as_raw_handle().as_ptr();
    // Checked at open: letters, digits and _, so no NUL.
    let table = CString::new(table).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut blob: *mut ffi::sqlite3_blob = std::ptr::null_mut();
    // SAFETY: `db` is an open connection that `handle` keeps from sqlx's worker thread for as
    // long as it lives; the names are NUL-terminated and outlive the call; `blob` is written
    // by the call (and left null on failure).
    let rc = unsafe {
        ffi::sqlite3_blob_open(
            db,
            c"main".as_ptr(),
            table.as_ptr(),
            c"body".as_ptr(),
            rowid,
            1,
            &mut blob,
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(blob_error(db, rc));
    }
    let mut result = Ok(());
    for (i, chunk) in body.chunks(BLOB_CHUNK).enumerate() {
        // Lengths and offsets are below MAX_OBJECT_SIZE, inside c_int.
        // SAFETY: `blob` is open; `chunk` is valid for `chunk.len()` bytes; the blob is exactly
        // `body.len()` bytes long, so the write stays inside it.
        let rc = unsafe {
            ffi::sqlite3_blob_write(
                blob,
                chunk.as_ptr().cast(),
                chunk.len() as c_int,
                (i * BLOB_CHUNK) as c_int,
            )
        };
        if rc != ffi::SQLITE_OK {
            result = Err(blob_error(db, rc));
            break;
        }
    }
    // SAFETY: `blob` is open and closed once.
    let rc = unsafe { ffi::sqlite3_blob_close(blob) };
    if result.is_ok() && rc != ffi::SQLITE_OK {
        result = Err(blob_error(db, rc));
    }
    result
}

/// A failed blob call as a sqlx error that [`Backend::db_error`] reads: a full disk or database as
/// `StorageFull`, an I/O error as I/O, anything else as a protocol error with SQLite's message.
fn blob_error(db: *mut libsqlite3_sys::sqlite3, rc: std::ffi::c_int) -> sqlx::Error {
    use libsqlite3_sys as ffi;
    // SAFETY: `db` is open; sqlite3_errmsg returns a NUL-terminated string owned by SQLite,
    // copied out at once.
    let msg = unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned();
    let msg = format!("sqlite store: writing a body: {msg} (code {rc})");
    match rc & 0xff {
        ffi::SQLITE_FULL => {
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::StorageFull, msg))
        }
        ffi::SQLITE_IOERR => sqlx::Error::Io(std::io::Error::other(msg)),
        _ => sqlx::Error::Protocol(msg),
    }
}

/// `sqlite:` URL detection for [`open`](crate::open).
pub(crate) fn is_sqlite_url(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("sqlite:"))
}
