//! object_store's own integration suite (its `integration` feature) against
//! `LarderObjectStore` over every Larder driver: memory, fs, sqlite, postgres, mysql, redis,
//! nats, s3 (`LARDER_TEST_S3_URL`, moto in CI, and `LARDER_TEST_S3_ALT_URL`, SeaweedFS),
//! azure (`LARDER_TEST_AZURE_URL`, Azurite), http (a live `larder serve` started here) and a
//! tiered memory → fs stack; plus, per driver, multipart uploads committed with a `Create` or
//! `Update` condition.
//!
//! Each test gets an empty store: a fresh one for the in-process drivers, and for the shared
//! servers a fixed table / bucket / prefix with the object_store under a unique mount prefix
//! (`LarderObjectStore::with_prefix`), so parallel runs cannot see each other's objects.
//!
//! A suite function whose objects are larger than the driver's size cap (NATS's payload
//! limit, MySQL's `max_allowed_packet`) cannot pass there; it is skipped with a printed reason
//! naming the function, the object size and the cap. None is skipped otherwise.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use larder::conformance::{fresh_prefix, skip_or_fail};
use larder::Store;
use larder_object_store::LarderObjectStore;

/// A store for one test, and what keeps its backing alive (temporary directories).
struct Fixture {
    store: LarderObjectStore,
    _keep: Vec<Box<dyn Any + Send>>,
}

impl Fixture {
    fn new(store: Arc<dyn Store>) -> Self {
        Fixture {
            store: LarderObjectStore::new(store),
            _keep: Vec::new(),
        }
    }

    /// A fixture over `store` that keeps `keep` (what backs the store) alive as long as it lives.
    fn keeping(store: Arc<dyn Store>, keep: impl Any + Send) -> Self {
        let mut f = Fixture::new(store);
        f._keep.push(Box::new(keep));
        f
    }

    /// Whether objects of `bytes` fit the driver; if not, says which function is skipped.
    fn fits(&self, name: &str, function: &str, bytes: u64) -> bool {
        match self.store.store().capabilities().max_object_size {
            Some(limit) if limit < bytes => {
                println!(
                    "SKIPPED: {name}::{function}: the suite writes objects of {bytes} bytes, over \
                     this store's size cap of {limit} bytes (a Larder rule the suite cannot meet)"
                );
                false
            }
            _ => true,
        }
    }
}

fn env(name: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) => Some(u),
        Err(_) => skip_or_fail(name, format!("{var} is not set")),
    }
}

fn with_query(url: &str, q: &str) -> String {
    if q.is_empty() {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

/// A shared server's store, reachable, with this test's objects under a unique prefix.
async fn shared(name: &str, url: Option<String>) -> Option<Fixture> {
    let store = match larder::open(&url?).await {
        Ok(s) => s,
        Err(e) => return skip_or_fail(name, e),
    };
    if let Err(e) = store.list(larder::ListOptions::prefix("kit/probe/")).await {
        return skip_or_fail(name, e);
    }
    let store = LarderObjectStore::new(store)
        .with_prefix(&fresh_prefix(&format!("objstore-{name}")))
        .unwrap();
    Some(Fixture {
        store,
        _keep: Vec::new(),
    })
}

async fn memory(_: &str) -> Option<Fixture> {
    Some(Fixture::new(Arc::new(
        larder::drivers::memory::MemoryStore::new(),
    )))
}

/// An fs store in a fresh temporary directory, and the directory.
async fn fs_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = larder::drivers::fs::FsStore::open(larder::drivers::fs::FsConfig::new(
        dir.path().join("store"),
    ))
    .await
    .unwrap();
    (Arc::new(store), dir)
}

async fn fs(_: &str) -> Option<Fixture> {
    let (store, dir) = fs_store().await;
    Some(Fixture::keeping(store, dir))
}

async fn sqlite(_: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/objects.db", dir.path().display());
    Some(Fixture::keeping(larder::open(&url).await.unwrap(), dir))
}

/// The networked store named by the environment variable `var` (skipped when unset), its URL
/// with `query` added.
async fn networked(name: &str, var: &str, query: &str) -> Option<Fixture> {
    let url = env(name, var)?;
    shared(name, Some(with_query(&url, query))).await
}

/// A live `larder serve` over a fresh memory store, reached through the http driver.
async fn http(_: &str) -> Option<Fixture> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backing = Arc::new(larder::drivers::memory::MemoryStore::new());
    let handle = larder_server::spawn(listener, backing, larder_server::Config::default());
    let store = larder::open(&handle.url()).await.unwrap();
    Some(Fixture::keeping(store, handle))
}

