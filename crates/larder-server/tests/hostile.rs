//! The server against hostile or unlucky input, over a real socket and on memory, fs and sqlite:
//! no request may panic, reset its connection or poison a key (issue 11).
//!
//! Requests are sent on one raw keep-alive connection, so a request that drops the connection
//! fails the next one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use larder::{
    Body, Capabilities, DeleteOptions, GetOptions, GetResult, HeadOptions, Key, ListOptions,
    ListPage, Meta, PutOptions, PutResult, Store,
};
use larder_server::{Config, ServerHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Fs,
    Sqlite,
}

const KINDS: [Kind; 3] = [Kind::Memory, Kind::Fs, Kind::Sqlite];

struct Server {
    handle: ServerHandle,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(kind: Kind) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = match kind {
            Kind::Memory => Arc::new(larder::drivers::memory::MemoryStore::new()),
            Kind::Fs => Arc::new(
                larder::drivers::fs::FsStore::open(larder::drivers::fs::FsConfig::new(dir.path()))
                    .await
                    .unwrap(),
            ),
            Kind::Sqlite => larder::open(&format!("sqlite://{}/db.sqlite", dir.path().display()))
                .await
                .unwrap(),
        };
        Server::serve(store, dir).await
    }

    async fn serve(store: Arc<dyn Store>, dir: tempfile::TempDir) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = larder_server::spawn(listener, store, Config::default());
        Server { handle, dir }
    }

    async fn connect(&self) -> Conn {
        Conn::new(self.handle.local_addr()).await
    }
}

/// One HTTP/1.1 keep-alive connection, spoken by hand. A server may close a connection after
/// an answer that says `connection: close` (hyper does when an upload was refused before its
/// body was read); then the next request opens a new one. Any other close fails the test.
struct Conn {
    addr: std::net::SocketAddr,
    io: BufReader<TcpStream>,
    closed_by_server: bool,
}

/// A response: status, lower-cased header fields, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap().to_owned()
    }
}

impl Conn {
    async fn new(addr: std::net::SocketAddr) -> Conn {
        Conn {
            addr,
            io: BufReader::new(TcpStream::connect(addr).await.unwrap()),
            closed_by_server: false,
        }
    }

    /// Sends `method path` with `headers` and `body`, and reads the whole answer. Panics if the
    /// server closes the connection instead of answering.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        if std::mem::take(&mut self.closed_by_server) {
            self.io = BufReader::new(TcpStream::connect(self.addr).await.unwrap());
        }
        // One write: hyper drains an unread body only if it already arrived (else it closes the
        // connection after the answer, which is allowed, but would end this test's connection).
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.io.get_mut().write_all(&bytes).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.read_answer(method == "HEAD"))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer"))
    }

    async fn read_answer(&mut self, head_only: bool) -> Answer {
        let mut line = String::new();
        let n = self.io.read_line(&mut line).await.unwrap();
        assert!(
            n > 0,
            "the server closed the connection instead of answering"
        );
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.io.read_line(&mut h).await.unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        self.closed_by_server = answer.header("connection") == Some("close");
        if head_only || status == 304 || status == 204 {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.io.read_line(&mut size).await.unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.io.read_exact(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                answer.body.extend_from_slice(&chunk[..n]);
            }
        } else {
            let len: usize = answer
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            answer.body = vec![0; len];
            self.io.read_exact(&mut answer.body).await.unwrap();
        }
        answer
    }
}

/// TTLs past the documented maximum, or past what a number can hold, are 400 and store
/// nothing; the connection goes on. (They used to panic: an empty reply, and for
/// 253402300800 a key that reset every later GET, HEAD and listing.)
#[tokio::test]
async fn huge_ttls_are_400_and_store_nothing() {
    let max = larder::meta::MAX_TTL.as_secs();
    let over = (max + 1).to_string();
    for kind in KINDS {
        let s = Server::start(kind).await;
        let mut c = s.connect().await;
        for (name, value) in [
            ("x-larder-ttl", "253402300800"),
            ("x-larder-ttl", "18446744073709551615"),
            ("x-larder-ttl", "18446744073709551616"),
            ("x-larder-ttl", "9223372036854775808"),
            ("x-larder-ttl", over.as_str()),
            ("cache-control", "max-age=18446744073709551615"),
            ("cache-control", "max-age=253402300800"),
            ("cache-control", "public, max-age=9223372036854775808"),
        ] {
            let a = c.send("PUT", "/v1/objects/p", &[(name, value)], b"x").await;
            assert_eq!(a.status, 400, "{kind:?} {name}: {value}");
            assert_eq!(a.code(), "invalid_input", "{kind:?} {name}: {value}");
            let a = c.send("GET", "/v1/objects/p", &[], b"").await;
            assert_eq!(
                a.status, 404,
                "{kind:?}: nothing was stored for {name}: {value}"
            );
        }
        // The maximum itself is accepted, and its Expires is rendered.
        let a = c
            .send(
                "PUT",
                "/v1/objects/p",
                &[("x-larder-ttl", &max.to_string())],
                b"x",
            )
            .await;
        assert_eq!(a.status, 201, "{kind:?}");
        let a = c.send("GET", "/v1/objects/p", &[], b"").await;
        assert_eq!(a.status, 200, "{kind:?}");
        let expires = httpdate::parse_http_date(a.header("expires").unwrap()).unwrap();
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(
            left > larder::meta::MAX_TTL - Duration::from_secs(60),
            "{kind:?}"
        );
        let a = c.send("GET", "/v1/objects?prefix=", &[], b"").await;
        assert_eq!(a.status, 200, "{kind:?}");
        assert_eq!(a.json()["objects"].as_array().unwrap().len(), 1);
        drop(s.dir);
    }
}

