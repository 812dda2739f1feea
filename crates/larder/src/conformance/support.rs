//! What the tests of several crates share around the checks: finding and opening a backend
//! (or skipping), a store that keeps its backing alive, and the sizes and runtime of the
//! cross-process race.

use async_trait::async_trait;

use super::skip_or_fail;
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::key::Key;
use crate::list::{ListOptions, ListPage};
use crate::meta::Meta;
use crate::store::{
    DeleteOptions, GetOptions, GetResult, HeadOptions, PutOptions, PutResult, Store,
};

/// The backend URL in the environment variable `var`; when it is unset, `None` through
/// [`skip_or_fail`] (so a test of `service` is skipped, or fails under
/// `LARDER_REQUIRE_SERVICES=1`).
pub fn env_url(service: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) => skip_or_fail(service, format!("{var} is not set")),
    }
}

/// The store `opened` gave, or `None` through [`skip_or_fail`] when opening `service` failed.
pub fn ok_or_skip<T>(service: &str, opened: Result<T, Error>) -> Option<T> {
    match opened {
        Ok(store) => Some(store),
        Err(e) => skip_or_fail(service, e),
    }
}

/// `url` with the query parameters `query` added (after `?`, or `&` when it has a query
/// already); `url` itself when `query` is empty.
pub fn with_query(url: &str, query: &str) -> String {
    if query.is_empty() {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The listing of `prefix` grouped into common prefixes at `/`.
pub fn delimited(prefix: &str) -> ListOptions {
    ListOptions {
        delimiter: Some('/'),
        ..ListOptions::prefix(prefix)
    }
}

/// Asserts [`open`](crate::open) refuses each of `urls` as invalid input
/// ([`Error::InvalidInput`]).
pub async fn assert_urls_refused(urls: &[&str]) {
    for url in urls {
        let r = crate::open(url).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{url}: {r:?}");
    }
}

/// A store that keeps `held` (temporary directories, a server handle) alive as long as it
/// lives; every call goes to the inner store unchanged.
pub struct Holding<S, T> {
    store: S,
    _held: T,
}

impl<S, T> Holding<S, T> {
    /// `store`, keeping `held` alive with it.
    pub fn new(store: S, held: T) -> Self {
        Holding { store, _held: held }
    }

    /// The store it wraps.
    pub fn inner(&self) -> &S {
        &self.store
    }
}

impl<S: std::fmt::Debug, T> std::fmt::Debug for Holding<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Holding").field(&self.store).finish()
    }
}

#[async_trait]
impl<S: Store, T: Send + Sync + 'static> Store for Holding<S, T> {
    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }
    async fn head(&self, key: &Key, opts: HeadOptions) -> Result<Meta, Error> {
        self.store.head(key, opts).await
    }
    async fn get(&self, key: &Key, opts: GetOptions) -> Result<GetResult, Error> {
        self.store.get(key, opts).await
    }
    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> Result<PutResult, Error> {
        self.store.put(key, body, opts).await
    }
    async fn delete(&self, key: &Key, opts: DeleteOptions) -> Result<(), Error> {
        self.store.delete(key, opts).await
    }
    async fn list(&self, opts: ListOptions) -> Result<ListPage, Error> {
        self.store.list(opts).await
    }
    async fn check(&self) -> Result<(), Error> {
        self.store.check().await
    }
}

/// The cross-process race run by the tests of `larder` and of `larder-object-store`:
/// [`PROCESSES`](race::PROCESSES) copies of the test binary, each with
/// [`TASKS_PER_PROCESS`](race::TASKS_PER_PROCESS) tasks doing
/// [`INCREMENTS_PER_TASK`](race::INCREMENTS_PER_TASK) read-modify-write increments of one
/// counter.
pub mod race {
    /// Worker processes racing on one counter.
    pub const PROCESSES: u32 = 2;
    /// Tasks in each worker process.
    pub const TASKS_PER_PROCESS: u32 = 4;
    /// Increments each task makes.
    pub const INCREMENTS_PER_TASK: u32 = 25;
    /// What the counter must read once every worker is done.
    pub const TOTAL: u64 = (PROCESSES * TASKS_PER_PROCESS * INCREMENTS_PER_TASK) as u64;

    /// The multi-threaded runtime a race test (parent and workers) runs on.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    }
}
