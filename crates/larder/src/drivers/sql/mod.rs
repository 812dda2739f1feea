//! The SQL drivers (SQLite, PostgreSQL, MySQL/MariaDB) over sqlx, and what they share: URL
//! options and the table-name check, the expiry sweeper, the one implementation of [`Store`] for
//! every SQL store (reads, listing, the ranged read of `ranged`, and the decision of a
//! conditional write).
//!
//! Reads are one statement each: `head` reads the live row's metadata; `get` reads it with the
//! body when that is small (`INLINE_MAX`), else the body's span after the decision, checked
//! against the ETag decided on; `list` reads batches of live rows in key order.
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
//! `If-None-Match: *`) is first tried where the dialect has the statements for it
//! (`Statements::update_live`) as one guarded statement, one round trip, without a
//! transaction: `UPDATE … WHERE key = ? [AND etag = ?] AND <live> AND last_modified <= <new
//! version's>` or the primary key's `INSERT`. The guard on `last_modified` keeps the rule of
//! [`Meta::next_version`] (a version is never dated before the one it replaces): a writer whose
//! clock is behind the stored version's updates nothing. When the statement writes nothing, the
//! live row is read: if the condition fails on it, that is the answer (412, linearized at that
//! read); otherwise (a clock behind, an expired row in the way, a race) the row-lock decision
//! below decides. Either way the condition is checked by the statement that writes.
//!
//! All of that is written once, here (`put`, `delete`, the [`Store`] implementation); each
//! driver supplies its SQL (`Statements`) and the meaning of its errors through `Backend`,
//! with its dialect's quirks as data, and the sqlx calls are made through `SqlDb`.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::Row as _;
use sqlx::{
    ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Pool, Type,
};

use crate::body::Body;
use crate::capabilities::{AtomicScope, Capabilities};
use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::list::{scan_page, ListOptions, ListPage, ScanFrom};
use crate::meta::{now_millis, to_millis, Meta};
use crate::precondition::{ETagCondition, Preconditions};
use crate::retry::Attempts;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};
use ranged::{get_decided, INLINE_MAX};

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
        let schemes = ["postgres", "postgresql", "mysql", "mariadb"];
        let parsed = crate::open::parse_store_url(url, "SQL store", &schemes)?;
        let driver = if parsed.scheme().starts_with("postgres") {
            "postgres"
        } else {
            "mysql"
        };
        let mut config = SqlConfig::default();
        // Anything but Larder's options is the database client's own (sslmode, …).
        config.url = crate::open::client_url(&parsed, |k, v| {
            let shared = TableOptions {
                table: &mut config.table,
                sweep_interval: &mut config.sweep_interval,
                max_connections: &mut config.max_connections,
            };
            if shared.take(driver, k, v)? {
                return Ok(true);
            }
            match k {
                "acquire_timeout_ms" => {
                    config.acquire_timeout = Duration::from_millis(number(driver, k, v)?)
                }
                "statement_timeout_ms" => {
                    config.statement_timeout =
                        Some(Duration::from_millis(number(driver, k, v)?)).filter(|d| !d.is_zero())
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
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
    fn spawn<DB: SqlDb>(
        driver: &'static str,
        pool: &Pool<DB>,
        delete: String,
        every: Option<Duration>,
    ) -> Option<Sweeper> {
        let every = every.filter(|d| !d.is_zero())?;
        let pool = pool.clone();
        Some(Sweeper(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = to_millis(now_millis());
                let swept = match pool.acquire().await {
                    Ok(mut conn) => DB::execute(&mut conn, &delete, &[Arg::Int(now)]).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = swept {
                    tracing::warn!(error = %e, "{driver} store: sweeping expired objects");
                }
            }
        })))
    }
}

/// A value bound to a statement; a statement takes its values as a slice, in its order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
}

/// The rows a statement affected (sqlx has no trait for it).
pub(crate) trait Affected {
    /// How many rows the statement affected.
    fn affected(&self) -> u64;
}

