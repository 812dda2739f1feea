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

use std::time::Duration;

use crate::error::{Error, Result};

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
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            table: "larder_objects".into(),
            sweep_interval: Some(Duration::from_secs(60)),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
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
pub(crate) const DECISION_ATTEMPTS: usize = 16;
