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
//! # Atomicity ([`AtomicScope::Cluster`](crate::AtomicScope::Cluster))
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

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};

use super::{Affected, Backend, Dialect, Layout, SqlConfig, Statements, Table};
use crate::error::{Error, Result};

/// Largest object: below PostgreSQL's 1 GB limit on one field, with room for the protocol.
pub const MAX_OBJECT_SIZE: u64 = 512 * 1024 * 1024;

/// The layout version this driver writes.
const SCHEMA_VERSION: i64 = 1;

/// PostgreSQL's SQL where it differs: numbered placeholders, typed where the server cannot
/// infer them, and an insert of a key that has a row affects none.
const DIALECT: Dialect = Dialect {
    numbered: true,
    text: "?::text",
    span: "substring(body FROM ?::int FOR ?::int)",
    on_conflict: " ON CONFLICT (key) DO NOTHING",
    ..Dialect::STANDARD
};

/// A store in a PostgreSQL table.
#[derive(Debug)]
pub struct PostgresStore {
    table: Table<sqlx::Postgres>,
}

impl PostgresStore {
    /// Connects to the server `config` names, creating the table if missing.
    pub async fn open(config: SqlConfig) -> Result<Self> {
        super::validate_table("postgres", &config.table)?;
        let mut connect = PgConnectOptions::from_str(&config.url).map_err(Self::db_error)?;
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
            .map_err(Self::db_error)?;
        let table =
            Table::open::<Self>(pool, &config.table, MAX_OBJECT_SIZE, config.sweep_interval)
                .await?;
        Ok(PostgresStore { table })
    }

    /// Opens the store a `postgres://` / `postgresql://` URL names, with the options in the module docs
    /// (see [`SqlConfig::from_url`]).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(SqlConfig::from_url(url)?).await
    }
}

#[async_trait]
impl Backend for PostgresStore {
    type Db = sqlx::Postgres;
    type Text = String;
    const NAME: &'static str = "postgres";

    fn table(&self) -> &Table<sqlx::Postgres> {
        &self.table
    }

    async fn migrate(pool: &PgPool, t: &str) -> Result<()> {
        let mut tx = pool.begin().await.map_err(Self::db_error)?;
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: serialize.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('larder_schema'))")
            .execute(&mut *tx)
            .await
            .map_err(Self::db_error)?;
        let create = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    key TEXT COLLATE \"C\" PRIMARY KEY,
                    etag TEXT NOT NULL,
                    size BIGINT NOT NULL,
                    last_modified BIGINT NOT NULL,
                    expires_at BIGINT,
                    content_type TEXT,
                    meta TEXT NOT NULL,
                    body BYTEA NOT NULL
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at) WHERE expires_at IS NOT NULL"
            ),
        ];
        let layout = Layout {
            version: SCHEMA_VERSION,
            create,
            upgrade: None,
        };
        super::migrate::<Self>(&mut tx, &DIALECT, t, layout).await?;
        tx.commit().await.map_err(Self::db_error)
    }

    fn statements(t: &str) -> Statements {
        Statements::new(t, &DIALECT)
    }

    /// Connection and pool trouble, serialization failures, deadlocks and timeouts (a
    /// statement cancelled by `statement_timeout`, a lock not granted within `lock_timeout`)
    /// are worth retrying; everything else is permanent.
    fn db_error(e: sqlx::Error) -> Error {
        match &e {
            // disk_full.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("53100") => {
                Error::storage_full(e)
            }
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

    /// Serialization failure, deadlock, or a unique violation (another writer created the row).
    fn redecide(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001" | "40P01" | "23505")))
    }
}

impl Affected for PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}