/// The sqlx calls the shared code makes, for every database whose client binds and decodes the
/// values it uses: written once, with the bounds they take stated once, on the implementation
/// below, instead of on every function that runs a statement.
#[async_trait]
pub(crate) trait SqlDb: Database {
    /// Runs `sql` with `args` on `conn`: the rows it affected.
    async fn execute(conn: &mut Self::Connection, sql: &str, args: &[Arg<'_>])
        -> sqlx::Result<u64>;

    /// Every row `sql` with `args` returns on `conn`.
    async fn fetch(
        conn: &mut Self::Connection,
        sql: &str,
        args: &[Arg<'_>],
    ) -> sqlx::Result<Vec<Self::Row>>;

    /// Column `i` of `row`, as `T`.
    fn column<T>(row: &Self::Row, i: usize) -> sqlx::Result<T>
    where
        T: for<'r> Decode<'r, Self> + Type<Self>;

    /// Column `i` of `row`, a nullable integer (of 64 or 32 bits).
    fn int(row: &Self::Row, i: usize) -> sqlx::Result<Option<i64>>;

    /// Column `i` of `row`, nullable bytes.
    fn bytes(row: &Self::Row, i: usize) -> sqlx::Result<Option<Vec<u8>>>;
}

/// `sql` with `args` bound.
fn query<'q, DB>(sql: &'q str, args: &[Arg<'q>]) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    args.iter().fold(sqlx::query(sql), |q, arg| match *arg {
        Arg::Int(v) => q.bind(v),
        Arg::OptInt(v) => q.bind(v),
        Arg::Text(v) => q.bind(v),
        Arg::OptText(v) => q.bind(v),
        Arg::Bytes(v) => q.bind(v),
    })
}

#[async_trait]
impl<DB> SqlDb for DB
where
    DB: Database,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'r> Option<i32>: Decode<'r, DB>,
    i32: Type<DB>,
    for<'r> Option<Vec<u8>>: Decode<'r, DB>,
    Vec<u8>: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn execute(conn: &mut DB::Connection, sql: &str, args: &[Arg<'_>]) -> sqlx::Result<u64> {
        Ok(query(sql, args).execute(conn).await?.affected())
    }

    async fn fetch(
        conn: &mut DB::Connection,
        sql: &str,
        args: &[Arg<'_>],
    ) -> sqlx::Result<Vec<DB::Row>> {
        query(sql, args).fetch_all(conn).await
    }

    fn column<T>(row: &DB::Row, i: usize) -> sqlx::Result<T>
    where
        T: for<'r> Decode<'r, DB> + Type<DB>,
    {
        row.try_get(i)
    }

    fn int(row: &DB::Row, i: usize) -> sqlx::Result<Option<i64>> {
        row.try_get(i)
            .or_else(|_| Ok(row.try_get::<Option<i32>, _>(i)?.map(i64::from)))
    }

    fn bytes(row: &DB::Row, i: usize) -> sqlx::Result<Option<Vec<u8>>> {
        row.try_get(i)
    }
}

/// The statements of a SQL store, formatted once for its table in its dialect. Each takes its
/// values in the order noted; the writes take those of [`Row::args`].
#[derive(Debug)]
pub(crate) struct Statements {
    /// The live object's `meta` (key, now).
    pub(crate) current: String,
    /// The live object's `meta` and its body if at most that many bytes, else NULL
    /// ([`INLINE_MAX`], key, now).
    pub(crate) current_inline: String,
    /// A span of the body if the row has the etag (start from 1, length, key, etag).
    pub(crate) span: String,
    /// The live objects' `meta` with keys after (`list_after`) or from (`list_at`) a key and
    /// below an end if there is one, in key order (start, end, end, now, limit).
    pub(crate) list_after: String,
    /// See [`list_after`](Statements::list_after).
    pub(crate) list_at: String,
    /// Deletes the rows expired by then (now).
    pub(crate) sweep: String,
    /// Locks the row, expired or not, and reads its `etag, expires_at, meta` (key).
    pub(crate) lock: String,
    /// Deletes the row if it has the etag (key, etag).
    pub(crate) delete: String,
    /// [`Guard::Insert`].
    pub(crate) insert: String,
    /// [`Guard::Locked`].
    pub(crate) update_locked: String,
    /// [`Guard::Live`] with an etag and without, where the dialect writes in one statement
    /// (see [the module](self)); `None`: every write is decided under the row lock.
    pub(crate) update_live: Option<(String, String)>,
}

impl Statements {
    /// The statements of table `t` in dialect `d`: the writes bind the whole row (every
    /// column, the body included) and a put can be one statement.
    pub(crate) fn new(t: &str, d: &Dialect) -> Self {
        let k = d.key;
        let live = "(expires_at IS NULL OR expires_at > ?)";
        let set = format!(
            "UPDATE {t} SET etag = ?, size = ?, last_modified = ?, expires_at = ?,
               content_type = ?, meta = ?, body = ? WHERE {k} = ?"
        );
        let list = |op: &str| {
            d.sql(format!(
                "SELECT meta FROM {t} WHERE {k} {op} ? AND ({} IS NULL OR {k} < ?) AND {live}
                 ORDER BY {k} LIMIT ?",
                d.text
            ))
        };
        Statements {
            current: d.sql(format!("SELECT meta FROM {t} WHERE {k} = ? AND {live}")),
            current_inline: d.sql(format!(
                "SELECT meta, CASE WHEN {} <= ? THEN body END FROM {t} WHERE {k} = ? AND {live}",
                d.size
            )),
            span: d.sql(format!(
                "SELECT {} FROM {t} WHERE {k} = ? AND etag = ?",
                d.span
            )),
            list_after: list(">"),
            list_at: list(">="),
            sweep: d.sql(format!("DELETE FROM {t} WHERE expires_at <= ?")),
            lock: d.sql(format!(
                "SELECT etag, expires_at, meta FROM {t} WHERE {k} = ?{}",
                d.for_update
            )),
            delete: d.sql(format!("DELETE FROM {t} WHERE {k} = ? AND etag = ?")),
            insert: d.sql(format!(
                "INSERT INTO {t} (etag, size, last_modified, expires_at, content_type, meta, body, {k})
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?){}",
                d.on_conflict
            )),
            update_locked: d.sql(format!("{set} AND etag = ?")),
            update_live: Some((
                d.sql(format!("{set} AND etag = ? AND {live} AND last_modified <= ?")),
                d.sql(format!("{set} AND {live} AND last_modified <= ?")),
            )),
        }
    }

    /// The statement that writes a row under `guard`.
    fn write(&self, guard: &Guard<'_>) -> sqlx::Result<&str> {
        match (guard, &self.update_live) {
            (Guard::Insert, _) => Ok(&self.insert),
            (Guard::Locked(_), _) => Ok(&self.update_locked),
            (Guard::Live(Some(_)), Some((tag, _))) => Ok(tag),
            (Guard::Live(None), Some((_, any))) => Ok(any),
            (Guard::Live(_), None) => Err(sqlx::Error::Protocol(
                "this SQL store has no one-statement writes".into(),
            )),
        }
    }
}

/// How a dialect's SQL differs from the statements written once here ([`Statements::new`],
/// [`migrate`]), as data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dialect {
    /// The key column as a statement names it (MySQL: `` `key` ``, a reserved word there).
    pub(crate) key: &'static str,
    /// Whether placeholders are numbered (`$1`, `$2`: PostgreSQL) rather than `?`.
    pub(crate) numbered: bool,
    /// A text placeholder whose type the server cannot infer (in `? IS NULL`).
    pub(crate) text: &'static str,
    /// The span of the body from byte `?` (counted from 1), `?` bytes long.
    pub(crate) span: &'static str,
    /// The body's size.
    pub(crate) size: &'static str,
    /// What makes a read lock the row it reads for the rest of the transaction.
    pub(crate) for_update: &'static str,
    /// What makes an INSERT of a key that has a row affect 0 rows instead of failing.
    pub(crate) on_conflict: &'static str,
    /// Creates the table `larder_schema` (`tbl`, `version`) if missing.
    pub(crate) schema: &'static str,
}

