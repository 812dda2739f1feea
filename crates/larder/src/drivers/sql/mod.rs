//! The SQL drivers (SQLite, PostgreSQL, MySQL/MariaDB) over sqlx, and what they share: URL
//! options and the table-name check, the expiry sweeper, the ranged read ([`ranged`]), and the
//! decision of a conditional write.
//!
//! Every driver decides a conditional write the same way: in one transaction, the key's row is
//! locked (expired or not; `SELECT … FOR UPDATE` on PostgreSQL and MySQL, the database's write
//! lock taken by `BEGIN IMMEDIATE` on SQLite), the shared
//! [`Preconditions::evaluate_write`](crate::Preconditions::evaluate_write) decides on it, and the
//! write is an `UPDATE … WHERE key = ? AND etag = ?` (guarded by the version decided on) or, when
//! there was no row to lock, a plain insert that the primary key rejects if another writer
//! created the row meanwhile. A rejected insert (or a deadlock victim) rolls back and the whole
//! decision is made again on the new state: that re-decides, it never replays a write blindly.
//!
//! A put whose condition SQL can state (unconditional, one strong `If-Match` tag, `If-Match: *`,
//! `If-None-Match: *`) is first tried where the backend allows it
//! ([`Backend::ONE_STATEMENT_WRITES`]) as one guarded statement, one round trip, without a
//! transaction: `UPDATE … WHERE key = ? [AND etag = ?] AND <live> AND last_modified <= <new
//! version's>` or the primary key's `INSERT`. The guard on `last_modified` keeps the rule of
//! [`Meta::next_version`] (a version is never dated before the one it replaces): a writer whose
//! clock is behind the stored version's updates nothing. When the statement writes nothing, the
//! live row is read: if the condition fails on it, that is the answer (412, linearized at that
//! read); otherwise (a clock behind, an expired row in the way, a race) the row-lock decision
//! below decides. Either way the condition is checked by the statement that writes.
//!
//! That decision is written once, here ([`put`], [`delete`]); each driver supplies its SQL and
//! the meaning of its errors through [`Backend`], with its dialect's quirks as data.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{Connection, Database, Encode, Type};

use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::meta::{now_millis, to_millis, Meta};
use crate::precondition::{ETagCondition, Preconditions};
use crate::store::{DeleteOptions, PutOptions, PutResult};

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod ranged;

/// How a networked SQL store (PostgreSQL, MySQL) is opened: the server and Larder's options.
#[derive(Clone, Debug)]
pub struct SqlConfig {
    /// The database URL as the sqlx client reads it (`postgres://…`, `mysql://…`), with the
    /// client's own query options (e.g. `sslmode`) but none of Larder's.
    pub url: String,
    /// The object table's name (1-60 letters, digits and `_`); default `larder_objects`.
    pub table: String,
    /// How often expired rows are deleted (`None`: never; they are still never served).
    pub sweep_interval: Option<Duration>,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection, a new one's connection set-up included
    /// (default 5 s: an unreachable server fails a request fast).
    pub acquire_timeout: Duration,
    /// The longest a statement may run or wait for a lock another connection holds, set on
    /// every connection (PostgreSQL: `statement_timeout` and `lock_timeout`; MySQL:
    /// `innodb_lock_wait_timeout`, in whole seconds, at least 1, and `max_execution_time`, or
    /// MariaDB's `max_statement_time`). Past it the statement fails as a transient error
    /// (503 through the server) instead of hanging the request. `None`: the server's defaults.
    /// Default 5 s.
    pub statement_timeout: Option<Duration>,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            url: String::new(),
            table: DEFAULT_TABLE.into(),
            sweep_interval: Some(DEFAULT_SWEEP),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(5)),
        }
    }
}

/// The object table every SQL store uses unless told otherwise.
pub(crate) const DEFAULT_TABLE: &str = "larder_objects";
/// How often expired rows are swept unless told otherwise.
pub(crate) const DEFAULT_SWEEP: Duration = Duration::from_secs(60);
/// The pool size unless told otherwise.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 8;

