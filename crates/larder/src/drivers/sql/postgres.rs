//! A store in one PostgreSQL table.
//!
//! URL: `postgres://user[:pass]@host[:port]/db` (or `postgresql://`), with Larder's options
//! `?table=larder_objects&sweep=60&max_connections=8&acquire_timeout_ms=5000&statement_timeout_ms=5000`;
//! any other query option is the PostgreSQL client's (e.g. `sslmode`, though this build has no
//! TLS). `statement_timeout_ms` (0: the server's default) bounds every statement and every wait
//! for a row lock (`statement_timeout`, `lock_timeout`): past it the request fails as transient.
//!
//! # Layout
//!
//! One table (default `larder_objects`): `key TEXT COLLATE "C" PRIMARY KEY, etag, size,
//! last_modified (ms), expires_at (ms, NULL = never), content_type, meta (the whole
//! `Meta::encode` JSON), body BYTEA`. The `C` collation makes the primary key's order the
//! keys' code point order, so prefix listing is an index range scan. `larder_schema` records
//! each table's layout version; a table written by a newer layout is refused, not misread.
//! Creation is serialized by an advisory lock, so stores opening at once don't collide.
//!
//! # Atomicity ([`AtomicScope::Cluster`])
//!
//! See [the module](super): `SELECT … FOR UPDATE` locks the row for the decision (made by the
//! shared evaluator, so every condition is supported) and the write is guarded by the etag
//! decided on; a create races on the primary key (`INSERT … ON CONFLICT DO NOTHING`, 0 rows →
//! decide again). Every client of the database sees one order of versions. A put whose condition
//! SQL can state (unconditional, one strong `If-Match` tag, `If-Match: *`, `If-None-Match: *`)
//! is first one guarded statement, one round trip, with no lock held across round trips (see
//! [the module](super)).
//!
//! Bodies are buffered in memory on the way in and out (a row is one value); a range read
//! transfers only the range (`substring`), checked against the ETag decided on. Objects are
//! bounded at [`MAX_OBJECT_SIZE`] (a `bytea` value is at most 1 GB).
//!
//! # TTL
//!
//! Expired rows are absent for every read, listing and condition; a background task deletes
//! them every `sweep` seconds (default 60; 0 = never) while the store lives.

use std::ops::Range;

use async_trait::async_trait;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::ranged::{bind_span, get_decided, INLINE_MAX};
use super::{bind_row, Backend, LockedRow, Row, SqlConfig, Statements, Sweeper};
use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{scan_page, ListOptions, ListPage, ScanFrom};
use crate::meta::{now_millis, to_millis, Meta};
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// Largest object: below PostgreSQL's 1 GB limit on one field, with room for the protocol.
pub const MAX_OBJECT_SIZE: u64 = 512 * 1024 * 1024;

/// The layout version this driver writes.
const SCHEMA_VERSION: i32 = 1;

/// A store in a PostgreSQL table.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    table: String,
    sql: Statements,
    /// Deletes expired rows while the store lives.
    _sweeper: Option<Sweeper>,
}

/// Connection and pool trouble, serialization failures, deadlocks and timeouts (a statement
/// cancelled by `statement_timeout`, a lock not granted within `lock_timeout`) are worth
/// retrying; everything else is permanent.
fn db_error(e: sqlx::Error) -> Error {
    match &e {
        // disk_full.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("53100") => Error::storage_full(e),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::transient(e)
        }
        sqlx::Error::Database(d)
            if d.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("57P")
                    || matches!(&*c, "40001" | "40P01" | "57014" | "55P03")
            }) =>
        {
            Error::transient(e)
        }
        _ => Error::backend(e),
    }
}

impl PostgresStore {
    /// Connects to the server `config` names, creating the table if missing.
    pub async fn open(config: SqlConfig) -> Result<Self> {
        super::validate_table("postgres", &config.table)?;
        let mut connect = PgConnectOptions::from_str(&config.url).map_err(db_error)?;
        if let Some(t) = config.statement_timeout {
            // Sent with the connection's start-up message: no round trip of its own.
            let ms = t.as_millis().max(1).to_string();
            connect = connect.options([("statement_timeout", &ms), ("lock_timeout", &ms)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db_error)?;
        let table = config.table.clone();
        Self::migrate(&pool, &table).await?;
        let sweeper = Sweeper::spawn(
            "postgres",
            &pool,
            format!("DELETE FROM {table} WHERE expires_at <= $1"),
            config.sweep_interval,
        );
        Ok(PostgresStore {
            pool,
            sql: statements(&table),
            table,
            _sweeper: sweeper,
        })
    }

    /// Opens the store a `postgres://` / `postgresql://` URL names, with the options in the module docs
    /// (see [`SqlConfig::from_url`]).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(SqlConfig::from_url(url)?).await
    }

    async fn migrate(pool: &PgPool, table: &str) -> Result<()> {
        let mut tx = pool.begin().await.map_err(db_error)?;
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: serialize.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('larder_schema'))")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS larder_schema (tbl TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let version: Option<i32> =
            sqlx::query_scalar("SELECT version FROM larder_schema WHERE tbl = $1")
                .bind(table)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(Error::backend(format!(
                "postgres table {table} has layout version {v}; this build reads {SCHEMA_VERSION}"
            )))
            }
            None => {
                sqlx::query(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        key TEXT COLLATE \"C\" PRIMARY KEY,
                        etag TEXT NOT NULL,
                        size BIGINT NOT NULL,
                        last_modified BIGINT NOT NULL,
                        expires_at BIGINT,
                        content_type TEXT,
                        meta TEXT NOT NULL,
                        body BYTEA NOT NULL
                    )"
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
                sqlx::query("INSERT INTO larder_schema (tbl, version) VALUES ($1, $2)")
                    .bind(table)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        tx.commit().await.map_err(db_error)
    }

