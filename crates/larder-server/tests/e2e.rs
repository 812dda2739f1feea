//! The server over a real socket (127.0.0.1:0), against the memory and the fs store.

use std::sync::Arc;
use std::time::Duration;

use larder::Store;
use larder_server::config::{Scope, TokenConfig};
use larder_server::{Config, ServerHandle};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A date before any object was written.
const LONG_AGO: &str = "Mon, 01 Jan 2001 00:00:00 GMT";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Fs,
}

const KINDS: [Kind; 2] = [Kind::Memory, Kind::Fs];

struct Server {
    handle: Option<ServerHandle>,
    base: String,
    client: Client,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start(kind: Kind, config: Config) -> Server {
        let (store, dir): (Arc<dyn Store>, _) = match kind {
            Kind::Memory => (Arc::new(larder::drivers::memory::MemoryStore::new()), None),
            Kind::Fs => {
                let dir = tempfile::tempdir().unwrap();
                let store = larder::drivers::fs::FsStore::open(larder::drivers::fs::FsConfig::new(
                    dir.path(),
                ))
                .await
                .unwrap();
                (Arc::new(store), Some(dir))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = larder_server::spawn(listener, store, config);
        Server {
            base: handle.url(),
            handle: Some(handle),
            client: Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn obj(&self, key: &str) -> String {
        self.url(&format!("/v1/objects/{key}"))
    }

    fn req(&self, method: Method, key: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.obj(key))
    }

    /// `method` on the object `key` with `headers` (a name may repeat: each is one field).
    fn req_with(&self, method: Method, key: &str, headers: &[(&str, &str)]) -> RequestBuilder {
        let req = self.req(method, key);
        headers
            .iter()
            .fold(req, |req, (name, value)| req.header(*name, *value))
    }

    /// Sends `method` on the object `key` with `headers` and no body.
    async fn send(&self, method: Method, key: &str, headers: &[(&str, &str)]) -> Response {
        self.req_with(method, key, headers).send().await.unwrap()
    }

    /// A GET of the object `key` with `headers`.
    async fn get(&self, key: &str, headers: &[(&str, &str)]) -> Response {
        self.send(Method::GET, key, headers).await
    }

    /// A PUT of `body` to the object `key` with `headers`.
    async fn put_with(
        &self,
        key: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.write(Method::PUT, key, headers, body).await
    }

    /// Sends `method` on the object `key` with `headers` and `body`.
    async fn write(
        &self,
        method: Method,
        key: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let req = self.req_with(method, key, headers).body(body);
        req.send().await.unwrap()
    }

    /// A GET of `path` (below the base URL).
    async fn get_url(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn put(&self, key: &str, body: &'static str) -> (StatusCode, String) {
        let r = self.put_with(key, &[], body).await;
        let status = r.status();
        (status, header(r.headers(), "etag"))
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.handle.as_ref().unwrap().local_addr()
    }

    async fn metrics(&self) -> String {
        self.get_url("/metrics").await.text().await.unwrap()
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn json(r: reqwest::Response) -> Value {
    let b = r.bytes().await.unwrap();
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b)))
}

async fn error_code(r: reqwest::Response) -> String {
    json(r).await["error"]["code"].as_str().unwrap().to_owned()
}

/// Sends raw bytes on a new connection and returns everything the server answers until it
/// closes (or `wait` passes).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn objects_round_trip_with_every_plain_status() {
    let typed = [
        ("content-type", "text/plain"),
        ("x-larder-meta-Owner", "alice"),
    ];
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let r = s.put_with("dir/a.txt", &typed, "hello world").await;
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        let etag = header(r.headers(), "etag");
        assert_eq!(etag, larder::ETag::of(b"hello world").to_string());
        assert!(!header(r.headers(), "last-modified").is_empty());
        let meta = json(r).await;
        assert_eq!(meta["key"], "dir/a.txt");
        assert_eq!(meta["etag"], etag);
        assert_eq!(meta["size"], 11);
        assert_eq!(meta["content_type"], "text/plain");
        assert_eq!(meta["metadata"]["owner"], "alice");
        assert_eq!(meta["expires_at"], Value::Null);
        assert!(meta["last_modified"].as_str().unwrap().ends_with('Z'));

        // Replacing is 200; POST is a synonym.
        let typed = [
            ("content-type", "text/plain"),
            ("x-larder-meta-owner", "alice"),
        ];
        let r = s
            .write(Method::POST, "dir/a.txt", &typed, "hello world")
            .await;
        assert_eq!(r.status(), StatusCode::OK);

        let r = s.get("dir/a.txt", &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        assert_eq!(header(&h, "etag"), etag);
        assert_eq!(header(&h, "content-type"), "text/plain");
        assert_eq!(header(&h, "content-length"), "11");
        assert_eq!(header(&h, "accept-ranges"), "bytes");
        assert_eq!(header(&h, "x-larder-meta-owner"), "alice");
        assert!(httpdate::parse_http_date(&header(&h, "last-modified")).is_ok());
        assert!(h.get("cache-control").is_none() && h.get("expires").is_none());
        assert_eq!(r.text().await.unwrap(), "hello world");

        let r = s.send(Method::HEAD, "dir/a.txt", &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(r.headers(), "content-length"), "11");
        assert_eq!(header(r.headers(), "etag"), etag);

        // Default content type.
        s.put("plain", "x").await;
        let r = s.get("plain", &[]).await;
        assert_eq!(
            header(r.headers(), "content-type"),
            "application/octet-stream"
        );

        let r = s.send(Method::DELETE, "dir/a.txt", &[]).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = s.send(Method::DELETE, "dir/a.txt", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "not_found");
        let r = s.get("dir/a.txt", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "not_found");
        let r = s.send(Method::HEAD, "dir/a.txt", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let r = s.get_url("/healthz").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "ok");
        let r = s.get_url("/nope").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn conditional_reads() {
    let stored = [
        ("content-type", "text/csv"),
        ("x-larder-meta-color", "blue"),
        ("x-larder-ttl", "3600"),
    ];
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let r = s.put_with("k", &stored, "a,b,c").await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let etag = header(r.headers(), "etag");
        let other = larder::ETag::of(b"other").to_string();
        let weak = format!("W/{etag}");

        // 304 carries the stored validators and representation headers.
        let check_304 = |r: &reqwest::Response| {
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{kind:?}");
            let h = r.headers();
            assert_eq!(header(h, "etag"), etag);
            assert!(!header(h, "last-modified").is_empty());
            assert_eq!(header(h, "content-type"), "text/csv");
            assert_eq!(header(h, "x-larder-meta-color"), "blue");
            let cc = header(h, "cache-control");
            let max_age: u64 = cc.strip_prefix("max-age=").unwrap().parse().unwrap();
            assert!((3590..=3600).contains(&max_age), "{cc}");
            assert!(httpdate::parse_http_date(&header(h, "expires")).is_ok());
        };
        let r = s.get("k", &[("if-none-match", &etag)]).await;
        check_304(&r);
        assert!(r.bytes().await.unwrap().is_empty());
        // Repeated fields are one list: the match is in the second field.
        let r = s
            .get("k", &[("if-none-match", &other), ("if-none-match", &etag)])
            .await;
        check_304(&r);
        // If-None-Match compares weakly.
        let r = s.get("k", &[("if-none-match", &weak)]).await;
        check_304(&r);
        let r = s.send(Method::HEAD, "k", &[("if-none-match", "*")]).await;
        check_304(&r);
        let r = s.get("k", &[("if-none-match", &other)]).await;
        assert_eq!(r.status(), StatusCode::OK);

        // If-Match compares strongly: a weak tag never matches.
        let r = s.get("k", &[("if-match", &weak)]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), etag);
        let body = json(r).await;
        assert_eq!(body["error"]["code"], "precondition_failed");
        assert_eq!(body["error"]["current"]["etag"], etag);
        let r = s
            .get("k", &[("if-match", &other), ("if-match", &etag)])
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = s.send(Method::HEAD, "k", &[("if-match", &other)]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), etag);

        // Dates: only when the ETag conditions are absent.
        let future =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let r = s.get("k", &[("if-modified-since", &future)]).await;
        check_304(&r);
        let r = s
            .get(
                "k",
                &[("if-none-match", &other), ("if-modified-since", &future)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "If-Modified-Since ignored");
        let r = s.get("k", &[("if-unmodified-since", LONG_AGO)]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s
            .get(
                "k",
                &[("if-match", &etag), ("if-unmodified-since", LONG_AGO)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "If-Unmodified-Since ignored");
        // An invalid date is ignored (RFC 9110 13.1.3), a malformed ETag list is a 400.
        let r = s.get("k", &[("if-modified-since", "not a date")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = s.get("k", &[("if-none-match", "unquoted")]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(r).await, "invalid_input");
        let r = s.get("k", &[("if-match", &format!("*, {etag}"))]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // A missing object is a 404 whatever the conditions.
        let r = s.get("missing", &[("if-none-match", "*")]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn ranges() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let (_, etag) = s.put("r", "0123456789").await;

        let r = s.get("r", &[("range", "bytes=2-5")]).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{kind:?}");
        assert_eq!(header(r.headers(), "content-range"), "bytes 2-5/10");
        assert_eq!(header(r.headers(), "content-length"), "4");
        assert_eq!(header(r.headers(), "etag"), etag);
        assert_eq!(r.text().await.unwrap(), "2345");
        let r = s.get("r", &[("range", "bytes=-3")]).await;
        assert_eq!(r.text().await.unwrap(), "789");
        let r = s.get("r", &[("range", "bytes=7-")]).await;
        assert_eq!(header(r.headers(), "content-range"), "bytes 7-9/10");
        let r = s.get("r", &[("range", "bytes=8-100")]).await;
        assert_eq!(r.text().await.unwrap(), "89");

        for unsatisfiable in ["bytes=10-", "bytes=20-30", "bytes=-0", "bytes=0-1,4-5"] {
            let r = s.get("r", &[("range", unsatisfiable)]).await;
            assert_eq!(
                r.status(),
                StatusCode::RANGE_NOT_SATISFIABLE,
                "{unsatisfiable}"
            );
            assert_eq!(header(r.headers(), "content-range"), "bytes */10");
            assert_eq!(error_code(r).await, "range_not_satisfiable");
        }
        // Another unit is ignored; a malformed bytes range is a 400.
        let r = s.get("r", &[("range", "items=0-1")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = s.get("r", &[("range", "bytes=5-1")]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // If-Range: the range only while the validator holds.
        let r = s
            .get("r", &[("range", "bytes=0-0"), ("if-range", &etag)])
            .await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let stale = larder::ETag::of(b"old").to_string();
        let r = s
            .get("r", &[("range", "bytes=0-0"), ("if-range", &stale)])
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "0123456789");
        let r = s
            .get("r", &[("range", "bytes=0-1,4-5"), ("if-range", &stale)])
            .await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "multi-range with a failed If-Range"
        );
        let lm = {
            let r = s.send(Method::HEAD, "r", &[]).await;
            header(r.headers(), "last-modified")
        };
        let r = s
            .get("r", &[("range", "bytes=0-0"), ("if-range", &lm)])
            .await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let r = s
            .get("r", &[("range", "bytes=0-0"), ("if-range", LONG_AGO)])
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        // Preconditions come before the range.
        let r = s
            .get("r", &[("range", "bytes=0-0"), ("if-none-match", &etag)])
            .await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = s
            .get("r", &[("range", "bytes=0-1,3-4"), ("if-match", &stale)])
            .await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    }
}

#[tokio::test]
async fn conditional_writes() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        // `*` on a missing key.
        let r = s.put_with("c", &[("if-match", "*")], "x").await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "{kind:?}");
        assert!(r.headers().get("etag").is_none());
        assert_eq!(json(r).await["error"]["current"], Value::Null);
        let r = s.put_with("c", &[("if-none-match", "*")], "v1").await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v1 = header(r.headers(), "etag");

        // Create-only again: 412 carrying the current ETag, in the header and the JSON.
        let r = s.put_with("c", &[("if-none-match", "*")], "v1b").await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), v1);
        let body = json(r).await;
        assert_eq!(body["error"]["code"], "precondition_failed");
        assert_eq!(body["error"]["current"]["etag"], v1);
        assert_eq!(body["error"]["current"]["size"], 2);

        // Swap with the right tag (in the second of two fields): 200 with the new ETag.
        let stale = larder::ETag::of(b"stale").to_string();
        let r = s
            .put_with("c", &[("if-match", &stale), ("if-match", &v1)], "v2")
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let v2 = header(r.headers(), "etag");
        assert_eq!(v2, larder::ETag::of(b"v2").to_string());
        // A writer still holding v1 loses and learns v2.
        let r = s.put_with("c", &[("if-match", &v1)], "v3").await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), v2);
        // Strong comparison: the weak form of the current tag does not match.
        let r = s
            .put_with("c", &[("if-match", &format!("W/{v2}"))], "v3")
            .await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        // If-None-Match with the current tag (weakly) refuses the write.
        let r = s
            .put_with("c", &[("if-none-match", &format!("W/{v2}"))], "v3")
            .await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s
            .put_with("c", &[("if-unmodified-since", LONG_AGO)], "v3")
            .await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s.put_with("c", &[("if-match", "garbage")], "v3").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = s.get("c", &[]).await;
        assert_eq!(r.text().await.unwrap(), "v2", "no refused write landed");

        // Deletes.
        let r = s.send(Method::DELETE, "c", &[("if-match", &v1)]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), v2);
        assert_eq!(json(r).await["error"]["current"]["etag"], v2);
        let r = s.send(Method::DELETE, "c", &[("if-none-match", "*")]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s.send(Method::DELETE, "c", &[("if-match", &v2)]).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = s.send(Method::DELETE, "c", &[("if-match", "*")]).await;
        assert!(
            matches!(
                r.status(),
                StatusCode::NOT_FOUND | StatusCode::PRECONDITION_FAILED
            ),
            "{}",
            r.status()
        );
    }
}

#[tokio::test]
async fn only_metadata_and_content_type_are_stored() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let r = s
            .put_with(
                "m",
                &[
                    ("authorization", "Bearer secret"),
                    ("cookie", "session=1"),
                    ("if-none-match", "*"),
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-larder-meta-a", "1"),
                    ("content-type", "application/json"),
                    ("cache-control", "max-age=120"),
                ],
                "{}",
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        let meta = json(r).await;
        assert_eq!(meta["metadata"], serde_json::json!({"a": "1"}));
        assert!(meta["expires_at"].as_str().unwrap().ends_with('Z'));
        let r = s.get("m", &[]).await;
        let h = r.headers();
        for absent in [
            "authorization",
            "cookie",
            "if-none-match",
            "x-forwarded-for",
        ] {
            assert!(h.get(absent).is_none(), "{absent} served back");
        }
        let meta_headers: Vec<_> = h
            .keys()
            .filter(|k| k.as_str().starts_with("x-larder-meta-"))
            .collect();
        assert_eq!(meta_headers.len(), 1);
        assert_eq!(header(h, "content-type"), "application/json");
        assert!(header(h, "cache-control").starts_with("max-age="));
        // Bad TTLs are refused.
        for ttl in ["0", "-1", "soon"] {
            let r = s.put_with("m2", &[("x-larder-ttl", ttl)], "x").await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{ttl}");
        }
    }
}

#[tokio::test]
async fn body_digests() {
    use base64::Engine as _;
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let tag = larder::ETag::of(b"payload");
        let digest: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&tag.opaque()[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&digest);
        let digest = format!("sha-256=:{b64}:");
        let digest = [("repr-digest", digest.as_str())];
        let r = s.put_with("d", &digest, "payload").await;
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        let r = s.put_with("d2", &digest, "tampered").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let expect = tag.to_string();
        let expect = [("x-larder-expect-etag", expect.as_str())];
        let r = s.put_with("d2", &expect, "tampered").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = s.get("d2", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing stored");
        let r = s.put_with("d2", &expect, "payload").await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn bad_keys_are_400() {
    let s = Server::start(Kind::Fs, Config::default()).await;
    // Raw requests: a client library would normalize the dot segments away.
    for path in [
        "/v1/objects/a/%2E%2E/b",
        "/v1/objects/%2e%2e",
        "/v1/objects/a/../b",
        "/v1/objects/a//b",
        "/v1/objects/%FF",
        "/v1/objects/a%00b",
        "/v1/objects/a%5Cb",
    ] {
        let resp = raw(
            s.addr(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(status_of(&resp), 400, "{path}: {resp}");
        assert!(resp.contains("\"invalid_key\""), "{path}: {resp}");
        let resp = raw(
            s.addr(),
            format!(
                "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            )
            .as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(status_of(&resp), 400, "PUT {path}: {resp}");
    }
    let r = s.put_with("..%2Fescape", &[], "x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "invalid_key");
    // Percent-encoded segments are decoded: `a%20b` is the key "a b".
    let r = s.put_with("sp/a%20b", &[], "x").await;
    assert_eq!(json(r).await["key"], "sp/a b");
    let r = s.get_url("/v1/objects?prefix=../").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s.get_url("/v1/objects?limit=many").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "invalid_input");
}

#[tokio::test]
async fn listing() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        for k in ["a/1", "a/2", "b", "c/x/1"] {
            assert_eq!(s.put(k, "v").await.0, StatusCode::CREATED);
        }
        let r = s.get_url("/v1/objects?delimiter=/").await;
        assert_eq!(r.status(), StatusCode::OK);
        let page = json(r).await;
        assert_eq!(page["common_prefixes"], serde_json::json!(["a/", "c/"]));
        assert_eq!(page["objects"][0]["key"], "b");
        assert_eq!(page["next_cursor"], Value::Null);

        let mut keys = Vec::new();
        let mut url = s.url("/v1/objects?prefix=a/&limit=1");
        loop {
            let page = json(s.client.get(&url).send().await.unwrap()).await;
            for o in page["objects"].as_array().unwrap() {
                keys.push(o["key"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => {
                    url = s.url(&format!("/v1/objects?prefix=a/&limit=1&cursor={c}"));
                }
                None => break,
            }
        }
        assert_eq!(keys, ["a/1", "a/2"], "{kind:?}");
    }
}

#[tokio::test]
async fn size_limit_is_413_up_front_and_while_streaming() {
    for kind in KINDS {
        let config = Config {
            max_object_size: 10,
            ..Config::default()
        };
        let s = Server::start(kind, config).await;
        let r = s.put_with("big", &[], "0123456789").await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{kind:?}: the limit itself fits"
        );
        let r = s.put_with("big", &[], "0123456789A").await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = json(r).await;
        assert_eq!(body["error"]["code"], "too_large");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 10 bytes"));
        // Chunked, so no Content-Length: refused while streaming.
        let chunks: Vec<Result<&'static str, std::io::Error>> =
            vec![Ok("012345"), Ok("6789AB"), Ok("CDEF")];
        let r = s
            .put_with(
                "big2",
                &[],
                reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = s.get("big2", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = s.get("big", &[]).await;
        assert_eq!(r.text().await.unwrap(), "0123456789");
    }
}

#[tokio::test]
async fn torn_upload_stores_nothing() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        assert_eq!(s.put("old", "original").await.0, StatusCode::CREATED);
        for key in ["new", "old"] {
            let mut sock = TcpStream::connect(s.addr()).await.unwrap();
            let head = format!(
                "PUT /v1/objects/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(&[b'z'; 50_000]).await.unwrap();
            sock.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(sock);
        }
        // Give the server time to see the end of the connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = s.get("new", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{kind:?}");
        let r = s.get("old", &[]).await;
        assert_eq!(r.text().await.unwrap(), "original", "{kind:?}");
        let page = json(s.get_url("/v1/objects").await).await;
        assert_eq!(page["objects"].as_array().unwrap().len(), 1);
        // The same with a chunked body cut before its last chunk.
        let mut sock = TcpStream::connect(s.addr()).await.unwrap();
        sock.write_all(
            b"PUT /v1/objects/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(sock);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = s.get("chunked", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{kind:?}");
        if let Some(dir) = &s._dir {
            // The fs driver's temp files of the torn bodies are gone too.
            let left: Vec<_> = std::fs::read_dir(dir.path().join(".tmp"))
                .unwrap()
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

fn tokens() -> Vec<TokenConfig> {
    vec![
        TokenConfig {
            token: "reader-token-0123456789".into(),
            scope: Scope::Read,
            prefix: "pub/".into(),
        },
        TokenConfig {
            token: "writer-token-0123456789".into(),
            scope: Scope::Write,
            prefix: String::new(),
        },
        TokenConfig {
            token: "team-token-0123456789".into(),
            scope: Scope::Write,
            prefix: "team/".into(),
        },
    ]
}

#[tokio::test]
async fn bearer_tokens() {
    let s = Server::start(
        Kind::Memory,
        Config {
            tokens: tokens(),
            ..Config::default()
        },
    )
    .await;
    let r = s.get("pub/x", &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(r.headers(), "www-authenticate").starts_with("Bearer"));
    assert_eq!(error_code(r).await, "unauthorized");
    const READER: &str = "reader-token-0123456789";
    const WRITER: &str = "writer-token-0123456789";
    const TEAM: &str = "team-token-0123456789";
    // (method, key, token, body, expected status, expected error code), in order: each row
    // may depend on the writes before it.
    let cases = [
        (
            Method::GET,
            "pub/x",
            "wrong",
            None,
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
        ),
        (
            Method::PUT,
            "pub/x",
            WRITER,
            Some("x"),
            StatusCode::CREATED,
            None,
        ),
        (Method::GET, "pub/x", READER, None, StatusCode::OK, None),
        (
            Method::PUT,
            "pub/x",
            READER,
            Some("y"),
            StatusCode::FORBIDDEN,
            Some("forbidden"),
        ),
        (
            Method::DELETE,
            "pub/x",
            READER,
            None,
            StatusCode::FORBIDDEN,
            None,
        ),
        (
            Method::GET,
            "private/x",
            READER,
            None,
            StatusCode::FORBIDDEN,
            None,
        ),
        (
            Method::PUT,
            "team/doc",
            TEAM,
            Some("t"),
            StatusCode::CREATED,
            None,
        ),
        (
            Method::PUT,
            "pub/y",
            TEAM,
            Some("t"),
            StatusCode::FORBIDDEN,
            None,
        ),
    ];
    for (method, key, token, body, status, code) in cases {
        let what = format!("{method} {key} as {token}");
        let mut req = s.req(method, key).bearer_auth(token);
        if let Some(body) = body {
            req = req.body(body);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        if let Some(code) = code {
            assert_eq!(error_code(r).await, code, "{what}");
        }
    }

    let list = |q: &str, token: &str| {
        s.client
            .get(s.url(&format!("/v1/objects{q}")))
            .bearer_auth(token)
            .send()
    };
    for (query, token, status) in [
        ("?prefix=pub/", READER, 200),
        ("", READER, 403),
        ("?prefix=team/", READER, 403),
        ("", WRITER, 200),
    ] {
        let r = list(query, token).await.unwrap();
        assert_eq!(r.status(), status, "listing {query:?} as {token}");
    }
    // Health and metrics stay open.
    let r = s.get_url("/healthz").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.get_url("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn exposure_rule_refuses_public_listen_without_tokens() {
    let config = Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        store: "memory://".into(),
        ..Config::default()
    };
    // `serve` refuses before binding or opening anything.
    let err = tokio::time::timeout(Duration::from_secs(5), larder_server::serve(config.clone()))
        .await
        .expect("refused at once")
        .unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err}");
    let insecure = Config {
        insecure: true,
        ..config.clone()
    };
    insecure.validate().unwrap();
    let with_tokens = Config {
        tokens: tokens(),
        ..config
    };
    with_tokens.validate().unwrap();
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move() {
    let s = Server::start(Kind::Memory, Config::default()).await;
    let before = s.metrics().await;
    let (_, etag) = s.put("m", "12345").await;
    let r = s.get("m", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = s.put_with("m", &[("if-none-match", "*")], "x").await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = s.get("m", &[]).await;
    assert_eq!(r.text().await.unwrap(), "12345");
    let after = s.metrics().await;

    let delta = |m: &str| metric(&after, m) - metric(&before, m);
    assert_eq!(
        delta(
            r#"larder_http_requests_total{method="PUT",route="/v1/objects/{*key}",status="201"}"#
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            r#"larder_http_requests_total{method="GET",route="/v1/objects/{*key}",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        delta(r#"larder_precondition_outcomes_total{method="GET",outcome="not_modified"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"larder_precondition_outcomes_total{method="PUT",outcome="precondition_failed"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"larder_http_body_bytes_total{direction="in"}"#),
        6.0,
        "5 + the refused 1"
    );
    assert_eq!(
        delta(r#"larder_http_body_bytes_total{direction="out"}"#),
        5.0
    );
    assert!(
        delta(
            r#"larder_http_request_duration_seconds_count{method="GET",route="/v1/objects/{*key}"}"#
        ) >= 2.0
    );
}

#[tokio::test]
async fn upload_cap_answers_503_with_retry_after() {
    let config = Config {
        max_concurrent_uploads: 1,
        ..Config::default()
    };
    let s = Server::start(Kind::Memory, config).await;
    let mut first = TcpStream::connect(s.addr()).await.unwrap();
    first
        .write_all(b"PUT /v1/objects/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = s.put_with("other", &[], "x").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(r.headers(), "retry-after"), "1");
    assert_eq!(error_code(r).await, "busy");
    // Reads are not limited.
    let r = s.get("other", &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    first.write_all(b"cd").await.unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 201");
    let r = s.put_with("other", &[], "x").await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn slow_upload_times_out_with_408_and_stores_nothing() {
    let config = Config {
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let s = Server::start(Kind::Fs, config).await;
    let resp = raw(
        s.addr(),
        b"PUT /v1/objects/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&resp), 408, "{resp}");
    assert!(resp.contains("\"timeout\""));
    let r = s.get("slow", &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_request() {
    for kind in KINDS {
        let mut s = Server::start(kind, Config::default()).await;
        let addr = s.addr();
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(
            b"PUT /v1/objects/inflight HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let handle = s.handle.take().unwrap();
        let stopping = tokio::spawn(handle.shutdown());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !stopping.is_finished(),
            "{kind:?}: stopped before the request finished"
        );
        // New connections are no longer accepted.
        let refused = tokio::time::timeout(Duration::from_secs(2), async {
            match TcpStream::connect(addr).await {
                Err(_) => true,
                Ok(mut c) => {
                    let _ = c
                        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                        .await;
                    let mut b = Vec::new();
                    matches!(c.read_to_end(&mut b).await, Ok(0) | Err(_))
                }
            }
        })
        .await
        .unwrap_or(true);
        assert!(refused, "{kind:?}: accepted a connection while draining");
        sock.write_all(b"56789").await.unwrap();
        let mut out = Vec::new();
        sock.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&out), 201, "{out}");
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .expect("shutdown finishes")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn bodies_past_axum_default_limit_stream_both_ways() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let r = s.put_with("big/blob", &[], data.clone()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        assert_eq!(
            header(r.headers(), "etag"),
            larder::ETag::of(&data).to_string()
        );
        let r = s.get("big/blob", &[]).await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
        // Unknown routes answer the contract's JSON too.
        let r = s.get_url("/v1/nothing").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "not_found");
    }
}
