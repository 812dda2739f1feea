//! `/unstorage` proven with unstorage's own client: tests/unstorage-client/client.mjs drives a
//! server started here through unstorage's `http` driver (the pinned npm package that
//! .ci/services.d/30-unstorage.sh installs and names in `LARDER_TEST_UNSTORAGE_DIR`) over
//! memory, fs, sqlite, Redis and PostgreSQL stores. The protocol's refusals (405, 400, 401,
//! 403, 413, conditions on a base) are checked here with plain HTTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use larder::capabilities::{Capabilities, ConditionSupport};
use larder::conformance::skip_or_fail;
use larder::{
    Body, DeleteOptions, GetOptions, GetResult, HeadOptions, Key, ListOptions, ListPage, Meta,
    PutOptions, PutResult, Store,
};
use larder_server::config::{Scope, TokenConfig};
use larder_server::Config;

const CLIENT: &str = include_str!("unstorage-client/client.mjs");

/// Where unstorage is installed (a directory with `node_modules/unstorage`), and `node`
/// runs; or why the node tests are skipped.
fn client_dir() -> Option<PathBuf> {
    let dir = match std::env::var("LARDER_TEST_UNSTORAGE_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            return skip_or_fail(
                "unstorage (npm)",
                "LARDER_TEST_UNSTORAGE_DIR is not set (.ci/services.d/30-unstorage.sh sets it)",
            )
        }
    };
    if !dir.join("node_modules/unstorage/package.json").is_file() {
        return skip_or_fail(
            "unstorage (npm)",
            format!("no node_modules/unstorage in {}", dir.display()),
        );
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Some(dir),
        Ok(o) => skip_or_fail("node", format!("node --version exited {}", o.status)),
        Err(e) => skip_or_fail("node", e),
    }
}

/// A key namespace no other run uses (the networked stores are shared).
fn namespace(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("unstorage-{what}-{}-{nanos:x}", std::process::id())
}

async fn serve(store: Arc<dyn Store>, config: Config) -> larder_server::ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    larder_server::spawn(listener, store, config)
}

const TOKEN: &str = "unstorage-test-token-0123456789";

