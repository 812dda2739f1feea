//! Server configuration: command-line arguments and environment variables (`ServeArgs`), a TOML
//! file, and the resolved [`Config`] the server runs with.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML file, default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ServerError;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default store URL.
pub const DEFAULT_STORE: &str = "fs://./larder-data";
/// Default largest object accepted: 5 GiB.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 5 << 30;
/// Default number of uploads (PUT/POST) served at once.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 64;
/// Default request timeout, in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 300;

/// The arguments of `larder serve` (flatten into a clap command).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "LARDER_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Store URL, opened with `larder::open` [default: fs://./larder-data].
    #[arg(long, env = "LARDER_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// TOML configuration file (listen, store, limits, [[tokens]]).
    #[arg(long, env = "LARDER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Largest object accepted, in bytes (suffixes K, M, G, KiB, MiB, GiB allowed) [default: 5GiB].
    #[arg(long, env = "LARDER_MAX_OBJECT_SIZE", value_name = "BYTES", value_parser = parse_size)]
    pub max_object_size: Option<u64>,
    /// Uploads served at once; more get 503 with Retry-After [default: 64].
    #[arg(long, env = "LARDER_MAX_CONCURRENT_UPLOADS", value_name = "N")]
    pub max_concurrent_uploads: Option<usize>,
    /// Seconds a request may take until its response starts (uploads: the whole body)
    /// [default: 300].
    #[arg(long, env = "LARDER_REQUEST_TIMEOUT", value_name = "SECS")]
    pub request_timeout: Option<u64>,
    /// Allow listening on a non-loopback address without any token.
    #[arg(long, env = "LARDER_INSECURE")]
    pub insecure: bool,
}

/// What a bearer token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET / HEAD / listing.
    Read,
    /// Everything `Read` may do, plus PUT / POST / DELETE.
    Write,
}

/// One bearer token (`[[tokens]]` in the TOML file).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret, as sent in `Authorization: Bearer <token>`.
    pub token: String,
    /// What it allows.
    pub scope: Scope,
    /// Only keys (and listing prefixes) starting with this string; empty: every key.
    #[serde(default)]
    pub prefix: String,
}

impl std::fmt::Debug for TokenConfig {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("scope", &self.scope)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    store: Option<String>,
    max_object_size: Option<u64>,
    max_concurrent_uploads: Option<usize>,
    request_timeout_secs: Option<u64>,
    insecure: Option<bool>,
    #[serde(default)]
    tokens: Vec<TokenConfig>,
    // Sections of the tiered issue, kept verbatim for whoever reads them.
    tiers: Option<toml::Value>,
    mounts: Option<toml::Value>,
}

/// The resolved configuration of a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`host:port`; a name is resolved when binding).
    pub listen: String,
    /// Store URL, for [`serve`](crate::serve).
    pub store: String,
    /// Largest object accepted, in bytes (413 beyond).
    pub max_object_size: u64,
    /// Uploads served at once (503 + `Retry-After` beyond).
    pub max_concurrent_uploads: usize,
    /// Time a request may take until its response starts; an upload must arrive within it.
    pub request_timeout: Duration,
    /// Bearer tokens; empty: no authentication.
    pub tokens: Vec<TokenConfig>,
    /// Allow a non-loopback listen address without tokens.
    pub insecure: bool,
    /// The `[[tiers]]` section of the TOML file, if any (read by the tiered store setup).
    pub tiers: Option<toml::Value>,
    /// The `[[mounts]]` section of the TOML file, if any.
    pub mounts: Option<toml::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.into(),
            store: DEFAULT_STORE.into(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            tokens: Vec::new(),
            insecure: false,
            tiers: None,
            mounts: None,
        }
    }
}

impl Config {
    /// Resolves arguments (which clap already merged with the environment) over the TOML file
    /// they name (if any), over the defaults.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ServerError> {
        let mut config = match &args.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &args.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &args.store {
            config.store = v.clone();
        }
        if let Some(v) = args.max_object_size {
            config.max_object_size = v;
        }
        if let Some(v) = args.max_concurrent_uploads {
            config.max_concurrent_uploads = v;
        }
        if let Some(v) = args.request_timeout {
            config.request_timeout = Duration::from_secs(v);
        }
        config.insecure |= args.insecure;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file over the defaults.
    pub fn from_toml_file(path: &Path) -> Result<Config, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("reading {}: {e}", path.display())))?;
        Config::from_toml_str(&text)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml_str(text: &str) -> Result<Config, ServerError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ServerError::Config(e.to_string()))?;
        let d = Config::default();
        let config = Config {
            listen: file.listen.unwrap_or(d.listen),
            store: file.store.unwrap_or(d.store),
            max_object_size: file.max_object_size.unwrap_or(d.max_object_size),
            max_concurrent_uploads: file
                .max_concurrent_uploads
                .unwrap_or(d.max_concurrent_uploads),
            request_timeout: file
                .request_timeout_secs
                .map_or(d.request_timeout, Duration::from_secs),
            tokens: file.tokens,
            insecure: file.insecure.unwrap_or(false),
            tiers: file.tiers,
            mounts: file.mounts,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values that have no meaningful use.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_concurrent_uploads == 0 {
            return Err(ServerError::Config(
                "max_concurrent_uploads must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ServerError::Config(
                "request timeout must be at least 1 second".into(),
            ));
        }
        for t in &self.tokens {
            if t.token.is_empty() || t.token.chars().any(|c| c.is_whitespace()) {
                return Err(ServerError::Config(
                    "a token is empty or contains whitespace".into(),
                ));
            }
        }
        Ok(())
    }

    /// Refuses to expose an unauthenticated server beyond this host: a non-loopback address
    /// needs tokens, or `insecure`.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), ServerError> {
        if !addr.ip().is_loopback() && self.tokens.is_empty() && !self.insecure {
            return Err(ServerError::Insecure(addr));
        }
        Ok(())
    }
}

/// Parses a byte count with an optional unit: `1024`, `64K`, `5GiB`, `10MB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown size unit in {s:?}")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_args_resolve() {
        let c = Config::from_toml_str(
            r#"
            listen = "0.0.0.0:9000"
            store = "memory://"
            max_object_size = 1000
            request_timeout_secs = 5
            [[tokens]]
            token = "abc"
            scope = "read"
            prefix = "pub/"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.max_object_size, 1000);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.tokens[0].scope, Scope::Read);
        assert!(!format!("{c:?}").contains("abc"));
        assert!(Config::from_toml_str("lisen = 1").is_err());
        assert!(Config::from_toml_str("[[tokens]]\ntoken='x'\nscope='admin'").is_err());
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("x").is_err());

        let d = Config::default();
        let public: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(d.check_exposure(public).is_err());
        assert!(d.check_exposure("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(c.check_exposure(public).is_ok());
    }
}
