//! The conformance kit against the memory driver.
#![cfg(feature = "memory")]

use std::sync::Arc;

use larder::drivers::memory::MemoryStore;
use larder::Store;

async fn store() -> Option<Arc<dyn Store>> {
    Some(Arc::new(MemoryStore::new()))
}

larder::conformance_tests!(store());
