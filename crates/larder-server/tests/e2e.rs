//! The server over a real socket (127.0.0.1:0), against the memory and the fs store.

use std::sync::Arc;
use std::time::Duration;

use larder::Store;
use larder_server::config::{Scope, TokenConfig};
use larder_server::{Config, ServerHandle};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

    async fn put(&self, key: &str, body: &'static str) -> (StatusCode, String) {
        let r = self.req(Method::PUT, key).body(body).send().await.unwrap();
        let status = r.status();
        (status, header(r.headers(), "etag"))
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.handle.as_ref().unwrap().local_addr()
    }

    async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let r = s
            .req(Method::PUT, "dir/a.txt")
            .header("content-type", "text/plain")
            .header("x-larder-meta-Owner", "alice")
            .body("hello world")
            .send()
            .await
            .unwrap();
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
        let r = s
            .req(Method::POST, "dir/a.txt")
            .header("content-type", "text/plain")
            .header("x-larder-meta-owner", "alice")
            .body("hello world")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        let r = s.req(Method::GET, "dir/a.txt").send().await.unwrap();
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

        let r = s.req(Method::HEAD, "dir/a.txt").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(r.headers(), "content-length"), "11");
        assert_eq!(header(r.headers(), "etag"), etag);

        // Default content type.
        s.put("plain", "x").await;
        let r = s.req(Method::GET, "plain").send().await.unwrap();
        assert_eq!(
            header(r.headers(), "content-type"),
            "application/octet-stream"
        );

        let r = s.req(Method::DELETE, "dir/a.txt").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = s.req(Method::DELETE, "dir/a.txt").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "not_found");
        let r = s.req(Method::GET, "dir/a.txt").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "not_found");
        let r = s.req(Method::HEAD, "dir/a.txt").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let r = s.client.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "ok");
        let r = s.client.get(s.url("/nope")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn conditional_reads() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let r = s
            .req(Method::PUT, "k")
            .header("content-type", "text/csv")
            .header("x-larder-meta-color", "blue")
            .header("x-larder-ttl", "3600")
            .body("a,b,c")
            .send()
            .await
            .unwrap();
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
        let r = s
            .req(Method::GET, "k")
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        check_304(&r);
        assert!(r.bytes().await.unwrap().is_empty());
        // Repeated fields are one list: the match is in the second field.
        let r = s
            .req(Method::GET, "k")
            .header("if-none-match", &other)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        check_304(&r);
        // If-None-Match compares weakly.
        let r = s
            .req(Method::GET, "k")
            .header("if-none-match", &weak)
            .send()
            .await
            .unwrap();
        check_304(&r);
        let r = s
            .req(Method::HEAD, "k")
            .header("if-none-match", "*")
            .send()
            .await
            .unwrap();
        check_304(&r);
        let r = s
            .req(Method::GET, "k")
            .header("if-none-match", &other)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        // If-Match compares strongly: a weak tag never matches.
        let r = s
            .req(Method::GET, "k")
            .header("if-match", &weak)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), etag);
        let body = json(r).await;
        assert_eq!(body["error"]["code"], "precondition_failed");
        assert_eq!(body["error"]["current"]["etag"], etag);
        let r = s
            .req(Method::GET, "k")
            .header("if-match", &other)
            .header("if-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = s
            .req(Method::HEAD, "k")
            .header("if-match", &other)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), etag);

        // Dates: only when the ETag conditions are absent.
        let future =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let past = "Mon, 01 Jan 2001 00:00:00 GMT";
        let r = s
            .req(Method::GET, "k")
            .header("if-modified-since", &future)
            .send()
            .await
            .unwrap();
        check_304(&r);
        let r = s
            .req(Method::GET, "k")
            .header("if-none-match", &other)
            .header("if-modified-since", &future)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "If-Modified-Since ignored");
        let r = s
            .req(Method::GET, "k")
            .header("if-unmodified-since", past)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s
            .req(Method::GET, "k")
            .header("if-match", &etag)
            .header("if-unmodified-since", past)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "If-Unmodified-Since ignored");
        // An invalid date is ignored (RFC 9110 13.1.3), a malformed ETag list is a 400.
        let r = s
            .req(Method::GET, "k")
            .header("if-modified-since", "not a date")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = s
            .req(Method::GET, "k")
            .header("if-none-match", "unquoted")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(r).await, "invalid_input");
        let r = s
            .req(Method::GET, "k")
            .header("if-match", format!("*, {etag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // A missing object is a 404 whatever the conditions.
        let r = s
            .req(Method::GET, "missing")
            .header("if-none-match", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn ranges() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        let (_, etag) = s.put("r", "0123456789").await;
        let get = |range: &'static str| s.req(Method::GET, "r").header("range", range);

        let r = get("bytes=2-5").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{kind:?}");
        assert_eq!(header(r.headers(), "content-range"), "bytes 2-5/10");
        assert_eq!(header(r.headers(), "content-length"), "4");
        assert_eq!(header(r.headers(), "etag"), etag);
        assert_eq!(r.text().await.unwrap(), "2345");
        let r = get("bytes=-3").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "789");
        let r = get("bytes=7-").send().await.unwrap();
        assert_eq!(header(r.headers(), "content-range"), "bytes 7-9/10");
        let r = get("bytes=8-100").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "89");

        for unsatisfiable in ["bytes=10-", "bytes=20-30", "bytes=-0", "bytes=0-1,4-5"] {
            let r = get(unsatisfiable).send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::RANGE_NOT_SATISFIABLE,
                "{unsatisfiable}"
            );
            assert_eq!(header(r.headers(), "content-range"), "bytes */10");
            assert_eq!(error_code(r).await, "range_not_satisfiable");
        }
        // Another unit is ignored; a malformed bytes range is a 400.
        let r = get("items=0-1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = get("bytes=5-1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // If-Range: the range only while the validator holds.
        let r = get("bytes=0-0")
            .header("if-range", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let stale = larder::ETag::of(b"old").to_string();
        let r = get("bytes=0-0")
            .header("if-range", &stale)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "0123456789");
        let r = get("bytes=0-1,4-5")
            .header("if-range", &stale)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "multi-range with a failed If-Range"
        );
        let lm = {
            let r = s.req(Method::HEAD, "r").send().await.unwrap();
            header(r.headers(), "last-modified")
        };
        let r = get("bytes=0-0")
            .header("if-range", &lm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let r = get("bytes=0-0")
            .header("if-range", "Mon, 01 Jan 2001 00:00:00 GMT")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // Preconditions come before the range.
        let r = get("bytes=0-0")
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = get("bytes=0-1,3-4")
            .header("if-match", &stale)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    }
}