impl Dialect {
    /// The SQL a dialect keeps unless it differs.
    pub(crate) const STANDARD: Dialect = Dialect {
        key: "key",
        numbered: false,
        text: "?",
        span: "substring(body, ?, ?)",
        size: "size",
        for_update: " FOR UPDATE",
        on_conflict: "",
        schema: "CREATE TABLE IF NOT EXISTS larder_schema (tbl TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    };

    /// `sql`, written with `?` placeholders, as this dialect takes it.
    pub(crate) fn sql(&self, sql: String) -> String {
        if !self.numbered {
            return sql;
        }
        let mut numbered = String::with_capacity(sql.len() + 16);
        for (n, part) in sql.split('?').enumerate() {
            if n > 0 {
                numbered.push_str(&format!("${n}"));
            }
            numbered.push_str(part);
        }
        numbered
    }
}

/// A table's layout: the version this build writes and what creates it, and what converts the
/// older layout this build still reads, if there is one.
pub(crate) struct Layout {
    /// The version this build writes.
    pub(crate) version: i64,
    /// The statements that create the table at this version.
    pub(crate) create: Vec<String>,
    /// An older version and the statements that convert a table from it.
    pub(crate) upgrade: Option<(i64, Vec<String>)>,
}

/// Brings the table `name` to `layout` on `conn`, under a lock on the schema that the caller
/// holds: a missing table is created, one of the older layout this build reads is converted,
/// one of this layout is kept, and any other (a newer build's) is refused, never misread.
/// `larder_schema` records each table's layout version. (The name is checked, letters, digits
/// and `_`: splicing it into the statements is safe.)
pub(crate) async fn migrate<B: Backend>(
    conn: &mut Conn<B>,
    d: &Dialect,
    name: &str,
    layout: Layout,
) -> Result<()> {
    B::Db::execute(conn, d.schema, &[])
        .await
        .map_err(B::db_error)?;
    let read = d.sql("SELECT version FROM larder_schema WHERE tbl = ?".into());
    let row = fetch_row::<B>(conn, &read, &[Arg::Text(name)]).await?;
    let version = match row {
        Some(row) => B::Db::int(&row, 0).map_err(B::db_error)?,
        None => None,
    };
    let (steps, record) = match (version, layout.upgrade) {
        (Some(v), _) if v == layout.version => return Ok(()),
        (Some(v), Some((from, steps))) if v == from => {
            (steps, "UPDATE larder_schema SET version = ? WHERE tbl = ?")
        }
        (Some(v), _) => {
            return Err(Error::backend(format!(
                "{} table {name} has layout version {v}; this build reads {}",
                B::NAME,
                layout.version
            )))
        }
        (None, _) => (
            layout.create,
            "INSERT INTO larder_schema (version, tbl) VALUES (?, ?)",
        ),
    };
    for step in &steps {
        B::Db::execute(conn, step, &[]).await.map_err(B::db_error)?;
    }
    let args = [Arg::Int(layout.version), Arg::Text(name)];
    B::Db::execute(conn, &d.sql(record.into()), &args)
        .await
        .map_err(B::db_error)?;
    Ok(())
}

/// What every SQL store holds: its pool, its statements, its bound on objects, and the sweeper
/// of its expired rows.
#[derive(Debug)]
pub(crate) struct Table<DB: Database> {
    pub(crate) pool: Pool<DB>,
    /// The table's name.
    pub(crate) name: String,
    pub(crate) sql: Statements,
    pub(crate) max_object_size: u64,
    /// Deletes expired rows while the store lives.
    _sweeper: Option<Sweeper>,
}

impl<DB: SqlDb> Table<DB> {
    /// The table `name` of a `B` store connected to by `pool`: brought to this build's layout
    /// ([`Backend::migrate`]), with objects of at most `max_object_size` bytes, and its expired
    /// rows swept every `sweep`.
    pub(crate) async fn open<B: Backend<Db = DB>>(
        pool: Pool<DB>,
        name: &str,
        max_object_size: u64,
        sweep: Option<Duration>,
    ) -> Result<Self> {
        B::migrate(&pool, name).await?;
        let sql = B::statements(name);
        let sweeper = Sweeper::spawn(B::NAME, &pool, sql.sweep.clone(), sweep);
        Ok(Table {
            pool,
            name: name.to_owned(),
            sql,
            max_object_size,
            _sweeper: sweeper,
        })
    }
}

/// How many times a write whose insert lost a creation race is decided again.
const DECISION_ATTEMPTS: u32 = 16;

/// The connection a [`Backend`]'s statements run on.
pub(crate) type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// What a SQL driver supplies to the one implementation of [`Store`] here: its table (its SQL
/// text stays in the driver's file), its dialect's quirks (as data), and how its errors are read.
#[async_trait]
pub(crate) trait Backend: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: SqlDb;

