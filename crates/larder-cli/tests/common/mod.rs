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

    fn start_with(args: &[&str]) -> Server {
        // A free port: taken from the OS, released, handed to the server. Another process
        // could grab it in between, so a server that does not come up is retried elsewhere.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = format!("127.0.0.1:{port}");
            let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
                .arg("serve")
                .args(["--listen", &listen])
                .args(args)
                .env_remove("LARDER_STORE")
                .env_remove("LARDER_LISTEN")
                .env_remove("LARDER_CONFIG")
                .env("RUST_LOG", "warn")
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
                if TcpStream::connect(&listen).is_ok() {
                    return Server {
                        child,
                        url: format!("http://{listen}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("larder serve did not start");
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