/// A meta JSON as the drivers store it (`Meta::encode`), with odd times.
fn odd_meta(key: &str, body: &[u8], modified_ms: i64, expires_ms: i64) -> String {
    serde_json::json!({
        "key": key,
        "etag": larder::ETag::of(body),
        "size": body.len(),
        "modified_ms": modified_ms,
        "expires_ms": expires_ms,
    })
    .to_string()
}

/// Records already stored with times no date can carry (written before the TTL was bounded,
/// or by another program) read back with the nearest dates that can be written: GET, HEAD, a
/// conditional GET and a listing all answer, on the same connection.
#[tokio::test]
async fn stored_records_with_unrenderable_times_read_back() {
    // (modified_ms, expires_ms): past the year 9999, at the end of i64, before the epoch.
    let cases = [
        (1_700_000_000_000, 253_402_300_800_000),
        (1_700_000_000_000, i64::MAX),
        (-5_000, i64::MAX / 2),
        (i64::MAX - 1, i64::MAX),
    ];
    for kind in [Kind::Fs, Kind::Sqlite] {
        let s = Server::start(kind).await;
        for (i, (modified, expires)) in cases.into_iter().enumerate() {
            let key = format!("odd{i}");
            let meta = odd_meta(&key, b"body", modified, expires);
            match kind {
                Kind::Fs => {
                    // The fs object file: magic, meta length, body offset, meta, body.
                    let mut file = b"LARDFS01".to_vec();
                    file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
                    file.extend_from_slice(&(20 + meta.len() as u64).to_le_bytes());
                    file.extend_from_slice(meta.as_bytes());
                    file.extend_from_slice(b"body");
                    let objects = s.dir.path().join("objects");
                    std::fs::create_dir_all(&objects).unwrap();
                    std::fs::write(objects.join(format!("{key}@")), file).unwrap();
                }
                Kind::Sqlite => {
                    let url = format!("sqlite://{}/db.sqlite", s.dir.path().display());
                    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                        .await
                        .unwrap();
                    sqlx::query(
                        "INSERT INTO larder_objects (key, etag, expires_at, meta, body) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(&key)
                    .bind(larder::ETag::of(b"body").opaque())
                    .bind(expires)
                    .bind(&meta)
                    .bind(&b"body"[..])
                    .execute(&mut db)
                    .await
                    .unwrap();
                }
                Kind::Memory => unreachable!(),
            }
            let mut c = s.connect().await;
            let path = format!("/v1/objects/{key}");
            let a = c.send("GET", &path, &[], b"").await;
            assert_eq!(a.status, 200, "{kind:?} {i}");
            assert_eq!(a.body, b"body");
            assert!(httpdate::parse_http_date(a.header("last-modified").unwrap()).is_ok());
            let expires_header = a.header("expires").unwrap().to_owned();
            assert!(httpdate::parse_http_date(&expires_header).is_ok());
            if expires > 253_402_300_799_999 {
                assert_eq!(
                    expires_header, "Fri, 31 Dec 9999 23:59:59 GMT",
                    "{kind:?} {i}"
                );
            }
            let a = c.send("HEAD", &path, &[], b"").await;
            assert_eq!(a.status, 200, "{kind:?} {i}");
            let a = c
                .send(
                    "GET",
                    &path,
                    &[("if-none-match", a.header("etag").unwrap())],
                    b"",
                )
                .await;
            assert_eq!(a.status, 304, "{kind:?} {i}");
            let a = c
                .send(
                    "GET",
                    &path,
                    &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
                    b"",
                )
                .await;
            assert!(matches!(a.status, 200 | 304), "{kind:?} {i}: {}", a.status);
            let a = c.send("GET", "/v1/objects?prefix=odd", &[], b"").await;
            assert_eq!(a.status, 200, "{kind:?} {i}");
            assert_eq!(a.json()["objects"].as_array().unwrap().len(), i + 1);
            // And the key is not poisoned for writers either.
            let a = c
                .send(
                    "PUT",
                    &path,
                    &[("if-match", "*"), ("x-larder-ttl", "60")],
                    b"new",
                )
                .await;
            assert_eq!(a.status, 200, "{kind:?} {i}");
            let a = c.send("PUT", &path, &[], b"body").await;
            assert_eq!(a.status, 200, "{kind:?} {i}");
        }
    }
}

/// A store whose every call panics: stands for a bug anywhere below a handler.
#[derive(Debug)]
struct Panics;

#[async_trait]
impl Store for Panics {
    fn capabilities(&self) -> Capabilities {
        Capabilities::full("panics", larder::AtomicScope::Process, false)
    }
    async fn head(&self, key: &Key, _: HeadOptions) -> larder::Result<Meta> {
        panic!("head of {key}")
    }
    async fn get(&self, key: &Key, _: GetOptions) -> larder::Result<GetResult> {
        panic!("get of {key}")
    }
    async fn put(&self, key: &Key, _: Body, _: PutOptions) -> larder::Result<PutResult> {
        panic!("put of {key}")
    }
    async fn delete(&self, key: &Key, _: DeleteOptions) -> larder::Result<()> {
        panic!("delete of {key}")
    }
    async fn list(&self, _: ListOptions) -> larder::Result<ListPage> {
        panic!("list")
    }
}

/// A panic below a handler is answered 500 with the JSON error body, and the next request on
/// the same keep-alive connection is answered as usual.
#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_connection_goes_on() {
    let s = Server::serve(Arc::new(Panics), tempfile::tempdir().unwrap()).await;
    let mut c = s.connect().await;
    for (method, path, body) in [
        ("GET", "/v1/objects/a", &b""[..]),
        ("HEAD", "/v1/objects/a", b""),
        ("PUT", "/v1/objects/a", b"x"),
        ("DELETE", "/v1/objects/a", b""),
        ("GET", "/v1/objects?prefix=a", b""),
    ] {
        let a = c.send(method, path, &[], body).await;
        assert_eq!(a.status, 500, "{method} {path}");
        if method != "HEAD" {
            assert_eq!(a.code(), "internal", "{method} {path}");
        }
        let a = c.send("GET", "/healthz", &[], b"").await;
        assert_eq!(a.status, 200, "after {method} {path}");
    }
    let a = c.send("GET", "/metrics", &[], b"").await;
    let text = String::from_utf8(a.body).unwrap();
    assert!(
        text.contains(
            r#"larder_http_requests_total{method="GET",route="/v1/objects/{*key}",status="500"} 1"#
        ),
        "{text}"
    );
}

