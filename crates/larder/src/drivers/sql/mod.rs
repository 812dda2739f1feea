//! The networked SQL drivers (PostgreSQL, MySQL/MariaDB) over sqlx, and what they share:
//! URL options, key-range bounds for listing, the decision loop's retry budget.
//!
//! Both drivers decide a conditional write the same way: in one transaction, `SELECT … FOR
//! UPDATE` locks the key's row (expired or not), the shared
//! [`Preconditions::evaluate_write`](crate::Preconditions::evaluate_write) decides on it, and the
//! write is an `UPDATE … WHERE key = ? AND etag = ?` (guarded by the version decided on) or, when
//! there was no row to lock, a plain insert that the primary key rejects if another writer
//! created the row meanwhile. A rejected insert (or a deadlock victim) rolls back and the whole
//! decision is made again on the new state: that re-decides, it never replays a write blindly.
//!
//! That decision is written once, here ([`put`], [`delete`]); each driver supplies its SQL and
//! the meaning of its errors through [`Backend`].

use std::time::Duration;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::meta::{now_millis, to_millis, Meta};
use crate::store::{DeleteOptions, PutOptions, PutResult};

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;

/// Settings shared by the networked SQL stores (from URL query options).
#[derive(Clone, Debug)]
pub struct SqlOptions {
    /// The object table's name (letters, digits and `_`); default `larder_objects`.
    pub table: String,
    /// How often expired rows are deleted (`None`: never; they are still never served).
    pub sweep_interval: Option<Duration>,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection, a new one's connection set-up included
    /// (default 5 s: an unreachable server fails a request fast).
    pub acquire_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            table: "larder_objects".into(),
            sweep_interval: Some(Duration::from_secs(60)),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl SqlOptions {
    /// Takes Larder's options (`table`, `sweep`, `max_connections`, `acquire_timeout_ms`) out of
    /// `url`'s query and returns the URL without them, for sqlx.
    pub(crate) fn from_url(driver: &str, url: &url::Url) -> Result<(Self, url::Url)> {
        let mut opts = SqlOptions::default();
        let mut rest = url.clone();
        rest.set_query(None);
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            let number = || {
                v.parse::<u64>().map_err(|_| {
                    Error::InvalidInput(format!("{driver} store: {k}={v} is not a number"))
                })
            };
            match &*k {
                "table" => opts.table = v.to_string(),
                "sweep" => {
                    opts.sweep_interval =
                        Some(Duration::from_secs(number()?)).filter(|d| !d.is_zero())
                }
                "max_connections" => opts.max_connections = number()?.clamp(1, 1024) as u32,
                "acquire_timeout_ms" => opts.acquire_timeout = Duration::from_millis(number()?),
                // Anything else is the database client's own option (sslmode, …).
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if !kept.is_empty() {
            rest.query_pairs_mut().extend_pairs(kept);
        }
        opts.validate(driver)?;
        Ok((opts, rest))
    }

    pub(crate) fn validate(&self, driver: &str) -> Result<()> {
        if self.table.is_empty()
            || self.table.len() > 60
            || !self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::InvalidInput(format!(
                "{driver} store: table name {:?} must be 1-60 letters, digits and _",
                self.table
            )));
        }
        Ok(())
    }
}

/// How many times a write whose insert lost a creation race is decided again.
const DECISION_ATTEMPTS: usize = 16;

/// The connection a [`Backend`]'s transaction runs on.
pub(crate) type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// What a networked SQL driver supplies to the shared decision: its statements (the SQL text
/// stays in the driver's file) and how its errors are read.
#[async_trait]
pub(crate) trait Backend: Sync {
    /// The sqlx database.
    type Db: Database;

    /// Whether an UPDATE's affected-row count counts only the rows it changed (MySQL), so that
    /// it says nothing about the row matched; otherwise an update must affect the one row.
    const UPDATE_COUNTS_CHANGED_ROWS_ONLY: bool;

    /// The connection pool.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Maps an error: transient where retrying is worth it, else permanent.
    fn db_error(e: sqlx::Error) -> Error;

    /// Errors after which the transaction was rolled back and the decision is simply made again
    /// (another writer created the row meanwhile, a deadlock, a serialization failure).
    fn redecide(e: &sqlx::Error) -> bool;

    /// Locks `key`'s row (expired or not) for the rest of the transaction and reads it.
    async fn lock_row(&self, conn: &mut Conn<Self>, key: &Key) -> Result<Option<LockedRow>>;