    /// How the client reads the text columns `etag` and `meta` (MySQL's `_bin` collations make
    /// them bytes).
    type Text: AsRef<[u8]> + Send + for<'r> Decode<'r, Self::Db> + Type<Self::Db>;

    /// The driver's name, as [`Capabilities::name`].
    const NAME: &'static str;

    /// Over what its writes are atomic.
    const SCOPE: AtomicScope = AtomicScope::Cluster;

    /// The statement that opens a write's transaction (SQLite: `BEGIN IMMEDIATE`, which takes
    /// the database's write lock at once, so the read that follows is already under it).
    const BEGIN: &'static str = "BEGIN";

    /// Whether an UPDATE's affected-row count counts only the rows it changed, so that it says
    /// nothing about the row matched; otherwise an update must affect the one row.
    const UPDATE_COUNTS_CHANGED_ROWS_ONLY: bool = false;

    /// Whether a connection on which a write failed is closed rather than pooled again (SQLite:
    /// SQLITE_FULL and I/O errors end the transaction inside SQLite while sqlx still counts it
    /// open, and would refuse every later `BEGIN` on that connection).
    const DISCARD_FAILED_CONNECTIONS: bool = false;

    /// The store's table.
    fn table(&self) -> &Table<Self::Db>;

    /// Brings the table `t` to this build's layout ([`migrate`]) under the dialect's lock on
    /// the schema.
    async fn migrate(pool: &Pool<Self::Db>, t: &str) -> Result<()>;

