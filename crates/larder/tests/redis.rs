//! The redis driver against the real server named by `LARDER_TEST_REDIS_URL`: the conformance
//! kit, then what is specific to Redis: the script's precondition decision against the shared
//! evaluator, two separately opened stores, server-side expiry, keys Redis could misread.

#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use larder::conformance::{chunked, env_url, fresh_prefix, key, ok_or_skip, with_query};
use larder::drivers::redis::RedisStore;
use larder::{
    Body, DeleteOptions, ETag, ETagCondition, Error, ListOptions, Preconditions, PutOptions, Store,
    StoreExt,
};

fn url() -> Option<String> {
    env_url("redis", "LARDER_TEST_REDIS_URL")
}

async fn open_store() -> Option<RedisStore> {
    ok_or_skip("redis", RedisStore::from_url(&url()?).await)
}

larder::networked_tests!(open_store(), "redis");

/// The whole kit again through `larder::open` with a non-default prefix.
mod via_open {
    use super::*;

    async fn store() -> Option<Arc<dyn Store>> {
        let url = with_query(&url()?, "prefix=larder-open-test");
        ok_or_skip("redis", larder::open(&url).await)
    }

    larder::conformance_tests!(store());
}

fn is_412(r: &larder::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::PreconditionFailed { .. }))
}

/// The script decides every write exactly as `Preconditions::evaluate_write` does: every
/// combination of a table of If-Match, If-None-Match and If-Unmodified-Since values, on a
/// missing and an existing object, for put and for delete.
#[tokio::test]
async fn script_agrees_with_the_shared_evaluator() {
    let Some(store) = open_store().await else {
        return;
    };
    let p = fresh_prefix("redis_decide");
    let cur = ETag::of(b"current");
    let other = ETag::of(b"other");
    let weak_cur = ETag::weak(cur.opaque()).unwrap();
    let tag_lists: Vec<Option<ETagCondition>> = vec![
        None,
        Some(ETagCondition::Any),
        Some(ETagCondition::Tags(vec![cur.clone()])),
        Some(ETagCondition::Tags(vec![weak_cur.clone()])),
        Some(ETagCondition::Tags(vec![other.clone()])),
        Some(ETagCondition::Tags(vec![other.clone(), cur.clone()])),
        Some(ETagCondition::Tags(vec![weak_cur.clone(), other.clone()])),
        Some(ETagCondition::Tags(vec![ETag::strong("").unwrap()])),
    ];
    let now = SystemTime::now();
    let dates = [
        None,
        Some(now - Duration::from_secs(3600)),
        Some(now + Duration::from_secs(3600)),
        Some(now),
    ];
    let mut cases = 0;
    for exists in [false, true] {
        for im in &tag_lists {
            for inm in &tag_lists {
                for ius in dates {
                    cases += 1;
                    let k = key(&p, &format!("c{cases}"));
                    let pre = Preconditions {
                        if_match: im.clone(),
                        if_none_match: inm.clone(),
                        if_unmodified_since: ius,
                        ..Default::default()
                    };
                    let current = if exists {
                        Some(store.put_bytes(&k, "current".into()).await.unwrap())
                    } else {
                        None
                    };
                    let want = pre.evaluate_write(current.as_ref()).is_ok();
                    let opts = PutOptions {
                        preconditions: pre.clone(),
                        ..Default::default()
                    };
                    let got = store.put(&k, Body::from("new"), opts).await;
                    assert_eq!(got.is_ok(), want, "put {pre:?} exists={exists}: {got:?}");
                    if !want {
                        assert!(is_412(&got), "{got:?}");
                        let Err(Error::PreconditionFailed { current: c }) = got else {
                            unreachable!()
                        };
                        assert_eq!(c.map(|m| m.etag), current.as_ref().map(|m| m.etag.clone()));
                        let after = store.stat(&k).await.unwrap();
                        assert_eq!(
                            after.map(|m| m.etag),
                            current.as_ref().map(|m| m.etag.clone()),
                            "a refused put changes nothing"
                        );
                    }
                    // Delete: on the object as it was (rewrite it when the put replaced it).
                    let before = if exists {
                        Some(store.put_bytes(&k, "current".into()).await.unwrap())
                    } else {
                        store.remove(&k).await.ok();
                        None
                    };
                    let opts = DeleteOptions {
                        preconditions: pre.clone(),
                    };
                    let got = store.delete(&k, opts).await;
                    match before {
                        Some(m) => {
                            let want = pre.evaluate_write(Some(&m)).is_ok();
                            assert_eq!(got.is_ok(), want, "delete {pre:?}: {got:?}");
                            assert_eq!(store.stat(&k).await.unwrap().is_none(), want);
                        }
                        None => assert!(matches!(got, Err(Error::NotFound { .. })), "{got:?}"),
                    }
                }
            }
        }
    }
    assert_eq!(cases, 2 * 8 * 8 * 4);
}

