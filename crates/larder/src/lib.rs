//! Larder: one key/blob storage API over many backends, in which every write can be an atomic
//! compare-and-swap on content ETags and every read can be conditional.
//!
//! - [`Key`]: validated keys; [`ETag`]: SHA-256 content tags, the same in every driver.
//! - [`Preconditions`]: the one RFC 9110 evaluator; [`ByteRange`]: the one range resolver.
//! - [`Store`]: the trait every driver implements; [`StoreExt`]: convenience calls.
//! - [`drivers`]: the backends, one cargo feature each; [`open`]: a store from a URL.
//! - `conformance` (feature `conformance`, for tests): the checks every driver passes.
//!
//! Every driver is opened the same way: `XConfig` holds its settings (public fields,
//! `XConfig::from_url` reads its URL), `XStore::open(config).await` opens it, and
//! `XStore::from_url(url).await` does both; [`open`] picks the driver from the URL's scheme.
//! (`MemoryStore::new()` is the shortcut for an unbounded memory store.)
//!
//! ```
//! # tokio_test_block_on(async {
//! use larder::{drivers::memory::MemoryStore, Key, Store, StoreExt, Error};
//!
//! let store = MemoryStore::new();
//! let key = Key::new("refs/HEAD")?;
//! let v1 = store.create(&key, "commit-1".into()).await?;          // If-None-Match: *
//! let v2 = store.swap(&key, &v1.etag, "commit-2".into()).await?;  // If-Match: v1
//! // A writer still holding v1 loses, and learns the current ETag:
//! match store.swap(&key, &v1.etag, "commit-x".into()).await {
//!     Err(Error::PreconditionFailed { current }) => assert_eq!(current.unwrap().etag, v2.etag),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Error>(()) });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
//! ```

#![deny(missing_docs)]

pub mod body;
pub mod capabilities;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod drivers;
pub mod error;
pub mod etag;
mod ext;
pub mod key;
pub mod list;
pub mod meta;
mod open;
pub mod precondition;
pub mod range;
mod retry;
pub mod store;
#[cfg(feature = "wire")]
pub mod wire;

#[cfg(feature = "tiered")]
pub use drivers::tiered;

pub use body::{Body, BodyReader, ByteStream};
pub use capabilities::{AtomicScope, Capabilities, ConditionSupport};
pub use error::{Error, Result};
pub use etag::{ContentHasher, ETag};
pub use ext::{StoreExt, UPDATE_ATTEMPTS};
pub use key::Key;
pub use list::{ListOptions, ListPage};
pub use meta::Meta;
pub use open::open;
pub use precondition::{ETagCondition, IfRange, Preconditions};
pub use range::ByteRange;
pub use store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PartError, PutOptions, PutResult, Store,
    READINESS_PROBE_KEY,
};
