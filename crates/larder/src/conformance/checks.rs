//! The checks. Each takes the store under test and panics on the first wrong behaviour.

use super::*;

/// Empty, 1-byte and 10 MiB objects (the large one streamed in 64 KiB chunks) read back equal,
/// with the SHA-256 content ETag and the right size. A store that declares a smaller
/// `max_object_size` gets its largest object instead, and must refuse one byte more.
pub async fn round_trip(store: Arc<dyn Store>) {
    let p = fresh_prefix("round_trip");
    let large = store
        .capabilities()
        .max_object_size
        .map_or(10 << 20, |max| max.min(10 << 20)) as usize;
    if large < 10 << 20 {
        let k = key(&p, "over");
        let r = store
            .put(
                &k,
                chunked(pattern(large + 1, 4), 64 << 10),
                PutOptions::default(),
            )
            .await;
        assert!(
            matches!(r, Err(Error::TooLarge { limit }) if limit == large as u64),
            "one byte over max_object_size: {r:?}"
        );
        assert!(store.stat(&k).await.unwrap().is_none(), "nothing stored");
    }
    for (name, data) in [
        ("empty", Bytes::new()),
        ("one", Bytes::from_static(b"x")),
        ("large", pattern(large, 1)),
    ] {
        let k = key(&p, name);
        let put = store
            .put(&k, chunked(data.clone(), 64 << 10), PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {name}: {e}"));
        assert!(put.created, "{name}: first write creates");
        assert_eq!(
            put.meta.etag,
            ETag::of(&data),
            "{name}: ETag is the content SHA-256"
        );
        assert_eq!(put.meta.size, data.len() as u64, "{name}: size");
        assert_eq!(put.meta.key, k);
        let head = store.head(&k, HeadOptions::default()).await.unwrap();
        assert_eq!(
            (head.etag.clone(), head.size),
            (put.meta.etag.clone(), put.meta.size),
            "{name}: head"
        );
        let got = store.get(&k, GetOptions::default()).await.unwrap();
        assert_eq!(got.meta.etag, put.meta.etag);
        assert!(got.range.is_none());
        let body = body_of(got).await;
        assert!(
            body == data,
            "{name}: body differs ({} vs {} bytes)",
            body.len(),
            data.len()
        );
    }
    let missing = key(&p, "missing");
    assert_not_found(
        store.get(&missing, GetOptions::default()).await,
        "GET missing",
    );
    assert_not_found(
        store.head(&missing, HeadOptions::default()).await,
        "HEAD missing",
    );
}

/// The same bytes give the same ETag under different keys; different bytes a different one.
pub async fn same_bytes_same_etag(store: Arc<dyn Store>) {
    let p = fresh_prefix("same_etag");
    let a = store.put_bytes(&key(&p, "a"), "same".into()).await.unwrap();
    let b = store.put_bytes(&key(&p, "b"), "same".into()).await.unwrap();
    let c = store
        .put_bytes(&key(&p, "c"), "other".into())
        .await
        .unwrap();
    assert_eq!(a.etag, b.etag);
    assert_ne!(a.etag, c.etag);
    assert_eq!(a.etag.to_string(), format!("{}", ETag::of(b"same")));
}

/// Content type and user metadata are stored and served back, and replaced by a later write.
pub async fn metadata(store: Arc<dyn Store>) {
    let p = fresh_prefix("metadata");
    let k = key(&p, "obj");
    let opts = PutOptions {
        content_type: Some("text/plain; charset=utf-8".into()),
        metadata: [
            ("owner".to_string(), "kit".to_string()),
            ("n".to_string(), "1".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let put = store
        .put(&k, Body::from("hello"), opts.clone())
        .await
        .unwrap();
    let head = store.head(&k, HeadOptions::default()).await.unwrap();
    for m in [&put.meta, &head] {
        assert_eq!(m.content_type, opts.content_type);
        assert_eq!(m.metadata, opts.metadata);
    }
    let got = store.get(&k, GetOptions::default()).await.unwrap();
    assert_eq!(got.meta.content_type, opts.content_type);
    let modified = head
        .last_modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert!(
        now.abs_diff(modified) < Duration::from_secs(60),
        "last_modified is about now"
    );
    store.put_bytes(&k, "plain".into()).await.unwrap();
    let head = store.head(&k, HeadOptions::default()).await.unwrap();
    assert_eq!(
        head.content_type, None,
        "a rewrite replaces the content type"
    );
    assert!(head.metadata.is_empty(), "a rewrite replaces user metadata");
}

/// A second write replaces the first: not `created`, new ETag, new bytes.
pub async fn overwrite(store: Arc<dyn Store>) {
    let p = fresh_prefix("overwrite");
    let k = key(&p, "obj");
    let first = store
        .put(&k, Body::from("one"), PutOptions::default())
        .await
        .unwrap();
    let second = store
        .put(&k, Body::from("two"), PutOptions::default())
        .await
        .unwrap();
    assert!(first.created && !second.created);
    assert_ne!(first.meta.etag, second.meta.etag);
    assert_eq!(&store.get_bytes(&k).await.unwrap().0[..], b"two");
    store.remove(&k).await.unwrap();
    assert!(store.stat(&k).await.unwrap().is_none());
    let again = store
        .put(&k, Body::from("three"), PutOptions::default())
        .await
        .unwrap();
    assert!(again.created, "a write after a delete creates");
}

/// Objects written with a TTL carry their expiry and are gone after it: not readable, not
/// listed, and a create-only write succeeds over them. Stores without TTL refuse one.
pub async fn ttl(store: Arc<dyn Store>) {
    let p = fresh_prefix("ttl");
    let k = key(&p, "short");
    let opts = PutOptions {
        ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    if !store.capabilities().ttl {
        assert_unsupported(
            store.put(&k, Body::from("x"), opts).await,
            "TTL on a store without TTL",
        );
        assert!(
            store.stat(&k).await.unwrap().is_none(),
            "a refused write stores nothing"
        );
        return;
    }
    let put = store.put(&k, Body::from("x"), opts).await.unwrap();
    let expires = put.meta.expires_at.expect("expires_at is set");
    assert!(expires > put.meta.last_modified);
    let head = store.head(&k, HeadOptions::default()).await.unwrap();
    assert!(head.expires_at.is_some(), "head reports the expiry");
    store.put_bytes(&key(&p, "long"), "y".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_not_found(store.get(&k, GetOptions::default()).await, "GET expired");
    assert_not_found(store.head(&k, HeadOptions::default()).await, "HEAD expired");
    let listed = store
        .list(ListOptions::prefix(format!("{p}/")))
        .await
        .unwrap();
    let keys: Vec<_> = listed.objects.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [key(&p, "long").as_str()],
        "expired objects are not listed"
    );
    let created = store
        .put(&k, Body::from("z"), put_opts(Preconditions::if_absent()))
        .await
        .expect("create-only over an expired object succeeds");
    assert!(created.created);
}

/// Listing by prefix, with and without a delimiter, in key order, with sizes and ETags.
pub async fn listing(store: Arc<dyn Store>) {
    let p = fresh_prefix("listing");
    let names = ["a/1", "a/2", "a/sub/3", "b", "c/x"];
    for n in names {
        store
            .put_bytes(&key(&p, n), Bytes::from(n.to_string()))
            .await
            .unwrap();
    }
    store
        .put_bytes(&key(&format!("{p}x"), "outside"), "o".into())
        .await
        .unwrap();
    let all = store
        .list(ListOptions::prefix(format!("{p}/")))
        .await
        .unwrap();
    let got: Vec<_> = all.objects.iter().map(|m| m.key.to_string()).collect();
    let want: Vec<_> = names.iter().map(|n| key(&p, n).to_string()).collect();
    assert_eq!(got, want, "prefix listing, in order");
    assert!(all.next_cursor.is_none());
    for m in &all.objects {
        let name = &m.key.as_str()[p.len() + 1..];
        assert_eq!(m.etag, ETag::of(name.as_bytes()), "listed ETag");
        assert_eq!(m.size, name.len() as u64, "listed size");
    }
    let opts = ListOptions {
        prefix: format!("{p}/"),
        delimiter: Some('/'),
        ..Default::default()
    };
    if !store.capabilities().list_delimiter {
        assert_unsupported(store.list(opts).await, "delimiter on a store without it");
        return;
    }
    let dir = store.list(opts).await.unwrap();
    let objects: Vec<_> = dir.objects.iter().map(|m| m.key.to_string()).collect();
    assert_eq!(objects, [key(&p, "b").to_string()]);
    assert_eq!(dir.common_prefixes, [format!("{p}/a/"), format!("{p}/c/")]);
    let sub = store
        .list(ListOptions {
            prefix: format!("{p}/a/"),
            delimiter: Some('/'),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sub.objects.len(), 2);
    assert_eq!(sub.common_prefixes, [format!("{p}/a/sub/")]);
    let bad = store.list(ListOptions::prefix("../")).await;
    assert!(
        matches!(bad, Err(Error::InvalidKey { .. })),
        "a bad prefix is InvalidKey: {bad:?}"
    );
}

/// Pages of 3 over 10 objects visit each exactly once, in order; so do pages with a delimiter.
pub async fn list_paging(store: Arc<dyn Store>) {
    let p = fresh_prefix("paging");
    let mut want = Vec::new();
    for i in 0..10 {
        let k = key(&p, &format!("{i:02}"));
        store.put_bytes(&k, "x".into()).await.unwrap();
        want.push(k.to_string());
    }
    for d in 0..3 {
        store
            .put_bytes(&key(&p, &format!("dir{d}/f")), "x".into())
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let mut opts = ListOptions {
        prefix: format!("{p}/"),
        limit: Some(3),
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = store.list(opts.clone()).await.unwrap();
        assert!(page.objects.len() <= 3, "page size is respected");
        got.extend(page.objects.iter().map(|m| m.key.to_string()));
        pages += 1;
        assert!(pages < 20, "paging terminates");
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => break,
        }
    }
    let mut want_all = want.clone();
    want_all.extend((0..3).map(|d| key(&p, &format!("dir{d}/f")).to_string()));
    assert_eq!(got, want_all);
    if store.capabilities().list_delimiter {
        let mut opts = ListOptions {
            prefix: format!("{p}/"),
            delimiter: Some('/'),
            limit: Some(4),
            ..Default::default()
        };
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        loop {
            let page = store.list(opts.clone()).await.unwrap();
            objects.extend(page.objects.iter().map(|m| m.key.to_string()));
            prefixes.extend(page.common_prefixes);
            match page.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(objects, want);
        assert_eq!(
            prefixes,
            (0..3).map(|d| format!("{p}/dir{d}/")).collect::<Vec<_>>()
        );
    }
}

/// Every write condition on a missing and on an existing key, checked against the store's
/// capabilities: what it supports must behave per RFC 9110, the rest must be `Unsupported`.
pub async fn put_preconditions(store: Arc<dyn Store>) {
    let caps = store.capabilities().put_conditions;
    let p = fresh_prefix("put_pre");
    let k = key(&p, "obj");
    let other = other_tag();
    let put = |pre: Preconditions, body: &'static str| store.put(&k, body.into(), put_opts(pre));

    // Missing key.
    if caps.if_match {
        let r = put(Preconditions::if_match(other.clone()), "x").await;
        assert_412(r, None, "If-Match on a missing key");
    }
    if caps.if_match_any {
        let r = put(
            Preconditions {
                if_match: Some(ETagCondition::Any),
                ..Default::default()
            },
            "x",
        )
        .await;
        assert_412(r, None, "If-Match: * on a missing key");
    }
    assert!(
        store.stat(&k).await.unwrap().is_none(),
        "failed writes store nothing"
    );
    let v1 = if caps.if_none_match_any {
        let r = put(Preconditions::if_absent(), "v1")
            .await
            .expect("create-only on a missing key");
        assert!(r.created);
        r.meta
    } else {
        store.put_bytes(&k, "v1".into()).await.unwrap()
    };

    // Existing key.
    if caps.if_none_match_any {
        let r = put(Preconditions::if_absent(), "x").await;
        assert_412(r, Some(&v1.etag), "create-only on an existing key");
    }
    if caps.if_match {
        assert_412(
            put(Preconditions::if_match(other.clone()), "x").await,
            Some(&v1.etag),
            "stale If-Match",
        );
        let weak = Preconditions {
            if_match: tags(&[&weak_of(&v1.etag)]),
            ..Default::default()
        };
        assert_412(
            put(weak, "x").await,
            Some(&v1.etag),
            "weak If-Match never matches",
        );
        let list = Preconditions {
            if_match: tags(&[&other, &v1.etag]),
            ..Default::default()
        };
        let r = put(list, "v2")
            .await
            .expect("If-Match list containing the current ETag");
        assert!(!r.created);
        let r = put(Preconditions::if_match(r.meta.etag.clone()), "v3")
            .await
            .expect("If-Match current");
        assert_eq!(r.meta.etag, ETag::of(b"v3"));
    } else {
        store.put_bytes(&k, "v3".into()).await.unwrap();
    }
    let current = store.head(&k, HeadOptions::default()).await.unwrap();
    assert_eq!(
        current.etag,
        ETag::of(b"v3"),
        "failed writes changed nothing"
    );
    if caps.if_match_any {
        let any = Preconditions {
            if_match: Some(ETagCondition::Any),
            ..Default::default()
        };
        put(any, "v3")
            .await
            .expect("If-Match: * on an existing key");
    }
    if caps.if_none_match {
        let weak = Preconditions {
            if_none_match: tags(&[&weak_of(&current.etag)]),
            ..Default::default()
        };
        assert_412(
            put(weak, "x").await,
            Some(&current.etag),
            "If-None-Match compares weakly",
        );
        let miss = Preconditions {
            if_none_match: tags(&[&other]),
            ..Default::default()
        };
        put(miss, "v3")
            .await
            .expect("If-None-Match with another ETag");
    }
    if caps.if_unmodified_since {
        let past = Preconditions {
            if_unmodified_since: Some(SystemTime::now() - Duration::from_secs(3600)),
            ..Default::default()
        };
        assert_412(
            put(past, "x").await,
            Some(&current.etag),
            "If-Unmodified-Since in the past",
        );
        let future = Preconditions {
            if_unmodified_since: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..Default::default()
        };
        put(future, "v3")
            .await
            .expect("If-Unmodified-Since in the future");
    }
    assert_eq!(&store.get_bytes(&k).await.unwrap().0[..], b"v3");
}

/// GET conditions: 304 for a matching If-None-Match (weakly, `*` too) or an unchanged
/// If-Modified-Since, 412 for a failing If-Match or If-Unmodified-Since, 404 on a missing key
/// whatever the conditions.
pub async fn read_preconditions(store: Arc<dyn Store>) {
    let p = fresh_prefix("read_pre");
    let k = key(&p, "obj");
    let opts = PutOptions {
        content_type: Some("application/x-kit".into()),
        ..Default::default()
    };
    let cur = store.put(&k, Body::from("body"), opts).await.unwrap().meta;
    let get = |pre: Preconditions| {
        let got = store.get(&k, get_opts(pre));
        async { got.await.map(|r| r.meta) }
    };
    let inm = |c| Preconditions {
        if_none_match: c,
        ..Default::default()
    };
    let im = |c| Preconditions {
        if_match: c,
        ..Default::default()
    };
    assert_304(
        get(inm(tags(&[&cur.etag]))).await,
        &cur,
        "If-None-Match current",
    );
    assert_304(
        get(inm(tags(&[&other_tag(), &weak_of(&cur.etag)]))).await,
        &cur,
        "If-None-Match weak in list",
    );
    assert_304(
        get(inm(Some(ETagCondition::Any))).await,
        &cur,
        "If-None-Match: *",
    );
    get(inm(tags(&[&other_tag()])))
        .await
        .expect("If-None-Match other");
    assert_412(
        get(im(tags(&[&other_tag()]))).await,
        Some(&cur.etag),
        "If-Match stale",
    );
    assert_412(
        get(im(tags(&[&weak_of(&cur.etag)]))).await,
        Some(&cur.etag),
        "If-Match weak",
    );
    get(im(Some(ETagCondition::Any)))
        .await
        .expect("If-Match: *");
    get(im(tags(&[&cur.etag]))).await.expect("If-Match current");
    let hour = Duration::from_secs(3600);
    let ims = |t| Preconditions {
        if_modified_since: Some(t),
        ..Default::default()
    };
    let ius = |t| Preconditions {
        if_unmodified_since: Some(t),
        ..Default::default()
    };
    assert_304(
        get(ims(SystemTime::now() + hour)).await,
        &cur,
        "If-Modified-Since later",
    );
    get(ims(SystemTime::now() - hour))
        .await
        .expect("If-Modified-Since earlier");
    assert_412(
        get(ius(SystemTime::now() - hour)).await,
        Some(&cur.etag),
        "If-Unmodified-Since earlier",
    );
    get(ius(SystemTime::now() + hour))
        .await
        .expect("If-Unmodified-Since later");
    let missing = key(&p, "missing");
    for pre in [
        im(Some(ETagCondition::Any)),
        inm(Some(ETagCondition::Any)),
        im(tags(&[&cur.etag])),
    ] {
        let r = store.get(&missing, get_opts(pre)).await;
        assert_not_found(r, "conditions on a missing key");
    }
}

/// HEAD evaluates conditions exactly as GET.
pub async fn head_preconditions(store: Arc<dyn Store>) {
    let p = fresh_prefix("head_pre");
    let k = key(&p, "obj");
    let cur = store.put_bytes(&k, "body".into()).await.unwrap();
    let head = |pre| store.head(&k, HeadOptions { preconditions: pre });
    assert_304(
        head(Preconditions {
            if_none_match: tags(&[&cur.etag]),
            ..Default::default()
        })
        .await,
        &cur,
        "HEAD If-None-Match",
    );
    assert_412(
        head(Preconditions::if_match(other_tag())).await,
        Some(&cur.etag),
        "HEAD If-Match stale",
    );
    assert_eq!(
        head(Preconditions::if_match(cur.etag.clone()))
            .await
            .unwrap()
            .etag,
        cur.etag
    );
}

/// Conditional deletes: a failed condition deletes nothing; a missing key is `NotFound`.
pub async fn delete_preconditions(store: Arc<dyn Store>) {
    let caps = store.capabilities().delete_conditions;
    let p = fresh_prefix("delete_pre");
    let k = key(&p, "obj");
    let cur = store.put_bytes(&k, "body".into()).await.unwrap();
    let del = |pre: Preconditions| store.delete(&k, DeleteOptions { preconditions: pre });
    if caps.if_match {
        assert_412(
            del(Preconditions::if_match(other_tag())).await,
            Some(&cur.etag),
            "delete If-Match stale",
        );
        assert!(
            store.stat(&k).await.unwrap().is_some(),
            "a failed conditional delete deletes nothing"
        );
    } else {
        assert_unsupported(
            del(Preconditions::if_match(other_tag())).await,
            "delete If-Match",
        );
    }
    if caps.if_none_match_any {
        assert_412(
            del(Preconditions::if_absent()).await,
            Some(&cur.etag),
            "delete If-None-Match: *",
        );
    }
    if caps.if_match {
        del(Preconditions::if_match(cur.etag.clone()))
            .await
            .expect("delete If-Match current");
    } else {
        del(Preconditions::none()).await.unwrap();
    }
    assert!(store.stat(&k).await.unwrap().is_none());
    assert_not_found(del(Preconditions::none()).await, "delete of a missing key");
}

/// Ranges: first byte, middle, suffix, past the end, unsatisfiable, and any range of an empty
/// object.
pub async fn ranges(store: Arc<dyn Store>) {
    let p = fresh_prefix("ranges");
    let k = key(&p, "ten");
    store.put_bytes(&k, "0123456789".into()).await.unwrap();
    let ranged = |r: ByteRange| {
        let opts = GetOptions {
            range: Some(r),
            ..Default::default()
        };
        let got = store.get(&k, opts);
        async {
            let got = got.await?;
            let range = got.range.clone();
            let size = got.meta.size;
            Ok::<_, Error>((range, size, body_of(got).await))
        }
    };
    for (r, want, bytes) in [
        (ByteRange::Bounded { first: 0, last: 0 }, 0..1, &b"0"[..]),
        (ByteRange::Bounded { first: 2, last: 5 }, 2..6, b"2345"),
        (ByteRange::Suffix(3), 7..10, b"789"),
        (ByteRange::Suffix(30), 0..10, b"0123456789"),
        (ByteRange::From(8), 8..10, b"89"),
        (
            ByteRange::Bounded {
                first: 5,
                last: 100,
            },
            5..10,
            b"56789",
        ),
    ] {
        let (range, size, body) = ranged(r).await.unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(range, Some(want), "{r}: served range");
        assert_eq!(size, 10, "{r}: meta has the full size");
        assert_eq!(&body[..], bytes, "{r}: bytes");
    }
    for r in [
        ByteRange::From(10),
        ByteRange::Bounded {
            first: 10,
            last: 12,
        },
        ByteRange::Suffix(0),
    ] {
        let got = ranged(r).await;
        assert!(
            matches!(got, Err(Error::RangeNotSatisfiable { size: 10 })),
            "{r}: {got:?}"
        );
    }
    let empty = key(&p, "empty");
    store.put_bytes(&empty, Bytes::new()).await.unwrap();
    for r in [
        ByteRange::From(0),
        ByteRange::Suffix(1),
        ByteRange::Bounded { first: 0, last: 0 },
    ] {
        let opts = GetOptions {
            range: Some(r),
            ..Default::default()
        };
        let got = store.get(&empty, opts).await;
        assert!(
            matches!(got, Err(Error::RangeNotSatisfiable { size: 0 })),
            "empty {r}: {got:?}"
        );
    }
    // Conditions are evaluated before the range: a 304 wins over a 416.
    let cur = store.head(&k, HeadOptions::default()).await.unwrap();
    let opts = GetOptions {
        range: Some(ByteRange::From(100)),
        preconditions: Preconditions {
            if_none_match: tags(&[&cur.etag]),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_304(
        store.get(&k, opts).await.map(|r| r.meta),
        &cur,
        "304 before 416",
    );
}

/// If-Range: the range is served when the ETag or date holds, the whole object otherwise.
pub async fn if_range(store: Arc<dyn Store>) {
    let p = fresh_prefix("if_range");
    let k = key(&p, "obj");
    let cur = store.put_bytes(&k, "0123456789".into()).await.unwrap();
    let with = |ir: IfRange| GetOptions {
        range: Some(ByteRange::Bounded { first: 0, last: 1 }),
        if_range: Some(ir),
        ..Default::default()
    };
    let r = store
        .get(&k, with(IfRange::ETag(cur.etag.clone())))
        .await
        .unwrap();
    assert_eq!(r.range, Some(0..2));
    assert_eq!(&body_of(r).await[..], b"01");
    let r = store
        .get(&k, with(IfRange::ETag(other_tag())))
        .await
        .unwrap();
    assert_eq!(r.range, None, "stale If-Range serves the whole object");
    assert_eq!(&body_of(r).await[..], b"0123456789");
    let r = store
        .get(&k, with(IfRange::ETag(weak_of(&cur.etag))))
        .await
        .unwrap();
    assert_eq!(r.range, None, "a weak If-Range never holds");
    let r = store
        .get(&k, with(IfRange::Date(cur.last_modified)))
        .await
        .unwrap();
    assert_eq!(r.range, Some(0..2), "If-Range with the Last-Modified date");
    let r = store
        .get(
            &k,
            with(IfRange::Date(cur.last_modified - Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert_eq!(r.range, None, "If-Range with an older date");
}

/// Every condition the store does not support atomically is refused with `Unsupported`, and the
/// refused write stores nothing.
pub async fn unsupported_conditions_refused(store: Arc<dyn Store>) {
    let caps = store.capabilities();
    let p = fresh_prefix("unsupported");
    let k = key(&p, "obj");
    let past = SystemTime::now() - Duration::from_secs(10);
    let cases: [(bool, bool, Preconditions); 5] = [
        (
            caps.put_conditions.if_match,
            caps.delete_conditions.if_match,
            Preconditions::if_match(other_tag()),
        ),
        (
            caps.put_conditions.if_match_any,
            caps.delete_conditions.if_match_any,
            Preconditions {
                if_match: Some(ETagCondition::Any),
                ..Default::default()
            },
        ),
        (
            caps.put_conditions.if_none_match_any,
            caps.delete_conditions.if_none_match_any,
            Preconditions::if_absent(),
        ),
        (
            caps.put_conditions.if_none_match,
            caps.delete_conditions.if_none_match,
            Preconditions {
                if_none_match: tags(&[&other_tag()]),
                ..Default::default()
            },
        ),
        (
            caps.put_conditions.if_unmodified_since,
            caps.delete_conditions.if_unmodified_since,
            Preconditions {
                if_unmodified_since: Some(past),
                ..Default::default()
            },
        ),
    ];
    for (put_ok, delete_ok, pre) in cases {
        if !put_ok {
            assert_unsupported(
                store.put(&k, Body::from("x"), put_opts(pre.clone())).await,
                &format!("put {pre:?}"),
            );
            assert!(
                store.stat(&k).await.unwrap().is_none(),
                "a refused write stores nothing"
            );
        }
        if !delete_ok {
            let r = store
                .delete(
                    &k,
                    DeleteOptions {
                        preconditions: pre.clone(),
                    },
                )
                .await;
            assert_unsupported(r, &format!("delete {pre:?}"));
        }
    }
    // Whatever is declared supported is then exercised by put_preconditions; a store claiming
    // atomic conditions must at least support the two that make CAS.
    if caps.atomic_scope > crate::capabilities::AtomicScope::None {
        assert!(
            caps.put_conditions.if_match && caps.put_conditions.if_none_match_any,
            "CAS needs If-Match and If-None-Match: *"
        );
    }
}

/// A body whose digest is not the expected one is refused and nothing is stored.
pub async fn expected_digest(store: Arc<dyn Store>) {
    let p = fresh_prefix("digest");
    let k = key(&p, "obj");
    let wrong = PutOptions {
        expected_etag: Some(ETag::of(b"something else")),
        ..Default::default()
    };
    let r = store.put(&k, Body::from("data"), wrong).await;
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "digest mismatch: {r:?}"
    );
    assert!(
        store.stat(&k).await.unwrap().is_none(),
        "nothing stored after a digest mismatch"
    );
    let right = PutOptions {
        expected_etag: Some(ETag::of(b"data")),
        ..Default::default()
    };
    store
        .put(&k, Body::from("data"), right)
        .await
        .expect("matching digest");
}

/// A body stream that fails part-way stores nothing and leaves the old object intact.
pub async fn aborted_body_stores_nothing(store: Arc<dyn Store>) {
    let p = fresh_prefix("aborted");
    let k = key(&p, "obj");
    let old = store.put_bytes(&k, "old".into()).await.unwrap();
    let fresh = key(&p, "fresh");
    for target in [&k, &fresh] {
        let chunks: Vec<Result<Bytes, Error>> = vec![
            Ok(pattern(100_000, 2)),
            Ok(pattern(100_000, 3)),
            Err(Error::InvalidInput("client went away".into())),
        ];
        let r = store
            .put(
                target,
                Body::from_stream(futures::stream::iter(chunks)),
                PutOptions::default(),
            )
            .await;
        assert!(r.is_err(), "a failed body fails the put");
    }
    let (data, meta) = store.get_bytes(&k).await.unwrap();
    assert_eq!(
        (&data[..], meta.etag),
        (&b"old"[..], old.etag),
        "old object intact"
    );
    assert!(
        store.stat(&fresh).await.unwrap().is_none(),
        "no torn object"
    );
}

/// Malformed keys never reach a driver: they are refused when the `Key` is made, and a bad
/// listing prefix is refused by the store.
pub async fn invalid_keys_refused(store: Arc<dyn Store>) {
    for bad in crate::key::INVALID_EXAMPLES {
        let r = Key::new(*bad);
        assert!(matches!(r, Err(Error::InvalidKey { .. })), "{bad:?}: {r:?}");
    }
    for bad in ["../", "a/../", "/"] {
        let r = store.list(ListOptions::prefix(bad)).await;
        assert!(
            matches!(r, Err(Error::InvalidKey { .. })),
            "prefix {bad:?}: {r:?}"
        );
    }
}

/// 8 workers each do 50 read-modify-write increments of one counter with `If-Match` and retry:
/// the counter must end at exactly 400.
pub async fn cas_race(store: Arc<dyn Store>) {
    const WORKERS: u32 = 8;
    const EACH: u32 = 50;
    let p = fresh_prefix("cas_race");
    let k = key(&p, "counter");
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let store = store.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(
            async move { increment(&*store, &k, EACH).await },
        ));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.expect("worker panicked").expect("increment failed");
    }
    let total = read_counter(&*store, &k).await;
    assert_eq!(
        total,
        u64::from(WORKERS * EACH),
        "lost updates ({conflicts} conflicts retried)"
    );
}

/// Every put stamps its version by [`Meta::next_version`]'s rules. A TTL over
/// [`MAX_TTL`](crate::meta::MAX_TTL), up to `Duration::MAX`, is `InvalidInput` and stores nothing
/// (it used to overflow the expiry arithmetic); `MAX_TTL` itself is stored with
/// `expires_at = last_modified + MAX_TTL`. Last-Modified never goes backwards: along one
/// writer's versions, and for concurrent compare-and-swap writers, where each version is at
/// least as late as the one it replaced.
pub async fn version_stamps(store: Arc<dyn Store>) {
    use crate::meta::MAX_TTL;
    let p = fresh_prefix("version_stamps");
    if store.capabilities().ttl {
        let k = key(&p, "ttl");
        for ttl in [
            MAX_TTL + Duration::from_secs(1),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            let opts = PutOptions {
                ttl: Some(ttl),
                ..Default::default()
            };
            let r = store.put(&k, Body::from("x"), opts).await;
            assert!(
                matches!(r, Err(Error::InvalidInput(_))),
                "a TTL of {ttl:?}: expected InvalidInput, got {r:?}"
            );
            assert!(store.stat(&k).await.unwrap().is_none(), "nothing stored");
        }
        let opts = PutOptions {
            ttl: Some(MAX_TTL),
            ..Default::default()
        };
        let put = store.put(&k, Body::from("x"), opts).await.unwrap();
        assert_eq!(
            put.meta.expires_at,
            Some(put.meta.last_modified + MAX_TTL),
            "a TTL of MAX_TTL"
        );
        let head = store.head(&k, HeadOptions::default()).await.unwrap();
        let stored = head.expires_at.expect("the expiry is kept");
        assert!(
            stored <= put.meta.last_modified + MAX_TTL
                && stored + Duration::from_secs(1) > put.meta.last_modified + MAX_TTL,
            "the stored expiry {stored:?} is the one returned (to the second)"
        );
    }

    let k = key(&p, "one-writer");
    let mut last = None;
    for i in 0..10 {
        let put = store
            .put(&k, Body::from(i.to_string()), PutOptions::default())
            .await
            .unwrap();
        if let Some(last) = last {
            assert!(
                put.meta.last_modified >= last,
                "version {i} went back in time"
            );
        }
        last = Some(put.meta.last_modified);
    }

    let k = key(&p, "swappers");
    store.put_bytes(&k, "start".into()).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (store, k) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            for attempt in 0.. {
                if done == 10 {
                    break;
                }
                assert!(attempt < 1000, "swapper {w}: 1000 attempts for 10 swaps");
                let replaced = store.head(&k, HeadOptions::default()).await.unwrap();
                let body = Bytes::from(format!("{w}-{done}"));
                match store.swap(&k, &replaced.etag, body).await {
                    Ok(new) => {
                        assert!(
                            new.last_modified >= replaced.last_modified,
                            "a swap's version ({:?}) is older than the one it replaced ({:?})",
                            new.last_modified,
                            replaced.last_modified
                        );
                        done += 1;
                    }
                    Err(Error::PreconditionFailed { .. }) => {}
                    Err(e) => panic!("swap: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a swapper panicked");
    }
}

/// [`Store::get_now`], where the store answers it, gives what [`Store::get`] gives for the same
/// request: the same meta, range and bytes, or the same kind of error (304, 412, 416, not
/// found). A store that never answers (`None`, the default) passes trivially.
pub async fn get_now_agrees_with_get(store: Arc<dyn Store>) {
    let p = fresh_prefix("get_now");
    let k = key(&p, "obj");
    let opts = PutOptions {
        content_type: Some("application/x-kit".into()),
        ..Default::default()
    };
    let cur = store
        .put(&k, Body::from("0123456789"), opts)
        .await
        .unwrap()
        .meta;
    let with = |pre: Preconditions, range: Option<ByteRange>| GetOptions {
        range,
        ..get_opts(pre)
    };
    let cases = [
        ("plain", k.clone(), with(Preconditions::default(), None)),
        ("missing key", key(&p, "absent"), GetOptions::default()),
        (
            "If-None-Match current (304)",
            k.clone(),
            with(
                Preconditions {
                    if_none_match: tags(&[&cur.etag]),
                    ..Default::default()
                },
                None,
            ),
        ),
        (
            "If-Match other (412)",
            k.clone(),
            with(
                Preconditions {
                    if_match: tags(&[&other_tag()]),
                    ..Default::default()
                },
                None,
            ),
        ),
        (
            "range",
            k.clone(),
            with(Preconditions::default(), Some(ByteRange::Suffix(3))),
        ),
        (
            "unsatisfiable range (416)",
            k.clone(),
            with(Preconditions::default(), Some(ByteRange::From(100))),
        ),
    ];
    for (name, k, opts) in cases {
        let Some(now) = store.get_now(&k, &opts) else {
            continue;
        };
        let later = store.get(&k, opts).await;
        match (now, later) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.meta, b.meta, "{name}: meta");
                assert_eq!(a.range, b.range, "{name}: range");
                assert_eq!(body_of(a).await, body_of(b).await, "{name}: bytes");
            }
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(&a),
                std::mem::discriminant(&b),
                "{name}: get_now {a:?}, get {b:?}"
            ),
            (a, b) => panic!(
                "{name}: get_now {:?}, get {:?}",
                a.map(|r| r.meta),
                b.map(|r| r.meta)
            ),
        }
    }
}

/// [`Store::get_version_now`], where the store answers it, gives the bytes [`Store::get`] gives,
/// and answers only for the current version's strong ETag: never for an older version, another
/// tag, the weak form of the current one, a missing key or a deleted object. A store that never
/// answers (`None`, the default) passes trivially.
pub async fn get_version_now_agrees_with_get(store: Arc<dyn Store>) {
    let p = fresh_prefix("get_version_now");
    let k = key(&p, "obj");
    let v1 = store.put_bytes(&k, "first".into()).await.unwrap();
    if let Some(b) = store.get_version_now(&k, &v1.etag) {
        assert_eq!(b, store.get_bytes(&k).await.unwrap().0, "current version");
    }
    let v2 = store.put_bytes(&k, "second".into()).await.unwrap();
    assert_eq!(
        store.get_version_now(&k, &v1.etag),
        None,
        "an older version"
    );
    if let Some(b) = store.get_version_now(&k, &v2.etag) {
        assert_eq!(b, store.get_bytes(&k).await.unwrap().0, "current version");
    }
    let weak = ETag::weak(v2.etag.opaque()).unwrap();
    assert_eq!(store.get_version_now(&k, &weak), None, "the weak tag");
    assert_eq!(store.get_version_now(&k, &other_tag()), None, "another tag");
    let absent = key(&p, "absent");
    assert_eq!(
        store.get_version_now(&absent, &v2.etag),
        None,
        "missing key"
    );
    store.delete(&k, DeleteOptions::default()).await.unwrap();
    assert_eq!(store.get_version_now(&k, &v2.etag), None, "deleted");
}