/// Keys with characters that are special to Redis patterns or to the key layout are stored and
/// listed as themselves; prefixes never match them as patterns.
#[tokio::test]
async fn pattern_characters_are_plain() {
    let Some(store) = open_store().await else {
        return;
    };
    let p = fresh_prefix("redis_glob");
    let names = ["*", "?x", "[ab]", "a\\b", "{tag}", "m:x", "sp ace", "é"];
    for n in names {
        let n = n.replace('\\', "_");
        store
            .put_bytes(&key(&p, &n), Bytes::from(n.clone()))
            .await
            .unwrap();
    }
    for (prefix, want) in [("*", 1), ("[", 1), ("?", 1), ("{", 1), ("", names.len())] {
        let got = store
            .list(ListOptions::prefix(format!("{p}/{prefix}")))
            .await
            .unwrap();
        assert_eq!(got.objects.len(), want, "prefix {prefix:?}");
    }
}

/// The integer reply of the one-key command `cmd` on `key`.
async fn int_reply(conn: &mut redis::aio::MultiplexedConnection, cmd: &str, key: &str) -> i64 {
    redis::cmd(cmd).arg(key).query_async(conn).await.unwrap()
}

/// A TTL is Redis's own expiry on the object's key, at the millisecond the meta reports.
#[tokio::test]
async fn ttl_is_a_server_expiry() {
    let Some(store) = open_store().await else {
        return;
    };
    let url = url().unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let p = fresh_prefix("redis_ttl");
    let k = key(&p, "obj");
    let opts = PutOptions {
        ttl: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let put = store.put(&k, Body::from("x"), opts).await.unwrap();
    let expires_ms = larder::meta::to_millis(put.meta.expires_at.unwrap());
    let rk = store.redis_key(&k);
    assert_eq!(int_reply(&mut conn, "PEXPIRETIME", &rk).await, expires_ms);
    // An unconditional rewrite without a TTL makes it persistent again.
    store.put_bytes(&k, "y".into()).await.unwrap();
    assert_eq!(int_reply(&mut conn, "PTTL", &rk).await, -1);
}

/// The limit and scope are declared.
#[tokio::test]
async fn size_limit_is_declared() {
    let Some(store) = open_store().await else {
        return;
    };
    assert_eq!(
        store.capabilities().max_object_size,
        Some(larder::drivers::redis::MAX_OBJECT_SIZE)
    );
    assert_eq!(
        store.capabilities().atomic_scope,
        larder::AtomicScope::Cluster
    );
    // (Refusing a body past the limit is BodyReader's, tested in the core.)
}

#[tokio::test]
async fn bad_urls_are_refused() {
    larder::conformance::assert_urls_refused(&[
        "redis://127.0.0.1:6379/?prefix=",
        "redis://127.0.0.1:6379/?prefix=a{b",
        "redis://127.0.0.1:6379/?timeout_ms=soon",
    ])
    .await;
}

/// A put whose stamp is earlier than the version it replaces (a writer whose clock is behind)
/// takes that version's time instead: Last-Modified never goes backwards.
#[tokio::test]
async fn last_modified_never_goes_backwards() {
    let Some(store) = open_store().await else {
        return;
    };
    let client = redis::Client::open(url().unwrap().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let p = fresh_prefix("redis_clock");
    let k = key(&p, "obj");
    store.put_bytes(&k, "v1".into()).await.unwrap();
    // Pretend v1 was written by a client whose clock is an hour ahead: its Last-Modified in
    // the value's footer (the first of its 60 bytes, right-aligned in 20 columns).
    let ahead = larder::meta::to_millis(SystemTime::now() + Duration::from_secs(3600));
    let rk = store.redis_key(&k);
    let len: i64 = int_reply(&mut conn, "STRLEN", &rk).await;
    let _: () = redis::cmd("SETRANGE")
        .arg(&rk)
        .arg(len - 60)
        .arg(format!("{ahead:>20}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let v2 = store.put_bytes(&k, "v2".into()).await.unwrap();
    assert_eq!(larder::meta::to_millis(v2.last_modified), ahead);
    assert_eq!(store.stat(&k).await.unwrap().unwrap(), v2);
}

/// `rediss://` is compiled in (TLS over rustls): against a plain-text server the handshake
/// fails with an error, not a panic or a plain-text connection.
#[tokio::test]
async fn rediss_speaks_tls() {
    let Some(url) = url() else {
        return;
    };
    let Some(rest) = url.strip_prefix("redis://") else {
        return; // already TLS, or a socket: nothing to compare with
    };
    let sep = if rest.contains('?') { '&' } else { '?' };
    let r = larder::open(&format!("rediss://{rest}{sep}connect_timeout_ms=300")).await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
}

/// Listing pages equal the reference store's, with the default batch and with batches of 1
/// and 2 (so pages span many script calls and batches end inside common prefixes).
#[cfg(feature = "memory")]
#[tokio::test]
async fn listings_page_like_the_reference_store() {
    let Some(url) = url() else {
        return;
    };
    for batch in ["", "list_batch=1", "list_batch=2"] {
        let sep = if url.contains('?') { '&' } else { '?' };
        let store = larder::open(&format!("{url}{sep}{batch}")).await.unwrap();
        larder::conformance::listing_matches_reference(&*store).await;
    }
}

/// Staging keys of the store with `prefix`.
async fn staging_keys(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url().unwrap().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}:t:*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Large bodies are staged in a key as they arrive and renamed into place; every way a put
/// can fail (aborted body, wrong digest, failed condition) leaves no staging key, and reads
/// stream in chunks, ranges across chunk boundaries included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_and_out() {
    use larder::drivers::redis::{READ_CHUNK, STAGE_OVER};
    let Some(url) = url() else {
        return;
    };
    let prefix = fresh_prefix("staging").replace('/', "-");
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = RedisStore::from_url(&format!("{url}{sep}prefix={prefix}"))
        .await
        .unwrap();
    let k = key("big", "obj");
    let data = pattern((2 * READ_CHUNK + 12345) as usize, 1);
    let body = chunked(data.clone(), 100_000);
    let put = store.put(&k, body, PutOptions::default()).await.unwrap();
    assert_eq!(put.meta.etag, ETag::of(&data));
    assert!(staging_keys(&prefix).await.is_empty(), "renamed into place");

    let got = store.get(&k, Default::default()).await.unwrap();
    let pieces: Vec<Bytes> = got.body.map(|c| c.unwrap()).collect().await;
    assert_eq!(pieces.len(), 3, "streamed in chunks of READ_CHUNK");
    assert_eq!(pieces.concat(), &data[..]);

    let range = larder::ByteRange::Bounded {
        first: READ_CHUNK - 10,
        last: 2 * READ_CHUNK + 10,
    };
    let got = store
        .get(
            &k,
            larder::GetOptions {
                range: Some(range),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let want = data.slice((READ_CHUNK - 10) as usize..(2 * READ_CHUNK + 11) as usize);
    assert_eq!(got.bytes().await.unwrap(), want);

    // Replaced mid-stream: the stream fails instead of mixing versions.
    let mut got = store.get(&k, Default::default()).await.unwrap().body;
    let first = got.next().await.unwrap().unwrap();
    assert_eq!(first.len() as u64, READ_CHUNK);
    store.put_bytes(&k, pattern(data.len(), 2)).await.unwrap();
    let next = got.next().await.unwrap();
    assert!(
        matches!(&next, Err(e) if e.is_retryable()),
        "a replaced object ends the stream: {next:?}"
    );

    // Failures leave no staging key behind.
    let big = || pattern((STAGE_OVER * 3) as usize, 3);
    let aborted: Vec<larder::Result<Bytes>> = vec![
        Ok(big()),
        Err(Error::InvalidInput("client went away".into())),
    ];
    let r = store
        .put(
            &k,
            Body::from_stream(futures::stream::iter(aborted)),
            PutOptions::default(),
        )
        .await;
    assert!(r.is_err());
    let wrong = PutOptions {
        expected_etag: Some(ETag::of(b"other")),
        ..Default::default()
    };
    let r = store.put(&k, Body::from(big()), wrong).await;
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let r = store.create(&k, big()).await;
    assert!(is_412(&r), "{r:?}");
    assert!(
        staging_keys(&prefix).await.is_empty(),
        "no staging key left"
    );
    assert_eq!(
        store.head(&k, Default::default()).await.unwrap().etag,
        ETag::of(&pattern(data.len(), 2)),
        "failed writes changed nothing"
    );
    store.remove(&k).await.unwrap();
}

/// The scripts' replies are read the same over RESP3 (`protocol=resp3` is passed to the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_replies_are_understood() {
    let Some(url) = url() else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = larder::open(&format!("{url}{sep}protocol=resp3"))
        .await
        .unwrap();
    larder::conformance::put_preconditions(store.clone()).await;
    larder::conformance::delete_preconditions(store.clone()).await;
    larder::conformance::list_paging(store.clone()).await;
    larder::conformance::ranges(store).await;
}

/// Objects in the hash layout of earlier versions (a hash of the meta `m`, the ETag `e`,
/// Last-Modified `u`, expiry `x`, beside the body's own key) are converted when a store opens:
/// one as the packed-meta versions wrote it (`x` set, a TTL on both keys), one as the versions
/// before wrote it (`m` is `Meta::encode`'s JSON, with `t` and no `x`: its expiry only on the
/// keys), one empty. Then they are read, listed, refused, updated and deleted by today's code,
/// and the old keys are gone. A layout this build does not know is refused.
#[tokio::test]
async fn objects_in_the_hash_layout_are_converted_at_open() {
    let Some(url) = url() else {
        return;
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = fresh_prefix("redis-hash-layout").replace('/', "-");
    let p = "d";
    let modified = larder::meta::from_millis(larder::meta::to_millis(SystemTime::now()) - 5_000);
    let expires = modified + Duration::from_secs(600);
    let ms = larder::meta::to_millis(modified);
    let old = |name: &str, body: &str, expires_at| larder::Meta {
        key: key(p, name),
        etag: ETag::of(body.as_bytes()),
        size: body.len() as u64,
        last_modified: modified,
        expires_at,
        content_type: Some("text/plain".into()),
        metadata: [("a".to_string(), "b".to_string())].into(),
    };
    let (json, packed, empty) = (
        old("json", "old", Some(expires)),
        old("packed", "older", Some(expires)),
        old("empty", "", None),
    );
    let hash = |m: &larder::Meta| format!("{{{prefix}}}:m:{}", m.key);
    let body = |m: &larder::Meta| format!("{{{prefix}}}:b:{}", m.key);
    let at = larder::meta::to_millis(expires);
    // Each object's hash fields beside `m` and `e`, and its body if it has one. (The
    // packed-meta versions' `m` is JSON here too: both are read by the same decoder.)
    let objects = [
        (
            &json,
            [("t", (ms / 1000).to_string()), ("u", ms.to_string())],
            Some("old"),
        ),
        (
            &packed,
            [("u", ms.to_string()), ("x", at.to_string())],
            Some("older"),
        ),
        (&empty, [("u", ms.to_string()), ("x", String::new())], None),
    ];
    let mut pipe = redis::pipe();
    for (m, fields, data) in &objects {
        pipe.cmd("HSET")
            .arg(hash(m))
            .arg("m")
            .arg(m.encode())
            .arg("e")
            .arg(m.etag.opaque());
        for (field, value) in fields {
            pipe.arg(*field).arg(value);
        }
        pipe.ignore();
        if let Some(data) = data {
            pipe.cmd("SET").arg(body(m)).arg(*data).ignore();
        }
    }
    for rk in [hash(&json), body(&json), hash(&packed), body(&packed)] {
        pipe.cmd("PEXPIREAT").arg(rk).arg(at).ignore();
    }
    for m in [&json, &packed, &empty] {
        pipe.cmd("ZADD")
            .arg(format!("{{{prefix}}}:idx"))
            .arg(0)
            .arg(m.key.as_str())
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();

    let sep = if url.contains('?') { '&' } else { '?' };
    let store = RedisStore::from_url(&format!("{url}{sep}prefix={prefix}&list_batch=2"))
        .await
        .unwrap();
    for (m, data) in [(&json, "old"), (&packed, "older"), (&empty, "")] {
        let (got, meta) = store.get_bytes(&m.key).await.unwrap();
        assert_eq!((&got[..], &meta), (data.as_bytes(), m));
        assert_eq!(store.stat(&m.key).await.unwrap().as_ref(), Some(m));
        let rk = store.redis_key(&m.key);
        let want = if m.expires_at.is_some() { at } else { -1 };
        assert_eq!(int_reply(&mut conn, "PEXPIRETIME", &rk).await, want, "{rk}");
        for gone in [hash(m), body(m)] {
            assert_eq!(int_reply(&mut conn, "EXISTS", &gone).await, 0, "{gone}");
        }
    }
    let listed = store
        .list(ListOptions::prefix(format!("{p}/")))
        .await
        .unwrap();
    assert_eq!(
        listed.objects,
        vec![empty.clone(), json.clone(), packed.clone()]
    );
    // If-Unmodified-Since is decided on the old Last-Modified, to the second.
    let k = &json.key;
    let before = Preconditions {
        if_unmodified_since: Some(modified - Duration::from_secs(1)),
        ..Default::default()
    };
    let r = store
        .put(
            k,
            Body::from("x"),
            PutOptions {
                preconditions: before,
                ..Default::default()
            },
        )
        .await;
    let Err(Error::PreconditionFailed { current }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        current.as_deref(),
        Some(&json),
        "a refusal carries the old meta"
    );
    let r = store
        .put(
            k,
            Body::from("x"),
            PutOptions {
                preconditions: Preconditions::if_match(ETag::of(b"other")),
                ..Default::default()
            },
        )
        .await;
    assert!(is_412(&r), "{r:?}");

    // A conditional update without a TTL: the old expiry is cleared.
    let new = store
        .put(
            k,
            Body::from("new"),
            PutOptions {
                preconditions: Preconditions::if_match(json.etag.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!new.created);
    assert_eq!(int_reply(&mut conn, "PTTL", &store.redis_key(k)).await, -1);
    assert_eq!(
        store.get_bytes(k).await.unwrap(),
        (Bytes::from("new"), new.meta.clone())
    );
    let opts = DeleteOptions {
        preconditions: Preconditions::if_match(new.meta.etag.clone()),
    };
    store.delete(k, opts).await.unwrap();
    assert!(store.stat(k).await.unwrap().is_none());

    // Opening again finds the layout recorded; one from a newer build is refused.
    RedisStore::from_url(&format!("{url}{sep}prefix={prefix}"))
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{{{prefix}}}:layout"))
        .arg("3")
        .query_async(&mut conn)
        .await
        .unwrap();
    let r = RedisStore::from_url(&format!("{url}{sep}prefix={prefix}")).await;
    assert!(
        matches!(&r, Err(Error::Backend { source, .. }) if source.to_string().contains("newer")),
        "{r:?}"
    );
}

/// An object whose meta is longer than the first read of a value's tail (512 bytes): every
/// reader takes the second, exact read, in Lua (conditions, listing, ranges) and in Rust.
#[tokio::test]
async fn a_long_meta_is_read_whole() {
    let Some(store) = open_store().await else {
        return;
    };
    let p = fresh_prefix("redis_long_meta");
    let k = key(&p, "obj");
    let opts = PutOptions {
        metadata: [("note".to_string(), "n".repeat(2000))].into(),
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let v1 = store
        .put(&k, Body::from("first"), opts.clone())
        .await
        .unwrap();
    assert_eq!(v1.meta.metadata["note"].len(), 2000);
    assert_eq!(store.stat(&k).await.unwrap().as_ref(), Some(&v1.meta));
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        (Bytes::from("first"), v1.meta.clone())
    );
    let listed = store
        .list(ListOptions::prefix(format!("{p}/")))
        .await
        .unwrap();
    assert_eq!(listed.objects, vec![v1.meta.clone()]);
    let ranged = store
        .get(
            &k,
            larder::GetOptions {
                range: Some(larder::ByteRange::Bounded { first: 1, last: 3 }),
                preconditions: Preconditions::if_match(v1.meta.etag.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ranged.bytes().await.unwrap(), "irs");
    let refused = store
        .put(
            &k,
            Body::from("x"),
            PutOptions {
                preconditions: Preconditions::if_match(ETag::of(b"other")),
                ..opts.clone()
            },
        )
        .await;
    let Err(Error::PreconditionFailed { current }) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(
        current.as_deref(),
        Some(&v1.meta),
        "the refusal carries it whole"
    );
    let v2 = store
        .put(
            &k,
            Body::from("second"),
            PutOptions {
                preconditions: Preconditions::if_match(v1.meta.etag.clone()),
                ..opts
            },
        )
        .await
        .unwrap();
    let opts = DeleteOptions {
        preconditions: Preconditions::if_match(v2.meta.etag.clone()),
    };
    store.delete(&k, opts).await.unwrap();
    assert!(store.stat(&k).await.unwrap().is_none());
}

/// A rewrite without a TTL clears an expiry the previous version had, and keeps none it did
/// not have.
#[tokio::test]
async fn a_rewrite_clears_only_an_expiry_there_was() {
    let Some(store) = open_store().await else {
        return;
    };
    let client = redis::Client::open(url().unwrap().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let k = key(&fresh_prefix("redis_persist"), "obj");
    let rk = store.redis_key(&k);
    let ttl = PutOptions {
        ttl: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    store.put(&k, Body::from("1"), ttl.clone()).await.unwrap();
    for v in ["2", "3"] {
        store.put_bytes(&k, v.into()).await.unwrap();
        assert_eq!(int_reply(&mut conn, "PTTL", &rk).await, -1);
    }
    store.put(&k, Body::from("4"), ttl).await.unwrap();
    assert!(int_reply(&mut conn, "PTTL", &rk).await > 0);
    store.put_bytes(&k, "5".into()).await.unwrap();
    assert_eq!(int_reply(&mut conn, "PTTL", &rk).await, -1);
}

/// A plain read never serves one version's metadata with another's bytes, while another task
/// keeps rewriting the object: small versions (one `GETRANGE` of the value) and versions past
/// the 16 KiB bound (a script reads the meta and the bytes) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_never_mix_two_versions() {
    let Some(store) = open_store().await else {
        return;
    };
    let store = Arc::new(store);
    let k = key(&fresh_prefix("mix"), "obj");
    // Sizes around the bound, each version's bytes distinct.
    let versions: Vec<Bytes> = [100, 1000, 16 << 10, (16 << 10) + 1, 40_000, 7]
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, i as u8 + 1))
        .collect();
    store.put_bytes(&k, versions[0].clone()).await.unwrap();
    let writer = {
        let (store, k, versions) = (store.clone(), k.clone(), versions.clone());
        tokio::spawn(async move {
            for i in 0..600 {
                let v = versions[i % versions.len()].clone();
                store.put_bytes(&k, v).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let (data, meta) = store.get_bytes(&k).await.unwrap();
        assert_eq!(data.len() as u64, meta.size, "read {reads}");
        assert!(
            ETag::of(&data).strong_eq(&meta.etag),
            "read {reads}: bytes of another version"
        );
        assert!(
            versions.contains(&data),
            "read {reads}: bytes never written"
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 10, "the reads raced the writes ({reads} reads)");
}
