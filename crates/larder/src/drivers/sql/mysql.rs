//! A store in one MySQL or MariaDB (InnoDB) table.
//!
//! URL: `mysql://user[:pass]@host[:port]/db` (or `mariadb://`), with Larder's options
//! `?table=larder_objects&sweep=60&max_connections=8&acquire_timeout_ms=5000&statement_timeout_ms=5000`;
//! any other query option is the MySQL client's. `statement_timeout_ms` (0: the server's
//! defaults) bounds every wait for a row lock (`innodb_lock_wait_timeout`, whole seconds, at
//! least 1) and every statement's running time (MariaDB's `max_statement_time`; MySQL's
//! `max_execution_time`, which covers SELECTs only): past it the request fails as transient.
//!
//! # Layout
//!
//! One InnoDB table (default `larder_objects`): `key VARBINARY(1024) PRIMARY KEY` (bytes, so the
//! order is the keys' code point order and no collation pads or folds), `etag, size,
//! last_modified (ms), expires_at (ms, NULL = never), content_type, meta (the whole
//! `Meta::encode` JSON), body LONGBLOB`. `larder_schema` records each table's layout version.
//!
//! # Atomicity ([`AtomicScope::Cluster`](crate::AtomicScope::Cluster))
//!
//! See [the module](super): sessions run at READ COMMITTED (no gap locks), `SELECT … FOR
//! UPDATE` locks the row for the decision by the shared evaluator (every condition is
//! supported), the write is guarded by the etag decided on, and a create races on the primary
//! key (a duplicate-key error or deadlock rolls back and the decision is made again). A put whose
//! condition SQL can state (unconditional, one strong `If-Match` tag, `If-Match: *`,
//! `If-None-Match: *`) is first one guarded statement, one round trip (see [the module](super)).
//!
//! Bodies are buffered in memory both ways; a range read transfers only the range
//! (`SUBSTRING`). One statement carries the whole body, so objects are bounded by the server's
//! `max_allowed_packet` (read at open, less room for the statement): larger bodies are
//! `TooLarge` before anything is sent.
//!
//! # TTL
//!
//! Expired rows are absent for every read, listing and condition; a background task deletes
//! them every `sweep` seconds (default 60; 0 = never) while the store lives.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlQueryResult};

use super::{Affected, Backend, Dialect, Layout, SqlConfig, Statements, Table};
use crate::error::{Error, Result};

/// Room left in `max_allowed_packet` for the statement around the body (meta, metadata).
const PACKET_HEADROOM: u64 = 256 * 1024;

/// The layout version this driver writes.
const SCHEMA_VERSION: i64 = 1;

/// MySQL's SQL where it differs: `key` is a reserved word, and a `TEXT` primary key needs a
/// length. (`_bin` collations make text columns read as bytes.)
const DIALECT: Dialect = Dialect {
    key: "`key`",
    schema: "CREATE TABLE IF NOT EXISTS larder_schema (tbl VARCHAR(64) PRIMARY KEY, version INTEGER NOT NULL) ENGINE=InnoDB",
    ..Dialect::STANDARD
};

/// A store in a MySQL / MariaDB (InnoDB) table.
#[derive(Debug)]
pub struct MysqlStore {
    table: Table<sqlx::MySql>,
}

/// The server's error number, if it is a MySQL error.
fn number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    }
}