impl SqlConfig {
    /// Parses a `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL: Larder's options
    /// (`table`, `sweep`, `max_connections`, `acquire_timeout_ms`, `statement_timeout_ms`, 0 for
    /// none) are taken out of its query,
    /// the rest is the client's [`url`](SqlConfig::url).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("SQL store URL {url:?}: {e}")))?;
        let driver = match parsed.scheme() {
            "postgres" | "postgresql" => "postgres",
            "mysql" | "mariadb" => "mysql",
            other => {
                return Err(Error::InvalidInput(format!(
                    "not a postgres or mysql URL (scheme {other:?}): {url}"
                )))
            }
        };
        let mut config = SqlConfig::default();
        let mut rest = parsed.clone();
        rest.set_query(None);
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            let shared = TableOptions {
                table: &mut config.table,
                sweep_interval: &mut config.sweep_interval,
                max_connections: &mut config.max_connections,
            };
            if shared.take(driver, &k, &v)? {
                continue;
            }
            match &*k {
                "acquire_timeout_ms" => {
                    config.acquire_timeout = Duration::from_millis(number(driver, &k, &v)?)
                }
                "statement_timeout_ms" => {
                    config.statement_timeout = Some(Duration::from_millis(number(driver, &k, &v)?))
                        .filter(|d| !d.is_zero())
                }
                // Anything else is the database client's own option (sslmode, …).
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if !kept.is_empty() {
            rest.query_pairs_mut().extend_pairs(kept);
        }
        config.url = rest.into();
        validate_table(driver, &config.table)?;
        Ok(config)
    }
}

/// The URL options every SQL store takes (`table`, `sweep`, `max_connections`), written into
/// the fields of the driver's config.
pub(crate) struct TableOptions<'a> {
    pub table: &'a mut String,
    pub sweep_interval: &'a mut Option<Duration>,
    pub max_connections: &'a mut u32,
}

impl TableOptions<'_> {
    /// Applies option `k=v` if it is one of these (`Ok(true)`); `Ok(false)`: not one of them.
    pub(crate) fn take(self, driver: &str, k: &str, v: &str) -> Result<bool> {
        match k {
            "table" => *self.table = v.to_string(),
            "sweep" => {
                *self.sweep_interval =
                    Some(Duration::from_secs(number(driver, k, v)?)).filter(|d| !d.is_zero())
            }
            "max_connections" => {
                *self.max_connections = number(driver, k, v)?.clamp(1, 1024) as u32
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Option `k`'s value `v` as a number.
pub(crate) fn number(driver: &str, k: &str, v: &str) -> Result<u64> {
    v.parse::<u64>()
        .map_err(|_| Error::InvalidInput(format!("{driver} store: {k}={v} is not a number")))
}

/// Table names are spliced into SQL: 1-60 ASCII letters, digits and `_` (room for the index
/// name derived from it within every dialect's 63/64-character identifiers).
pub(crate) fn validate_table(driver: &str, table: &str) -> Result<()> {
    if table.is_empty()
        || table.len() > 60
        || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Error::InvalidInput(format!(
            "{driver} store: table name {table:?} must be 1-60 letters, digits and _"
        )));
    }
    Ok(())
}

/// The background task that deletes expired rows while its store lives (aborted on drop).
#[derive(Debug)]
pub(crate) struct Sweeper(tokio::task::JoinHandle<()>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Sweeper {
    /// Every `every` (none if `None` or zero), runs `delete` (a statement taking the current
    /// time in ms, e.g. `DELETE FROM t WHERE expires_at <= ?`) on `pool`.
    pub(crate) fn spawn<DB: Database>(
        driver: &'static str,
        pool: &sqlx::Pool<DB>,
        delete: String,
        every: Option<Duration>,
    ) -> Option<Sweeper>
    where
        for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
    {
        let every = every.filter(|d| !d.is_zero())?;
        let pool = pool.clone();
        Some(Sweeper(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = to_millis(now_millis());
                if let Err(e) = sqlx::query(&delete).bind(now).execute(&pool).await {
                    tracing::warn!(error = %e, "{driver} store: sweeping expired objects");
                }
            }
        })))
    }
}

