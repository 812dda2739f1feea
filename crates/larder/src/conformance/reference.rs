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

/// [`listing_matches_reference`] with the keys at the top of the store instead of under a
/// fresh prefix (so the empty prefix lists them all), for a store that holds nothing else.
pub async fn listing_matches_reference_at_top(store: &dyn Store) {
    matches_reference_under(store, true, None).await
}

async fn matches_reference(store: &dyn Store, expired_prefixes: bool) {
    matches_reference_under(store, expired_prefixes, Some(fresh_prefix("reference"))).await
}

/// Every page `store` lists for `opts`, from the first to the last, equals the one `reference`
/// lists: the same objects (key, ETag, size), common prefixes and cursor.
pub async fn same_pages(store: &dyn Store, reference: &dyn Store, mut opts: ListOptions) {
    let mut pages = 0;
    loop {
        let got = store.list(opts.clone()).await.unwrap();
        let want = reference.list(opts.clone()).await.unwrap();
        let what = format!("{opts:?}");
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

/// [`same_pages`] for the listing of `prefix` without a delimiter and with `/`, each with pages
/// of 1, 2, 3, 7 and 1000 entries.
pub async fn same_pages_every_way(store: &dyn Store, reference: &dyn Store, prefix: &str) {
    for delimiter in [None, Some('/')] {
        for limit in [1, 2, 3, 7, 1000] {
            let opts = ListOptions {
                prefix: prefix.to_owned(),
                delimiter,
                limit: Some(limit),
                cursor: None,
            };
            same_pages(store, reference, opts).await;
        }
    }
}

/// The keys of a page's objects.
fn keys(page: &crate::list::ListPage) -> Vec<String> {
    page.objects.iter().map(|m| m.key.to_string()).collect()
}

/// The reference check with the keys under `root` (a fresh prefix), or at the top of the
/// store when `root` is `None`.
async fn matches_reference_under(store: &dyn Store, expired_prefixes: bool, root: Option<String>) {
    use crate::drivers::memory::MemoryStore;
    let reference = MemoryStore::new();
    let root = root.map_or(String::new(), |r| format!("{r}/"));
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
    let k = |n: &str| Key::new(format!("{root}{n}")).expect("kit keys are valid");
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
    for prefix in [
        "", "a", "a/", "a/b", "a/b/", "b/a/", "é", "z z/", "q/", "c/", "[",
    ] {
        let prefix = format!("{root}{prefix}");
        same_pages_every_way(store, &reference, &prefix).await;
        for delimiter in [None, Some('/')] {
            // Arbitrary cursors, not only those the store handed out.
            let cursors = names
                .iter()
                .copied()
                .chain(["a/", "a/b/", "b/a/a/", "a/b/c/d/e", "a/b/c/", "0", "zz"])
                .map(|c| format!("{root}{c}"))
                .chain([
                    "".to_string(),
                    "kit/".to_string(),
                    format!("{}0", root.trim_end_matches('/')),
                ]);
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
