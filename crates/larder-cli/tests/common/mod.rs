//! A `larder serve` process for the tests: the real binary, on a free loopback port, killed
//! when dropped.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `larder serve`.
pub struct Server {
    child: Child,
    url: String,
    s3_url: Option<String>,
}

impl Server {
    /// A server over a fresh memory store, without auth.
    #[allow(dead_code)]
    pub fn start() -> Server {
        Self::start_with(&["--store", "memory://"])
    }

    /// A server over the store at `url`, without auth.
    #[allow(dead_code)]
    pub fn with_store(url: &str) -> Server {
        Self::start_with(&["--store", url])
    }

    /// A server with a TOML config file (written to `dir`).
    #[allow(dead_code)]
    pub fn with_config(dir: &Path, toml: &str) -> Server {
        let path = dir.join("larder.toml");
        std::fs::write(&path, toml).unwrap();
        Self::start_with(&["--store", "memory://", "--config", path.to_str().unwrap()])
    }

    /// A server whose store comes only from a TOML config file (written to `dir`): tiers,
    /// mounts and invalidation included.
    #[allow(dead_code)]
    pub fn with_config_only(dir: &Path, toml: &str) -> Server {
        let path = dir.join("larder.toml");
        std::fs::write(&path, toml).unwrap();
        Self::start_with(&["--config", path.to_str().unwrap()])
    }

    /// A server started with these command-line arguments (after `serve --listen …`).
    pub fn start_with(args: &[&str]) -> Server {
        Self::launch(args, false)
    }

    /// Like [`Server::start_with`], with an S3 listener too (`--s3-listen`, see [`Server::s3_url`]).
    #[allow(dead_code)]
    pub fn with_s3_listener(args: &[&str]) -> Server {
        Self::launch(args, true)
    }

    fn launch(args: &[&str], s3: bool) -> Server {
        // Free ports: taken from the OS, released, handed to the server. Another process
        // could grab one in between, so a server that does not come up is retried elsewhere.
        let free = || {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("127.0.0.1:{port}")
        };
        for _ in 0..5 {
            let listen = free();
            let s3_listen = s3.then(free);
            let mut command = Command::new(env!("CARGO_BIN_EXE_larder"));
            command.arg("serve").args(["--listen", &listen]);
            if let Some(s3_listen) = &s3_listen {
                command.args(["--s3-listen", s3_listen]);
            }
            let mut child = command
                .args(args)
                .env_remove("LARDER_STORE")
                .env_remove("LARDER_LISTEN")
                .env_remove("LARDER_CONFIG")
                .env_remove("LARDER_S3_LISTEN")
                // s3s logs every refused request (412, 403…) as an error.
                .env("RUST_LOG", "warn,s3s=off")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn larder serve");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // The S3 listener is bound before the native one accepts.
                let up = |addr: &str| TcpStream::connect(addr).is_ok();
                if up(&listen) && s3_listen.as_deref().is_none_or(up) {
                    return Server {
                        child,
                        url: format!("http://{listen}"),
                        s3_url: s3_listen.map(|a| format!("http://{a}")),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("larder serve did not start");
    }

    /// The S3 listener's base URL, for a server started by [`Server::with_s3_listener`].
    #[allow(dead_code)]
    pub fn s3_url(&self) -> String {
        self.s3_url.clone().expect("started with an S3 listener")
    }

    /// The server process's peak resident memory, in KiB (Linux).
    #[allow(dead_code)]
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The server's process id (for reading its `/proc` entries).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A name no other run uses: `tag`, the process id and the clock.
#[allow(dead_code)]
pub fn fresh_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// The Redis server named by `LARDER_TEST_REDIS_URL` with a fresh key prefix starting with
/// `tag` (so runs never see each other's keys); `None` when the variable is unset (the test of
/// `service` is skipped, or fails under `LARDER_REQUIRE_SERVICES=1`).
#[allow(dead_code)]
pub fn redis_url_with_fresh_prefix(service: &str, tag: &str) -> Option<String> {
    let url = larder::conformance::env_url(service, "LARDER_TEST_REDIS_URL")?;
    let prefix = format!("prefix={}", fresh_name(tag));
    Some(larder::conformance::with_query(&url, &prefix))
}

/// Runs `command` (an outside tool) to the end, prints its standard output under `what`, and
/// asserts that it succeeded and that `passed` holds of that output; otherwise fails with
/// `failure` and both outputs.
#[allow(dead_code)]
pub fn assert_tool_passes(
    what: &str,
    command: &mut Command,
    passed: impl FnOnce(&str) -> bool,
    failure: &str,
) {
    let out = command.output().expect("run the tool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{what}:\n{stdout}");
    assert!(
        out.status.success() && passed(&stdout),
        "{what}: {failure}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One `#[test]` per store a test can make on its own (memory, and fs and sqlite in a fresh
/// temporary directory), named `$memory`, `$fs` and `$sqlite`: each calls
/// `$run(<$what followed by the driver's name>, <the store's URL>)`.
#[macro_export]
macro_rules! local_store_tests {
    ($run:ident($what:literal): $memory:ident, $fs:ident, $sqlite:ident) => {
        #[test]
        fn $memory() {
            $run(concat!($what, "memory"), "memory://");
        }

        #[test]
        fn $fs() {
            let dir = tempfile::tempdir().unwrap();
            $run(
                concat!($what, "fs"),
                &format!("fs://{}", dir.path().display()),
            );
        }

        #[test]
        fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("store.db");
            $run(
                concat!($what, "sqlite"),
                &format!("sqlite://{}", db.display()),
            );
        }
    };
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
