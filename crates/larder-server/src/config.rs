//! Server configuration: command-line flags, environment variables and a TOML file, resolved
//! into one [`Config`]. The flag and variable names are a contract for scripts and docs.
//!
//! Precedence: a flag (or its environment variable) wins over the file, the file over the
//! defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ServerError;

/// Default listening address: loopback only, so an unconfigured server is never exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default store: a directory beside where the server runs.
pub const DEFAULT_STORE: &str = "fs://./larder-data";
/// Default largest object: 5 GiB.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 5 << 30;
/// Default cap on uploads in flight.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 64;
/// Default bound on one whole request, in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 300;
/// Default bound on receiving a request head, in seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default time a connection may sit with nothing in flight and no traffic, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default cap on open connections (below the usual 1024 open-file limit, leaving room for the
/// store's own files and sockets).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The flags of `larder serve`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "LARDER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The store, as a URL: memory://, fs:///path, sqlite:///path.db, postgres://…, redis://…
    /// [default: fs://./larder-data].
    #[arg(long, env = "LARDER_STORE")]
    pub store: Option<String>,
    /// A TOML file with any of these settings, and bearer tokens.
    #[arg(long, env = "LARDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest object accepted, in bytes [default: 5 GiB].
    #[arg(long, env = "LARDER_MAX_OBJECT_SIZE")]
    pub max_object_size: Option<u64>,
    /// Uploads in flight at once; more are refused with 503 and Retry-After [default: 64].
    #[arg(long, env = "LARDER_MAX_CONCURRENT_UPLOADS")]
    pub max_concurrent_uploads: Option<usize>,
    /// Bound on one whole request, in seconds [default: 300].
    #[arg(long, env = "LARDER_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// A request head (from the connection's opening or its previous response) must arrive
    /// within this many seconds, else the connection is closed [default: 10].
    #[arg(long, env = "LARDER_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<u64>,
    /// Close a connection with no request in flight and no traffic for this many seconds
    /// [default: 60].
    #[arg(long, env = "LARDER_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Connections open at once; at the cap a new one evicts the longest-idle one, or waits
    /// [default: 512].
    #[arg(long, env = "LARDER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Serve a non-loopback address without bearer tokens.
    #[arg(long, env = "LARDER_INSECURE")]
    pub insecure: bool,
    /// Also serve the S3 API on this address (docs/s3.md); access keys go in the config's
    /// `[[s3.keys]]`.
    #[arg(long, env = "LARDER_S3_LISTEN")]
    pub s3_listen: Option<SocketAddr>,
}

/// What a bearer token may do.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET, HEAD and listing.
    Read,
    /// Everything, reads included.
    Write,
}

/// A bearer token and what it grants.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret, as sent in `Authorization: Bearer …`.
    pub token: String,
    /// Read-only or read-write.
    pub scope: Scope,
    /// Keys the token may touch start with this (empty: every key).
    #[serde(default)]
    pub prefix: String,
}

/// An S3 access key and what it grants (scoped like a bearer token).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3KeyConfig {
    /// The access key id.
    pub access_key: String,
    /// The secret the requests are signed with (SigV4).
    pub secret_key: String,
    /// Read-only or read-write.
    pub scope: Scope,
    /// Keys (`bucket/key`) the access key may touch start with this (empty: every key).
    #[serde(default)]
    pub prefix: String,
}

/// The S3 endpoint: `[s3]` in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Address of the S3 listener; none means no S3 endpoint (`--s3-listen` wins).
    pub listen: Option<SocketAddr>,
    /// Access keys; none means any key is accepted (loopback only).
    #[serde(default)]
    pub keys: Vec<S3KeyConfig>,
    /// Where multipart parts are spooled until completion (default: the temp dir).
    pub spool_dir: Option<PathBuf>,
}

/// The TOML file's shape.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// The store URL.
    pub store: Option<String>,
    /// Largest object accepted, in bytes.
    pub max_object_size: Option<u64>,
    /// Uploads in flight at once.
    pub max_concurrent_uploads: Option<usize>,
    /// Bound on one whole request, in seconds.
    pub request_timeout_secs: Option<u64>,
    /// Bound on receiving a request head, in seconds.
    pub header_read_timeout_secs: Option<u64>,
    /// Idle connection timeout, in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
    /// Serve a non-loopback address without tokens.
    pub insecure: Option<bool>,
    /// Bearer tokens; none means no authentication.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// A tiered store instead of `store`: nearest first, the last authoritative.
    #[serde(default)]
    pub tiers: Vec<larder::tiered::TierEntry>,
    /// Default freshness window of nearer tiers, in seconds.
    pub freshness_secs: Option<u64>,
    /// Largest object kept in nearer tiers, in bytes.
    pub max_cached_bytes: Option<u64>,
    /// Cross-replica invalidation of nearer tiers.
    pub invalidation: Option<larder::tiered::InvalidationConfig>,
    /// Key prefixes routed to other stores.
    #[serde(default)]
    pub mounts: Vec<larder::tiered::MountConfig>,
    /// The S3 endpoint.
    pub s3: Option<S3Config>,
}

