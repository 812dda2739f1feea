//! The http driver against scripted raw-TCP servers: status → typed error mapping, what is (and
//! is never) retried, the token, the key prefix, and aborted uploads.
//!
//! The conformance kit (and the CAS race) runs against a live Larder server in
//! `crates/larder-server/tests/http_driver.rs`, where both crates are available.
#![cfg(feature = "http")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder::drivers::http::{HttpConfig, HttpError, HttpStore};
use larder::{
    Body, ByteRange, DeleteOptions, ETag, Error, GetOptions, HeadOptions, Key, ListOptions,
    Preconditions, PutOptions, Store,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A request as the scripted server saw it.
#[derive(Clone, Debug, Default)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A chunked body whose terminating chunk never came.
    truncated: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = Arc<dyn Fn(usize, &Seen) -> String + Send + Sync>;

/// A tiny HTTP/1.1 server: one request per connection, answered by `respond(n, request)`
/// (n counts requests from 0). Returns its base URL and what it saw.
async fn scripted(respond: Responder) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let (log, respond, count) = (log.clone(), respond.clone(), count.clone());
            tokio::spawn(async move {
                let (req, mut conn) = read_request(conn).await;
                let n = count.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(req.clone());
                if req.truncated {
                    return;
                }
                let resp = respond(n, &req);
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, seen)
}

async fn read_request(conn: TcpStream) -> (Seen, TcpStream) {
    let mut r = BufReader::new(conn);
    let mut seen = Seen::default();
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let mut parts = line.split_whitespace();
    seen.method = parts.next().unwrap_or_default().to_owned();
    seen.path = parts.next().unwrap_or_default().to_owned();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        seen.headers
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some(len) = seen.header("content-length") {
        let mut body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut body).await.unwrap();
        seen.body = body;
    } else if seen.header("transfer-encoding") == Some("chunked") {
        seen.truncated = true;
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                break;
            };
            let mut chunk = vec![0; size + 2];
            if r.read_exact(&mut chunk).await.is_err() {
                break;
            }
            if size == 0 {
                seen.truncated = false;
                break;
            }
            seen.body.extend_from_slice(&chunk[..size]);
        }
    }
    (seen, r.into_inner())
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s
}

fn meta_json(key: &str, data: &[u8]) -> String {
    format!(
        r#"{{"key":"{key}","etag":"\"{}\"","size":{},"last_modified":"2026-11-23T08:00:00.123Z","expires_at":null,"content_type":null,"metadata":{{}}}}"#,
        ETag::of(data).opaque(),
        data.len()
    )
}

/// A store that sends only the requests a test makes (no capabilities request on open).
async fn store(url: &str) -> HttpStore {
    let mut config = HttpConfig::from_url(url).unwrap();
    config.retry_backoff = Duration::from_millis(5);
    config.fetch_capabilities = false;
    HttpStore::open(config).await.unwrap()
}

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