/// Bounds every statement of `conn` by `t`: lock waits by `innodb_lock_wait_timeout` (whole
/// seconds, at least 1), running time by MariaDB's `max_statement_time` (seconds) or, where that
/// variable is unknown (MySQL), `max_execution_time` (ms; MySQL applies it to SELECTs only).
async fn set_statement_timeout(conn: &mut sqlx::MySqlConnection, t: Duration) -> sqlx::Result<()> {
    let secs = t.as_secs().max(1);
    sqlx::query(&format!("SET SESSION innodb_lock_wait_timeout = {secs}"))
        .execute(&mut *conn)
        .await?;
    let mariadb = format!("SET SESSION max_statement_time = {}", t.as_secs_f64());
    match sqlx::query(&mariadb).execute(&mut *conn).await {
        // ER_UNKNOWN_SYSTEM_VARIABLE: MySQL.
        Err(e) if number(&e) == Some(1193) => {
            let ms = t.as_millis().max(1);
            sqlx::query(&format!("SET SESSION max_execution_time = {ms}"))
                .execute(&mut *conn)
                .await?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

impl MysqlStore {
    /// Connects to the server `config` names, creating the table if missing.
    pub async fn open(config: SqlConfig) -> Result<Self> {
        super::validate_table("mysql", &config.table)?;
        let timeout = config.statement_timeout;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // No gap locks: a locking read of a missing key locks nothing, racing creators
            // meet on the primary key instead of deadlocking.
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(&mut *conn)
                        .await?;
                    if let Some(t) = timeout {
                        set_statement_timeout(conn, t).await?;
                    }
                    Ok(())
                })
            })
            .connect(&config.url)
            .await
            .map_err(Self::db_error)?;
        let packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
            .fetch_one(&pool)
            .await
            .map_err(Self::db_error)?;
        let max_object_size = packet.saturating_sub(PACKET_HEADROOM);
        let table =
            Table::open::<Self>(pool, &config.table, max_object_size, config.sweep_interval)
                .await?;
        Ok(MysqlStore { table })
    }

    /// Opens the store a `mysql://` / `mariadb://` URL names, with the options in the module docs
    /// (see [`SqlConfig::from_url`]).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::open(SqlConfig::from_url(url)?).await
    }

    async fn migrate_locked(conn: &mut sqlx::MySqlConnection, t: &str) -> Result<()> {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                `key` VARBINARY(1024) NOT NULL PRIMARY KEY,
                etag VARCHAR(128) NOT NULL,
                size BIGINT NOT NULL,
                last_modified BIGINT NOT NULL,
                expires_at BIGINT NULL,
                content_type TEXT NULL,
                meta LONGTEXT NOT NULL,
                body LONGBLOB NOT NULL,
                INDEX {t}_expires (expires_at)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
        let layout = Layout {
            version: SCHEMA_VERSION,
            create: vec![create],
            upgrade: None,
        };
        super::migrate::<Self>(conn, &DIALECT, t, layout).await
    }
}

#[async_trait]
impl Backend for MysqlStore {
    type Db = sqlx::MySql;
    type Text = Vec<u8>;
    const NAME: &'static str = "mysql";

    /// sqlx connects with CLIENT_FOUND_ROWS, so an UPDATE counts the rows it matched; without
    /// it MySQL would count only the rows it changed (rewriting identical values counts 0).
    /// Counted as changed rows all the same: the row-lock path does not rely on the count, and
    /// the one-statement path only reads 0 as "decide under the row lock".
    const UPDATE_COUNTS_CHANGED_ROWS_ONLY: bool = true;

    fn table(&self) -> &Table<sqlx::MySql> {
        &self.table
    }

    async fn migrate(pool: &MySqlPool, table: &str) -> Result<()> {
        // DDL commits implicitly in MySQL, so concurrent openers are serialized by a named lock.
        let mut conn = pool.acquire().await.map_err(Self::db_error)?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('larder_schema', 60)")
            .fetch_one(&mut *conn)
            .await
            .map_err(Self::db_error)?;
        if got != Some(1) {
            return Err(Error::transient(
                "mysql store: timed out waiting for the schema lock",
            ));
        }
        let result = Self::migrate_locked(&mut conn, table).await;
        let _ = sqlx::query("SELECT RELEASE_LOCK('larder_schema')")
            .execute(&mut *conn)
            .await;
        result
    }

    fn statements(t: &str) -> Statements {
        Statements::new(t, &DIALECT)
    }

    /// Connection and pool trouble, lock waits, deadlocks and statement timeouts are worth
    /// retrying; everything else is permanent.
    fn db_error(e: sqlx::Error) -> Error {
        match (&e, number(&e)) {
            // disk full, table full.
            (_, Some(1021 | 1114)) => Error::storage_full(e),
            (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_), _) => {
                Error::transient(e)
            }
            // too many connections, shutdown, lock wait timeout, deadlock, gone away, lost,
            // statement timeout (MariaDB's max_statement_time, MySQL's max_execution_time).
            (_, Some(1040 | 1053 | 1205 | 1213 | 2006 | 2013 | 1969 | 3024)) => Error::transient(e),
            _ => Error::backend(e),
        }
    }

    /// Duplicate key (another writer created the row) or deadlock (InnoDB rolled the
    /// transaction back).
    fn redecide(e: &sqlx::Error) -> bool {
        matches!(number(e), Some(1062 | 1213))
    }
}

impl Affected for MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}