/// The resolved configuration of a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The store URL.
    pub store: String,
    /// Largest object accepted, in bytes.
    pub max_object_size: u64,
    /// Uploads in flight at once.
    pub max_concurrent_uploads: usize,
    /// Bound on one whole request.
    pub request_timeout: Duration,
    /// Bound on receiving a request head, from the connection's opening or its previous
    /// response.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Serve a non-loopback address without tokens.
    pub insecure: bool,
    /// Bearer tokens; empty means no authentication.
    pub tokens: Vec<TokenConfig>,
    /// Tiers and mounts, when the file has `[[tiers]]` or `[[mounts]]` (and no `--store`
    /// overrides them); `store` is then unused.
    pub tiered: Option<larder::tiered::TierConfig>,
    /// The S3 endpoint, when it has a listen address.
    pub s3: Option<S3Config>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            store: DEFAULT_STORE.into(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            insecure: false,
            tokens: Vec::new(),
            tiered: None,
            s3: None,
        }
    }
}

impl Config {
    /// Resolves flags, the file they name, and defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ServerError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ServerError::Config(format!("reading {}: {e}", path.display())))?;
                Self::parse_file(&text)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let d = Config::default();
        let tiered = Self::tier_config(&file, args.store.is_some())?;
        // A flag (or its variable) wins over the file, the file over the default.
        fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
            flag.or(file).unwrap_or(default)
        }
        let secs = |s: Option<u64>| s.map(Duration::from_secs);
        let config = Config {
            listen: pick(args.listen, file.listen, d.listen),
            store: pick(args.store.clone(), file.store, d.store),
            max_object_size: pick(
                args.max_object_size,
                file.max_object_size,
                d.max_object_size,
            ),
            max_concurrent_uploads: pick(
                args.max_concurrent_uploads,
                file.max_concurrent_uploads,
                d.max_concurrent_uploads,
            ),
            request_timeout: pick(
                secs(args.request_timeout),
                secs(file.request_timeout_secs),
                d.request_timeout,
            ),
            header_read_timeout: pick(
                secs(args.header_read_timeout),
                secs(file.header_read_timeout_secs),
                d.header_read_timeout,
            ),
            idle_timeout: pick(
                secs(args.idle_timeout),
                secs(file.idle_timeout_secs),
                d.idle_timeout,
            ),
            max_connections: pick(
                args.max_connections,
                file.max_connections,
                d.max_connections,
            ),
            insecure: args.insecure || file.insecure.unwrap_or(false),
            tokens: file.tokens,
            tiered,
            s3: Self::s3_config(file.s3, args.s3_listen),
        };
        config.validate()?;
        Ok(config)
    }

    /// The S3 endpoint, when `--s3-listen` or `[s3] listen` gives it an address.
    fn s3_config(file: Option<S3Config>, flag: Option<SocketAddr>) -> Option<S3Config> {
        let mut s3 = file.unwrap_or_default();
        s3.listen = flag.or(s3.listen);
        s3.listen.is_some().then_some(s3)
    }

    /// The tiered store the file describes, if any. `--store` on the command line replaces it.
    fn tier_config(
        file: &FileConfig,
        store_flag: bool,
    ) -> Result<Option<larder::tiered::TierConfig>, ServerError> {
        let tiered_keys = !file.tiers.is_empty()
            || !file.mounts.is_empty()
            || file.invalidation.is_some()
            || file.freshness_secs.is_some()
            || file.max_cached_bytes.is_some();
        if store_flag || !tiered_keys {
            return Ok(None);
        }
        let tiers = match (&file.store, file.tiers.is_empty()) {
            (Some(_), false) => {
                return Err(ServerError::Config(
                    "give either `store` or [[tiers]], not both".into(),
                ))
            }
            // Mounts around a single store.
            (store, true) => vec![larder::tiered::TierEntry {
                store: store.clone().unwrap_or_else(|| DEFAULT_STORE.into()),
                freshness_secs: None,
            }],
            (None, false) => file.tiers.clone(),
        };
        Ok(Some(larder::tiered::TierConfig {
            tiers,
            freshness_secs: file.freshness_secs,
            max_cached_bytes: file.max_cached_bytes,
            invalidation: file.invalidation.clone(),
            mounts: file.mounts.clone(),
        }))
    }

    /// Parses the TOML file format.
    pub fn parse_file(text: &str) -> Result<FileConfig, ServerError> {
        toml::from_str(text).map_err(|e| ServerError::Config(e.to_string()))
    }

    /// Refuses settings that can't work, or that would expose the store.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_concurrent_uploads == 0 {
            return Err(ServerError::Config(
                "max_concurrent_uploads must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ServerError::Config(
                "request timeout must be positive".into(),
            ));
        }
        if self.header_read_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(ServerError::Config(
                "header read and idle timeouts must be positive".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ServerError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        if let Some(t) = self.tokens.iter().find(|t| t.token.len() < 16) {
            return Err(ServerError::Config(format!(
                "token for prefix {:?} is shorter than 16 characters",
                t.prefix
            )));
        }
        if let Some(s3) = &self.s3 {
            if let Some(k) = s3.keys.iter().find(|k| k.secret_key.len() < 16) {
                return Err(ServerError::Config(format!(
                    "the secret of S3 access key {:?} is shorter than 16 characters",
                    k.access_key
                )));
            }
            if let Some(listen) = s3.listen {
                larder_s3::check_exposure(listen, s3.keys.len()).map_err(ServerError::Config)?;
            }
        }
        if !self.listen.ip().is_loopback() && self.tokens.is_empty() && !self.insecure {
            return Err(ServerError::Config(format!(
                "refusing to serve {} without bearer tokens: add [[tokens]] to the config, or pass --insecure",
                self.listen
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_mounts_from_toml() {
        let file = Config::parse_file(
            r#"
            freshness_secs = 10
            [[tiers]]
            store = "memory://?max_bytes=1000000"
            freshness_secs = 2
            [[tiers]]
            store = "fs:///tmp/larder-auth"
            [invalidation]
            url = "redis://127.0.0.1:6379"
            [[mounts]]
            prefix = "cache/"
            store = "memory://"
            "#,
        )
        .unwrap();
        let t = Config::tier_config(&file, false).unwrap().unwrap();
        assert_eq!(t.tiers.len(), 2);
        assert_eq!(t.tiers[0].freshness_secs, Some(2));
        assert_eq!(t.freshness_secs, Some(10));
        assert_eq!(t.mounts[0].prefix, "cache/");
        assert_eq!(t.invalidation.unwrap().url, "redis://127.0.0.1:6379");
        assert!(
            Config::tier_config(&file, true).unwrap().is_none(),
            "--store wins"
        );

        let both = Config::parse_file("store = \"memory://\"\n[[tiers]]\nstore = \"memory://\"\n")
            .unwrap();
        assert!(Config::tier_config(&both, false).is_err());
        let mounts_only = Config::parse_file(
            "store = \"null://\"\n[[mounts]]\nprefix = \"c/\"\nstore = \"memory://\"\n",
        )
        .unwrap();
        let t = Config::tier_config(&mounts_only, false).unwrap().unwrap();
        assert_eq!(t.tiers[0].store, "null://");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.toml");
        std::fs::write(
            &path,
            r#"
            listen = "127.0.0.1:9000"
            store = "memory://"
            max_object_size = 1024
            [[tokens]]
            token = "0123456789abcdef-reader"
            scope = "read"
            prefix = "public/"
            "#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            store: Some("null://".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.store, "null://");
        assert_eq!(c.max_object_size, 1024);
        assert_eq!(c.max_concurrent_uploads, DEFAULT_MAX_CONCURRENT_UPLOADS);
        assert_eq!(c.tokens[0].scope, Scope::Read);
        assert_eq!(c.tokens[0].prefix, "public/");

        let d = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(d.store, DEFAULT_STORE);
    }

    #[test]
    fn exposure_without_tokens_is_refused() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:7070".parse().unwrap()),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
        let args = ServeArgs {
            insecure: true,
            ..args
        };
        assert!(Config::resolve(&args).is_ok());
        assert!(
            Config::parse_file("bogus = 1").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn s3_endpoint_from_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.toml");
        std::fs::write(
            &path,
            r#"
            [s3]
            listen = "0.0.0.0:9100"
            [[s3.keys]]
            access_key = "AKIDREADER"
            secret_key = "a-secret-of-sixteen-or-more"
            scope = "read"
            prefix = "photos/"
            "#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s3 = Config::resolve(&args).unwrap().s3.unwrap();
        assert_eq!(s3.listen.unwrap().port(), 9100);
        assert_eq!(s3.keys[0].scope, Scope::Read);
        assert_eq!(s3.keys[0].prefix, "photos/");
        let flag = ServeArgs {
            s3_listen: Some("127.0.0.1:9200".parse().unwrap()),
            ..args
        };
        assert_eq!(
            Config::resolve(&flag)
                .unwrap()
                .s3
                .unwrap()
                .listen
                .unwrap()
                .port(),
            9200
        );
        assert!(Config::resolve(&ServeArgs::default()).unwrap().s3.is_none());
        // Without keys, only loopback.
        let open = ServeArgs {
            s3_listen: Some("0.0.0.0:9100".parse().unwrap()),
            ..Default::default()
        };
        assert!(Config::resolve(&open).is_err());
        let open = ServeArgs {
            s3_listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        assert!(Config::resolve(&open).is_ok());
    }
}
