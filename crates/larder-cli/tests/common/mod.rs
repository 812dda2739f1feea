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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