/// How many times a write whose insert lost a creation race is decided again.
const DECISION_ATTEMPTS: usize = 16;

/// The connection a [`Backend`]'s transaction runs on.
pub(crate) type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// What a SQL driver supplies to the shared decision: its statements (the SQL text stays in the
/// driver's file), its dialect's quirks (as constants), and how its errors are read.
#[async_trait]
pub(crate) trait Backend: Sync {
    /// The sqlx database.
    type Db: Database;

    /// The statement that opens a write's transaction (SQLite: `BEGIN IMMEDIATE`, which takes
    /// the database's write lock at once, so the read that follows is already under it).
    const BEGIN: &'static str = "BEGIN";

    /// Whether an UPDATE's affected-row count counts only the rows it changed, so that it says
    /// nothing about the row matched; otherwise an update must affect the one row.
    const UPDATE_COUNTS_CHANGED_ROWS_ONLY: bool = false;

    /// Whether a put whose condition SQL can state is first tried as one guarded statement
    /// (see [the module](self)); the backend's [`write`](Backend::write) then supports
    /// [`Guard::Live`].
    const ONE_STATEMENT_WRITES: bool = false;

    /// Whether a connection on which a write failed is closed rather than pooled again (SQLite:
    /// SQLITE_FULL and I/O errors end the transaction inside SQLite while sqlx still counts it
    /// open, and would refuse every later `BEGIN` on that connection).
    const DISCARD_FAILED_CONNECTIONS: bool = false;

    /// The connection pool.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Maps an error: transient where retrying is worth it, else permanent.
    fn db_error(e: sqlx::Error) -> Error;

    /// Maps a failed commit. By default its outcome is unknown (the server may have committed
    /// before the connection broke): never reported as safe to retry.
    fn commit_error(e: sqlx::Error) -> Error {
        Error::backend(e)
    }

    /// Errors after which the transaction was rolled back and the decision is simply made again
    /// (another writer created the row meanwhile, a deadlock, a serialization failure).
    fn redecide(e: &sqlx::Error) -> bool;

    /// Locks `key`'s row (expired or not) for the rest of the transaction and reads it.
    async fn lock_row(&self, conn: &mut Conn<Self>, key: &Key) -> Result<Option<LockedRow>>;

    /// The live (unexpired) object's metadata at `key`.
    async fn read_live(&self, conn: &mut Conn<Self>, key: &Key) -> Result<Option<Meta>>;

    /// Writes `row` as its [`Guard`] says: an UPDATE guarded by the etag, or the INSERT that the
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
    /// What the write is guarded by.
    pub guard: Guard<'a>,
}

/// What guards a write of a [`Row`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Guard<'a> {
    /// An INSERT, which the primary key rejects (an error, or 0 rows) if the row exists.
    Insert,
    /// An UPDATE of the locked row decided on, which must still have this etag.
    Locked(&'a str),
    /// One statement, no lock: an UPDATE of the row if it is live, has this etag (if any), and
    /// its `last_modified` is not after the new version's.
    Live(Option<&'a str>),
}

/// The statements a networked SQL driver runs, formatted once for its table in its dialect.
/// The writes take their values in the order [`bind_row`] binds them.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) current: String,
    pub(crate) current_inline: String,
    pub(crate) span: String,
    pub(crate) lock: String,
    pub(crate) insert: String,
    pub(crate) update_locked: String,
    pub(crate) update_live_tag: String,
    pub(crate) update_live: String,
    pub(crate) delete: String,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Statements {
    /// The statement that writes a row under `guard`.
    pub(crate) fn write(&self, guard: &Guard<'_>) -> &str {
        match guard {
            Guard::Insert => &self.insert,
            Guard::Locked(_) => &self.update_locked,
            Guard::Live(Some(_)) => &self.update_live_tag,
            Guard::Live(None) => &self.update_live,
        }
    }
}

/// Binds `row` to its UPDATE or INSERT, in the order every driver's statements take the values:
/// etag, size, last_modified, expires_at, content_type, meta, body, key, then the guard's: the
/// etag (if any), and for [`Guard::Live`] the new version's `last_modified` twice (the row is
/// live if it expires after it, and must not be dated after it).
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
    let now = to_millis(meta.last_modified);
    match row.guard {
        Guard::Insert => q,
        Guard::Locked(old) => q.bind(old),
        Guard::Live(Some(old)) => q.bind(old).bind(now).bind(now),
        Guard::Live(None) => q.bind(now).bind(now),
    }
}

