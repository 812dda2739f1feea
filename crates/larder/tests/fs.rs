//! The fs driver: the conformance kit on a fresh directory per test, then what is specific to
//! files: name encoding, staying inside the root, crashes, corruption, torn reads, URLs.

#![cfg(feature = "fs")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use larder::conformance::{chunked, delimited, Holding};
use larder::drivers::fs::{FsConfig, FsStore};
use larder::{
    Body, DeleteOptions, ETag, Error, GetOptions, HeadOptions, Key, ListOptions, ListPage, Meta,
    PutOptions, Store, StoreExt,
};
use tempfile::TempDir;

async fn store() -> Option<Arc<dyn Store>> {
    let (dir, store) = fresh().await;
    Some(Arc::new(Holding::new(store, dir)))
}

larder::conformance_tests!(store());

mod no_fsync {
    use super::*;

    async fn store() -> Option<Arc<dyn Store>> {
        let (dir, store) = fresh_with(|root| FsConfig {
            fsync: false,
            ..FsConfig::new(root)
        })
        .await;
        Some(Arc::new(Holding::new(store, dir)))
    }

    larder::conformance_tests!(store());
}

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// An fs store rooted in a fresh temporary directory, and the directory.
async fn fresh() -> (TempDir, FsStore) {
    fresh_with(FsConfig::new).await
}

/// [`fresh`] with the configuration `config` makes for the root.
async fn fresh_with(config: impl FnOnce(PathBuf) -> FsConfig) -> (TempDir, FsStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(config(dir.path().join("store")))
        .await
        .unwrap();
    (dir, store)
}

/// Every file and directory below `dir`.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A put carrying `metadata`.
fn with_metadata(metadata: &std::collections::BTreeMap<String, String>) -> PutOptions {
    PutOptions {
        metadata: metadata.clone(),
        ..Default::default()
    }
}

fn keys(page: &ListPage) -> Vec<&str> {
    page.objects.iter().map(|m| m.key.as_str()).collect()
}

#[tokio::test]
async fn object_and_directory_keys_coexist() {
    let (_dir, store) = fresh().await;
    for name in ["a/b/c", "a", "a/b", "ab", "a-"] {
        store
            .put_bytes(&k(name), Bytes::from(name.to_owned()))
            .await
            .unwrap();
    }
    for name in ["a", "a/b", "a/b/c", "ab", "a-"] {
        let (data, _) = store.get_bytes(&k(name)).await.unwrap();
        assert_eq!(&data[..], name.as_bytes());
    }
    let all = store.list(ListOptions::prefix("a")).await.unwrap();
    assert_eq!(keys(&all), ["a", "a-", "a/b", "a/b/c", "ab"], "byte order");
    let dir = store.list(delimited("")).await.unwrap();
    assert_eq!(keys(&dir), ["a", "a-", "ab"]);
    assert_eq!(dir.common_prefixes, ["a/"]);
    let sub = store.list(delimited("a/")).await.unwrap();
    assert_eq!(keys(&sub), ["a/b"]);
    assert_eq!(sub.common_prefixes, ["a/b/"]);
    let partial = store.list(ListOptions::prefix("a/b/")).await.unwrap();
    assert_eq!(keys(&partial), ["a/b/c"]);

    // Deleting the object "a" leaves the directory "a/" alone, and the other way round.
    store.remove(&k("a")).await.unwrap();
    assert_eq!(store.get_bytes(&k("a/b")).await.unwrap().0, "a/b");
    store.remove(&k("a/b/c")).await.unwrap();
    store.remove(&k("a/b")).await.unwrap();
    assert!(store.stat(&k("a")).await.unwrap().is_none());
    let objects = store.root().join("objects");
    let left: Vec<_> = tree(&objects)
        .into_iter()
        .map(|p| p.strip_prefix(&objects).unwrap().to_owned())
        .collect();
    assert_eq!(
        left,
        [PathBuf::from("a-@"), PathBuf::from("ab@")],
        "empty directories are removed"
    );
}