    /// The statements of the table `t`.
    fn statements(t: &str) -> Statements;

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

    /// Writes `row` as its [`Guard`] says: an UPDATE guarded by the etag, or the INSERT that the
    /// primary key rejects (by an error or 0 rows) if the row exists. Returns the rows affected.
    /// By default the body is bound to the statement; SQLite writes it into the row in place.
    async fn write(&self, conn: &mut Conn<Self>, row: &Row<'_>) -> sqlx::Result<u64> {
        write_row(self, conn, row, row.body).await
    }
}

/// Runs the statement that writes `row` under its guard, with `body` as the body's value (the
/// row's, or none where the backend writes it into the row afterwards): the rows affected.
pub(crate) async fn write_row<B: Backend>(
    backend: &B,
    conn: &mut Conn<B>,
    row: &Row<'_>,
    body: &[u8],
) -> sqlx::Result<u64> {
    let sql = backend.table().sql.write(&row.guard)?;
    B::Db::execute(conn, sql, &row.args(body)).await
}

/// The live (unexpired) object's metadata at `key`.
async fn current<B: Backend>(backend: &B, conn: &mut Conn<B>, key: &Key) -> Result<Option<Meta>> {
    let args = [Arg::Text(key.as_str()), Arg::Int(to_millis(now_millis()))];
    let row = fetch_row::<B>(conn, &backend.table().sql.current, &args).await?;
    row.map(|row| meta_column::<B>(&row, 0)).transpose()
}

/// The live object's metadata at `key`, with its body if that is at most [`INLINE_MAX`] bytes:
/// one statement for a small object's get.
async fn current_inline<B: Backend>(
    backend: &B,
    key: &Key,
) -> Result<Option<(Meta, Option<Vec<u8>>)>> {
    let mut conn = backend.table().pool.acquire().await.map_err(B::db_error)?;
    let now = to_millis(now_millis());
    let args = [Arg::Int(INLINE_MAX), Arg::Text(key.as_str()), Arg::Int(now)];
    let row = fetch_row::<B>(&mut conn, &backend.table().sql.current_inline, &args).await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let body = B::Db::bytes(&row, 1).map_err(B::db_error)?;
    Ok(Some((meta_column::<B>(&row, 0)?, body)))
}