#[tokio::test]
async fn conditional_writes() {
    for kind in KINDS {
        let s = Server::start(kind, Config::default()).await;
        // `*` on a missing key.
        let r = s
            .req(Method::PUT, "c")
            .header("if-match", "*")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "{kind:?}");
        assert!(r.headers().get("etag").is_none());
        assert_eq!(json(r).await["error"]["current"], Value::Null);
        let r = s
            .req(Method::PUT, "c")
            .header("if-none-match", "*")
            .body("v1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v1 = header(r.headers(), "etag");

        // Create-only again: 412 carrying the current ETag, in the header and the JSON.
        let r = s
            .req(Method::PUT, "c")
            .header("if-none-match", "*")
            .body("v1b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), v1);
        let body = json(r).await;
        assert_eq!(body["error"]["code"], "precondition_failed");
        assert_eq!(body["error"]["current"]["etag"], v1);
        assert_eq!(body["error"]["current"]["size"], 2);

        // Swap with the right tag (in the second of two fields): 200 with the new ETag.
        let stale = larder::ETag::of(b"stale").to_string();
        let r = s
            .req(Method::PUT, "c")
            .header("if-match", &stale)
            .header("if-match", &v1)
            .body("v2")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v2 = header(r.headers(), "etag");
        assert_eq!(v2, larder::ETag::of(b"v2").to_string());
        // A writer still holding v1 loses and learns v2.
        let r = s
            .req(Method::PUT, "c")
            .header("if-match", &v1)
            .body("v3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), v2);
        // Strong comparison: the weak form of the current tag does not match.
        let r = s
            .req(Method::PUT, "c")
            .header("if-match", format!("W/{v2}"))
            .body("v3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        // If-None-Match with the current tag (weakly) refuses the write.
        let r = s
            .req(Method::PUT, "c")
            .header("if-none-match", format!("W/{v2}"))
            .body("v3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s
            .req(Method::PUT, "c")
            .header("if-unmodified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
            .body("v3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s
            .req(Method::PUT, "c")
            .header("if-match", "garbage")
            .body("v3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = s.req(Method::GET, "c").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "v2", "no refused write landed");

        // Deletes.
        let r = s
            .req(Method::DELETE, "c")
            .header("if-match", &v1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(r.headers(), "etag"), v2);
        assert_eq!(json(r).await["error"]["current"]["etag"], v2);
        let r = s
            .req(Method::DELETE, "c")
            .header("if-none-match", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let r = s
            .req(Method::DELETE, "c")
            .header("if-match", &v2)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = s
            .req(Method::DELETE, "c")
            .header("if-match", "*")
            .send()
            .await
            .unwrap();
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
            .req(Method::PUT, "m")
            .header("authorization", "Bearer secret")
            .header("cookie", "session=1")
            .header("if-none-match", "*")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-larder-meta-a", "1")
            .header("content-type", "application/json")
            .header("cache-control", "max-age=120")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        let meta = json(r).await;
        assert_eq!(meta["metadata"], serde_json::json!({"a": "1"}));
        assert!(meta["expires_at"].as_str().unwrap().ends_with('Z'));
        let r = s.req(Method::GET, "m").send().await.unwrap();
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
            let r = s
                .req(Method::PUT, "m2")
                .header("x-larder-ttl", ttl)
                .body("x")
                .send()
                .await
                .unwrap();
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
        let r = s
            .req(Method::PUT, "d")
            .header("repr-digest", format!("sha-256=:{b64}:"))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        let r = s
            .req(Method::PUT, "d2")
            .header("repr-digest", format!("sha-256=:{b64}:"))
            .body("tampered")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = s
            .req(Method::PUT, "d2")
            .header("x-larder-expect-etag", tag.to_string())
            .body("tampered")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = s.req(Method::GET, "d2").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing stored");
        let r = s
            .req(Method::PUT, "d2")
            .header("x-larder-expect-etag", tag.to_string())
            .body("payload")
            .send()
            .await
            .unwrap();
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
    let r = s
        .req(Method::PUT, "..%2Fescape")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "invalid_key");
    // Percent-encoded segments are decoded: `a%20b` is the key "a b".
    let r = s
        .req(Method::PUT, "sp/a%20b")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["key"], "sp/a b");
    let r = s
        .client
        .get(s.url("/v1/objects?prefix=../"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .client
        .get(s.url("/v1/objects?limit=many"))
        .send()
        .await
        .unwrap();
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
        let r = s
            .client
            .get(s.url("/v1/objects?delimiter=/"))
            .send()
            .await
            .unwrap();
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
        let r = s
            .req(Method::PUT, "big")
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{kind:?}: the limit itself fits"
        );
        let r = s
            .req(Method::PUT, "big")
            .body("0123456789A")
            .send()
            .await
            .unwrap();
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
            .req(Method::PUT, "big2")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = s.req(Method::GET, "big2").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = s.req(Method::GET, "big").send().await.unwrap();
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
        let r = s.req(Method::GET, "new").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{kind:?}");
        let r = s.req(Method::GET, "old").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "original", "{kind:?}");
        let page = json(s.client.get(s.url("/v1/objects")).send().await.unwrap()).await;
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
        let r = s.req(Method::GET, "chunked").send().await.unwrap();
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
    let r = s.req(Method::GET, "pub/x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(r.headers(), "www-authenticate").starts_with("Bearer"));
    assert_eq!(error_code(r).await, "unauthorized");
    let r = s
        .req(Method::GET, "pub/x")
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = s
        .req(Method::PUT, "pub/x")
        .bearer_auth("writer-token-0123456789")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .req(Method::GET, "pub/x")
        .bearer_auth("reader-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .req(Method::PUT, "pub/x")
        .bearer_auth("reader-token-0123456789")
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "forbidden");
    let r = s
        .req(Method::DELETE, "pub/x")
        .bearer_auth("reader-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .req(Method::GET, "private/x")
        .bearer_auth("reader-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .req(Method::PUT, "team/doc")
        .bearer_auth("team-token-0123456789")
        .body("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .req(Method::PUT, "pub/y")
        .bearer_auth("team-token-0123456789")
        .body("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let list = |q: &str, token: &str| {
        s.client
            .get(s.url(&format!("/v1/objects{q}")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        list("?prefix=pub/", "reader-token-0123456789")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        list("", "reader-token-0123456789").await.unwrap().status(),
        403
    );
    assert_eq!(
        list("?prefix=team/", "reader-token-0123456789")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        list("", "writer-token-0123456789").await.unwrap().status(),
        200
    );
    // Health and metrics stay open.
    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
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
    let r = s
        .req(Method::GET, "m")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = s
        .req(Method::PUT, "m")
        .header("if-none-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = s.req(Method::GET, "m").send().await.unwrap();
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
    let r = s.req(Method::PUT, "other").body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(r.headers(), "retry-after"), "1");
    assert_eq!(error_code(r).await, "busy");
    // Reads are not limited.
    let r = s.req(Method::GET, "other").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    first.write_all(b"cd").await.unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 201");
    let r = s.req(Method::PUT, "other").body("x").send().await.unwrap();
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
    let r = s.req(Method::GET, "slow").send().await.unwrap();
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
        let r = s
            .req(Method::PUT, "big/blob")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{kind:?}");
        assert_eq!(
            header(r.headers(), "etag"),
            larder::ETag::of(&data).to_string()
        );
        let r = s.req(Method::GET, "big/blob").send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
        // Unknown routes answer the contract's JSON too.
        let r = s.client.get(s.url("/v1/nothing")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "not_found");
    }
}