/// Invented methods and paths, thousands of them, leave `/metrics` small: labels come from
/// bounded sets (unknown methods are `other`, routes are templates, statuses are numbers).
#[tokio::test]
async fn metric_labels_stay_bounded() {
    let s = Server::start(Kind::Memory).await;
    let mut c = s.connect().await;
    let before = c.send("GET", "/metrics", &[], b"").await.body.len();
    for i in 0..3000 {
        let method = format!("M{i}");
        let path = format!("/x{i}/y?z={i}");
        let a = c.send(&method, &path, &[], b"").await;
        assert!(a.status >= 400, "{method} {path}: {}", a.status);
        let a = c
            .send(&method, &format!("/v1/objects/k{i}"), &[], b"")
            .await;
        assert_eq!(a.status, 405, "{method}");
    }
    let text = String::from_utf8(c.send("GET", "/metrics", &[], b"").await.body).unwrap();
    assert!(
        text.len() < before + 8 * 1024,
        "the exposition grew from {before} to {} bytes:\n{text}",
        text.len()
    );
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(!text.contains("M17"), "{text}");
    assert!(!text.contains("/x17"), "{text}");
}

/// Code and docs/http-api.md agree on the edges: a listing query that is not UTF-8 once
/// decoded is 400 (not an empty listing of another prefix), the empty key is `400
/// invalid_key` (not an unknown route), and a declared length past any limit is 413.
#[tokio::test]
async fn edges_answer_as_documented() {
    let s = Server::start(Kind::Memory).await;
    let mut c = s.connect().await;
    for query in ["prefix=%FF", "prefix=a%C3", "delimiter=%FE", "%FF=x"] {
        let a = c
            .send("GET", &format!("/v1/objects?{query}"), &[], b"")
            .await;
        assert_eq!(a.status, 400, "{query}");
        assert_eq!(a.code(), "invalid_input", "{query}");
    }
    let a = c
        .send("GET", "/v1/objects?prefix=%C3%A9t%C3%A9+x", &[], b"")
        .await;
    assert_eq!(a.status, 200);
    for method in ["GET", "HEAD", "PUT", "POST", "DELETE"] {
        let a = c.send(method, "/v1/objects/", &[], b"").await;
        assert_eq!(a.status, 400, "{method} of the empty key");
        if method != "HEAD" {
            assert_eq!(a.code(), "invalid_key", "{method}");
        }
    }
    for length in ["18446744073709551613", "99999999999999"] {
        let raw = format!(
            "PUT /v1/objects/big HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\nabc"
        );
        let mut io = TcpStream::connect(s.handle.local_addr()).await.unwrap();
        io.write_all(raw.as_bytes()).await.unwrap();
        let mut out = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut out))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&out[..n]);
        assert!(head.starts_with("HTTP/1.1 413"), "{length}: {head}");
    }
}
