//! A full disk under the fs and sqlite stores: `507 storage_full`, the old version intact, and
//! the store usable again once the write that did not fit is refused. The http driver maps the
//! 507 back to `Error::StorageFull`.
//!
//! The disk is a 1 MiB tmpfs mounted by the test, which needs root (CI runs as root); without
//! it the test is skipped with a printed reason, unless `LARDER_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use larder::{Error, Key, Store, StoreExt};
use larder_server::Config;
use reqwest::StatusCode;

/// A 1 MiB tmpfs, unmounted on drop.
struct TinyDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount() -> Option<TinyDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(TinyDisk { path, _dir: dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("LARDER_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "cannot mount a tmpfs (needs root): {why}"
                );
                println!("skipped: cannot mount a tmpfs (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazily: a store may still hold a file open while the runtime winds down.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn serve(store: Arc<dyn Store>) -> larder_server::ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    larder_server::spawn(listener, store, Config::default())
}

/// Fills the store's disk through a live server and checks the answers.
async fn check(store: Arc<dyn Store>, what: &str, dir: &Path) {
    let server = serve(store).await;
    let client = reqwest::Client::new();
    let url = |k: &str| format!("{}/v1/objects/{k}", server.url());
    let r = client
        .put(url("kept"))
        .body("the old version")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{what}");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();

    // Larger than the whole disk, as a replacement of `kept` and as a new object.
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    for key in ["kept", "new"] {
        let r = client.put(url(key)).body(big.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE, "{what} {key}");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "storage_full", "{what}: {body}");
    }
    let r = client.get(url("kept")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{what}");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.text().await.unwrap(), "the old version");
    let r = client.get(url("new")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "{what}: nothing stored");

    // The http driver gives the typed error back.
    let remote = larder::open(&server.url()).await.unwrap();
    let key = Key::new("via-http").unwrap();
    match remote.put_bytes(&key, big.clone().into()).await {
        Err(Error::StorageFull { .. }) => {}
        other => panic!("{what}: the http driver gave {other:?}"),
    }

    // What did not fit left nothing behind: a small write still succeeds.
    let r = client
        .put(url("kept"))
        .header("if-match", &etag)
        .body("the new version")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{what}: {:?}",
        std::fs::read_dir(dir).map(|d| d.count())
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_disk_is_507_and_keeps_the_old_version() {
    let Some(disk) = TinyDisk::mount() else {
        return;
    };
    let fs_dir = disk.path.join("fs");
    let fs = larder::drivers::fs::FsStore::open(larder::drivers::fs::FsConfig::new(&fs_dir))
        .await
        .unwrap();
    check(Arc::new(fs), "fs", &fs_dir).await;

    let db = disk.path.join("objects.db");
    let sqlite = larder::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    check(sqlite, "sqlite", &disk.path).await;
}