/// memory → fs, the fs tier authoritative.
async fn tiered(_: &str) -> Option<Fixture> {
    let (fs, dir) = fs_store().await;
    let memory: Arc<dyn Store> = Arc::new(larder::drivers::memory::MemoryStore::new());
    let store = larder::tiered::TieredStore::with_stores(vec![memory, fs], Duration::from_secs(30))
        .unwrap();
    Some(Fixture::keeping(Arc::new(store), dir))
}

/// The largest object each size-heavy suite function writes, in bytes.
mod sizes {
    pub const STREAM_GET: u64 = 7 * 3_200_000;
    pub const MULTIPART: u64 = 2 * 5 * 1024 * 1024;
    pub const PUT_PART_OUT_OF_ORDER: u64 = 2 * 5 * 1024 * 1024 + 4;
    pub const MULTIPART_OUT_OF_ORDER: u64 = 3 * 5 * 1024 * 1024;
    pub const MULTIPART_RACE: u64 = 5 * 5_300_002;
}

/// Multipart uploads whose commit carries a condition: a `Create` loses to an object created
/// while its parts were uploading (and leaves that object alone), an `Update` from a stale
/// version loses, an `Update` from the current one wins; parts are small enough for every
/// driver's size cap.
async fn conditional_multipart(store: &LarderObjectStore) {
    use object_store::{
        Error, ObjectStoreExt, PutMode, PutMultipartOptions, PutPayload, UpdateVersion,
    };
    let path = object_store::path::Path::from("manifest/current");
    let part = |b: u8| PutPayload::from(vec![b; 64 * 1024]);
    let mut create = store
        .put_multipart_mode(&path, PutMode::Create, PutMultipartOptions::default())
        .await
        .unwrap();
    create.put_part(part(b'a')).await.unwrap();
    create.put_part(part(b'b')).await.unwrap();
    // Another writer creates the path before the upload completes.
    let theirs = store.put(&path, "theirs".into()).await.unwrap();
    let err = create.complete().await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let got = store.get(&path).await.unwrap();
    assert_eq!(got.meta.e_tag, theirs.e_tag);
    assert_eq!(got.bytes().await.unwrap(), "theirs");

    // An update from the current version wins, and its ETag is the content's.
    let mut update = store
        .put_multipart_mode(
            &path,
            PutMode::Update(UpdateVersion::from(theirs.clone())),
            PutMultipartOptions::default(),
        )
        .await
        .unwrap();
    update.put_part(part(b'c')).await.unwrap();
    update.put_part(part(b'd')).await.unwrap();
    let ours = update.complete().await.unwrap();
    let head = store.head(&path).await.unwrap();
    assert_eq!(head.e_tag, ours.e_tag);
    assert_eq!(head.size, 128 * 1024);
    let mut expected = vec![b'c'; 64 * 1024];
    expected.extend(vec![b'd'; 64 * 1024]);
    assert_eq!(
        ours.e_tag.as_deref(),
        Some(larder::ETag::of(&expected).to_string().as_str())
    );

    // The same update again is stale now, and changes nothing.
    let mut stale = store
        .put_multipart_mode(
            &path,
            PutMode::Update(UpdateVersion::from(theirs)),
            PutMultipartOptions::default(),
        )
        .await
        .unwrap();
    stale.put_part(part(b'e')).await.unwrap();
    let err = stale.complete().await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    assert_eq!(store.head(&path).await.unwrap().e_tag, ours.e_tag);

    // A create on a free path succeeds.
    let fresh = object_store::path::Path::from("manifest/next");
    let mut create = store
        .put_multipart_mode(&fresh, PutMode::Create, PutMultipartOptions::default())
        .await
        .unwrap();
    create.put_part(part(b'f')).await.unwrap();
    create.complete().await.unwrap();
    assert_eq!(store.head(&fresh).await.unwrap().size, 64 * 1024);
    store.delete(&path).await.unwrap();
    store.delete(&fresh).await.unwrap();
}