    /// The live object's metadata at `key`, read with `exec`.
    async fn current<'e, E>(&self, exec: E, key: &Key) -> Result<Option<Meta>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        let meta: Option<String> = sqlx::query_scalar(&self.sql.current)
            .bind(key.as_str())
            .bind(to_millis(now_millis()))
            .fetch_optional(exec)
            .await
            .map_err(db_error)?;
        meta.map(|m| Meta::decode(m.as_bytes())).transpose()
    }

    /// The live object's metadata at `key`, with its body if that is at most [`INLINE_MAX`]
    /// bytes: one round trip for a small object's get.
    async fn current_inline(&self, key: &Key) -> Result<Option<(Meta, Option<Vec<u8>>)>> {
        let row: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(&self.sql.current_inline)
            .bind(key.as_str())
            .bind(to_millis(now_millis()))
            .bind(INLINE_MAX)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|(m, body)| Ok((Meta::decode(m.as_bytes())?, body)))
            .transpose()
    }

    /// `span` of the body of `key`, if the object there still has `etag`.
    async fn read_span(&self, key: &Key, etag: ETag, span: Range<u64>) -> Result<Option<Vec<u8>>> {
        let q = bind_span(sqlx::query_scalar(&self.sql.span), key, &etag, span);
        q.fetch_optional(&self.pool).await.map_err(db_error)
    }
}

/// This dialect's statements for `t`.
fn statements(t: &str) -> Statements {
    let set = format!(
        "UPDATE {t} SET etag = $1, size = $2, last_modified = $3, expires_at = $4,
           content_type = $5, meta = $6, body = $7 WHERE key = $8"
    );
    let live = |n: u8, m: u8| {
        format!("(expires_at IS NULL OR expires_at > ${n}) AND last_modified <= ${m}")
    };
    Statements {
        current: format!(
            "SELECT meta FROM {t} WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)"
        ),
        current_inline: format!(
            "SELECT meta, CASE WHEN size <= $3 THEN body END FROM {t}
             WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)"
        ),
        span: format!(
            "SELECT substring(body FROM $1::int FOR $2::int) FROM {t} WHERE key = $3 AND etag = $4"
        ),
        lock: format!("SELECT etag, expires_at, meta FROM {t} WHERE key = $1 FOR UPDATE"),
        insert: format!(
            "INSERT INTO {t} (etag, size, last_modified, expires_at, content_type, meta, body, key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING"
        ),
        update_locked: format!("{set} AND etag = $9"),
        update_live_tag: format!("{set} AND etag = $9 AND {}", live(10, 11)),
        update_live: format!("{set} AND {}", live(9, 10)),
        delete: format!("DELETE FROM {t} WHERE key = $1 AND etag = $2"),
    }
}

#[async_trait]
impl Backend for PostgresStore {
    type Db = sqlx::Postgres;

    const ONE_STATEMENT_WRITES: bool = true;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn db_error(e: sqlx::Error) -> Error {
        db_error(e)
    }

    /// Serialization failure, deadlock, or a unique violation (another writer created the row).
    fn redecide(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001" | "40P01" | "23505")))
    }

    async fn lock_row(&self, tx: &mut sqlx::PgConnection, key: &Key) -> Result<Option<LockedRow>> {
        let row: Option<(String, Option<i64>, String)> = sqlx::query_as(&self.sql.lock)
            .bind(key.as_str())
            .fetch_optional(tx)
            .await
            .map_err(db_error)?;
        Ok(row.map(|(etag, exp, meta)| (etag, exp, meta.into_bytes())))
    }

    async fn read_live(&self, conn: &mut sqlx::PgConnection, key: &Key) -> Result<Option<Meta>> {
        self.current(conn, key).await
    }

    async fn write(&self, tx: &mut sqlx::PgConnection, row: &Row<'_>) -> sqlx::Result<u64> {
        let done = bind_row(sqlx::query(self.sql.write(&row.guard)), row)
            .execute(tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_row(
        &self,
        tx: &mut sqlx::PgConnection,
        key: &Key,
        etag: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(&self.sql.delete)
            .bind(key.as_str())
            .bind(etag)
            .execute(tx)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_object_size: Some(MAX_OBJECT_SIZE),
            ..Capabilities::full("postgres", AtomicScope::Cluster, true)
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        opts.answer(key, self.current(&self.pool, key).await?)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        let bytes = |etag, span| self.read_span(key, etag, span);
        get_decided(key, &opts, || self.current_inline(key), bytes).await
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        super::put(self, self.capabilities(), key, body, opts).await
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        super::delete(self, self.capabilities(), key, opts).await
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
                "SELECT meta FROM {} WHERE key {op} $1 AND ($2::text IS NULL OR key < $2)
                 AND (expires_at IS NULL OR expires_at > $3) ORDER BY key LIMIT $4",
                self.table
            ))
            .bind(start)
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
