//! The azure driver against the Azure Blob emulator named by `LARDER_TEST_AZURE_URL` (Azurite in CI): the
//! conformance kit, then proof that the backend itself refuses a stale `If-Match` and a
//! second create, which is what makes the driver's writes atomic.

#![cfg(feature = "azure")]

use std::sync::Arc;

use larder::conformance::{fresh_prefix, key, skip_or_fail};
use larder::drivers::objstore::{azure, ObjStore};
use larder::{Error, Key, Store, StoreExt};
use object_store::{PutMode, PutOptions, UpdateVersion};

fn url() -> Option<url::Url> {
    match std::env::var("LARDER_TEST_AZURE_URL") {
        Ok(u) => Some(url::Url::parse(&u).expect("LARDER_TEST_AZURE_URL is a URL")),
        Err(_) => skip_or_fail("azure", "LARDER_TEST_AZURE_URL is not set"),
    }
}

async fn open_store() -> Option<ObjStore> {
    let store = match azure::from_url(&url()?) {
        Ok(s) => s,
        Err(e) => return skip_or_fail("azure", e),
    };
    // Reachable? (A bucket listing fails fast when the emulator is down.)
    match store.list(larder::ListOptions::prefix("kit/probe/")).await {
        Ok(_) => Some(store),
        Err(e) => skip_or_fail("azure", e),
    }
}

async fn factory() -> Option<Arc<dyn Store>> {
    Some(Arc::new(open_store().await?))
}

larder::conformance_tests!(factory());

/// The kit again through `larder::open`.
mod via_open {
    use super::*;

    async fn factory() -> Option<Arc<dyn Store>> {
        let url = url()?;
        match larder::open(url.as_str()).await {
            Ok(s) => Some(s),
            Err(e) => skip_or_fail("azure", e),
        }
    }

    larder::conformance_tests!(factory());
}

/// The emulator refuses a PUT with an `If-Match` on a backend ETag that is no longer current,
/// and a create-only PUT on an existing blob: the race test above is then a test of the
/// backend's guard, not of luck.
#[tokio::test]
async fn backend_refuses_stale_if_match() {
    let Some(store) = open_store().await else {
        return;
    };
    backend_guard(&store, &key(&fresh_prefix("azure_guard"), "k")).await;
}

/// Same as in the s3 test file.
async fn backend_guard(store: &ObjStore, k: &Key) {
    store.put_bytes(k, "one".into()).await.unwrap();
    let path = store.path(k).unwrap();
    let backend = store.backend();
    let old = backend.head(&path).await.unwrap();
    store.put_bytes(k, "two".into()).await.unwrap();
    let stale = PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: old.e_tag.clone(),
            version: old.version.clone(),
        }),
        ..Default::default()
    };
    let r = backend.put_opts(&path, "three".into(), stale).await;
    assert!(
        matches!(r, Err(object_store::Error::Precondition { .. })),
        "{r:?}"
    );
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let r = backend.put_opts(&path, "four".into(), create).await;
    assert!(
        matches!(r, Err(object_store::Error::AlreadyExists { .. })),
        "{r:?}"
    );
    assert_eq!(&store.get_bytes(k).await.unwrap().0[..], b"two");
    // A blob another tool wrote is refused, not served with a made-up ETag.
    let foreign_prefix = fresh_prefix("azure_foreign");
    let foreign = key(&foreign_prefix, "f");
    backend
        .put(&store.path(&foreign).unwrap(), "x".into())
        .await
        .unwrap();
    assert!(matches!(
        store.head(&foreign, Default::default()).await,
        Err(Error::Backend { .. })
    ));
    // ... and listing skips it.
    let page = store
        .list(larder::ListOptions::prefix(format!("{foreign_prefix}/")))
        .await
        .unwrap();
    assert!(page.objects.is_empty(), "{page:?}");
}
