//! The object-store drivers against their emulators: s3 at `LARDER_TEST_S3_URL` (moto in CI)
//! and `LARDER_TEST_S3_ALT_URL` (SeaweedFS in CI), azure at `LARDER_TEST_AZURE_URL` (Azurite in
//! CI). For each: the conformance kit; proof that the backend itself refuses a stale `If-Match`
//! and a second create on PUT, a stale `If-Match` on DELETE, and a stale condition on the
//! completion of a multipart upload, which is what makes the driver's writes atomic (and the
//! race test a test of the backend's guard); and a 64 MiB multipart round trip.

#![cfg(any(feature = "s3", feature = "azure"))]

/// The tests of one object-store driver against one server: `$module` names the test module,
/// `$feature` the driver's cargo feature, `$var` the variable naming
/// the server, and `$gaps` a variable listing conditions the server is known to ignore
/// (comma-separated: `complete-if-match`, the server ignores `If-Match` on the completion of a
/// multipart upload; `complete-race`, it checks the completion's condition without excluding a
/// concurrent completion), whose checks are then skipped with a printed reason instead of
/// failing.
macro_rules! objstore_tests {
    ($module:ident, $feature:literal, $var:literal, $gaps:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use std::sync::Arc;

            use larder::conformance::{fresh_prefix, key, skip_or_fail};
            use larder::drivers::objstore::native::{Guard, NativeError};
            use larder::drivers::objstore::ObjStore;
            use larder::{Error, Key, Store, StoreExt};
            use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

            const NAME: &str = stringify!($module);

            /// Whether the server is declared to ignore `gap`.
            fn known_gap(gap: &str) -> bool {
                let declared = std::env::var($gaps).unwrap_or_default();
                let known = declared.split(',').any(|g| g.trim() == gap);
                if known {
                    println!("{NAME}: skipped the {gap} check: {} declares the server ignores it", $gaps);
                }
                known
            }

            fn url() -> Option<url::Url> {
                match std::env::var($var) {
                    Ok(u) => Some(url::Url::parse(&u).expect(concat!($var, " is a URL"))),
                    Err(_) => skip_or_fail(NAME, concat!($var, " is not set")),
                }
            }

            async fn open_store() -> Option<ObjStore> {
                let store = match ObjStore::from_url(url()?.as_str()).await {
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

            fn when(preconditions: larder::Preconditions) -> larder::PutOptions {
                larder::PutOptions {
                    preconditions,
                    ..Default::default()
                }
            }

            /// A body of `len` deterministic bytes, streamed in 1 MiB chunks (as a server would
            /// pass an upload on), with its bytes for comparison.
            fn big_body(len: usize, seed: u8) -> (larder::Body, bytes::Bytes) {
                let data: bytes::Bytes = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                    .collect::<Vec<u8>>()
                    .into();
                let chunks: Vec<larder::Result<bytes::Bytes>> = (0..len)
                    .step_by(1 << 20)
                    .map(|o| Ok(data.slice(o..(o + (1 << 20)).min(len))))
                    .collect();
                (larder::Body::from_stream(futures::stream::iter(chunks)), data)
            }

            /// 64 MiB round-trips through a multipart upload, created with `If-None-Match: *` and
            /// replaced with `If-Match`, and reads back byte for byte with its content ETag.
            #[tokio::test]
            async fn multipart_round_trip_64_mib() {
                let Some(store) = open_store().await else {
                    return;
                };
                let k = key(&fresh_prefix(&format!("{NAME}_multipart")), "big");
                let (body, data) = big_body(64 << 20, 1);
                let created = store
                    .put(&k, body, when(larder::Preconditions::if_absent()))
                    .await
                    .unwrap();
                assert!(created.created);
                assert_eq!(created.meta.etag, larder::ETag::of(&data));
                assert_eq!(created.meta.size, 64 << 20);
                let (got, meta) = store.get_bytes(&k).await.unwrap();
                assert!(got == data, "the 64 MiB body came back different");
                assert_eq!(meta.etag, created.meta.etag);
                if $feature == "s3" {
                    // S3 marks a multipart object's ETag with its part count.
                    let backend = store.backend().head(&store.path(&k).unwrap()).await.unwrap();
                    assert!(
                        backend.e_tag.as_deref().is_some_and(|e| e.contains("-8")),
                        "{backend:?}"
                    );
                }
                let (body, data2) = big_body((64 << 20) + 3, 2);
                let replaced = store
                    .put(&k, body, when(larder::Preconditions::if_match(created.meta.etag.clone())))
                    .await
                    .unwrap();
                assert!(!replaced.created);
                let (got, _) = store.get_bytes(&k).await.unwrap();
                assert!(got == data2, "the replacement came back different");
                // A stale If-Match is refused before anything is uploaded, and changes nothing.
                let (body, _) = big_body(16 << 20, 3);
                let r = store
                    .put(&k, body, when(larder::Preconditions::if_match(created.meta.etag)))
                    .await;
                assert!(matches!(r, Err(Error::PreconditionFailed { .. })), "{r:?}");
                assert_eq!(store.head(&k, Default::default()).await.unwrap().etag, replaced.meta.etag);
                // Emulators keep everything in memory: leave nothing big behind.
                store.delete(&k, Default::default()).await.unwrap();
            }

            /// The condition is enforced at completion by the backend: a write decided on one
            /// version, whose blob changes after the decision and before the completion request,
            /// is refused by the backend, decided again, and fails its precondition.
            #[tokio::test]
            async fn multipart_condition_enforced_at_completion() {
                let Some(plain) = open_store().await else {
                    return;
                };
                let plain = Arc::new(plain);
                let p = fresh_prefix(&format!("{NAME}_completion"));
                for (k, create_only) in [(key(&p, "update"), false), (key(&p, "create"), true)] {
                    if !create_only && known_gap("complete-if-match") {
                        continue;
                    }
                    let before = if create_only {
                        None
                    } else {
                        Some(plain.put_bytes(&k, "before".into()).await.unwrap().etag)
                    };
                    // The intruder writes once, in the window the hook opens.
                    let fired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                    let store = ObjStore::from_url(url().unwrap().as_str()).await.unwrap().with_before_completion({
                        let (plain, k, fired) = (plain.clone(), k.clone(), fired.clone());
                        move || {
                            let (plain, k, fired) = (plain.clone(), k.clone(), fired.clone());
                            Box::pin(async move {
                                if fired.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                                    plain.put_bytes(&k, "intruder".into()).await.unwrap();
                                }
                            })
                        }
                    });
                    let opts = match &before {
                        Some(etag) => when(larder::Preconditions::if_match(etag.clone())),
                        None => when(larder::Preconditions::if_absent()),
                    };
                    let (body, _) = big_body(9 << 20, 4);
                    let r = store.put(&k, body, opts).await;
                    assert!(
                        matches!(r, Err(Error::PreconditionFailed { .. })),
                        "create_only={create_only}: the backend let a stale completion through: {r:?}"
                    );
                    assert_eq!(fired.load(std::sync::atomic::Ordering::SeqCst), 1);
                    assert_eq!(&plain.get_bytes(&k).await.unwrap().0[..], b"intruder");
                }
            }

            /// Large writes racing on one key: unconditional ones all succeed and the blob is one
            /// of them whole (on Azure, a commit discards the other writers' uncommitted blocks,
            /// which are then put again); swaps on the same ETag have exactly one winner.
            #[tokio::test]
            async fn multipart_writers_race() {
                let Some(store) = open_store().await else {
                    return;
                };
                let store = Arc::new(store);
                let k = key(&fresh_prefix(&format!("{NAME}_multipart_race")), "k");
                // Each round writes bodies of its own (`seed`): a swap that rewrote the current
                // bytes would keep the ETag, and a second swap on it would rightly succeed too.
                let race = |opts: fn(&larder::ETag) -> larder::PutOptions, base: larder::ETag, seed: u8| {
                    let tasks: Vec<_> = (0..3u8)
                        .map(|i| {
                            let (store, k, base) = (store.clone(), k.clone(), base.clone());
                            tokio::spawn(async move {
                                let (body, data) = big_body((9 << 20) + i as usize, seed + i);
                                (store.put(&k, body, opts(&base)).await, data)
                            })
                        })
                        .collect();
                    futures::future::join_all(tasks)
                };
                let base = store.put_bytes(&k, "base".into()).await.unwrap().etag;
                let results = race(|_| larder::PutOptions::default(), base, 10).await;
                let (now, meta) = store.get_bytes(&k).await.unwrap();
                let mut bodies = Vec::new();
                for r in results {
                    let (r, data) = r.unwrap();
                    r.unwrap();
                    bodies.push(data);
                }
                assert!(bodies.contains(&now), "the blob is none of the bodies written whole");
                assert_eq!(meta.etag, larder::ETag::of(&now));
                if known_gap("complete-if-match") || known_gap("complete-race") {
                    return;
                }

                let results = race(|e| when(larder::Preconditions::if_match(e.clone())), meta.etag, 20).await;
                let mut won = 0;
                for r in results {
                    match r.unwrap() {
                        (Ok(_), data) => {
                            won += 1;
                            assert!(store.get_bytes(&k).await.unwrap().0 == data);
                        }
                        (Err(Error::PreconditionFailed { .. }), _) => {}
                        (Err(e), _) => panic!("{e}"),
                    }
                }
                assert_eq!(won, 1, "exactly one swap on the same ETag wins");
                store.delete(&k, Default::default()).await.unwrap();
            }

            /// The backend itself refuses a DELETE with a stale `If-Match` (what makes the
            /// driver's conditional delete atomic), and honours a current one.
            #[tokio::test]
            async fn backend_refuses_stale_delete() {
                let Some(store) = open_store().await else {
                    return;
                };
                let native = store.native().expect("native operations").clone();
                let k = key(&fresh_prefix(&format!("{NAME}_delete_guard")), "k");
                let path = store.path(&k).unwrap();
                store.put_bytes(&k, "one".into()).await.unwrap();
                let old = store.backend().head(&path).await.unwrap().e_tag.unwrap();
                store.put_bytes(&k, "two".into()).await.unwrap();
                let r = native.delete(&path, &Guard::Match(old)).await;
                assert!(matches!(r, Err(NativeError::Changed)), "{r:?}");
                assert_eq!(&store.get_bytes(&k).await.unwrap().0[..], b"two");
                let current = store.backend().head(&path).await.unwrap().e_tag.unwrap();
                native.delete(&path, &Guard::Match(current)).await.unwrap();
                assert!(store.stat(&k).await.unwrap().is_none());
            }

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

// In CI: moto, which ignores If-Match on CompleteMultipartUpload (declared in .ci/services.d).
objstore_tests!(s3, "s3", "LARDER_TEST_S3_URL", "LARDER_TEST_S3_GAPS");
// In CI: SeaweedFS, a second S3 implementation, which enforces every condition, but checks the
// completion's without a lock (declared in .ci/services.d).
objstore_tests!(
    s3_alt,
    "s3",
    "LARDER_TEST_S3_ALT_URL",
    "LARDER_TEST_S3_ALT_GAPS"
);
// In CI: Azurite.
objstore_tests!(
    azure,
    "azure",
    "LARDER_TEST_AZURE_URL",
    "LARDER_TEST_AZURE_GAPS"
);