#[tokio::test]
async fn nothing_is_created_outside_the_root() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    let store = FsStore::open(FsConfig::new(&root)).await.unwrap();
    let long_ok = "x".repeat(254);
    let names = [
        "..a",
        "...",
        ".tmp/x",
        ".locks/000.lock",
        "objects/x",
        "a/.hidden",
        "Upper/Case",
        "upper/case",
        "é/ü/日本",
        "%2e%2e/x",
        "%2E%2E/x",
        "a@",
        "a@/b",
        "sp ace/q?x=1#f",
        "~user/$HOME",
        long_ok.as_str(),
    ];
    for name in names {
        store
            .put_bytes(&k(name), Bytes::from(name.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in names {
        let (data, meta) = store.get_bytes(&k(name)).await.unwrap();
        assert_eq!(&data[..], name.as_bytes(), "{name}");
        assert_eq!(meta.key.as_str(), name);
    }
    let mut listed: Vec<String> = keys(&store.list(ListOptions::default()).await.unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    listed.sort();
    assert_eq!(
        listed, want,
        "every key listed once, the store's own dirs never"
    );
    // Only the root in the parent; every object file under root/objects.
    let top: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["root"]);
    let root = std::fs::canonicalize(&root).unwrap();
    let objects = root.join("objects");
    for p in tree(&root) {
        let own = p == root.join(".larder-fs") || p.starts_with(root.join(".locks"));
        if p.is_file() && !own {
            assert!(p.starts_with(&objects), "{p:?} is outside root/objects");
        }
    }
    // Case-only differences never share a file (case-insensitive filesystems).
    assert_ne!(
        store
            .object_path(&k("Upper/Case"))
            .unwrap()
            .as_os_str()
            .to_ascii_lowercase(),
        store
            .object_path(&k("upper/case"))
            .unwrap()
            .as_os_str()
            .to_ascii_lowercase()
    );

    // Too-long segments are InvalidKey, refused before any body is read.
    for bad in [
        "y".repeat(255),
        "Y".repeat(85),
        format!("ok/{}", "é".repeat(43)),
    ] {
        let body = Body::from_stream(futures::stream::once(async {
            panic!("the body of a refused key is never read")
        }));
        let r = store.put(&k(&bad), body, PutOptions::default()).await;
        assert!(matches!(r, Err(Error::InvalidKey { .. })), "{bad}: {r:?}");
        let r = store.head(&k(&bad), HeadOptions::default()).await;
        assert!(matches!(r, Err(Error::InvalidKey { .. })), "{bad}: {r:?}");
    }
    assert!(store
        .list(ListOptions::prefix(format!("{}/", "z".repeat(300))))
        .await
        .unwrap()
        .objects
        .is_empty());
}

#[tokio::test]
async fn keys_whose_path_would_pass_path_max_are_invalid() {
    let outer = tempfile::tempdir().unwrap();
    let mut root = outer.path().to_owned();
    for _ in 0..5 {
        root.push("r".repeat(220));
    }
    let store = FsStore::open(FsConfig::new(&root)).await.unwrap();
    let deep = vec!["Q".repeat(72); 14].join("/"); // 1021 bytes, 3038 encoded
    let r = store.put_bytes(&k(&deep), "x".into()).await;
    assert!(matches!(r, Err(Error::InvalidKey { .. })), "{r:?}");
    let fits = vec!["q".repeat(72); 14].join("/");
    store.put_bytes(&k(&fits), "x".into()).await.unwrap();
    assert_eq!(store.get_bytes(&k(&fits)).await.unwrap().0, "x");
}

#[tokio::test]
async fn a_root_of_another_format_is_refused() {
    let (dir, store) = fresh().await;
    store.put_bytes(&k("x"), "1".into()).await.unwrap();
    let marker = store.root().join(".larder-fs");
    let format = std::fs::read(&marker).unwrap();
    drop(store);
    std::fs::write(&marker, b"larder fs store v2: something else\n").unwrap();
    let r = FsStore::open(FsConfig::new(dir.path().join("store"))).await;
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    std::fs::write(&marker, &format).unwrap();
    let store = FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&k("x")).await.unwrap().0, "1");
    assert!(
        temp_files(store.root()).is_empty(),
        "the marker's temp file is gone"
    );
}

