//! A listing check for drivers that implement their own scan: every page equals the memory
//! store's. Not in [`conformance_tests!`](crate::conformance_tests) because it makes hundreds of
//! listing calls, which is slow on backends whose listing is expensive (object stores).

use super::*;

/// Every page of every listing equals the memory store's (the reference) over the same keys,
/// including keys that are both objects and directories, odd bytes, and expired objects (some
/// the only member of their common prefix).
pub async fn listing_matches_reference(store: &dyn Store) {
    matches_reference(store, true).await
}

/// [`listing_matches_reference`] without the expired objects that are the only members of
/// their common prefix, for stores whose common prefixes are the backend's (listed while any
/// blob is under them, expired or not): object stores' delimited listings.
pub async fn listing_matches_reference_backend_prefixes(store: &dyn Store) {
    matches_reference(store, false).await
}

async fn matches_reference(store: &dyn Store, expired_prefixes: bool) {
    use crate::drivers::memory::MemoryStore;
    let reference = MemoryStore::new();
    let root = fresh_prefix("reference");
    let names = [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/d",
        "a/b0",
        "a/b-",
        "a/B",
        "a.b",
        "a0",
        "ab/c",
        "b",
        "b/a/a/a/a",
        "b/a/b",
        "b/b",
        "é",
        "é/x",
        "z z/1",
        "z z/2",
        "Z",
        "~",
        "%41",
        "*",
        "[x]",
    ];
    let k = |n: &str| key(&root, n);
    for name in names {
        let body = Bytes::from(name.to_owned());
        store.put_bytes(&k(name), body.clone()).await.unwrap();
        reference.put_bytes(&k(name), body).await.unwrap();
    }
    let short = PutOptions {
        ttl: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let expiring: &[&str] = if expired_prefixes {
        &["a/b/expired", "c/expired", "a/expired/x", "a/b/c/expired"]
    } else {
        &["a/b/expired", "a/b/c/expired"]
    };
    for name in expiring {
        store
            .put(&k(name), Body::from("x"), short.clone())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys = |p: &crate::list::ListPage| -> Vec<String> {
        p.objects.iter().map(|m| m.key.to_string()).collect()
    };
    for prefix in [
        "", "a", "a/", "a/b", "a/b/", "b/a/", "é", "z z/", "q/", "c/", "[",
    ] {
        let prefix = format!("{root}/{prefix}");
        for delimiter in [None, Some('/')] {
            for limit in [1, 2, 3, 7, 1000] {
                let mut opts = ListOptions {
                    prefix: prefix.clone(),
                    delimiter,
                    limit: Some(limit),
                    cursor: None,
                };
                let mut pages = 0;
                loop {
                    let got = store.list(opts.clone()).await.unwrap();
                    let want = reference.list(opts.clone()).await.unwrap();
                    let what = format!("prefix {prefix:?} delimiter {delimiter:?} limit {limit}");
                    assert_eq!(keys(&got), keys(&want), "{what}: objects");
                    assert_eq!(got.common_prefixes, want.common_prefixes, "{what}");
                    assert_eq!(got.next_cursor, want.next_cursor, "{what}: cursor");
                    for (g, w) in got.objects.iter().zip(&want.objects) {
                        assert_eq!((&g.etag, g.size), (&w.etag, w.size), "{what}");
                    }
                    pages += 1;
                    assert!(pages < 100);
                    match got.next_cursor {
                        Some(c) => opts.cursor = Some(c),
                        None => break,
                    }
                }
            }
            // Arbitrary cursors, not only those the store handed out.
            let cursors = names
                .iter()
                .copied()
                .chain(["a/", "a/b/", "b/a/a/", "a/b/c/d/e", "a/b/c/", "0", "zz"])
                .map(|c| format!("{root}/{c}"))
                .chain(["".to_string(), "kit/".to_string(), format!("{root}0")]);
            for cursor in cursors {
                let opts = ListOptions {
                    prefix: prefix.clone(),
                    delimiter,
                    limit: None,
                    cursor: Some(cursor.clone()),
                };
                let got = store.list(opts.clone()).await.unwrap();
                let want = reference.list(opts).await.unwrap();
                let what = format!("prefix {prefix:?} delimiter {delimiter:?} cursor {cursor}");
                assert_eq!(keys(&got), keys(&want), "{what}");
                assert_eq!(got.common_prefixes, want.common_prefixes, "{what}");
            }
        }
    }
}
