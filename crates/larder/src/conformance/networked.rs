//! Checks for stores on a networked backend (one server, many stores opened on it), not in
//! [`conformance_tests!`](crate::conformance_tests) because they need two stores or a
//! multi-threaded runtime: run by the tests of the redis and nats drivers.

use super::*;

/// A value written through `a` is seen, with the same ETag, through `b` (opened separately on
/// the same backend, with its own connection); a swap through one is a conflict for the other.
pub async fn two_stores_see_the_same_objects(a: &dyn Store, b: &dyn Store, check: &str) {
    let p = fresh_prefix(check);
    let k = key(&p, "shared");
    let written = a.put_bytes(&k, "from a".into()).await.unwrap();
    let (data, meta) = b.get_bytes(&k).await.unwrap();
    assert_eq!(&data[..], b"from a");
    assert_eq!(meta, written, "the same meta, ETag included");
    let swapped = b.swap(&k, &written.etag, "from b".into()).await.unwrap();
    match a.swap(&k, &written.etag, "stale".into()).await {
        Err(Error::PreconditionFailed { current }) => {
            assert_eq!(current.unwrap().etag, swapped.etag)
        }
        other => panic!("{other:?}"),
    }
    let listed = a.list(ListOptions::prefix(format!("{p}/"))).await.unwrap();
    assert_eq!(listed.objects, [swapped]);
}

/// Conditional deletes racing conditional swaps on one key, 20 rounds: each If-Match operation
/// succeeds only on the version it read, so exactly one of each competing pair wins. Wants a
/// multi-threaded runtime.
pub async fn racing_deletes_and_swaps(store: Arc<dyn Store>, check: &str) {
    let p = fresh_prefix(check);
    let k = key(&p, "obj");
    for round in 0..20 {
        let v = store
            .put_bytes(&k, Bytes::from(format!("v{round}")))
            .await
            .unwrap();
        let (s1, s2) = (store.clone(), store.clone());
        let (k1, k2, e1, e2) = (k.clone(), k.clone(), v.etag.clone(), v.etag.clone());
        let del = tokio::spawn(async move {
            let opts = DeleteOptions {
                preconditions: Preconditions::if_match(e1),
            };
            s1.delete(&k1, opts).await
        });
        let swap = tokio::spawn(async move {
            s2.swap(&k2, &e2, Bytes::from(format!("swapped{round}")))
                .await
        });
        let (d, s) = (del.await.unwrap(), swap.await.unwrap());
        assert!(
            d.is_ok() != s.is_ok(),
            "round {round}: exactly one wins: {d:?} {s:?}"
        );
        let now = store.stat(&k).await.unwrap();
        if d.is_ok() {
            assert!(now.is_none());
        } else {
            assert_eq!(now.unwrap().etag, s.unwrap().etag);
        }
    }
}

/// For a driver of a networked backend: expands to
/// [`conformance_tests!`](crate::conformance_tests) over the store, then one `#[tokio::test]` per
/// check of this module. `$factory` is an expression giving `impl Future<Output = Option<S>>`
/// for a concrete store type `S` (`None` skips; evaluated twice for the two-store check),
/// `$check` a literal naming the driver in the key prefixes.
#[macro_export]
macro_rules! networked_tests {
    ($factory:expr, $check:literal) => {
        $crate::conformance_tests!(async {
            let store: ::std::sync::Arc<dyn $crate::Store> = ::std::sync::Arc::new($factory.await?);
            Some(store)
        });

        /// A value written through one store is seen, with the same ETag, through another
        /// opened separately (its own connection); a swap through one is a conflict for the
        /// other.
        #[::tokio::test]
        async fn two_stores_see_the_same_objects() {
            let (Some(a), Some(b)) = ($factory.await, $factory.await) else {
                return;
            };
            let check = concat!($check, "_two");
            $crate::conformance::two_stores_see_the_same_objects(&a, &b, check).await;
        }

        /// Conditional deletes racing conditional swaps on one key: each If-Match operation
        /// succeeds only on the version it read, so exactly one of each competing pair wins.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn racing_deletes_and_swaps() {
            let Some(store) = $factory.await else { return };
            let store = ::std::sync::Arc::new(store);
            $crate::conformance::racing_deletes_and_swaps(store, concat!($check, "_del_race"))
                .await;
        }
    };
}
