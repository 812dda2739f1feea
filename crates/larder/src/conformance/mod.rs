//! The conformance kit: async checks over any [`Store`], run by every driver against a real
//! backend. Each check panics with a message on the first behaviour that is wrong.
//!
//! Behind the `conformance` feature: turn it on in the dev-dependencies of a crate whose tests
//! run the kit (`larder = { version = "…", features = ["conformance"] }`).
//!
//! A driver's tests use [`conformance_tests!`](crate::conformance_tests) to get one `#[test]`
//! per check:
//!
//! ```text
//! async fn store() -> Option<Arc<dyn Store>> { Some(Arc::new(MemoryStore::new())) }
//! larder::conformance_tests!(store());
//! ```
//!
//! Each check works under a fresh key prefix, so the checks can run in parallel against one
//! shared backend (one database, one bucket).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::error::Error;
use crate::etag::ETag;
use crate::key::Key;
use crate::list::ListOptions;
use crate::meta::Meta;
use crate::precondition::{ETagCondition, IfRange, Preconditions};
use crate::range::ByteRange;
use crate::store::{DeleteOptions, GetOptions, HeadOptions, PutOptions, Store};
use crate::StoreExt;

mod checks;
pub use checks::*;
mod networked;
pub use networked::{racing_deletes_and_swaps, two_stores_see_the_same_objects};
mod support;
pub use support::{assert_urls_refused, delimited, env_url, ok_or_skip, race, with_query, Holding};
#[cfg(feature = "memory")]
mod reference;
#[cfg(feature = "memory")]
pub use reference::{
    listing_matches_reference, listing_matches_reference_at_top,
    listing_matches_reference_backend_prefixes, same_pages, same_pages_every_way,
};

/// Expands to one `#[tokio::test]` per conformance check. `$factory` is an expression giving
/// `impl Future<Output = Option<Arc<dyn Store>>>`; `None` skips the test (the factory prints
/// why, see [`skip_or_fail`]).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            round_trip, same_bytes_same_etag, metadata, overwrite, ttl, listing, list_paging,
            put_preconditions, read_preconditions, head_preconditions, delete_preconditions,
            ranges, if_range, unsupported_conditions_refused, expected_digest,
            aborted_body_stores_nothing, invalid_keys_refused, cas_race, version_stamps,
            get_now_agrees_with_get, get_version_now_agrees_with_get);
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(store) = $factory.await else { return };
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// For a test whose backend is not reachable: fails when `LARDER_REQUIRE_SERVICES=1` (as in
/// CI), otherwise prints why the test is skipped. Returns `None` so a factory can
/// `return skip_or_fail(...)`.
pub fn skip_or_fail<T>(service: &str, reason: impl std::fmt::Display) -> Option<T> {
    if std::env::var("LARDER_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{service} is required (LARDER_REQUIRE_SERVICES=1) but unavailable: {reason}");
    }
    eprintln!("SKIPPED: {service} unavailable: {reason}");
    None
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A prefix no other check (in this or another process) uses.
pub fn fresh_prefix(check: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("kit/{check}/{}-{nanos:x}-{n}", std::process::id())
}

/// `prefix/name` as a key.
pub fn key(prefix: &str, name: &str) -> Key {
    Key::new(format!("{prefix}/{name}")).expect("kit keys are valid")
}

/// Runs `n` read-modify-write increments of the decimal counter at `key` with `If-Match`
/// retries. Returns how many attempts lost a race. Shared by the in-process race and the
/// cross-process race tests.
pub async fn increment(store: &dyn Store, key: &Key, n: u32) -> Result<u32, Error> {
    let mut conflicts = 0;
    for _ in 0..n {
        let (_, lost) = store
            .update(key, |cur| {
                let v: u64 = cur
                    .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                    .unwrap_or(0);
                Bytes::from((v + 1).to_string())
            })
            .await?;
        conflicts += lost;
    }
    Ok(conflicts)
}

/// The decimal counter at `key` (0 when missing).
pub async fn read_counter(store: &dyn Store, key: &Key) -> u64 {
    match store.get_bytes(key).await {
        Ok((b, _)) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
        Err(Error::NotFound { .. }) => 0,
        Err(e) => panic!("reading counter {key}: {e}"),
    }
}

/// Shorthands used by the checks.
pub(crate) fn put_opts(p: Preconditions) -> PutOptions {
    PutOptions {
        preconditions: p,
        ..Default::default()
    }
}

pub(crate) fn get_opts(p: Preconditions) -> GetOptions {
    GetOptions {
        preconditions: p,
        ..Default::default()
    }
}

pub(crate) fn tags(list: &[&ETag]) -> Option<ETagCondition> {
    Some(ETagCondition::Tags(
        list.iter().map(|t| (*t).clone()).collect(),
    ))
}

pub(crate) fn weak_of(tag: &ETag) -> ETag {
    ETag::weak(tag.opaque()).unwrap()
}

pub(crate) fn other_tag() -> ETag {
    ETag::of(b"certainly not the content of any kit object")
}

/// Asserts `r` is `PreconditionFailed` and that it carries the current ETag (or none).
pub(crate) fn assert_412<T: std::fmt::Debug>(
    r: Result<T, Error>,
    current: Option<&ETag>,
    what: &str,
) {
    match r {
        Err(Error::PreconditionFailed { current: got }) => assert_eq!(
            got.as_ref().map(|m| &m.etag),
            current,
            "{what}: 412 must carry the current ETag"
        ),
        other => panic!("{what}: expected PreconditionFailed, got {other:?}"),
    }
}

/// Asserts `r` is `NotModified` carrying the current metadata.
pub(crate) fn assert_304<T: std::fmt::Debug>(r: Result<T, Error>, current: &Meta, what: &str) {
    match r {
        Err(Error::NotModified(m)) => {
            assert_eq!(
                m.etag, current.etag,
                "{what}: 304 must carry the stored ETag"
            );
            assert_eq!(
                m.content_type, current.content_type,
                "{what}: 304 carries stored headers"
            );
        }
        other => panic!("{what}: expected NotModified, got {other:?}"),
    }
}

pub(crate) fn assert_unsupported<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    assert!(
        matches!(r, Err(Error::Unsupported { .. })),
        "{what}: expected Unsupported, got {r:?}"
    );
}

/// `r` is `NotFound`.
pub(crate) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    assert!(
        matches!(r, Err(Error::NotFound { .. })),
        "{what}: expected NotFound, got {r:?}"
    );
}

/// A body streamed in chunks of `chunk` bytes.
pub fn chunked(data: Bytes, chunk: usize) -> Body {
    let chunks: Vec<Result<Bytes, Error>> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}

/// Deterministic pseudo-random bytes.
pub(crate) fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub(crate) async fn body_of(r: crate::store::GetResult) -> Bytes {
    let mut out = Vec::new();
    let mut s = r.body;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("body chunk"));
    }
    out.into()
}