/// `span` of the body of `key`, if the object there still has `etag`.
async fn read_span<B: Backend>(
    backend: &B,
    key: &Key,
    etag: ETag,
    span: Range<u64>,
) -> Result<Option<Vec<u8>>> {
    let mut conn = backend.table().pool.acquire().await.map_err(B::db_error)?;
    let args = [
        // Counted from 1, as SQL's substring functions do.
        Arg::Int(span.start as i64 + 1),
        Arg::Int((span.end - span.start) as i64),
        Arg::Text(key.as_str()),
        Arg::Text(etag.opaque()),
    ];
    match fetch_row::<B>(&mut conn, &backend.table().sql.span, &args).await? {
        Some(row) => Ok(Some(
            B::Db::bytes(&row, 0)
                .map_err(B::db_error)?
                .unwrap_or_default(),
        )),
        None => Ok(None),
    }
}

/// The row `sql` with `args` (a statement of one row at most) returns on `conn`, if any.
async fn fetch_row<B: Backend>(
    conn: &mut Conn<B>,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Option<<B::Db as Database>::Row>> {
    let rows = B::Db::fetch(conn, sql, args).await.map_err(B::db_error)?;
    Ok(rows.into_iter().next())
}

/// Column `i` of `row`, a `meta` column, decoded.
fn meta_column<B: Backend>(row: &<B::Db as Database>::Row, i: usize) -> Result<Meta> {
    let text: B::Text = B::Db::column(row, i).map_err(B::db_error)?;
    Meta::decode(text.as_ref())
}

/// Locks `key`'s row (expired or not) for the rest of the transaction: `(the row's etag if
/// there is a row, the live object's meta)`. An expired row is locked but holds no object.
async fn lock<B: Backend>(
    backend: &B,
    conn: &mut Conn<B>,
    key: &Key,
) -> Result<(Option<String>, Option<Meta>)> {
    let sql = &backend.table().sql.lock;
    let Some(row) = fetch_row::<B>(conn, sql, &[Arg::Text(key.as_str())]).await? else {
        return Ok((None, None));
    };
    let etag: B::Text = B::Db::column(&row, 0).map_err(B::db_error)?;
    let etag = String::from_utf8_lossy(etag.as_ref()).into_owned();
    let expires_at = B::Db::int(&row, 1).map_err(B::db_error)?;
    if expires_at.is_some_and(|e| e <= to_millis(now_millis())) {
        return Ok((Some(etag), None));
    }
    Ok((Some(etag), Some(meta_column::<B>(&row, 2)?)))
}

/// Every SQL store: the reads are one statement each (a get whose body is too large to read
/// with its metadata reads it by span, see `get_decided`), the writes are the decision below.
#[async_trait]
impl<B: Backend> Store for B {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_object_size: Some(self.table().max_object_size),
            ..Capabilities::full(B::NAME, B::SCOPE, true)
        }
    }

    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta> {
        let mut conn = self.table().pool.acquire().await.map_err(B::db_error)?;
        opts.answer(key, current(self, &mut conn, key).await?)
    }

    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult> {
        let bytes = |etag, span| read_span(self, key, etag, span);
        get_decided(key, &opts, || current_inline(self, key), bytes).await
    }

    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult> {
        put(self, self.capabilities(), key, body, opts).await
    }

    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<()> {
        delete(self, self.capabilities(), key, opts).await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        opts.validate()?;
        let now = to_millis(now_millis());
        scan_page(&opts, |from, end, n| async move {
            let table = self.table();
            let (sql, start) = match from {
                ScanFrom::After(s) => (&table.sql.list_after, s),
                ScanFrom::At(s) => (&table.sql.list_at, s),
            };
            let end = end.as_deref();
            let args = [
                Arg::Text(&start),
                Arg::OptText(end),
                Arg::OptText(end),
                Arg::Int(now),
                Arg::Int(n as i64),
            ];
            let mut conn = table.pool.acquire().await.map_err(B::db_error)?;
            let rows = B::Db::fetch(&mut conn, sql, &args).await;
            let rows = rows.map_err(B::db_error)?;
            rows.iter().map(|row| meta_column::<B>(row, 0)).collect()
        })
        .await
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

impl Row<'_> {
    /// The values of the row's UPDATE or INSERT, in the order every dialect's statements take
    /// them: etag, size, last_modified, expires_at, content_type, meta, `body` (the row's, or
    /// none where the body is written into the row afterwards), key, then the guard's: the etag
    /// (if any), and for [`Guard::Live`] the new version's `last_modified` twice (the row is
    /// live if it expires after it, and must not be dated after it).
    pub(crate) fn args<'b>(&'b self, body: &'b [u8]) -> Vec<Arg<'b>> {
        let meta = self.meta;
        let now = to_millis(meta.last_modified);
        let mut args = vec![
            Arg::Text(meta.etag.opaque()),
            Arg::Int(meta.size as i64),
            Arg::Int(now),
            Arg::OptInt(meta.expires_at.map(to_millis)),
            Arg::OptText(meta.content_type.as_deref()),
            Arg::Text(self.encoded),
            Arg::Bytes(body),
            Arg::Text(meta.key.as_str()),
        ];
        match self.guard {
            Guard::Insert => {}
            Guard::Locked(old) => args.push(Arg::Text(old)),
            Guard::Live(old) => {
                args.extend(old.map(Arg::Text));
                args.extend([Arg::Int(now), Arg::Int(now)]);
            }
        }
        args
    }
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

/// The version `template` (stamped before the decision) becomes, dated now but never before
/// `replaces`, the version it replaces, if known: its metadata, and that encoded.
fn next_version(
    template: &Meta,
    replaces: Option<SystemTime>,
    opts: &PutOptions,
) -> Result<(Meta, String)> {
    let meta = Meta::next_version(
        &template.key,
        template.etag.clone(),
        template.size,
        replaces,
        opts,
    )?;
    let encoded = meta.encode();
    Ok((meta, encoded))
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
    let (meta, encoded) = next_version(template, None, opts)?;
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
    let current = current(backend, conn, &meta.key).await?;
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
async fn put<B: Backend>(
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
    let one_statement = backend.table().sql.update_live.is_some();
    if let Some(shape) = OneStatement::of(&opts.preconditions).filter(|_| one_statement) {
        let mut conn = backend.table().pool.acquire().await.map_err(B::db_error)?;
        let result = put_one_statement(backend, &mut *conn, shape, &data, &template, &opts).await;
        discard_if_failed::<B, _>(&mut conn, &result);
        if let Some(done) = result? {
            return Ok(done);
        }
    }
    let attempts = Attempts::new(DECISION_ATTEMPTS);
    for _ in attempts {
        let mut conn = backend.table().pool.acquire().await.map_err(B::db_error)?;
        let result = try_put(backend, &mut *conn, &data, &template, &opts).await;
        discard_if_failed::<B, _>(&mut conn, &result);
        if let Some(done) = result? {
            return Ok(done);
        }
    }
    attempts.exhausted(format_args!("{key}: every decision lost a creation race"))
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
    let (meta, encoded) = next_version(template, replaces, opts)?;
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
async fn delete<B: Backend>(
    backend: &B,
    caps: Capabilities,
    key: &Key,
    opts: DeleteOptions,
) -> Result<()> {
    caps.check_delete(&opts)?;
    let mut conn = backend.table().pool.acquire().await.map_err(B::db_error)?;
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
    let args = [Arg::Text(key.as_str()), Arg::Text(current.etag.opaque())];
    B::Db::execute(&mut *tx, &backend.table().sql.delete, &args)
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

    /// (That the client's own options are kept: `open`'s `client_urls_keep_the_clients_options`.)
    #[test]
    fn larder_options_are_taken_out_of_the_url() {
        let c = SqlConfig::from_url(
            "postgres://u@h:5432/db?table=t_1&sweep=0&max_connections=3&acquire_timeout_ms=250&statement_timeout_ms=0",
        )
        .unwrap();
        assert_eq!(
            (c.table.as_str(), c.sweep_interval, c.max_connections),
            ("t_1", None, 3)
        );
        assert_eq!(c.acquire_timeout, Duration::from_millis(250));
        assert_eq!(c.statement_timeout, None);
        let c = SqlConfig::from_url("mysql://h/db?statement_timeout_ms=1500").unwrap();
        assert_eq!(c.statement_timeout, Some(Duration::from_millis(1500)));
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