/// A put's condition, if one statement can state it.
#[derive(Clone, Copy, Debug)]
enum OneStatement<'a> {
    /// Unconditional: replace the live row, else create.
    Put,
    /// `If-Match` with one strong tag (`Some`) or `*`: replace the live row.
    Replace(Option<&'a str>),
    /// `If-None-Match: *`: create.
    Create,
}

impl<'a> OneStatement<'a> {
    /// Writes ignore `If-Modified-Since`; dates, tag lists and weak tags are left to the
    /// row-lock decision.
    fn of(p: &'a Preconditions) -> Option<Self> {
        if p.if_unmodified_since.is_some() {
            return None;
        }
        match (&p.if_match, &p.if_none_match) {
            (None, None) => Some(OneStatement::Put),
            (Some(ETagCondition::Any), None) => Some(OneStatement::Replace(None)),
            (Some(ETagCondition::Tags(tags)), None) => match &tags[..] {
                [tag] if !tag.is_weak() => Some(OneStatement::Replace(Some(tag.opaque()))),
                _ => None,
            },
            (None, Some(ETagCondition::Any)) => Some(OneStatement::Create),
            _ => None,
        }
    }
}

/// A put as one guarded statement (see [the module](self)): `Ok(None)` when it wrote nothing
/// and the live row does not fail the condition, so the row-lock decision must decide.
async fn put_one_statement<B: Backend>(
    backend: &B,
    conn: &mut Conn<B>,
    shape: OneStatement<'_>,
    data: &[u8],
    template: &Meta,
    opts: &PutOptions,
) -> Result<Option<PutResult>> {
    // Dated now: the guard refuses the write if that is before the version it replaces.
    let meta = Meta::next_version(
        &template.key,
        template.etag.clone(),
        template.size,
        None,
        opts,
    )?;
    let encoded = meta.encode();
    let row = |guard| Row {
        meta: &meta,
        encoded: &encoded,
        body: data,
        guard,
    };
    let (first, then_insert) = match shape {
        OneStatement::Put => (Some(Guard::Live(None)), true),
        OneStatement::Replace(tag) => (Some(Guard::Live(tag)), false),
        OneStatement::Create => (None, true),
    };
    if let Some(guard) = first {
        if write_alone(backend, conn, &row(guard)).await? {
            return Ok(Some(PutResult {
                meta,
                created: false,
            }));
        }
    }
    if then_insert && write_alone(backend, conn, &row(Guard::Insert)).await? {
        return Ok(Some(PutResult {
            meta,
            created: true,
        }));
    }
    let current = backend.read_live(conn, &meta.key).await?;
    opts.preconditions.evaluate_write(current.as_ref())?;
    Ok(None)
}