/// On a store whose size cap the suite's large functions exceed, a put one byte over the cap
/// is refused (`Generic`, with Larder's `TooLarge` inside) and stores nothing: the reason
/// those functions are skipped there.
async fn over_the_cap_is_refused(name: &str, store: &LarderObjectStore) {
    use object_store::ObjectStoreExt;
    let limit = match store.store().capabilities().max_object_size {
        Some(limit) if limit < sizes::MULTIPART_RACE => limit,
        other => {
            println!("{name}: no size cap below the suite's objects ({other:?}); nothing to check");
            return;
        }
    };
    let path = object_store::path::Path::from("too/large");
    let body = vec![7u8; limit as usize + 1];
    let err = store.put(&path, body.into()).await.unwrap_err();
    match &err {
        object_store::Error::Generic { source, .. } => assert!(
            matches!(
                source.downcast_ref::<larder::Error>(),
                Some(larder::Error::TooLarge { .. })
            ),
            "{err}"
        ),
        other => panic!("{other}"),
    }
    let err = store.head(&path).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
}

/// One `#[tokio::test]` per line `name [if size] => body;`: `body` runs with the module's
/// fixture bound to `$f`, and only when the backend takes objects of `size` bytes.
macro_rules! cases {
    ($f:ident; $($(#[$attr:meta])* $name:ident $(if $size:expr)? => $body:expr;)*) => {
        $(
            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let Some($f) = fixture().await else { return };
                $(if !$f.fits(NAME, stringify!($name), $size) {
                    return;
                })?
                $body;
            }
        )*
    };
}

/// The suite over one driver: `$module` names it, `$open` makes its fixture (called with the
/// module's name, then `$arg`s).
macro_rules! suite {
    ($module:ident, $open:ident $(($($arg:expr),*))?) => {
        mod $module {
            use super::*;
            use object_store::integration;

            const NAME: &str = stringify!($module);

            async fn fixture() -> Option<Fixture> {
                $open(NAME $($(, $arg)*)?).await
            }

            cases! { f;
                put_get_delete_list => integration::put_get_delete_list(&f.store).await;
                put_get_attributes => integration::put_get_attributes(&f.store).await;
                get_opts => integration::get_opts(&f.store).await;
                /// With update support on: includes its concurrent read-modify-write race.
                put_opts => integration::put_opts(&f.store, true).await;
                list_uses_directories_correctly =>
                    integration::list_uses_directories_correctly(&f.store).await;
                list_with_delimiter => integration::list_with_delimiter(&f.store).await;
                list_with_offset_exclusivity =>
                    integration::list_with_offset_exclusivity(&f.store).await;
                list_paginated => integration::list_paginated(&f.store, &f.store).await;
                stream_get if sizes::STREAM_GET => integration::stream_get(&f.store).await;
                get_nonexistent_object => {
                    let err = integration::get_nonexistent_object(&f.store, None)
                        .await
                        .unwrap_err();
                    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
                };
                rename_and_copy => integration::rename_and_copy(&f.store).await;
                copy_if_not_exists => integration::copy_if_not_exists(&f.store).await;
                copy_rename_nonexistent_object =>
                    integration::copy_rename_nonexistent_object(&f.store).await;
                multipart if sizes::MULTIPART =>
                    integration::multipart(&f.store, &f.store).await;
                multipart_with_opts if sizes::MULTIPART =>
                    integration::multipart_with_opts(&f.store, &f.store).await;
                multipart_put_part_out_of_order if sizes::PUT_PART_OUT_OF_ORDER =>
                    integration::multipart_put_part_out_of_order(&f.store, &f.store).await;
                multipart_out_of_order if sizes::MULTIPART_OUT_OF_ORDER =>
                    integration::multipart_out_of_order(&f.store).await;
                /// Two unconditional uploads to one path: the last to complete wins, whole.
                multipart_race_condition if sizes::MULTIPART_RACE =>
                    integration::multipart_race_condition(&f.store, true).await;
                over_the_size_cap => super::over_the_cap_is_refused(NAME, &f.store).await;
                conditional_multipart => super::conditional_multipart(&f.store).await;
            }
        }
    };
}

suite!(memory_store, memory);
suite!(fs_store, fs);
suite!(sqlite_store, sqlite);
suite!(
    postgres_store,
    networked("LARDER_TEST_POSTGRES_URL", "table=larder_objstore")
);
suite!(
    mysql_store,
    networked("LARDER_TEST_MYSQL_URL", "table=larder_objstore")
);
suite!(
    redis_store,
    networked("LARDER_TEST_REDIS_URL", "prefix=larder-objstore")
);
suite!(
    nats_store,
    networked("LARDER_TEST_NATS_URL", "bucket=larder-objstore")
);
suite!(s3_store, networked("LARDER_TEST_S3_URL", ""));
suite!(s3_alt_store, networked("LARDER_TEST_S3_ALT_URL", ""));
suite!(azure_store, networked("LARDER_TEST_AZURE_URL", ""));
suite!(http_store, http);
suite!(tiered_store, tiered);
