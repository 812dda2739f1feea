//! The object-store drivers against their emulators: s3 at `LARDER_TEST_S3_URL` (moto in CI)
//! and azure at `LARDER_TEST_AZURE_URL` (Azurite in CI). For each: the conformance kit, then
//! proof that the backend itself refuses a stale `If-Match` and a second create, which is what
//! makes the driver's writes atomic (and the race test a test of the backend's guard).

#![cfg(any(feature = "s3", feature = "azure"))]

/// The tests of one object-store driver: `$driver` is its module in
/// `larder::drivers::objstore`, `$var` the variable naming the emulator.
macro_rules! objstore_tests {
    ($driver:ident, $feature:literal, $var:literal) => {
        #[cfg(feature = $feature)]
        mod $driver {
            use std::sync::Arc;

            use larder::conformance::{fresh_prefix, key, skip_or_fail};
            use larder::drivers::objstore::{$driver, ObjStore};
            use larder::{Error, Key, Store, StoreExt};
            use object_store::{PutMode, PutOptions, UpdateVersion};

            const NAME: &str = stringify!($driver);

            fn url() -> Option<url::Url> {
                match std::env::var($var) {
                    Ok(u) => Some(url::Url::parse(&u).expect(concat!($var, " is a URL"))),
                    Err(_) => skip_or_fail(NAME, concat!($var, " is not set")),
                }
            }

            async fn open_store() -> Option<ObjStore> {
                let store = match $driver::from_url(&url()?) {
                    Ok(s) => s,
                    Err(e) => return skip_or_fail(NAME, e),
                };
                // Reachable? (A bucket listing fails fast when the emulator is down.)
                match store.list(larder::ListOptions::prefix("kit/probe/")).await {
                    Ok(_) => Some(store),
                    Err(e) => skip_or_fail(NAME, e),
                }
            }

            async fn factory() -> Option<Arc<dyn Store>> {
                Some(Arc::new(open_store().await?))
            }

            ::larder::conformance_tests!(factory());

            /// The kit again through `larder::open`.
            mod via_open {
                use super::*;

                async fn factory() -> Option<Arc<dyn Store>> {
                    let url = url()?;
                    match larder::open(url.as_str()).await {
                        Ok(s) => Some(s),
                        Err(e) => skip_or_fail(NAME, e),
                    }
                }

                ::larder::conformance_tests!(factory());
            }

            /// The emulator refuses a PUT with an `If-Match` on a backend ETag that is no longer current,
            /// and a create-only PUT on an existing blob: the race test above is then a test of the
            /// backend's guard, not of luck.
            #[tokio::test]
            async fn backend_refuses_stale_if_match() {
                let Some(store) = open_store().await else {
                    return;
                };
                backend_guard(&store, &key(&fresh_prefix(&format!("{NAME}_guard")), "k")).await;
            }

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
                let foreign_prefix = fresh_prefix(&format!("{NAME}_foreign"));
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
        }
    };
}

objstore_tests!(s3, "s3", "LARDER_TEST_S3_URL");
objstore_tests!(azure, "azure", "LARDER_TEST_AZURE_URL");