/// Runs one write outside a transaction: whether it wrote the row. The statement commits by
/// itself, so an error the server answered with means nothing was written, but a connection
/// lost on the way leaves the outcome unknown (never reported as safe to retry).
async fn write_alone<B: Backend>(backend: &B, conn: &mut Conn<B>, row: &Row<'_>) -> Result<bool> {
    match backend.write(conn, row).await {
        Ok(n) => Ok(n == 1),
        Err(e) if B::redecide(&e) => Ok(false),
        Err(e @ sqlx::Error::Database(_)) => Err(B::db_error(e)),
        Err(e) => Err(B::commit_error(e)),
    }
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
    if let Some(shape) = OneStatement::of(&opts.preconditions).filter(|_| B::ONE_STATEMENT_WRITES) {
        let mut conn = backend.pool().acquire().await.map_err(B::db_error)?;
        let result = put_one_statement(backend, &mut *conn, shape, &data, &template, &opts).await;
        discard_if_failed::<B, _>(&mut conn, &result);
        if let Some(done) = result? {
            return Ok(done);
        }
    }
    for _ in 0..DECISION_ATTEMPTS {
        let mut conn = backend.pool().acquire().await.map_err(B::db_error)?;
        let result = try_put(backend, &mut *conn, &data, &template, &opts).await;
        discard_if_failed::<B, _>(&mut conn, &result);
        if let Some(done) = result? {
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
    conn: &mut Conn<B>,
    data: &[u8],
    template: &Meta,
    opts: &PutOptions,
) -> Result<Option<PutResult>> {
    let mut tx = conn.begin_with(B::BEGIN).await.map_err(B::db_error)?;
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
        guard: row_etag.as_deref().map_or(Guard::Insert, Guard::Locked),
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
    tx.commit().await.map_err(B::commit_error)?;
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
    let mut conn = backend.pool().acquire().await.map_err(B::db_error)?;
    let result = try_delete(backend, &mut *conn, key, &opts).await;
    discard_if_failed::<B, _>(&mut conn, &result);
    result
}

async fn try_delete<B: Backend>(
    backend: &B,
    conn: &mut Conn<B>,
    key: &Key,
    opts: &DeleteOptions,
) -> Result<()> {
    let mut tx = conn.begin_with(B::BEGIN).await.map_err(B::db_error)?;
    let (_, current) = lock(backend, &mut *tx, key).await?;
    let current = current.ok_or_else(|| Error::not_found(key))?;
    opts.preconditions.evaluate_write(Some(&current))?;
    backend
        .delete_row(&mut *tx, key, current.etag.opaque())
        .await
        .map_err(B::db_error)?;
    tx.commit().await.map_err(B::commit_error)
}

/// Closes `conn` instead of pooling it again after a failed write, where the backend asks for
/// it ([`Backend::DISCARD_FAILED_CONNECTIONS`]).
fn discard_if_failed<B: Backend, T>(
    conn: &mut sqlx::pool::PoolConnection<B::Db>,
    result: &Result<T>,
) {
    if B::DISCARD_FAILED_CONNECTIONS
        && matches!(
            result,
            Err(Error::StorageFull { .. } | Error::Backend { .. })
        )
    {
        conn.close_on_drop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larder_options_are_taken_out_of_the_url() {
        let c = SqlConfig::from_url(
            "postgres://u@h:5432/db?table=t_1&sslmode=disable&sweep=0&max_connections=3&acquire_timeout_ms=250&statement_timeout_ms=0",
        )
        .unwrap();
        assert_eq!(c.url, "postgres://u@h:5432/db?sslmode=disable");
        assert_eq!(
            (c.table.as_str(), c.sweep_interval, c.max_connections),
            ("t_1", None, 3)
        );
        assert_eq!(c.acquire_timeout, Duration::from_millis(250));
        assert_eq!(c.statement_timeout, None);
        let c = SqlConfig::from_url("mysql://h/db?statement_timeout_ms=1500").unwrap();
        assert_eq!(c.statement_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            SqlConfig::from_url("mysql://h/db").unwrap().url,
            "mysql://h/db"
        );
        for bad in [
            "postgres://h/db?table=a-b",
            "postgres://h/db?sweep=soon",
            "redis://h",
            "mysql://h/db?table=",
        ] {
            assert!(
                matches!(SqlConfig::from_url(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        let long = format!("mysql://h/db?table={}", "t".repeat(61));
        assert!(SqlConfig::from_url(&long).is_err());
        assert!(SqlConfig::from_url(&format!("mysql://h/db?table={}", "t".repeat(60))).is_ok());
    }
}
