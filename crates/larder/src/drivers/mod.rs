//! The drivers: one module per backend, each behind its cargo feature.

#[cfg(feature = "fs")]
pub mod fs;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod null;
#[cfg(any(feature = "s3", feature = "azure"))]
pub mod objstore;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "tiered")]
pub mod tiered;
#[cfg(any(feature = "redis", feature = "nats", feature = "tiered-redis"))]
mod tls;
