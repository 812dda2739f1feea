//! Configuration of a tiered (and mounted) store, as a server's TOML embeds it:
//!
//! ```toml
//! freshness_secs = 30                      # default window of every nearer tier
//! [[tiers]]
//! store = "memory://?max_bytes=100000000"
//! freshness_secs = 5                       # this tier's own window
//! [[tiers]]
//! store = "fs:///var/lib/larder"           # the last tier is authoritative
//! [invalidation]
//! url = "redis://127.0.0.1:6379"
//! channel = "larder-invalidate"
//! ack_timeout_ms = 2000
//! [[mounts]]
//! prefix = "cache/"
//! store = "memory://"
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{MountStore, Tier, TieredStore};
use crate::error::{Error, Result};
use crate::store::Store;

/// Default freshness window of nearer tiers.
pub const DEFAULT_FRESHNESS_SECS: u64 = 30;

/// A tiered store, optionally with prefix mounts beside it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// The tiers, nearest first; the last is authoritative.
    pub tiers: Vec<TierEntry>,
    /// Default freshness window of nearer tiers, in seconds (30 if absent).
    #[serde(default)]
    pub freshness_secs: Option<u64>,
    /// Largest object kept in nearer tiers, in bytes.
    #[serde(default)]
    pub max_cached_bytes: Option<u64>,
    /// Cross-replica invalidation.
    #[serde(default)]
    pub invalidation: Option<InvalidationConfig>,
    /// Prefixes routed to other stores instead of the tiers.
    #[serde(default)]
    pub mounts: Vec<MountConfig>,
}

/// One tier.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TierEntry {
    /// Store URL, as [`open`](crate::open) takes.
    pub store: String,
    /// This tier's freshness window in seconds (overrides the default).
    #[serde(default)]
    pub freshness_secs: Option<u64>,
}

/// The invalidation channel.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InvalidationConfig {
    /// `redis://…` (feature `tiered-redis`).
    pub url: String,
    /// Channel name (default `larder-invalidate`).
    #[serde(default)]
    pub channel: Option<String>,
    /// How long a write waits for the other replicas to acknowledge, in milliseconds
    /// (default 2000).
    #[serde(default)]
    pub ack_timeout_ms: Option<u64>,
}

/// A prefix routed to its own store.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Keys starting with this go to `store` (longest prefix wins).
    pub prefix: String,
    /// Store URL.
    pub store: String,
}

/// Opens the store a [`TierConfig`] describes: the tiers (a single tier is used as is), with
/// the mounts routed around them.
pub async fn open_config(config: &TierConfig) -> Result<Arc<dyn Store>> {
    Ok(open_config_parts(config).await?.store)
}

/// What [`open_config_parts`] opened.
#[derive(Debug, Clone)]
pub struct OpenedConfig {
    /// The store to serve.
    pub store: Arc<dyn Store>,
    /// The tiered store inside it, if there is one: for [`TieredStore::stats`] (metrics).
    pub tiered: Option<TieredStore>,
}

/// As [`open_config`], also returning the [`TieredStore`] for its metrics.
pub async fn open_config_parts(config: &TierConfig) -> Result<OpenedConfig> {
    if config.tiers.is_empty() {
        return Err(Error::InvalidInput("tiered config: no [[tiers]]".into()));
    }
    let default = config.freshness_secs.unwrap_or(DEFAULT_FRESHNESS_SECS);
    let mut tiers = Vec::new();
    for t in &config.tiers {
        let store = crate::open(&t.store).await?;
        let secs = t.freshness_secs.unwrap_or(default);
        tiers.push(Tier::new(store, Duration::from_secs(secs)));
    }
    let mut tiered = None;
    let main: Arc<dyn Store> = if tiers.len() == 1 && config.invalidation.is_none() {
        tiers.pop().expect("one tier").store
    } else {
        let mut b = TieredStore::builder(tiers);
        if let Some(max) = config.max_cached_bytes {
            b = b.max_cached_bytes(max);
        }
        if let Some(inv) = &config.invalidation {
            if let Some(ms) = inv.ack_timeout_ms {
                b = b.ack_timeout(Duration::from_millis(ms));
            }
            b = b.invalidator(invalidator(inv).await?);
        }
        let t = b.build().await?;
        tiered = Some(t.clone());
        Arc::new(t)
    };
    if config.mounts.is_empty() {
        return Ok(OpenedConfig {
            store: main,
            tiered,
        });
    }
    let mut mounts = vec![(String::new(), main)];
    for m in &config.mounts {
        mounts.push((m.prefix.clone(), crate::open(&m.store).await?));
    }
    Ok(OpenedConfig {
        store: Arc::new(MountStore::new(mounts)?),
        tiered,
    })
}

async fn invalidator(c: &InvalidationConfig) -> Result<Arc<dyn super::Invalidator>> {
    let channel = c.channel.as_deref().unwrap_or("larder-invalidate");
    let scheme = c.url.split(':').next().unwrap_or("");
    match scheme {
        #[cfg(feature = "tiered-redis")]
        "redis" | "rediss" => Ok(super::RedisInvalidator::connect(&c.url, channel).await?),
        _ => {
            let _ = channel;
            Err(Error::unsupported(format!(
                "invalidation URL {:?} (redis:// needs the `tiered-redis` feature)",
                c.url
            )))
        }
    }
}
