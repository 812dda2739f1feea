//! A dead or hung backend under a live server: each test starts its own `redis-server` or
//! `nats-server` on a free port (with persistence in a temp dir), kills it (`SIGKILL`) or
//! stops it (`SIGSTOP`) while a client keeps writing, and checks that
//! - failures arrive as `503` with `Retry-After`, within the driver's default timeout (5 s;
//!   asserted with a generous bound, the machine may be loaded),
//! - the server recovers by itself once the backend is back (no restart),
//! - every write acknowledged with a 2xx is there afterwards, with its body,
//! - `/readyz` says 503 naming the failing part while `/healthz` stays 200.
//!
//! The server binaries are found on `PATH` (or `LARDER_REDIS_SERVER` / `LARDER_NATS_SERVER`);
//! without them the tests are skipped with a printed reason, unless `LARDER_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use larder_server::Config;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a failure may take to arrive: the drivers' 5 s default timeout, plus room for a
/// loaded machine.
const FAIL_WITHIN: Duration = Duration::from_secs(15);
/// Longest recovery may take once the backend is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(40);

fn binary(env: &str, name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("{name} not found (set {env} or put it on PATH)");
        assert!(
            std::env::var("LARDER_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{why}"
        );
        println!("skipped: {why}");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// A backend process owned by the test: started on a fixed port with its data in `dir`, so it
/// can be killed and started again with the same data.
struct Backend {
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl Backend {
    fn new(program: PathBuf, args: Vec<String>, port: u16) -> Backend {
        Backend {
            program,
            args,
            port,
            child: None,
        }
    }

    fn redis(program: PathBuf, dir: &Path) -> Backend {
        let port = free_port();
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().unwrap(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        .map(String::from)
        .to_vec();
        Backend::new(program, args, port)
    }

    fn nats(program: PathBuf, dir: &Path) -> Backend {
        let port = free_port();
        let args = [
            "-js",
            "-sd",
            dir.to_str().unwrap(),
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]
        .map(String::from)
        .to_vec();
        Backend::new(program, args, port)
    }

    async fn start(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "{:?} did not start",
                self.program
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&self) {
        signal(self.child.as_ref().unwrap(), "STOP");
    }

    fn resume(&self) {
        signal(self.child.as_ref().unwrap(), "CONT");
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// What the writer saw.
#[derive(Default)]
struct Log {
    /// Writes acknowledged with a 2xx: key number.
    acked: Vec<u64>,
    /// Failed writes: status, whether Retry-After was present, how long the request took.
    failed: Vec<(u16, bool, Duration)>,
}

/// A client that writes `w/0`, `w/1`, … (body `value-N`) until told to stop.
struct Writer {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(base: String) -> Writer {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = client
                    .put(format!("{base}/v1/objects/w/{n}"))
                    .body(format!("value-{n}"))
                    .timeout(Duration::from_secs(120))
                    .send()
                    .await;
                let took = started.elapsed();
                match r {
                    Ok(r) if r.status().is_success() => l.lock().unwrap().acked.push(n),
                    Ok(r) => l.lock().unwrap().failed.push((
                        r.status().as_u16(),
                        r.headers().contains_key("retry-after"),
                        took,
                    )),
                    Err(e) => panic!("the server itself failed: {e}"),
                }
                n += 1;
                // Not a busy loop while the backend is down.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer { log, stop, task }
    }

    fn counts(&self) -> (usize, usize) {
        let l = self.log.lock().unwrap();
        (l.acked.len(), l.failed.len())
    }

    /// Waits until `done(acked, failed)` holds, up to `within`.
    async fn wait_for(&self, within: Duration, what: &str, done: impl Fn(usize, usize) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let (a, f) = self.counts();
            if done(a, f) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: acked {a}, failed {f}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        Arc::try_unwrap(self.log)
            .map_err(|_| ())
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// A private instance of a backend, started, with the directory it keeps its files in; `None`
/// (after printing why) when its program is not installed.
async fn private(
    env: &str,
    name: &str,
    backend: fn(PathBuf, &Path) -> Backend,
) -> Option<(Backend, tempfile::TempDir)> {
    let program = binary(env, name)?;
    let dir = tempfile::tempdir().unwrap();
    let mut instance = backend(program, dir.path());
    instance.start().await;
    Some((instance, dir))
}

async fn status_of(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// A server over `store_url` with default settings, its base URL, and a client.
async fn serve(store_url: &str) -> (larder_server::ServerHandle, String, reqwest::Client) {
    let config = Config {
        store: store_url.into(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = larder_server::spawn_configured(listener, config)
        .await
        .unwrap();
    let base = server.url();
    (server, base, reqwest::Client::new())
}

/// Kills and stops the backend under a live server over `store_url`, and checks what the
/// module docs promise.
async fn outage(backend: &mut Backend, store_url: &str) {
    let (server, base, client) = serve(store_url).await;
    assert_eq!(
        status_of(&client, &format!("{base}/readyz")).await.0,
        StatusCode::OK
    );

    let writer = Writer::start(base.clone());
    writer
        .wait_for(RECOVER_WITHIN, "writes before the outage", |a, _| a >= 20)
        .await;

    for how in ["SIGSTOP", "SIGKILL"] {
        let (_, failed_before) = writer.counts();
        match how {
            "SIGSTOP" => backend.stop(),
            _ => backend.kill(),
        }
        writer
            .wait_for(
                FAIL_WITHIN * 2,
                &format!("a failure after {how}"),
                |_, f| f > failed_before,
            )
            .await;
        // A read fails fast too, and so does readiness, while liveness holds.
        let started = Instant::now();
        let (s, body) = status_of(&client, &format!("{base}/v1/objects/w/0")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{how}: {body}");
        assert!(
            started.elapsed() < FAIL_WITHIN,
            "{how}: {:?}",
            started.elapsed()
        );
        let (s, body) = status_of(&client, &format!("{base}/readyz")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{how}: {body}");
        assert!(body.contains("\"unavailable\""), "{body}");
        assert_eq!(
            status_of(&client, &format!("{base}/healthz")).await.0,
            StatusCode::OK
        );

        match how {
            "SIGSTOP" => backend.resume(),
            _ => backend.start().await,
        }
        let (acked, _) = writer.counts();
        writer
            .wait_for(RECOVER_WITHIN, &format!("recovery after {how}"), |a, _| {
                a >= acked + 20
            })
            .await;
        assert_eq!(
            status_of(&client, &format!("{base}/readyz")).await.0,
            StatusCode::OK,
            "{how}: ready again"
        );
    }

    let log = writer.finish().await;
    println!(
        "{store_url}: {} writes acknowledged, {} failed; slowest failure {:?}",
        log.acked.len(),
        log.failed.len(),
        log.failed.iter().map(|f| f.2).max()
    );
    for (status, retry_after, took) in &log.failed {
        assert_eq!(*status, 503, "a failed write is 503");
        assert!(retry_after, "a 503 carries Retry-After");
        assert!(*took < FAIL_WITHIN, "a failure took {took:?}");
    }
    // Every acknowledged write survived the stop, the kill and the restart.
    for n in &log.acked {
        let (s, body) = status_of(&client, &format!("{base}/v1/objects/w/{n}")).await;
        assert_eq!(s, StatusCode::OK, "acknowledged write w/{n}");
        assert_eq!(body, format!("value-{n}"));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn redis_killed_or_stopped_fails_fast_and_recovers() {
    outage_of_private(
        "LARDER_REDIS_SERVER",
        "redis-server",
        Backend::redis,
        |port| format!("redis://127.0.0.1:{port}/0?prefix=outage"),
    )
    .await;
}

#[tokio::test]
async fn nats_killed_or_stopped_fails_fast_and_recovers() {
    outage_of_private("LARDER_NATS_SERVER", "nats-server", Backend::nats, |port| {
        format!("nats://127.0.0.1:{port}?bucket=outage")
    })
    .await;
}

/// [`outage`] over a private instance of a backend, reached at `store_url(port)`.
async fn outage_of_private(
    env: &str,
    name: &str,
    backend: fn(PathBuf, &Path) -> Backend,
    store_url: fn(u16) -> String,
) {
    let Some((mut instance, _dir)) = private(env, name, backend).await else {
        return;
    };
    let url = store_url(instance.port);
    outage(&mut instance, &url).await;
}

#[tokio::test]
async fn readyz_names_the_failing_tier() {
    let Some((mut redis, dir)) =
        private("LARDER_REDIS_SERVER", "redis-server", Backend::redis).await
    else {
        return;
    };
    let file = format!(
        "[[tiers]]\nstore = \"memory://\"\n[[tiers]]\nstore = \"redis://127.0.0.1:{}/0?prefix=readyz\"\n[[mounts]]\nprefix = \"scratch/\"\nstore = \"memory://\"\n",
        redis.port
    );
    let path = dir.path().join("larder.toml");
    std::fs::write(&path, file).unwrap();
    let config = Config::resolve(&larder_server::ServeArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = larder_server::spawn_configured(listener, config)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let readyz = format!("{}/readyz", server.url());
    let (s, body) = status_of(&client, &readyz).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ready"
    );

    redis.kill();
    let (s, body) = status_of(&client, &readyz).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(
        v["failing"], "mount \"\" (tiered) / tier 2 of 2 (redis)",
        "{v}"
    );
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let (s, _) = status_of(&client, &format!("{}/healthz", server.url())).await;
    assert_eq!(s, StatusCode::OK, "liveness is not readiness");

    redis.start().await;
    let deadline = Instant::now() + RECOVER_WITHIN;
    while status_of(&client, &readyz).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "ready again once Redis is back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown().await.unwrap();
}

/// A stand-in for a Redis that is loading its dataset after a restart: it answers `LOADING`
/// to every data command (the store's check of its layout at open included), queues inside
/// `MULTI` and aborts the `EXEC` (`EXECABORT`), exactly as redis-server 7 does.
async fn loading_redis() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some((cmd, used)) = parse_command(&buf) {
                        buf.drain(..used);
                        let reply: &[u8] = match cmd.to_ascii_uppercase().as_str() {
                            "MULTI" => b"+OK\r\n",
                            "EXEC" => {
                                b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                            }
                            "CLIENT" | "HELLO" | "SELECT" | "PING" => b"+OK\r\n",
                            _ => b"-LOADING Redis is loading the dataset in memory\r\n",
                        };
                        if sock.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

/// The command name of the first whole RESP array in `buf`, and its length in bytes.
fn parse_command(buf: &[u8]) -> Option<(String, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut name = None;
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        name.get_or_insert_with(|| String::from_utf8_lossy(&buf[next..next + len]).into_owned());
        at = next + len + 2;
    }
    Some((name?, at))
}

#[tokio::test]
async fn redis_loading_is_503_not_502() {
    let port = loading_redis().await;
    let store = larder::open(&format!("redis://127.0.0.1:{port}/0?prefix=loading"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = larder_server::spawn(listener, store, Config::default());
    let client = reqwest::Client::new();
    let obj = format!("{}/v1/objects/k", server.url());
    let requests = [
        ("plain GET (GETRANGE)", client.get(&obj)),
        (
            "conditional GET (script)",
            client.get(&obj).header("if-none-match", "\"x\""),
        ),
        ("HEAD", client.head(&obj)),
        ("PUT (script)", client.put(&obj).body("v")),
        ("DELETE (script)", client.delete(&obj)),
        (
            "listing",
            client.get(format!("{}/v1/objects", server.url())),
        ),
    ];
    for (what, req) in requests {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert!(r.headers().contains_key("retry-after"), "{what}");
    }
    let (s, body) = status_of(&client, &format!("{}/readyz", server.url())).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    server.shutdown().await.unwrap();
}

/// A service that accepts connections and never answers (a hung S3 or Azure endpoint); the
/// connections are held open until the task is dropped.
async fn silent_service() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (port, task)
}

/// Over a store whose backend never answers: a read, a write, a conditional write, a
/// conditional delete and a listing each fail as `503` with `Retry-After`, within `within`.
async fn hung_object_store(store_url: &str, within: Duration) {
    let (server, base, client) = serve(store_url).await;
    let object = format!("{base}/v1/objects/hung/k");
    let tag = "\"0000000000000000000000000000000000000000000000000000000000000000\"";
    let requests = [
        ("GET", client.get(&object)),
        ("PUT", client.put(&object).body("x")),
        (
            "PUT If-None-Match",
            client.put(&object).header("if-none-match", "*").body("x"),
        ),
        (
            "DELETE If-Match",
            client.delete(&object).header("if-match", tag),
        ),
        (
            "list",
            client.get(format!("{base}/v1/objects?prefix=hung/")),
        ),
    ];
    let answers = futures::future::join_all(requests.into_iter().map(|(what, req)| async move {
        let started = Instant::now();
        let r = req.send().await.unwrap();
        let took = started.elapsed();
        let retry_after = r.headers().contains_key("retry-after");
        (what, r.status(), retry_after, took, r.text().await.unwrap())
    }))
    .await;
    for (what, status, retry_after, took, body) in answers {
        println!("{store_url}: {what}: {status} after {took:?}");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert!(retry_after, "{what}: a 503 carries Retry-After");
        assert!(took < within, "{what} took {took:?}: {body}");
    }
    server.shutdown().await.unwrap();
}

/// Valid base64, so that requests can be signed (nothing checks the signature here).
const AZURE_KEY: &str = "c2VjcmV0LWtleS1mb3ItYS1zZXJ2aWNlLXRoYXQtbmV2ZXItYW5zd2Vycw==";

#[tokio::test]
async fn s3_on_a_hung_backend_fails_fast_by_default() {
    let (port, _service) = silent_service().await;
    let url = format!(
        "s3://bucket?endpoint=http://127.0.0.1:{port}&allow_http=true&region=us-east-1\
         &access_key_id=a&secret_access_key=s"
    );
    hung_object_store(&url, FAIL_WITHIN).await;
}

#[tokio::test]
async fn azure_on_a_hung_backend_fails_fast_by_default() {
    let (port, _service) = silent_service().await;
    let url = format!(
        "azure://container?account=acct&access_key={AZURE_KEY}&use_emulator=false\
         &endpoint=http://127.0.0.1:{port}/acct&allow_http=true"
    );
    hung_object_store(&url, FAIL_WITHIN).await;
}

/// The bounds are the URL's: a few hundred milliseconds give failures in well under the
/// default 5 s.
#[tokio::test]
async fn object_store_timeouts_come_from_the_url() {
    let (port, _service) = silent_service().await;
    let bounds = "connect_timeout_ms=300&timeout_ms=300&retry_timeout_ms=300";
    let s3 = format!(
        "s3://bucket?endpoint=http://127.0.0.1:{port}&allow_http=true&region=us-east-1\
         &access_key_id=a&secret_access_key=s&{bounds}"
    );
    let azure = format!(
        "azure://container?account=acct&access_key={AZURE_KEY}&use_emulator=false\
         &endpoint=http://127.0.0.1:{port}/acct&allow_http=true&{bounds}"
    );
    // 300 ms, one retry after at most a 1 s wait, and room for a loaded machine.
    let within = Duration::from_millis(3500);
    hung_object_store(&s3, within).await;
    hung_object_store(&azure, within).await;
}
