//! The drivers: one module per backend, each behind its cargo feature.

#[cfg(feature = "fs")]
pub mod fs;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod null;
#[cfg(any(feature = "s3", feature = "azure"))]
pub mod objstore;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
