//! A store from a URL: the names here are a contract for configs, scripts and docs.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::Store;

/// Opens the store a URL names:
///
/// | URL | driver | feature |
/// |---|---|---|
/// | `memory://?max_bytes=N&ttl=SECS` | in-process memory | `memory` |
/// | `fs:///abs/path?fsync=false`, `fs://rel/path` (path verbatim, created if missing) | local directory | `fs` |
/// | `sqlite:///abs/path.db`, `sqlite://rel/path.db`, `sqlite::memory:`, `?table=larder_objects&sweep=60&max_connections=8&synchronous=full` | one SQLite file | `sqlite` |
/// | `redis://[user:pass@]host:port/db?prefix=larder&timeout_ms=5000&connect_timeout_ms=5000&list_batch=256`, `rediss://…` (TLS) | Redis, Lua-script CAS | `redis` |
/// | `nats://[user:pass@]host:port?bucket=larder&replicas=1&timeout_ms=5000&connect_timeout_ms=5000&tls=true` (bucket created if missing) | NATS JetStream KV, revision CAS | `nats` |
/// | `postgres://user@host:5432/db` (or `postgresql://`), `?table=larder_objects&sweep=60&max_connections=8&acquire_timeout_ms=5000&statement_timeout_ms=5000` (statement and lock-wait bound, 0 = none) | PostgreSQL, one guarded statement or row-locked decisions | `postgres` |
/// | `mysql://user@host:3306/db` (or `mariadb://`), same options | MySQL / MariaDB (InnoDB) | `mysql` |
/// | `http://HOST:PORT[/key/prefix]?token=T&timeout=SECS&retries=N`, `https://…`, `larder+http://…`, `larder+https://…` | a Larder server (native HTTP API) | `http` |
/// | `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true&access_key_id=…&secret_access_key=…&session_token=…&virtual_hosted=false&max_object_size=N&conditional_delete=true&connect_timeout_ms=5000&timeout_ms=5000&retry_timeout_ms=5000` (rest from `AWS_*` env) | S3 / S3-compatible, conditional PUT | `s3` |
/// | `azure://container/prefix?account=NAME&access_key=…&endpoint=https://…&use_emulator=true&max_object_size=N&connect_timeout_ms=5000&timeout_ms=5000&retry_timeout_ms=5000` (rest from `AZURE_*` env; emulator at `AZURITE_BLOB_STORAGE_URL`) | Azure Blob Storage, conditional PUT | `azure` |
/// | `null://` | keeps nothing | always |
///
/// A scheme whose driver was not compiled in is `Unsupported`. Each driver reads its own row
/// with `XStore::from_url`; `XConfig::from_url` gives the settings to adjust in code before
/// `XStore::open(config)` (for example [`FsConfig`](crate::drivers::fs::FsConfig)).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use larder::{Key, StoreExt};
///
/// let dir = tempfile::tempdir().unwrap();
/// let url = std::env::var("APP_STORE")
///     .unwrap_or_else(|_| format!("fs://{}", dir.path().display()));
/// let store = larder::open(&url).await?; // Arc<dyn Store>: the same code for every backend
/// store.put_bytes(&Key::new("a")?, "1".into()).await?;
/// assert!(larder::open("memory://?max_bytes=1048576").await.is_ok());
/// assert!(larder::open("gopher://x").await.is_err());
/// # Ok::<(), larder::Error>(()) }).unwrap();
/// ```
///
/// Tiered stacks and prefix mounts are described by a config struct rather than a URL:
/// `larder::tiered::open_config(&TierConfig)` (feature `tiered`).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    // `sqlite::memory:` is not a URL a parser accepts, and the path is taken verbatim.
    #[cfg(feature = "sqlite")]
    if crate::drivers::sqlite::is_sqlite_url(url) {
        return Ok(Arc::new(
            crate::drivers::sqlite::SqliteStore::from_url(url).await?,
        ));
    }
    // Each driver parses its own URL (the fs path, for one, is taken verbatim).
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .ok_or_else(|| Error::InvalidInput(format!("store URL {url:?}: no scheme")))?;
    let store: Arc<dyn Store> = match scheme.as_str() {
        #[cfg(feature = "memory")]
        "memory" => Arc::new(crate::drivers::memory::MemoryStore::from_url(url).await?),
        #[cfg(feature = "fs")]
        "fs" => Arc::new(crate::drivers::fs::FsStore::from_url(url).await?),
        #[cfg(feature = "http")]
        "http" | "https" | "larder+http" | "larder+https" => {
            Arc::new(crate::drivers::http::HttpStore::from_url(url).await?)
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Arc::new(crate::drivers::redis::RedisStore::from_url(url).await?),
        #[cfg(feature = "nats")]
        "nats" => Arc::new(crate::drivers::nats::NatsStore::from_url(url).await?),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            Arc::new(crate::drivers::sql::postgres::PostgresStore::from_url(url).await?)
        }
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            Arc::new(crate::drivers::sql::mysql::MysqlStore::from_url(url).await?)
        }
        #[cfg(feature = "s3")]
        "s3" => Arc::new(crate::drivers::objstore::ObjStore::from_url(url).await?),
        #[cfg(feature = "azure")]
        "azure" => Arc::new(crate::drivers::objstore::ObjStore::from_url(url).await?),
        "null" => Arc::new(crate::drivers::null::NullStore::from_url(url).await?),
        other => {
            return Err(Error::unsupported(format!(
                "store URL scheme {other:?} (not a known driver, or its cargo feature is off)"
            )))
        }
    };
    Ok(store)
}

