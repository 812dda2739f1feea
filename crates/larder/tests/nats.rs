//! The nats driver against the real JetStream server named by `LARDER_TEST_NATS_URL`: the
//! conformance kit, then what is specific to NATS KV: two separately opened stores, key
//! encoding, the size limit, TTL kept in the meta, racing conditional deletes.

#![cfg(feature = "nats")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder::conformance::{env_url, fresh_prefix, key, ok_or_skip, with_query};
use larder::drivers::nats::NatsStore;
use larder::{Body, DeleteOptions, Error, ListOptions, Preconditions, PutOptions, Store, StoreExt};

fn url() -> Option<String> {
    env_url("nats", "LARDER_TEST_NATS_URL")
}

async fn open_store() -> Option<NatsStore> {
    let url = with_query(&url()?, "bucket=larder-test");
    ok_or_skip("nats", NatsStore::from_url(&url).await)
}

larder::networked_tests!(open_store(), "nats");

/// The whole kit again through `larder::open`, on the default bucket.
mod via_open {
    use super::*;

    async fn store() -> Option<Arc<dyn Store>> {
        ok_or_skip("nats", larder::open(&url()?).await)
    }

    larder::conformance_tests!(store());
}

/// A put with `If-None-Match: *` (through `put`, so a test sees `PutResult::created`).
fn if_absent() -> PutOptions {
    PutOptions {
        preconditions: Preconditions::if_absent(),
        ..Default::default()
    }
}