/// Runs client.mjs against a fresh server over `store`, with bearer-token auth when `token`.
async fn run_client(store: Arc<dyn Store>, what: &str, token: bool) {
    let Some(dir) = client_dir() else { return };
    let mut config = Config::default();
    if token {
        config.tokens = vec![TokenConfig {
            token: TOKEN.into(),
            scope: Scope::Write,
            prefix: String::new(),
        }];
    }
    let server = serve(store, config).await;
    let url = server.url();
    let ns = namespace(what);
    // The script resolves `unstorage` from the directory it runs in (stdin, --input-type).
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut cmd = std::process::Command::new("node");
        cmd.arg("--input-type=module")
            .current_dir(&dir)
            .env("LARDER_URL", &url)
            .env("LARDER_NS", &ns)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if token {
            cmd.env("LARDER_TOKEN", TOKEN);
        }
        let mut child = cmd.spawn().expect("node starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(CLIENT.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "unstorage's http driver against {what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unstorage_http_driver_over_memory_with_a_token() {
    let store = larder::open("memory://").await.unwrap();
    run_client(store, "memory", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unstorage_http_driver_over_fs() {
    over_tempdir("fs", |dir| format!("fs://{}/store", dir.display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unstorage_http_driver_over_sqlite() {
    over_tempdir("sqlite", |dir| {
        format!("sqlite://{}/objects.db", dir.display())
    })
    .await;
}

/// The client against a store kept in a new temporary directory, opened at `url(dir)`.
async fn over_tempdir(what: &str, url: fn(&std::path::Path) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let store = larder::open(&url(dir.path())).await.unwrap();
    run_client(store, what, false).await;
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// The store at the URL in `env` with `param` added; `None` (skipped or failed, see
/// `skip_or_fail`) when the variable is unset or the service does not answer.
async fn service_store(service: &str, env: &str, param: &str) -> Option<Arc<dyn Store>> {
    let url = match std::env::var(env) {
        Ok(u) => u,
        Err(_) => return skip_or_fail(service, format!("{env} is not set")),
    };
    match larder::open(&with_param(&url, param)).await {
        Ok(s) => Some(s),
        Err(e) => skip_or_fail(service, e),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unstorage_http_driver_over_redis() {
    // Shared prefix; the client keeps to a namespace of its own and clears it at the end.
    let param = "prefix=larder-unstorage-test";
    if let Some(store) = service_store("redis", "LARDER_TEST_REDIS_URL", param).await {
        run_client(store, "redis", false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unstorage_http_driver_over_postgres() {
    let param = "table=larder_unstorage_test";
    if let Some(store) = service_store("postgres", "LARDER_TEST_POSTGRES_URL", param).await {
        run_client(store, "postgres", false).await;
    }
}

/// The refusals of the protocol, with plain HTTP: each is the status unstorage's server gives
/// (or the native API's, for what unstorage's server has no notion of), in h3's error shape.
#[tokio::test]
async fn refusals() {
    let config = Config {
        tokens: vec![
            TokenConfig {
                token: TOKEN.into(),
                scope: Scope::Write,
                prefix: String::new(),
            },
            TokenConfig {
                token: "reader-of-public-0123456789".into(),
                scope: Scope::Read,
                prefix: "public/".into(),
            },
        ],
        max_object_size: 16,
        ..Config::default()
    };
    let server = serve(larder::open("memory://").await.unwrap(), config).await;
    let base = format!("{}/unstorage", server.url());
    let http = reqwest::Client::new();
    let send = |method: &str, path: &str, token: &str| {
        http.request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(token)
    };
    async fn answer(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    let (s, body) = answer(send("POST", "/a", TOKEN)).await;
    assert_eq!(s, 405);
    assert_eq!(body["statusCode"], 405);
    assert_eq!(body["statusMessage"], "Method Not Allowed: POST");
    // (`/a/%2e%2e/b` would be resolved to `/b` by the client's URL parser before sending.)
    let (s, body) = answer(send("GET", "/a:..:b", TOKEN)).await;
    assert_eq!(
        (s, body["data"]["code"].as_str()),
        (400, Some("invalid_key"))
    );
    assert_eq!(answer(send("PUT", "/a/", TOKEN)).await.0, 400);
    assert_eq!(answer(send("HEAD", "/a:", TOKEN)).await.0, 400);
    assert_eq!(
        answer(send("GET", "/a/", TOKEN).header("if-match", "*"))
            .await
            .0,
        400,
        "a condition on a base is refused, not ignored"
    );
    let (s, body) = answer(send("PUT", "/a", TOKEN).header("if-match", "not-a-tag")).await;
    assert_eq!(
        (s, body["data"]["code"].as_str()),
        (400, Some("invalid_input"))
    );
    let (s, body) = answer(send("PUT", "/a", TOKEN).body("x".repeat(17))).await;
    assert_eq!((s, body["data"]["code"].as_str()), (413, Some("too_large")));
    let (s, _) = answer(send("PUT", "/a", TOKEN).header("x-ttl", "soon")).await;
    assert_eq!(s, 400);

    // Tokens and their scopes, as on the native API.
    let (s, body) = answer(http.get(format!("{base}/public/a"))).await;
    assert_eq!(
        (s, body["data"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let reader = "reader-of-public-0123456789";
    assert_eq!(
        answer(send("PUT", "/public/a", TOKEN).body("1")).await.0,
        200
    );
    assert_eq!(answer(send("GET", "/public:a", reader)).await.0, 200);
    assert_eq!(answer(send("GET", "/public/:", reader)).await.0, 200);
    assert_eq!(
        answer(send("PUT", "/public/a", reader).body("2")).await.0,
        403
    );
    assert_eq!(answer(send("DELETE", "/public/", reader)).await.0, 403);
    assert_eq!(answer(send("GET", "/private/a", reader)).await.0, 403);
    assert_eq!(
        answer(send("GET", "/:", reader)).await.0,
        403,
        "listing the root"
    );

    // A missing key: 404 to GET and HEAD, `OK` to an unconditional DELETE, 404 to a
    // conditional one (the store decides it; there is nothing to match).
    assert_eq!(answer(send("GET", "/nope", TOKEN)).await.0, 404);
    assert_eq!(answer(send("HEAD", "/nope", TOKEN)).await.0, 404);
    assert_eq!(answer(send("DELETE", "/nope", TOKEN)).await.0, 200);
    let etag = "\"0000000000000000000000000000000000000000000000000000000000000000\"";
    assert_eq!(
        answer(send("DELETE", "/nope", TOKEN).header("if-match", etag))
            .await
            .0,
        404
    );
    server.shutdown().await.unwrap();
}

/// A store that decides no condition (as a backend without a conditional write would be):
/// memory underneath, with the capabilities and the up-front refusal every driver has.
#[derive(Debug)]
struct NoConditions(Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for NoConditions {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            put_conditions: ConditionSupport::NONE,
            delete_conditions: ConditionSupport::NONE,
            ..self.0.capabilities()
        }
    }
    async fn head(&self, key: &Key, opts: HeadOptions) -> larder::Result<Meta> {
        self.0.head(key, opts).await
    }
    async fn get(&self, key: &Key, opts: GetOptions) -> larder::Result<GetResult> {
        self.0.get(key, opts).await
    }
    async fn put(&self, key: &Key, body: Body, opts: PutOptions) -> larder::Result<PutResult> {
        self.capabilities().check_put(&opts)?;
        self.0.put(key, body, opts).await
    }
    async fn delete(&self, key: &Key, opts: DeleteOptions) -> larder::Result<()> {
        self.capabilities().check_delete(&opts)?;
        self.0.delete(key, opts).await
    }
    async fn list(&self, opts: ListOptions) -> larder::Result<ListPage> {
        self.0.list(opts).await
    }
}

/// The status of a HEAD of `url`.
async fn head_status(http: &reqwest::Client, url: &str) -> u16 {
    http.head(url).send().await.unwrap().status().as_u16()
}

/// A condition the store cannot decide is 501 through /unstorage (#772's `CASUnsupportedError`),
/// and nothing is written; without conditions the same store works.
#[tokio::test]
async fn an_undecidable_condition_is_501_and_writes_nothing() {
    let store = Arc::new(NoConditions(larder::open("memory://").await.unwrap()));
    let server = serve(store, Config::default()).await;
    let base = format!("{}/unstorage", server.url());
    let http = reqwest::Client::new();
    for (name, value) in [("if-none-match", "*"), ("if-match", "*")] {
        let r = http
            .put(format!("{base}/k"))
            .header(name, value)
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 501, "{name}: {value}");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["data"]["code"], "unsupported");
        assert_eq!(head_status(&http, &format!("{base}/k")).await, 404);
    }
    let r = http
        .put(format!("{base}/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .delete(format!("{base}/k"))
        .header("if-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    assert_eq!(head_status(&http, &format!("{base}/k")).await, 200);
    server.shutdown().await.unwrap();
}