/// `url` parsed, when its scheme is one of `schemes`: the first step of every driver's
/// `XConfig::from_url` (`what` names the driver in the error).
#[allow(dead_code)] // used by whichever drivers are compiled in
pub(crate) fn parse_store_url(url: &str, what: &str, schemes: &[&str]) -> Result<url::Url> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::InvalidInput(format!("{what} URL {url:?}: {e}")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(Error::InvalidInput(format!(
            "{what} URL {url:?}: the scheme must be {}",
            schemes.join(" or ")
        )));
    }
    Ok(parsed)
}

/// The URL a driver hands to its database client: `parsed` without the options `take` takes
/// out of its query (`take(k, v)` applies option `k`, `Ok(true)`, if it is the driver's own),
/// the client's own options kept in their order, and no query when none is left.
#[allow(dead_code)] // used by whichever drivers are compiled in
pub(crate) fn client_url(
    parsed: &url::Url,
    mut take: impl FnMut(&str, &str) -> Result<bool>,
) -> Result<String> {
    let mut kept = Vec::new();
    for (k, v) in parsed.query_pairs() {
        if !take(&k, &v)? {
            kept.push((k, v));
        }
    }
    let mut client = parsed.clone();
    client.set_query(None);
    if !kept.is_empty() {
        client.query_pairs_mut().extend_pairs(kept);
    }
    Ok(client.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn schemes_pick_the_driver_and_bad_urls_are_errors_not_panics() {
        let named = |store: Arc<dyn Store>| store.capabilities().name;
        assert_eq!(named(open("null://").await.unwrap()), "null");
        assert_eq!(named(open("NULL://").await.unwrap()), "null");
        assert!(matches!(
            open("gopher://x").await,
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            open("no scheme").await,
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            open("null://?x=1").await,
            Err(Error::InvalidInput(_))
        ));
        #[cfg(feature = "memory")]
        {
            assert_eq!(named(open("memory://").await.unwrap()), "memory");
            assert!(matches!(
                open("memory://?ttl=0").await,
                Err(Error::InvalidInput(_))
            ));
        }
    }

    #[cfg(feature = "memory")]
    #[test]
    fn memory_url() {
        use crate::drivers::memory::MemoryConfig;
        let c = MemoryConfig::from_url("memory://?max_bytes=10&ttl=60").unwrap();
        assert_eq!(c.max_bytes, Some(10));
        assert_eq!(c.default_ttl, Some(Duration::from_secs(60)));
        for bad in ["memory://?max_bytes=x", "memory://?nope=1", "fs://x"] {
            assert!(MemoryConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "fs")]
    #[test]
    fn fs_url_takes_the_path_verbatim() {
        use crate::drivers::fs::FsConfig;
        let c = FsConfig::from_url("fs://./data dir/%41?fsync=false").unwrap();
        assert_eq!(c.root, std::path::Path::new("./data dir/%41"));
        assert!(!c.fsync);
        let c = FsConfig::from_url("FS:///abs").unwrap();
        assert_eq!((c.root.to_str(), c.fsync), (Some("/abs"), true));
        for bad in ["fs://", "fs://x?fsync=maybe", "fs://x?nope=1", "memory://x"] {
            assert!(FsConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    /// Every driver that hands its URL to a database client takes its own options out of the
    /// query and keeps the client's.
    #[test]
    fn client_urls_keep_the_clients_options() {
        let ours = |k: &str, _: &str| Ok(k == "table");
        let split = |url: &str| client_url(&url::Url::parse(url).unwrap(), ours).unwrap();
        assert_eq!(split("x://h/db?b=1&table=t&a=2"), "x://h/db?b=1&a=2");
        assert_eq!(split("x://h/db?table=t"), "x://h/db");
        let refuse = |_: &str, _: &str| Err(Error::InvalidInput("no".into()));
        assert!(client_url(&url::Url::parse("x://h?k=v").unwrap(), refuse).is_err());
        #[allow(unused_mut)]
        let mut drivers: Vec<(&str, Result<String>, &str)> = Vec::new();
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        {
            use crate::drivers::sql::SqlConfig;
            let url = "postgres://u@h:5432/db?table=t_1&sslmode=disable&sweep=0";
            let want = "postgres://u@h:5432/db?sslmode=disable";
            drivers.push((url, SqlConfig::from_url(url).map(|c| c.url), want));
            let url = "mysql://h/db";
            drivers.push((url, SqlConfig::from_url(url).map(|c| c.url), url));
        }
        #[cfg(feature = "redis")]
        {
            use crate::drivers::redis::RedisConfig;
            let url = "rediss://u:p@h:6380/2?prefix=app&timeout_ms=7&list_batch=9&protocol=resp3";
            let want = "rediss://u:p@h:6380/2?protocol=resp3";
            drivers.push((url, RedisConfig::from_url(url).map(|c| c.server), want));
        }
        for (url, got, want) in drivers {
            assert_eq!(got.unwrap(), want, "{url}");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_url_options() {
        use crate::drivers::redis::RedisConfig;
        let c = RedisConfig::from_url(
            "rediss://u:p@h:6380/2?prefix=app&timeout_ms=7&list_batch=9&protocol=resp3",
        )
        .unwrap();
        assert_eq!((c.prefix.as_str(), c.list_batch), ("app", 9));
        assert_eq!(c.timeout, Duration::from_millis(7));
        let c = RedisConfig::from_url("redis://h").unwrap();
        assert_eq!(
            (c.server.as_str(), c.prefix.as_str()),
            ("redis://h", "larder")
        );
        for bad in [
            "redis://h?list_batch=0",
            "redis://h?timeout_ms=x",
            "nats://h",
        ] {
            assert!(RedisConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_url() {
        use crate::drivers::nats::NatsConfig;
        let c = NatsConfig::from_url("nats://h:4223?bucket=b-1&replicas=3&tls=true").unwrap();
        assert_eq!(c.server, "nats://h:4223");
        assert_eq!((c.bucket.as_str(), c.replicas, c.tls), ("b-1", 3, true));
        for bad in ["nats://h?replicas=x", "nats://h?nope=1", "redis://h"] {
            assert!(NatsConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    /// A config built by hand is checked when it is opened, as its URL would have been.
    #[cfg(feature = "nats")]
    #[tokio::test]
    async fn a_bad_config_is_refused_before_connecting() {
        use crate::drivers::nats::{NatsConfig, NatsStore};
        let config = NatsConfig {
            server: "nats://127.0.0.1:1".into(),
            bucket: "a.b".into(),
            ..NatsConfig::default()
        };
        assert!(matches!(
            NatsStore::open(config).await,
            Err(Error::InvalidInput(_))
        ));
    }
}