#[tokio::test]
async fn statuses_become_typed_errors() {
    let current = ETag::of(b"current");
    let cur = current.to_string();
    let cur2 = cur.clone();
    let (url, seen) = scripted(Arc::new(move |_, req| {
        let name = req.path.rsplit('/').next().unwrap().to_owned();
        let err = |code: &str, msg: &str| {
            format!(r#"{{"error":{{"code":"{code}","message":"{msg}","current":null}}}}"#)
        };
        match name.as_str() {
            "nm" => response(
                "304 Not Modified",
                &[
                    ("etag", &cur2),
                    ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("content-type", "text/plain"),
                    ("x-larder-meta-owner", "kit"),
                ],
                "",
            ),
            "pf" if req.method == "HEAD" => {
                response("412 Precondition Failed", &[("etag", &cur2)], "")
            }
            "pf" => response(
                "412 Precondition Failed",
                &[("content-type", "application/json")],
                &format!(
                    r#"{{"error":{{"code":"precondition_failed","message":"precondition failed","current":{}}}}}"#,
                    meta_json("pre/fix/pf", b"current")
                ),
            ),
            "pf-none" => response(
                "412 Precondition Failed",
                &[],
                &err("precondition_failed", "precondition failed"),
            ),
            "range" => response(
                "416 Range Not Satisfiable",
                &[("content-range", "bytes */10")],
                &err("range_not_satisfiable", "range not satisfiable"),
            ),
            "missing" => response("404 Not Found", &[], &err("not_found", "not found")),
            "badkey" => response(
                "400 Bad Request",
                &[],
                r#"{"error":{"code":"invalid_key","message":"bad key","reason":"key has a '.' or '..' segment"}}"#,
            ),
            "badinput" => response("400 Bad Request", &[], &err("invalid_input", "bad header")),
            "big" => response(
                "413 Payload Too Large",
                &[],
                r#"{"error":{"code":"too_large","message":"worded any way","limit":1024}}"#,
            ),
            "unsup" => response("501 Not Implemented", &[], &err("unsupported", "unsupported: If-Match")),
            "noauth" => response(
                "401 Unauthorized",
                &[("www-authenticate", "Bearer")],
                &err("unauthorized", "a token is required"),
            ),
            "scope" => response("403 Forbidden", &[], &err("forbidden", "outside the token's scope")),
            _ => response("500 Internal Server Error", &[], &err("internal", "boom")),
        }
    }))
    .await;
    let store = store(&format!("{url}/pre/fix")).await;
    let get = |name: &str, pre: Preconditions| {
        let k = key(name);
        let store = &store;
        async move {
            store
                .get(
                    &k,
                    GetOptions {
                        preconditions: pre,
                        ..Default::default()
                    },
                )
                .await
                .map(|r| r.meta)
        }
    };
    match get("nm", Preconditions::none()).await {
        Err(Error::NotModified(m)) => {
            assert_eq!(m.etag, current);
            assert_eq!(m.key, key("nm"));
            assert_eq!(m.content_type.as_deref(), Some("text/plain"));
            assert_eq!(m.metadata.get("owner").map(String::as_str), Some("kit"));
        }
        other => panic!("304: {other:?}"),
    }
    match get("pf", Preconditions::none()).await {
        Err(Error::PreconditionFailed { current: Some(m) }) => {
            assert_eq!(m.etag, current);
            assert_eq!(m.key, key("pf"), "the prefix is stripped from current");
            assert_eq!(larder::meta::to_millis(m.last_modified) % 1000, 123);
        }
        other => panic!("412: {other:?}"),
    }
    match store.head(&key("pf"), HeadOptions::default()).await {
        Err(Error::PreconditionFailed { current: Some(m) }) => assert_eq!(m.etag, current),
        other => panic!("HEAD 412: {other:?}"),
    }
    assert!(matches!(
        get("pf-none", Preconditions::none()).await,
        Err(Error::PreconditionFailed { current: None })
    ));
    let ranged = store
        .get(
            &key("range"),
            GetOptions {
                range: Some(ByteRange::From(20)),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(
        ranged,
        Err(Error::RangeNotSatisfiable { size: 10 })
    ));
    assert!(matches!(
        get("missing", Preconditions::none()).await,
        Err(Error::NotFound { key }) if key == "missing"
    ));
    // The typed fields are read, not the message.
    assert!(matches!(
        get("badkey", Preconditions::none()).await,
        Err(Error::InvalidKey { reason, .. }) if reason == "key has a '.' or '..' segment"
    ));
    assert!(matches!(
        get("badinput", Preconditions::none()).await,
        Err(Error::InvalidInput(m)) if m == "bad header"
    ));
    let big = store
        .put(&key("big"), Body::from("x"), PutOptions::default())
        .await;
    assert!(
        matches!(big, Err(Error::TooLarge { limit: 1024 })),
        "{big:?}"
    );
    let unsup = store.delete(&key("unsup"), DeleteOptions::default()).await;
    assert!(matches!(unsup, Err(Error::Unsupported { .. })), "{unsup:?}");
    for (name, status) in [("noauth", 401), ("scope", 403), ("other", 500)] {
        match get(name, Preconditions::none()).await {
            Err(e @ Error::Backend { .. }) => {
                assert!(!e.is_retryable(), "{name}");
                let Error::Backend { source, .. } = e else {
                    unreachable!()
                };
                let http = source.downcast_ref::<HttpError>().expect("an HttpError");
                assert_eq!(http.status, status);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|r| r.path.starts_with("/v1/objects/pre/fix/")),
        "every request is under the prefix"
    );
}

/// A server that answers 503 to the first request, then succeeds: idempotent requests are
/// retried, a PUT and a conditional DELETE are sent once and fail.
#[tokio::test]
async fn only_idempotent_requests_are_retried() {
    let ok = |req: &Seen| match req.method.as_str() {
        "PUT" => response("201 Created", &[], &meta_json("k", b"v")),
        "DELETE" => response("204 No Content", &[], ""),
        "GET" if req.path.starts_with("/v1/objects?") => response(
            "200 OK",
            &[],
            r#"{"objects":[],"common_prefixes":[],"next_cursor":null}"#,
        ),
        _ => response("200 OK", &[("etag", &ETag::of(b"v").to_string())], "v"),
    };
    let unavailable = || {
        response(
            "503 Service Unavailable",
            &[("retry-after", "0")],
            r#"{"error":{"code":"backend","message":"try again","current":null}}"#,
        )
    };
    let tag = ETag::of(b"v");
    type Op = Box<dyn Fn(HttpStore) -> futures::future::BoxFuture<'static, larder::Result<()>>>;
    let cases: Vec<(&str, bool, Op)> = vec![
        (
            "GET",
            true,
            Box::new(|s| {
                Box::pin(async move { s.get(&key("k"), GetOptions::default()).await.map(drop) })
            }),
        ),
        (
            "HEAD",
            true,
            Box::new(|s| {
                Box::pin(async move { s.head(&key("k"), HeadOptions::default()).await.map(drop) })
            }),
        ),
        (
            "list",
            true,
            Box::new(|s| Box::pin(async move { s.list(ListOptions::default()).await.map(drop) })),
        ),
        (
            "DELETE",
            true,
            Box::new(|s| {
                Box::pin(async move { s.delete(&key("k"), DeleteOptions::default()).await })
            }),
        ),
        (
            "conditional DELETE",
            false,
            Box::new(move |s| {
                let tag = tag.clone();
                Box::pin(async move {
                    let opts = DeleteOptions {
                        preconditions: Preconditions::if_match(tag),
                    };
                    s.delete(&key("k"), opts).await
                })
            }),
        ),
        (
            "conditional PUT",
            false,
            Box::new(|s| {
                Box::pin(async move {
                    let opts = PutOptions {
                        preconditions: Preconditions::if_absent(),
                        ..Default::default()
                    };
                    s.put(&key("k"), Body::from("v"), opts).await.map(drop)
                })
            }),
        ),
        (
            "PUT",
            false,
            Box::new(|s| {
                Box::pin(async move {
                    s.put(&key("k"), Body::from("v"), PutOptions::default())
                        .await
                        .map(drop)
                })
            }),
        ),
    ];
    for (what, retried, op) in cases {
        let (url, seen) = scripted(Arc::new(
            move |n, req| {
                if n == 0 {
                    unavailable()
                } else {
                    ok(req)
                }
            },
        ))
        .await;
        let r = op(store(&url).await).await;
        let requests = seen.lock().unwrap().len();
        if retried {
            r.unwrap_or_else(|e| panic!("{what} is retried after a 503: {e}"));
            assert_eq!(requests, 2, "{what}: one retry");
        } else {
            assert!(
                matches!(&r, Err(e) if e.is_retryable()),
                "{what}: the 503 is returned, retryable: {r:?}"
            );
            assert_eq!(requests, 1, "{what} must never be repeated by the driver");
        }
    }
}

#[tokio::test]
async fn gives_up_after_the_configured_retries() {
    let (url, seen) = scripted(Arc::new(|_, _| {
        response("503 Service Unavailable", &[("retry-after", "0")], "")
    }))
    .await;
    let r = store(&format!("{url}?retries=2"))
        .await
        .get(&key("k"), GetOptions::default())
        .await;
    assert!(matches!(&r, Err(e) if e.is_retryable()), "{r:?}");
    assert_eq!(seen.lock().unwrap().len(), 3, "one try and two retries");
}

#[tokio::test]
async fn connect_errors_are_retryable() {
    // A port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = store(&format!("http://127.0.0.1:{port}?retries=1"))
        .await
        .head(&key("k"), HeadOptions::default())
        .await;
    assert!(matches!(&r, Err(e) if e.is_retryable()), "{r:?}");
}

#[tokio::test]
async fn token_is_sent_as_bearer() {
    let (url, seen) = scripted(Arc::new(|_, req| {
        if req.header("authorization") == Some("Bearer s3cret") {
            response("200 OK", &[("etag", &ETag::of(b"v").to_string())], "v")
        } else {
            response(
                "401 Unauthorized",
                &[("www-authenticate", "Bearer")],
                r#"{"error":{"code":"unauthorized","message":"no token","current":null}}"#,
            )
        }
    }))
    .await;
    let with = store(&format!("larder+{url}?token=s3cret")).await;
    let (data, meta) = larder::StoreExt::get_bytes(&with, &key("k")).await.unwrap();
    assert_eq!((&data[..], meta.etag), (&b"v"[..], ETag::of(b"v")));
    let without = store(&url)
        .await
        .get(&key("k"), GetOptions::default())
        .await;
    assert!(
        matches!(&without, Err(Error::Backend { source, retryable: false })
            if source.downcast_ref::<HttpError>().is_some_and(|h| h.status == 401)),
        "{without:?}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].header("authorization"), None, "no token, no header");
}

#[tokio::test]
async fn put_sends_options_and_returns_meta() {
    let (url, seen) = scripted(Arc::new(|n, _| {
        if n == 0 {
            response("201 Created", &[], &meta_json("k", b"hello"))
        } else {
            response("200 OK", &[], &meta_json("k", b"hello"))
        }
    }))
    .await;
    let store = store(&url).await;
    let opts = PutOptions {
        preconditions: Preconditions::if_absent(),
        ttl: Some(Duration::from_secs(3600)),
        content_type: Some("text/plain".into()),
        metadata: [("owner".to_string(), "me".to_string())].into(),
        expected_etag: Some(ETag::of(b"hello")),
    };
    let r = store
        .put(&key("k"), Body::from("hello"), opts.clone())
        .await
        .unwrap();
    assert!(r.created);
    assert_eq!(r.meta.etag, ETag::of(b"hello"));
    let chunks: Vec<larder::Result<Bytes>> = vec![Ok("hel".into()), Ok("lo".into())];
    let r = store
        .put(
            &key("k"),
            Body::from_stream(futures::stream::iter(chunks)),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert!(!r.created);
    let seen = seen.lock().unwrap();
    let first = &seen[0];
    assert_eq!(first.method, "PUT");
    assert_eq!(first.path, "/v1/objects/k");
    assert_eq!(first.body, b"hello");
    assert_eq!(first.header("if-none-match"), Some("*"));
    assert_eq!(first.header("x-larder-ttl"), Some("3600"));
    assert_eq!(first.header("content-type"), Some("text/plain"));
    assert_eq!(first.header("x-larder-meta-owner"), Some("me"));
    assert_eq!(
        first.header("x-larder-expect-etag"),
        Some(ETag::of(b"hello").to_string().as_str())
    );
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[1].body, b"hello", "streamed body");
}

/// A body stream that fails mid-way must never look complete to the server: the request is cut
/// off before the terminating chunk, and the caller gets the body's own error.
#[tokio::test]
async fn failed_body_stream_aborts_the_upload() {
    let (url, seen) = scripted(Arc::new(|_, _| {
        response("201 Created", &[], &meta_json("k", b"x"))
    }))
    .await;
    // The first chunk goes out (with the request head) before the stream fails.
    let body = futures::stream::unfold(0, |step| async move {
        match step {
            0 => Some((Ok(Bytes::from(vec![7u8; 100_000])), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Some((Err(Error::InvalidInput("client went away".into())), 2))
            }
            _ => None,
        }
    });
    let r = store(&url)
        .await
        .put(&key("k"), Body::from_stream(body), PutOptions::default())
        .await;
    assert!(
        matches!(&r, Err(Error::InvalidInput(m)) if m == "client went away"),
        "{r:?}"
    );
    // The server task records the request once the connection is gone.
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PUT");
    assert!(
        seen[0].truncated,
        "the server never saw the end of the body"
    );
    assert_eq!(seen[0].body.len(), 100_000, "the first chunk was sent");
}

#[tokio::test]
async fn listing_maps_prefix_and_cursor() {
    let (url, seen) = scripted(Arc::new(|_, _| {
        response(
            "200 OK",
            &[],
            &format!(
                r#"{{"objects":[{}],"common_prefixes":["p/dir/"],"next_cursor":"p/dir/"}}"#,
                meta_json("p/a", b"a")
            ),
        )
    }))
    .await;
    let store = store(&format!("{url}/p/")).await;
    let page = store
        .list(ListOptions {
            prefix: "".into(),
            delimiter: Some('/'),
            limit: Some(2),
            cursor: Some("p/a".into()),
        })
        .await
        .unwrap();
    assert_eq!(page.objects[0].key, key("a"));
    assert_eq!(page.common_prefixes, ["dir/"]);
    assert_eq!(page.next_cursor.as_deref(), Some("p/dir/"));
    assert_eq!(
        seen.lock().unwrap()[0].path,
        "/v1/objects?prefix=p%2F&delimiter=%2F&limit=2&cursor=p%2Fa"
    );
    let bad = store.list(ListOptions::prefix("../")).await;
    assert!(matches!(bad, Err(Error::InvalidKey { .. })), "{bad:?}");
}

#[tokio::test]
async fn open_accepts_the_http_schemes() {
    for url in [
        "http://127.0.0.1:1",
        "https://example.com/x",
        "larder+http://127.0.0.1:1/a/b?token=t&timeout=3",
        "larder+https://example.com",
    ] {
        let s = larder::open(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(s.capabilities().name, "http");
    }
}