/// A child process that is killed (SIGKILL: no clean-up runs) and reaped, at the latest when
/// the test ends, even by a panic.
struct Killed(std::process::Child);

impl Killed {
    /// This test binary started again to run only `test`, with `var` set to `root` (the child
    /// half of a test whose writer is killed).
    fn rerun(test: &str, var: &str, root: &Path) -> Killed {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture"])
            .env(var, root)
            .spawn()
            .map(Killed)
            .unwrap()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the expired object's file at `path` is removed (at most 5 s).
async fn wait_until_reaped(path: &Path) {
    let started = Instant::now();
    while path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "expired file not reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Backdates a file's modification time.
fn age(path: &Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    tree(&root.join(".tmp"))
}

#[tokio::test]
async fn leftover_temp_files_are_cleaned_and_the_old_object_survives() {
    let (dir, store) = fresh().await;
    let root = store.root().to_owned();
    let old = store.put_bytes(&k("obj"), "old".into()).await.unwrap();
    assert!(temp_files(&root).is_empty(), "a put leaves no temp file");

    // A dead writer's file, an old file still locked by a live (slow) writer, and a young one.
    let dead = root.join(".tmp/999999-dead-0.tmp");
    std::fs::write(&dead, b"half a body").unwrap();
    age(&dead, Duration::from_secs(3600));
    let busy = root.join(".tmp/999999-busy-0.tmp");
    std::fs::write(&busy, b"still writing").unwrap();
    age(&busy, Duration::from_secs(3600));
    let busy_file = std::fs::File::options().write(true).open(&busy).unwrap();
    busy_file.lock().unwrap();
    let young = root.join(".tmp/999999-young-0.tmp");
    std::fs::write(&young, b"just started").unwrap();

    drop(store);
    let store = FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    let mut left = temp_files(&root);
    left.sort();
    let mut want = vec![busy.clone(), young.clone()];
    want.sort();
    assert_eq!(left, want, "only the dead writer's file is removed");
    let (data, meta) = store.get_bytes(&k("obj")).await.unwrap();
    assert_eq!((&data[..], meta.etag), (&b"old"[..], old.etag));
    drop(busy_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_the_old_object() {
    if let Ok(root) = std::env::var("LARDER_FS_CHILD_ROOT") {
        // The child: start a put whose body never ends, and wait to be killed.
        let store = FsStore::open(FsConfig::new(root)).await.unwrap();
        let chunks = (0..16).map(|i| Ok(Bytes::from(vec![i as u8; 64 << 10])));
        let body = futures::stream::iter(chunks).chain(futures::stream::pending());
        let _ = store
            .put(&k("obj"), Body::from_stream(body), PutOptions::default())
            .await;
        unreachable!("the body never ends");
    }
    let (dir, store) = fresh().await;
    let root = store.root().to_owned();
    let old = store.put_bytes(&k("obj"), "old".into()).await.unwrap();
    let mut child = Killed::rerun(
        "a_killed_writer_leaves_the_old_object",
        "LARDER_FS_CHILD_ROOT",
        &root,
    );
    let started = Instant::now();
    let temp = loop {
        let big = temp_files(&root)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20));
        if let Some(p) = big {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child never wrote its temp file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill();

    let (data, meta) = store.get_bytes(&k("obj")).await.unwrap();
    assert_eq!((&data[..], &meta.etag), (&b"old"[..], &old.etag));
    // The writer's lock died with it; once old enough its temp file is removed on open.
    assert!(temp.exists());
    drop(store);
    age(&temp, Duration::from_secs(3600));
    let store = FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    assert!(temp_files(&root).is_empty(), "temp file cleaned");
    assert_eq!(store.get_bytes(&k("obj")).await.unwrap().0, "old");
    let swapped = store
        .swap(&k("obj"), &old.etag, "new".into())
        .await
        .unwrap();
    assert_eq!(swapped.etag, ETag::of(b"new"));
}

/// Version `i`, starting with `i` so a reader can tell which it is.
fn numbered(i: u64) -> Bytes {
    let mut v = version(i).to_vec();
    v.resize(v.len().max(8), 0);
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_write_never_leave_a_torn_object() {
    if let Ok(root) = std::env::var("LARDER_FS_LOOP_ROOT") {
        // The child: overwrite the object with successive versions until killed.
        let store = FsStore::open(FsConfig::new(root)).await.unwrap();
        for i in 0.. {
            store.put_bytes(&k("obj"), numbered(i)).await.unwrap();
        }
    }
    let (dir, store) = fresh().await;
    let root = store.root().to_owned();
    drop(store);
    for round in 0..5u64 {
        let mut child = Killed::rerun(
            "writers_killed_mid_write_never_leave_a_torn_object",
            "LARDER_FS_LOOP_ROOT",
            &root,
        );
        // Let it write for a while, at a different point each round.
        let store = FsStore::open(FsConfig::new(dir.path().join("store")))
            .await
            .unwrap();
        let started = Instant::now();
        while store.stat(&k("obj")).await.unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child wrote nothing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(40 + 37 * round)).await;
        child.kill();
        let (data, meta) = store.get_bytes(&k("obj")).await.unwrap();
        assert_eq!(ETag::of(&data), meta.etag, "round {round}: whole version");
        let i = u64::from_le_bytes(data[..8].try_into().unwrap());
        assert_eq!(
            data,
            numbered(i),
            "round {round}: a version that was written"
        );
        assert!(
            temp_files(&root).len() <= 1,
            "at most the killed put's temp file"
        );
        for t in temp_files(&root) {
            age(&t, Duration::from_secs(3600));
        }
    }
    FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    assert!(
        temp_files(&root).is_empty(),
        "dead writers' temp files cleaned"
    );
}

fn assert_backend<T: std::fmt::Debug>(r: larder::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(Error::Backend { .. })),
        "{what}: expected a Backend error, got {r:?}"
    );
}

#[tokio::test]
async fn corrupt_files_are_backend_errors_not_garbage() {
    let (_dir, store) = fresh().await;
    let key = k("c/obj");
    let put = store
        .put_bytes(&key, Bytes::from(vec![7u8; 1000]))
        .await
        .unwrap();
    let path = store.object_path(&key).unwrap();
    let good = std::fs::read(&path).unwrap();
    let with = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();

    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    let mut bad_json = good.clone();
    bad_json[21] = b'#';
    let mut huge_len = good.clone();
    huge_len[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: [(&str, Vec<u8>); 6] = [
        ("garbage", b"not an object file at all, just text".to_vec()),
        ("empty", Vec::new()),
        ("bad magic", bad_magic),
        ("bad metadata", bad_json),
        ("huge metadata length", huge_len),
        ("truncated body", good[..good.len() - 1].to_vec()),
    ];
    for (what, bytes) in cases {
        with(&bytes);
        assert_backend(store.get(&key, GetOptions::default()).await, what);
        assert_backend(store.head(&key, HeadOptions::default()).await, what);
        assert_backend(store.list(ListOptions::prefix("c/")).await, what);
        assert_backend(
            store.swap(&key, &put.etag, "x".into()).await,
            &format!("{what}: a conditional write can't be decided"),
        );
        assert_backend(
            store
                .delete(
                    &key,
                    DeleteOptions {
                        preconditions: larder::Preconditions::if_match(put.etag.clone()),
                    },
                )
                .await,
            what,
        );
    }
    // An object file holding another key's object (e.g. copied by hand).
    store
        .put_bytes(&k("c/other"), "other".into())
        .await
        .unwrap();
    std::fs::copy(store.object_path(&k("c/other")).unwrap(), &path).unwrap();
    assert_backend(store.get(&key, GetOptions::default()).await, "wrong key");

    // Unconditional writes and deletes repair.
    with(b"garbage");
    let fixed = store.put_bytes(&key, "fixed".into()).await.unwrap();
    assert_eq!(store.get_bytes(&key).await.unwrap().1.etag, fixed.etag);
    with(b"garbage");
    store.remove(&key).await.unwrap();
    assert!(store.stat(&key).await.unwrap().is_none());
}

/// Edits the metadata in an object file's header (format in the driver's docs).
fn edit_meta(path: &Path, edit: impl FnOnce(&mut Meta)) {
    let file = std::fs::read(path).unwrap();
    assert_eq!(&file[..8], b"LARDFS01");
    let len = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
    let body_offset = u64::from_le_bytes(file[12..20].try_into().unwrap()) as usize;
    let mut meta = Meta::decode(&file[20..20 + len]).unwrap();
    edit(&mut meta);
    let encoded = meta.encode();
    let mut out = b"LARDFS01".to_vec();
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&(20 + encoded.len() as u64).to_le_bytes());
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&file[body_offset..]);
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn modification_times_never_go_backwards() {
    // A current version stamped in the future: a clock stepped back, or a writer that stamped
    // its body later but committed earlier.
    let (_dir, store) = fresh().await;
    let key = k("t");
    store.put_bytes(&key, "v1".into()).await.unwrap();
    let future = larder::meta::now_millis() + Duration::from_secs(3600);
    let path = store.object_path(&key).unwrap();
    for (i, body) in [Bytes::from("v2"), version(3)].into_iter().enumerate() {
        edit_meta(&path, |m| m.last_modified = future);
        let put = store
            .put(
                &key,
                Body::from(body.clone()),
                PutOptions {
                    ttl: Some(Duration::from_secs(100)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            put.meta.last_modified >= future,
            "{i}: not older than the version it replaced"
        );
        assert_eq!(
            put.meta.expires_at,
            Some(put.meta.last_modified + Duration::from_secs(100))
        );
        let (data, head) = store.get_bytes(&key).await.unwrap();
        assert_eq!(head, put.meta, "{i}: what was returned is what was stored");
        assert_eq!(data, body);
        // A client holding the older version's date must not get a 304 for the new one.
        let r = store
            .get(
                &key,
                GetOptions {
                    preconditions: larder::Preconditions {
                        if_modified_since: Some(future - Duration::from_secs(1)),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await;
        assert!(r.is_ok(), "{i}: {r:?}");
    }
    assert!(temp_files(store.root()).is_empty());
}

fn version(i: u64) -> Bytes {
    // Sizes straddle the inline and the streamed paths.
    let len = [10usize, 70 << 10, 300 << 10, 1 << 20][(i % 4) as usize];
    Bytes::from(
        (0..len)
            .map(|j| (j as u64).wrapping_mul(31).wrapping_add(i * 7) as u8)
            .collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_always_see_a_whole_version() {
    let (_dir, store) = fresh().await;
    let store = Arc::new(store);
    let key = k("hot");
    store.put_bytes(&key, version(0)).await.unwrap();
    let writer_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let key = key.clone();
        let writer_done = writer_done.clone();
        tokio::spawn(async move {
            for i in 1..=40u64 {
                let data = version(i);
                let body = chunked(data, 50_000);
                store.put(&key, body, PutOptions::default()).await.unwrap();
            }
            writer_done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let store = store.clone();
            let key = key.clone();
            let writer_done = writer_done.clone();
            tokio::spawn(async move {
                let mut reads = 0;
                let mut versions = std::collections::HashSet::new();
                while reads < 5 || !writer_done.load(std::sync::atomic::Ordering::SeqCst) {
                    let got = store.get(&key, GetOptions::default()).await.unwrap();
                    let etag = got.meta.etag.clone();
                    let size = got.meta.size;
                    // Read slowly, so renames happen while the body is being streamed.
                    let mut body = got.body;
                    let mut data = Vec::new();
                    while let Some(chunk) = body.next().await {
                        data.extend_from_slice(&chunk.unwrap());
                        tokio::task::yield_now().await;
                    }
                    assert_eq!(data.len() as u64, size, "reader {r}: size");
                    assert_eq!(ETag::of(&data), etag, "reader {r}: body matches its ETag");
                    versions.insert(etag);
                    reads += 1;
                }
                versions.len()
            })
        })
        .collect();
    writer.await.unwrap();
    let mut seen = 0;
    for r in readers {
        seen += r.await.unwrap();
    }
    assert!(
        seen >= 2,
        "readers overlapped the writes ({seen} versions seen)"
    );
}

#[tokio::test]
async fn an_open_read_keeps_its_version_across_a_replace() {
    let (_dir, store) = fresh().await;
    let key = k("v");
    let v1 = version(3);
    store.put_bytes(&key, v1.clone()).await.unwrap();
    let mut reading = store.get(&key, GetOptions::default()).await.unwrap();
    let first = reading.body.next().await.unwrap().unwrap();
    // Replaced and then deleted while the first read is half-way.
    let v2 = store.put_bytes(&key, version(7)).await.unwrap();
    assert_ne!(v2.etag, reading.meta.etag);
    let second = store.get(&key, GetOptions::default()).await.unwrap();
    store.remove(&key).await.unwrap();
    let mut data = first.to_vec();
    while let Some(chunk) = reading.body.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        Bytes::from(data),
        v1,
        "the first read finishes with the first version"
    );
    assert_eq!(ETag::of(&v1), reading.meta.etag);
    assert_eq!(second.bytes().await.unwrap(), version(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_store_values_on_one_root_exclude_each_other() {
    // Separate FsStore values share no in-process mutex: only the file locks order them.
    let (dir, a) = fresh().await;
    let b = FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    let key = k("counter");
    let tasks: Vec<_> = [a.clone(), b.clone(), a, b]
        .into_iter()
        .map(|s| {
            let key = key.clone();
            tokio::spawn(async move { larder::conformance::increment(&s, &key, 25).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let store = FsStore::open(FsConfig::new(dir.path().join("store")))
        .await
        .unwrap();
    assert_eq!(larder::conformance::read_counter(&store, &key).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_emptying_directories_never_fail_concurrent_creators() {
    let (_dir, store) = fresh().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let key = k(&format!("shared/deep/dir/{t}-{i}"));
                    store.put_bytes(&key, "x".into()).await.unwrap();
                    store.remove(&key).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(store
        .list(ListOptions::prefix("shared/"))
        .await
        .unwrap()
        .objects
        .is_empty());
    assert!(
        !store.root().join("objects/shared").exists(),
        "emptied dirs removed"
    );
}

#[tokio::test]
async fn expired_objects_are_absent_and_removed_lazily() {
    let (_dir, store) = fresh().await;
    let key = k("t/short");
    let opts = PutOptions {
        ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let put = store
        .put(&key, Body::from("x"), opts.clone())
        .await
        .unwrap();
    let path = store.object_path(&key).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        store.head(&key, HeadOptions::default()).await,
        Err(Error::NotFound { .. })
    ));
    // The read scheduled a removal under the lock.
    wait_until_reaped(&path).await;
    // An expired object counts as absent for conditions, and a delete of it is NotFound.
    store.put(&key, Body::from("x"), opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    match store.swap(&key, &put.meta.etag, "y".into()).await {
        Err(Error::PreconditionFailed { current: None }) => {}
        other => panic!("If-Match on an expired object: {other:?}"),
    }
    assert!(matches!(
        store.remove(&key).await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        !path.exists(),
        "a delete of an expired object removes its file"
    );
    let created = store.create(&key, "z".into()).await.unwrap();
    assert_eq!(created.expires_at, None);

    // A listing that meets an expired object schedules its removal too.
    let other = k("t/listed");
    store
        .put(
            &other,
            Body::from("x"),
            PutOptions {
                ttl: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let other_path = store.object_path(&other).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(other_path.exists());
    let page = store.list(ListOptions::prefix("t/")).await.unwrap();
    assert_eq!(keys(&page), ["t/short"]);
    wait_until_reaped(&other_path).await;
}

#[tokio::test]
async fn ranged_reads_of_a_streamed_object() {
    let (_dir, store) = fresh().await;
    let key = k("r");
    let data = version(3); // 1 MiB: the streamed layout
    store.put_bytes(&key, data.clone()).await.unwrap();
    for (start, end) in [
        (0u64, 1u64),
        (4095, 4097),
        (65535, 200_000),
        (1_000_000, 1 << 20),
    ] {
        let got = store
            .get(
                &key,
                GetOptions {
                    range: Some(larder::ByteRange::Bounded {
                        first: start,
                        last: end - 1,
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got.range, Some(start..end));
        let body = got.bytes().await.unwrap();
        assert_eq!(
            &body[..],
            &data[start as usize..end as usize],
            "{start}..{end}"
        );
    }
}

#[tokio::test]
async fn large_metadata_still_round_trips() {
    let (_dir, store) = fresh().await;
    let key = k("meta");
    let data = version(2); // streamed
    let metadata: std::collections::BTreeMap<String, String> = (0..100)
        .map(|i| (format!("key-{i}"), "v".repeat(100)))
        .collect();
    let put = store
        .put(&key, Body::from(data.clone()), with_metadata(&metadata))
        .await
        .unwrap();
    let (got, meta) = store.get_bytes(&key).await.unwrap();
    assert_eq!(got, data);
    assert_eq!(meta.metadata, metadata);
    assert_eq!(meta.etag, put.meta.etag);
    assert!(temp_files(store.root()).is_empty());
}

#[tokio::test]
async fn urls() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("abs store");
    let store = larder::open(&format!("fs://{}?fsync=false", abs.display()))
        .await
        .unwrap();
    assert_eq!(store.capabilities().name, "fs");
    assert_eq!(store.capabilities().atomic_scope, larder::AtomicScope::Host);
    store.put_bytes(&k("x"), "1".into()).await.unwrap();
    assert!(abs.join("objects/x@").is_file(), "path taken verbatim");

    let upper = larder::open(&format!("FS://{}", abs.display()))
        .await
        .unwrap();
    assert_eq!(upper.get_bytes(&k("x")).await.unwrap().0, "1");

    // fs://./relative: relative to the working directory, not a URL host.
    let cwd = std::env::current_dir().unwrap();
    let target = std::fs::canonicalize(dir.path()).unwrap().join("rel");
    let ups = "../".repeat(std::fs::canonicalize(&cwd).unwrap().components().count() - 1);
    let rel = format!("./{ups}{}", target.strip_prefix("/").unwrap().display());
    let store = larder::open(&format!("fs://{rel}")).await.unwrap();
    store.put_bytes(&k("y"), "2".into()).await.unwrap();
    assert!(target.join("objects/y@").is_file(), "{rel}");

    for bad in [
        format!("fs://{}?fsync=maybe", abs.display()),
        format!("fs://{}?colour=blue", abs.display()),
        "fs://".to_owned(),
    ] {
        let r = larder::open(&bad).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{bad}: {r:?}");
    }
}

/// Every page of every listing equals the memory store's (the reference) over the same keys,
/// including keys that are both objects and directories, odd bytes, and expired objects; at
/// the top of the store, so the empty prefix walks the whole tree.
#[cfg(feature = "memory")]
#[tokio::test]
async fn listings_page_like_the_reference_store() {
    let (_dir, store) = fresh().await;
    larder::conformance::listing_matches_reference_at_top(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_cancelled_puts_leave_no_temp_files() {
    let (_dir, store) = fresh().await;
    let root = store.root().to_owned();
    let key = k("obj");
    let old = store.put_bytes(&key, "old".into()).await.unwrap();
    let failing = |len: usize| {
        let chunks: Vec<larder::Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; len])),
            Err(Error::InvalidInput("client went away".into())),
        ];
        Body::from_stream(futures::stream::iter(chunks))
    };
    for len in [10, 300 << 10] {
        // Wrong digest, aborted body, failed precondition: each on the inline and streamed path.
        let wrong = PutOptions {
            expected_etag: Some(ETag::of(b"something else")),
            ..Default::default()
        };
        let r = store.put(&key, Body::from(vec![2u8; len]), wrong).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
        assert!(store
            .put(&key, failing(len), PutOptions::default())
            .await
            .is_err());
        let r = store.create(&key, Bytes::from(vec![3u8; len])).await;
        assert!(matches!(r, Err(Error::PreconditionFailed { .. })), "{r:?}");
        assert_eq!(temp_files(&root), Vec::<PathBuf>::new(), "len {len}");
    }
    // A put dropped mid-body (client disconnect, timeout), once its temp file exists.
    let endless = futures::stream::iter((0..8).map(|_| Ok(Bytes::from(vec![4u8; 64 << 10]))))
        .chain(futures::stream::pending());
    let writer = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let _ = store
                .put(&key, Body::from_stream(endless), PutOptions::default())
                .await;
        })
    };
    let started = Instant::now();
    while temp_files(&root).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no temp file appeared"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());
    let started = Instant::now();
    while !temp_files(&root).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "temp file left behind"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (data, meta) = store.get_bytes(&key).await.unwrap();
    assert_eq!((&data[..], meta.etag), (&b"old"[..], old.etag));
}

#[tokio::test]
async fn folded_directories_list_once_and_only_with_a_live_object() {
    let (_dir, store) = fresh().await;
    for key in ["g/1", "g/2/x", "g/2/y/z", "h/1", "h/2/x", "m", "n/x"] {
        store.put_bytes(&k(key), "v".into()).await.unwrap();
    }
    // Everything under h/ expired; an empty directory (a put that has not renamed yet, or a
    // foreign one) under e/.
    let past = SystemTime::now() - Duration::from_secs(60);
    for key in ["h/1", "h/2/x"] {
        edit_meta(&store.object_path(&k(key)).unwrap(), |m| {
            m.expires_at = Some(past)
        });
    }
    std::fs::create_dir_all(store.root().join("objects/e/f")).unwrap();
    let all = |prefix: &str, limit: usize| {
        let store = store.clone();
        let prefix = prefix.to_owned();
        async move {
            let mut opts = ListOptions {
                prefix,
                delimiter: Some('/'),
                limit: Some(limit),
                cursor: None,
            };
            let mut seen = Vec::new();
            loop {
                let page = store.list(opts.clone()).await.unwrap();
                seen.extend(keys(&page).iter().map(|s| s.to_string()));
                seen.extend(page.common_prefixes.iter().cloned());
                match page.next_cursor {
                    Some(c) => opts.cursor = Some(c),
                    None => break,
                }
            }
            seen.sort();
            seen
        }
    };
    for limit in [1, 2, 1000] {
        assert_eq!(all("", limit).await, ["g/", "m", "n/"], "limit {limit}");
        assert_eq!(all("g/", limit).await, ["g/1", "g/2/"], "limit {limit}");
        assert_eq!(all("g/2", limit).await, ["g/2/"], "limit {limit}");
        assert!(all("h/", limit).await.is_empty());
    }
    // Without a delimiter, every live key.
    let page = store.list(ListOptions::prefix("g")).await.unwrap();
    assert_eq!(keys(&page), ["g/1", "g/2/x", "g/2/y/z"]);
}

#[tokio::test]
async fn metadata_too_long_to_read_back_is_refused_and_nothing_is_written() {
    let (_dir, store) = fresh().await;
    let key = k("big-meta");
    let old = store.put_bytes(&key, "old".into()).await.unwrap();
    let before = tree(store.root());
    let over: std::collections::BTreeMap<String, String> = [(
        "m".to_owned(),
        "v".repeat(larder::drivers::fs::MAX_META_LEN),
    )]
    .into();
    for body in [Body::from("new"), Body::from(version(3))] {
        let r = store.put(&key, body, with_metadata(&over)).await;
        match r {
            Err(Error::InvalidInput(msg)) => assert!(msg.contains("metadata"), "{msg}"),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert_eq!(tree(store.root()), before, "nothing written");
        let (got, meta) = store.get_bytes(&key).await.unwrap();
        assert_eq!((&got[..], meta.etag), (&b"old"[..], old.etag.clone()));
    }
    // Just under the bound still round-trips (header read in more than one read).
    let under: std::collections::BTreeMap<String, String> =
        [("m".to_owned(), "v".repeat(1 << 20))].into();
    store
        .put(&key, Body::from("new"), with_metadata(&under))
        .await
        .unwrap();
    let (got, meta) = store.get_bytes(&key).await.unwrap();
    assert_eq!((&got[..], meta.metadata), (&b"new"[..], under));
}
