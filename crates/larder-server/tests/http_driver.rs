//! The http driver against a live Larder server started in the test: the whole conformance kit
//! (including the CAS race) over a memory store and over an fs store, a race between separate
//! clients, and the typed errors of real 304/412/416/404 answers.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use larder::drivers::http::{HttpConfig, HttpError, HttpStore};
use larder::{
    ByteRange, ETag, Error, GetOptions, HeadOptions, Key, Preconditions, Store, StoreExt,
};
use larder_server::config::{Scope, TokenConfig};
use larder_server::Config;

/// Starts a server over `store` on 127.0.0.1:0 (running until the test's runtime ends) and
/// returns its base URL.
async fn serve(store: Arc<dyn Store>) -> String {
    serve_with(store, Config::default()).await
}

async fn serve_with(store: Arc<dyn Store>, config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = larder_server::spawn(listener, store, config);
    let url = handle.url();
    // Dropping the handle would stop the server; it runs until the test's runtime ends.
    std::mem::forget(handle);
    url
}

/// A client of a fresh server over a memory store, under a key prefix (so the prefix mapping
/// is exercised by every check).
async fn over_memory() -> Option<Arc<dyn Store>> {
    let url = serve(Arc::new(larder::drivers::memory::MemoryStore::new())).await;
    Some(
        larder::open(&format!("larder+{url}/kit-prefix"))
            .await
            .unwrap(),
    )
}

/// A client of a fresh server over an fs store in a temporary directory.
async fn over_fs() -> Option<Arc<dyn Store>> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let store = larder::open(&format!("fs://{}/store", dir.path().display()))
        .await
        .unwrap();
    let url = serve(store).await;
    Some(larder::open(&url).await.unwrap())
}

mod memory {
    larder::conformance_tests!(super::over_memory());
}

mod fs {
    larder::conformance_tests!(super::over_fs());
}

/// Four clients, each with its own connection pool (as four processes would be), race on one
/// counter through one server: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_race_between_separate_clients() {
    const CLIENTS: u32 = 4;
    const EACH: u32 = 25;
    let url = serve(Arc::new(larder::drivers::memory::MemoryStore::new())).await;
    let k = Key::new("race/counter").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let store = HttpStore::from_url(&url).await.unwrap();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            larder::conformance::increment(&store, &k, EACH).await
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap().unwrap();
    }
    let store = HttpStore::from_url(&url).await.unwrap();
    assert_eq!(
        larder::conformance::read_counter(&store, &k).await,
        u64::from(CLIENTS * EACH),
        "lost updates ({conflicts} conflicts retried)"
    );
}

