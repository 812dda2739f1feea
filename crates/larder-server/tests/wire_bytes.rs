//! What the hot paths put on the wire, byte for byte: the status line, every field (name,
//! value and order) and the body of a native PUT, GET, HEAD and 304, and of unstorage's PUT and
//! GET. The expected values are computed here independently of the server's fast paths:
//! dates with `httpdate` and `humantime`, the JSON through an owned `MetaJson` and `serde_json`,
//! as the server wrote them before those fast paths.
//!
//! One order differs between answers, with the same fields: an answer with a body of known size
//! and no `Content-Length` field (the native ones, unstorage's PUT: both served without the
//! router) leaves it to hyper, which writes it after the fields it was given, so after the
//! `connection: close` it adds to them when the client closes (unstorage's GET sets the field
//! itself). The order of different fields carries no meaning (RFC 9110 5.3).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use larder::drivers::memory::MemoryStore;
use larder::wire::MetaJson;
use larder::{HeadOptions, Key, Meta, Store};
use larder_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request on a new connection; the answer's head lines (without the `date` field, whose
/// value is the clock's: checked for its form only) and its body.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&out[..end]).unwrap();
    let mut lines = Vec::new();
    for line in head.split("\r\n") {
        match line.strip_prefix("date: ") {
            Some(date) => assert!(httpdate::parse_http_date(date).is_ok(), "{line}"),
            None => lines.push(line.to_owned()),
        }
    }
    (lines, out[end + 4..].to_vec())
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The JSON of `m` as the server wrote it with an owned `MetaJson` and `serde_json`.
fn reference_json(m: &Meta) -> Vec<u8> {
    let date = |t| humantime::format_rfc3339_millis(t).to_string();
    serde_json::to_vec(&MetaJson {
        key: m.key.to_string(),
        etag: m.etag.to_string(),
        size: m.size,
        last_modified: date(m.last_modified),
        expires_at: m.expires_at.map(date),
        content_type: m.content_type.clone(),
        metadata: m.metadata.clone(),
    })
    .unwrap()
}