/// Keys NATS could not hold as they are (dots, wildcards, spaces, non-ASCII) are stored, read
/// and listed as themselves, and a partial last prefix segment still filters.
#[tokio::test]
async fn any_valid_key_is_stored() {
    let Some(store) = open_store().await else {
        return;
    };
    let p = fresh_prefix("nats_keys");
    let names = [
        "*", ">", "a.b", ".hidden", "sp ace", "é/ü", "x=41", "UPPER", "upper", "a/b.c/d",
    ];
    // The longest key, every byte escaped: 3 KiB of subject.
    let long = "é".repeat((larder::key::MAX_KEY_LEN - p.len() - 1) / 2);
    let lk = key(&p, &long);
    store.put_bytes(&lk, "long".into()).await.unwrap();
    assert_eq!(store.get_bytes(&lk).await.unwrap().0, "long");
    store.remove(&lk).await.unwrap();
    for n in names {
        store
            .put_bytes(&key(&p, n), Bytes::from(n.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    for n in names {
        let (data, meta) = store.get_bytes(&key(&p, n)).await.unwrap();
        assert_eq!(&data[..], n.as_bytes());
        assert_eq!(meta.key, key(&p, n));
    }
    let all = store
        .list(ListOptions::prefix(format!("{p}/")))
        .await
        .unwrap();
    let mut want: Vec<String> = names.iter().map(|n| key(&p, n).to_string()).collect();
    want.sort();
    let got: Vec<String> = all.objects.iter().map(|m| m.key.to_string()).collect();
    assert_eq!(got, want, "every key, in byte order");
    let up = store
        .list(ListOptions::prefix(format!("{p}/up")))
        .await
        .unwrap();
    assert_eq!(up.objects.len(), 1, "partial last segment");
    let sub = store
        .list(ListOptions::prefix(format!("{p}/a/")))
        .await
        .unwrap();
    assert_eq!(sub.objects.len(), 1);
    assert_eq!(sub.objects[0].key, key(&p, "a/b.c/d"));
}

/// The limit is the server's max_payload less the header reserve; one byte more is refused.
#[tokio::test]
async fn size_limit_follows_max_payload() {
    let Some(store) = open_store().await else {
        return;
    };
    let caps = store.capabilities();
    let max = caps.max_object_size.expect("declared");
    assert!(max > 0 && max + larder::drivers::nats::HEADER_RESERVE <= 64 << 20);
    assert_eq!(caps.atomic_scope, larder::AtomicScope::Cluster);
    let p = fresh_prefix("nats_size");
    let k = key(&p, "max");
    let data = Bytes::from(vec![9u8; max as usize]);
    let big_meta = PutOptions {
        metadata: [("m".to_string(), "x".repeat(6000))].into(),
        ..Default::default()
    };
    store
        .put(&k, Body::from(data.clone()), big_meta)
        .await
        .expect("the largest object, with metadata near the reserve");
    assert_eq!(store.get_bytes(&k).await.unwrap().0, data);
    let huge_meta = PutOptions {
        metadata: [("m".to_string(), "x".repeat(9000))].into(),
        ..Default::default()
    };
    let r = store.put(&k, Body::from("x"), huge_meta).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let r = store
        .put(
            &k,
            Body::from(vec![0u8; max as usize + 1]),
            PutOptions::default(),
        )
        .await;
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    assert_eq!(store.get_bytes(&k).await.unwrap().0, data, "unchanged");
}

/// An expired object is absent for reads, conditions and listings, and a read of it removes it
/// from the bucket (conditionally on its revision).
#[tokio::test]
async fn ttl_is_kept_in_the_meta() {
    let Some(store) = open_store().await else {
        return;
    };
    let p = fresh_prefix("nats_ttl");
    let k = key(&p, "obj");
    let opts = PutOptions {
        ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    store.put(&k, Body::from("x"), opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.stat(&k).await.unwrap().is_none());
    let r = store.delete(&k, DeleteOptions::default()).await.map(|_| ());
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    let created = store.put(&k, Body::from("y"), if_absent()).await.unwrap();
    assert!(created.created);
    assert_eq!(
        store.get_bytes(&k).await.unwrap().0,
        "y",
        "the reaper never removes a newer version"
    );
}

/// A store's remembered revision is only a guess: when another store changed the key since,
/// a write decided on the remembered state is refused by the server and decided again on a
/// fresh read, both ways (a stale match fails, a match only the fresh state has succeeds).
#[tokio::test]
async fn remembered_revisions_are_rechecked() {
    let (Some(a), Some(b)) = (open_store().await, open_store().await) else {
        return;
    };
    let p = fresh_prefix("nats_remembered");
    let k = key(&p, "obj");
    let v1 = a.put_bytes(&k, "v1".into()).await.unwrap(); // a remembers v1
    let v2 = b.swap(&k, &v1.etag, "v2".into()).await.unwrap();
    match a.swap(&k, &v1.etag, "stale".into()).await {
        Err(Error::PreconditionFailed { current }) => assert_eq!(current.unwrap().etag, v2.etag),
        other => panic!("a stale remembered match must fail: {other:?}"),
    }
    let v3 = b.swap(&k, &v2.etag, "v3".into()).await.unwrap(); // a now remembers v2
    let v4 = a
        .swap(&k, &v3.etag, "v4".into())
        .await
        .expect("a match only the fresh state has");
    assert_eq!(b.get_bytes(&k).await.unwrap().1.etag, v4.etag);
    // Created and deleted elsewhere: a remembered "exists" must not block a create.
    b.remove(&k).await.unwrap();
    let created = a.put(&k, Body::from("again"), if_absent()).await.unwrap();
    assert!(created.created);
    let r = a
        .delete(
            &k,
            DeleteOptions {
                preconditions: Preconditions::if_match(v4.etag.clone()),
            },
        )
        .await;
    assert!(matches!(r, Err(Error::PreconditionFailed { .. })), "{r:?}");
    a.remove(&k).await.unwrap();
}

/// A store answers a read at a revision it remembers with the meta it remembers, not decoded
/// again (a message never changes); at any other revision, with the meta the message carries:
/// a version written elsewhere, even of the same bytes, is read with its own meta, and a store
/// that never saw a version reads the same meta as the store that wrote it.
#[tokio::test]
async fn reads_answer_the_meta_of_the_revision_read() {
    let (Some(a), Some(b)) = (open_store().await, open_store().await) else {
        return;
    };
    let k = key(&fresh_prefix("nats_meta"), "obj");
    let opts = |kind: &str| PutOptions {
        content_type: Some(format!("text/{kind}")),
        metadata: [("kind".to_string(), kind.to_string())].into(),
        ..Default::default()
    };
    let v1 = a
        .put(&k, Body::from("same"), opts("one"))
        .await
        .unwrap()
        .meta;
    assert_eq!(a.head(&k, Default::default()).await.unwrap(), v1);
    let v2 = b
        .put(&k, Body::from("same"), opts("two"))
        .await
        .unwrap()
        .meta;
    assert_eq!((&v1.etag, v1.size), (&v2.etag, v2.size));
    assert_ne!(v1, v2);
    assert_eq!(
        a.get_bytes(&k).await.unwrap(),
        (Bytes::from("same"), v2.clone())
    );
    assert_eq!(a.head(&k, Default::default()).await.unwrap(), v2);
    let c = open_store().await.unwrap();
    assert_eq!(c.head(&k, Default::default()).await.unwrap(), v2);
    a.remove(&k).await.unwrap();
}

#[tokio::test]
async fn bad_urls_are_refused() {
    larder::conformance::assert_urls_refused(&[
        "nats://127.0.0.1:4222?bucket=a.b",
        "nats://127.0.0.1:4222?bucket=",
        "nats://127.0.0.1:4222?replicas=0",
        "nats://127.0.0.1:4222?colour=blue",
    ])
    .await;
}

/// `tls=true` requires TLS: against this plain-text server, opening fails with an error.
#[tokio::test]
async fn tls_is_required_when_asked() {
    let Some(url) = url() else {
        return;
    };
    let r = larder::open(&with_query(&url, "tls=true")).await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
}

/// Entries other KV clients put in the bucket (no Larder metadata) are skipped by listings.
#[tokio::test]
async fn foreign_entries_are_not_listed() {
    let Some(store) = open_store().await else {
        return;
    };
    let p = fresh_prefix("nats_foreign");
    let client = async_nats::connect(url().unwrap().split('?').next().unwrap())
        .await
        .unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("larder-test")
        .await
        .unwrap();
    let mine = key(&p, "mine");
    store.put_bytes(&mine, "x".into()).await.unwrap();
    let foreign = larder::drivers::nats::encode_key(key(&p, "foreign").as_str());
    kv.put(foreign.as_str(), "raw".into()).await.unwrap();
    let listed = store
        .list(ListOptions::prefix(format!("{p}/")))
        .await
        .unwrap();
    let keys: Vec<_> = listed.objects.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys, [mine]);
    kv.purge(foreign.as_str()).await.unwrap();
}

/// Listing pages equal the reference store's.
#[cfg(feature = "memory")]
#[tokio::test]
async fn listings_page_like_the_reference_store() {
    let Some(store) = open_store().await else {
        return;
    };
    larder::conformance::listing_matches_reference(&store).await;
}

/// The whole kit again with reads from the stream leader (the read path of a bucket with more
/// than one replica; the default bucket has one, read by direct gets).
mod via_the_leader {
    use super::*;

    async fn store() -> Option<Arc<dyn Store>> {
        Some(Arc::new(open_store().await?.reading_from_the_leader()))
    }

    larder::conformance_tests!(store());
}