/// Real 304/412/416/404 answers become the typed errors, with the metadata they carry.
#[tokio::test]
async fn live_statuses_are_typed() {
    let url = serve(Arc::new(larder::drivers::memory::MemoryStore::new())).await;
    let store = HttpStore::from_url(&url).await.unwrap();
    let k = Key::new("typed/obj").unwrap();
    let opts = larder::PutOptions {
        content_type: Some("text/plain".into()),
        metadata: [("owner".to_string(), "me".to_string())].into(),
        ..Default::default()
    };
    let v1 = store
        .put(&k, larder::Body::from("0123456789"), opts)
        .await
        .unwrap()
        .meta;
    let get = |opts: GetOptions| {
        let store = &store;
        let k = k.clone();
        async move { store.get(&k, opts).await.map(|r| r.meta) }
    };
    match get(GetOptions {
        preconditions: Preconditions {
            if_none_match: Some(larder::ETagCondition::tag(v1.etag.clone())),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    {
        Err(Error::NotModified(m)) => {
            assert_eq!(m.etag, v1.etag);
            assert_eq!(m.content_type.as_deref(), Some("text/plain"));
            assert_eq!(m.metadata, v1.metadata);
        }
        other => panic!("304: {other:?}"),
    }
    let stale = ETag::of(b"stale");
    for r in [
        get(GetOptions {
            preconditions: Preconditions::if_match(stale.clone()),
            ..Default::default()
        })
        .await,
        store
            .head(
                &k,
                HeadOptions {
                    preconditions: Preconditions::if_match(stale.clone()),
                },
            )
            .await,
        store.swap(&k, &stale, Bytes::from_static(b"x")).await,
        store.create(&k, Bytes::from_static(b"x")).await,
    ] {
        match r {
            Err(Error::PreconditionFailed { current: Some(m) }) => {
                assert_eq!(m.etag, v1.etag);
                assert_eq!(m.key, k);
            }
            other => panic!("412: {other:?}"),
        }
    }
    let r = get(GetOptions {
        range: Some(ByteRange::From(10)),
        ..Default::default()
    })
    .await;
    assert!(
        matches!(r, Err(Error::RangeNotSatisfiable { size: 10 })),
        "{r:?}"
    );
    let missing = Key::new("typed/missing").unwrap();
    assert!(matches!(
        store.get(&missing, GetOptions::default()).await,
        Err(Error::NotFound { key }) if key == "typed/missing"
    ));
    assert!(matches!(
        store.remove(&missing).await,
        Err(Error::NotFound { .. })
    ));
}

/// The driver reports the served store's capabilities (asked from the server), and reads the
/// 413's limit from the error's typed field: the server and the driver share `larder::wire`.
#[tokio::test]
async fn capabilities_and_limits_come_from_the_server() {
    let served = Arc::new(larder::drivers::memory::MemoryStore::new());
    let want = served.capabilities();
    let config = Config {
        max_object_size: 16,
        ..Config::default()
    };
    let url = serve_with(served, config).await;
    let store = HttpStore::from_url(&url).await.unwrap();
    let caps = store.capabilities();
    assert_eq!((caps.name, caps.atomic_scope), ("http", want.atomic_scope));
    assert_eq!(
        larder::Capabilities {
            name: want.name,
            ..caps.clone()
        },
        want
    );
    assert_eq!(store.fetch_capabilities().await.unwrap(), caps);
    // A client made without asking claims what the server's store decides, at cluster scope.
    let unasked = HttpStore::open(HttpConfig {
        fetch_capabilities: false,
        ..HttpConfig::from_url(&url).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        unasked.capabilities().atomic_scope,
        larder::AtomicScope::Cluster
    );
    let k = Key::new("limits/big").unwrap();
    let r = store.put_bytes(&k, Bytes::from(vec![b'x'; 17])).await;
    assert!(matches!(r, Err(Error::TooLarge { limit: 16 })), "{r:?}");
}

/// The token in the URL is sent as a bearer token; without it, or with a read-only token for
/// a write, the server's 401/403 come back as non-retryable backend errors carrying the status.
#[tokio::test]
async fn token_passing() {
    let config = Config {
        tokens: vec![
            TokenConfig {
                token: "write-secret-0123456789".into(),
                scope: Scope::Write,
                prefix: String::new(),
            },
            TokenConfig {
                token: "read-secret-0123456789".into(),
                scope: Scope::Read,
                prefix: String::new(),
            },
        ],
        ..Config::default()
    };
    let url = serve_with(
        Arc::new(larder::drivers::memory::MemoryStore::new()),
        config,
    )
    .await;
    let k = Key::new("auth/obj").unwrap();
    let status = |r: larder::Result<larder::Meta>| match r {
        Err(Error::Backend {
            source,
            retryable: false,
        }) => source.downcast_ref::<HttpError>().map(|h| h.status),
        other => panic!("expected a backend error, got {other:?}"),
    };
    let anonymous = HttpStore::from_url(&url).await.unwrap();
    assert_eq!(
        status(anonymous.put_bytes(&k, Bytes::from_static(b"v")).await),
        Some(401)
    );
    let writer = larder::open(&format!("{url}?token=write-secret-0123456789"))
        .await
        .unwrap();
    let put = writer
        .put_bytes(&k, Bytes::from_static(b"v"))
        .await
        .unwrap();
    let reader = HttpStore::from_url(&format!("larder+{url}?token=read-secret-0123456789"))
        .await
        .unwrap();
    assert_eq!(reader.get_bytes(&k).await.unwrap().1.etag, put.etag);
    assert_eq!(
        status(reader.put_bytes(&k, Bytes::from_static(b"w")).await),
        Some(403)
    );
}