/// `max-age=N` of an object that expires at `expires`, N the whole seconds left when the
/// answer was made (between `before` and now).
fn max_age_of(line: &str, expires: SystemTime, before: SystemTime) -> String {
    let most = expires.duration_since(before).unwrap().as_secs();
    let n: u64 = line
        .strip_prefix("cache-control: max-age=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(n <= most && n + 5 >= most, "{line}");
    line.to_owned()
}

#[tokio::test]
async fn native_and_unstorage_answers_are_byte_exact() {
    let store = Arc::new(MemoryStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = larder_server::spawn(listener, store.clone(), Config::default());
    let addr = handle.local_addr();
    let head_of = |key: &'static str| {
        let store = store.clone();
        async move {
            store
                .head(&Key::new(key).unwrap(), HeadOptions::default())
                .await
                .unwrap()
        }
    };

    // A native PUT with every field that reaches the JSON: a key that needs escaping, a type,
    // metadata and a TTL.
    let body = b"hello";
    let put = format!(
        "PUT /v1/objects/d%22q%22/%C3%BC HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: text/plain\r\nx-larder-meta-owner: o\"ps\r\nx-larder-ttl: 60\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut request = put.into_bytes();
    request.extend_from_slice(body);
    let (head, json) = exchange(addr, &request).await;
    let m = head_of("d\"q\"/ü").await;
    let expected_json = reference_json(&m);
    assert_eq!(
        String::from_utf8(json).unwrap(),
        String::from_utf8(expected_json.clone()).unwrap()
    );
    let etag = format!("etag: \"{}\"", m.etag.opaque());
    let last_modified = format!("last-modified: {}", http_date(m.last_modified));
    assert_eq!(
        head,
        Vec::<String>::from([
            "HTTP/1.1 201 Created".into(),
            "content-type: application/json".into(),
            etag.clone(),
            last_modified.clone(),
            "connection: close".into(),
            format!("content-length: {}", expected_json.len()),
        ])
    );

    // GET, HEAD and a 304 of it: the validators, then the type, expiry and metadata.
    let expires = m.expires_at.unwrap();
    let before = SystemTime::now();
    let get = b"GET /v1/objects/d%22q%22/%C3%BC HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let (head, got) = exchange(addr, get).await;
    assert_eq!(got, body);
    let described = |head: &[String]| {
        vec![
            etag.clone(),
            last_modified.clone(),
            "content-type: text/plain".to_string(),
            format!("expires: {}", http_date(expires)),
            max_age_of(&head[5], expires, before),
            "x-larder-meta-owner: o\"ps".to_string(),
        ]
    };
    let mut expected = vec!["HTTP/1.1 200 OK".to_string()];
    expected.extend(described(&head));
    let mut expected_head = expected.clone();
    expected.extend([
        "accept-ranges: bytes".into(),
        "connection: close".into(),
        "content-length: 5".into(),
    ]);
    assert_eq!(head, expected);

    // HEAD: the length of the GET's body, in a field of the answer's own.
    let head_req =
        b"HEAD /v1/objects/d%22q%22/%C3%BC HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let (head, got) = exchange(addr, head_req).await;
    assert!(got.is_empty());
    expected_head.extend([
        "accept-ranges: bytes".into(),
        "content-length: 5".into(),
        "connection: close".into(),
    ]);
    assert_eq!(head, expected_head);

    let not_modified = format!(
        "GET /v1/objects/d%22q%22/%C3%BC HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         if-none-match: \"{}\"\r\n\r\n",
        m.etag.opaque()
    );
    let (head, got) = exchange(addr, not_modified.as_bytes()).await;
    assert!(got.is_empty());
    let mut expected = vec!["HTTP/1.1 304 Not Modified".to_string()];
    expected.extend(described(&head));
    expected.push("connection: close".into());
    assert_eq!(head, expected);

    // A plain PUT, replacing: no expiry, no type, no metadata.
    let replace = b"PUT /v1/objects/plain HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                    content-length: 0\r\n\r\n";
    exchange(addr, replace).await;
    let (head, json) = exchange(addr, replace).await;
    let m = head_of("plain").await;
    let expected_json = reference_json(&m);
    assert_eq!(json, expected_json);
    assert_eq!(
        head,
        Vec::<String>::from([
            "HTTP/1.1 200 OK".into(),
            "content-type: application/json".into(),
            format!("etag: \"{}\"", m.etag.opaque()),
            format!("last-modified: {}", http_date(m.last_modified)),
            "connection: close".into(),
            format!("content-length: {}", expected_json.len()),
        ])
    );

    // unstorage's PUT and GET of one value.
    let put = b"PUT /unstorage/u:v HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                content-length: 5\r\n\r\nhello";
    let (head, got) = exchange(addr, put).await;
    let m = head_of("u/v").await;
    let etag = format!("etag: \"{}\"", m.etag.opaque());
    let last_modified = format!("last-modified: {}", http_date(m.last_modified));
    assert_eq!(got, b"OK");
    assert_eq!(
        head,
        Vec::<String>::from([
            "HTTP/1.1 200 OK".into(),
            "content-type: text/plain; charset=utf-8".into(),
            etag.clone(),
            last_modified.clone(),
            "connection: close".into(),
            "content-length: 2".into(),
        ])
    );
    for path in ["/unstorage/u:v", "/unstorage/u/v"] {
        let get = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let (head, got) = exchange(addr, get.as_bytes()).await;
        assert_eq!(got, b"hello");
        assert_eq!(
            head,
            Vec::<String>::from([
                "HTTP/1.1 200 OK".into(),
                etag.clone(),
                last_modified.clone(),
                "content-type: text/plain; charset=utf-8".into(),
                "content-length: 5".into(),
                "connection: close".into(),
            ])
        );
    }
    handle.shutdown().await.unwrap();
}