    /// Writes `row`: the UPDATE guarded by `row.guard`, or without a guard the INSERT that the
    /// primary key rejects (by an error or 0 rows) if the row exists. Returns the rows affected.
    async fn write(&self, conn: &mut Conn<Self>, row: &Row<'_>) -> sqlx::Result<u64>;

    /// Deletes `key`'s row if its etag is still `etag`.
    async fn delete_row(&self, conn: &mut Conn<Self>, key: &Key, etag: &str) -> sqlx::Result<()>;
}

/// A locked row as read: its etag, `expires_at` (ms) and encoded meta.
pub(crate) type LockedRow = (String, Option<i64>, Vec<u8>);

/// Locks `key`'s row (expired or not) for the rest of the transaction: `(the row's etag if
/// there is a row, the live object's meta)`. An expired row is locked but holds no object.
async fn lock<B: Backend>(
    backend: &B,
    conn: &mut Conn<B>,
    key: &Key,
) -> Result<(Option<String>, Option<Meta>)> {
    let row = backend.lock_row(conn, key).await?;
    let now = to_millis(now_millis());
    match row {
        None => Ok((None, None)),
        Some((etag, exp, _)) if exp.is_some_and(|e| e <= now) => Ok((Some(etag), None)),
        Some((etag, _, meta)) => Ok((Some(etag), Some(Meta::decode(&meta)?))),
    }
}

/// A row as a put writes it.
pub(crate) struct Row<'a> {
    /// The new version.
    pub meta: &'a Meta,
    /// `meta`, encoded.
    pub encoded: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// The etag of the locked row decided on, which guards the UPDATE (`None`: an INSERT).
    pub guard: Option<&'a str>,
}

/// Binds `row` to its UPDATE or INSERT, in the order both drivers' statements take the values:
/// etag, size, last_modified, expires_at, content_type, meta, body, key, then the guard (if any).
pub(crate) fn bind_row<'q, DB: Database>(
    q: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    row: &Row<'q>,
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB>,
    Option<i64>: Encode<'q, DB>,
{
    let meta = row.meta;
    let q = q
        .bind(meta.etag.opaque())
        .bind(meta.size as i64)
        .bind(to_millis(meta.last_modified))
        .bind(meta.expires_at.map(to_millis))
        .bind(meta.content_type.as_deref())
        .bind(row.encoded)
        .bind(row.body)
        .bind(meta.key.as_str());
    match row.guard {
        Some(old) => q.bind(old),
        None => q,
    }
}

/// A failed commit has an unknown outcome: never reported as safe to retry.
fn commit_error(e: sqlx::Error) -> Error {
    Error::backend(e)
}

/// A put on `backend` (whose capabilities are `caps`): decided again, up to
/// [`DECISION_ATTEMPTS`] times, while it loses creation races.
pub(crate) async fn put<B: Backend>(
    backend: &B,
    caps: Capabilities,
    key: &Key,
    body: Body,
    opts: PutOptions,
) -> Result<PutResult> {
    caps.check_put(&opts)?;
    let (data, etag, size) = body
        .reader(caps.max_object_size)
        .collect(opts.expected_etag.as_ref())
        .await?;
    // Stamped again under the row lock, by `Meta::next_version`.
    let template = Meta::next_version(key, etag, size, None, &opts)?;
    for _ in 0..DECISION_ATTEMPTS {
        if let Some(done) = try_put(backend, &data, &template, &opts).await? {
            return Ok(done);
        }
    }
    Err(Error::transient(format!(
        "{key}: lost {DECISION_ATTEMPTS} creation races in a row"
    )))
}

/// One decision and write; `Ok(None)`: lost a race that rolled the transaction back.
async fn try_put<B: Backend>(
    backend: &B,
    data: &[u8],
    template: &Meta,
    opts: &PutOptions,
) -> Result<Option<PutResult>> {
    let mut tx = backend.pool().begin().await.map_err(B::db_error)?;
    let (row_etag, current) = lock(backend, &mut *tx, &template.key).await?;
    opts.preconditions.evaluate_write(current.as_ref())?;
    let replaces = current.as_ref().map(|c| c.last_modified);
    let meta = Meta::next_version(
        &template.key,
        template.etag.clone(),
        template.size,
        replaces,
        opts,
    )?;
    let encoded = meta.encode();
    let row = Row {
        meta: &meta,
        encoded: &encoded,
        body: data,
        // Nothing to lock yet without a row: the primary key decides between racing creators.
        guard: row_etag.as_deref(),
    };
    let affected = match backend.write(&mut *tx, &row).await {
        Ok(n) => n,
        Err(e) if B::redecide(&e) => return Ok(None),
        Err(e) => return Err(B::db_error(e)),
    };
    // An insert's count is always meaningful; an update of the locked row cannot miss.
    let counted = row_etag.is_none() || !B::UPDATE_COUNTS_CHANGED_ROWS_ONLY;
    if counted && affected != 1 {
        // Another writer created the row after our lock read found none: decide again.
        return Ok(None);
    }
    tx.commit().await.map_err(commit_error)?;
    Ok(Some(PutResult {
        meta,
        created: current.is_none(),
    }))
}

/// A delete on `backend`, decided on the locked row and guarded by the etag decided on.
pub(crate) async fn delete<B: Backend>(
    backend: &B,
    caps: Capabilities,
    key: &Key,
    opts: DeleteOptions,
) -> Result<()> {
    caps.check_delete(&opts)?;
    let mut tx = backend.pool().begin().await.map_err(B::db_error)?;
    let (_, current) = lock(backend, &mut *tx, key).await?;
    let current = current.ok_or_else(|| Error::not_found(key))?;
    opts.preconditions.evaluate_write(Some(&current))?;
    backend
        .delete_row(&mut *tx, key, current.etag.opaque())
        .await
        .map_err(B::db_error)?;
    tx.commit().await.map_err(commit_error)
}
