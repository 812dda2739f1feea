//! Two OS processes increment one counter through `LarderObjectStore` on one `fs://` root,
//! each increment a read followed by a `PutMode::Update` (or `Create`) retried on
//! `Precondition` (`AlreadyExists`): nothing may be lost. object_store's own `LocalFileSystem`
//! refuses `PutMode::Update` altogether; Larder's fs driver decides it under a file lock held
//! across the rename, so the condition holds across processes.
//!
//! Without a custom harness a test can't re-run itself as a worker, hence `harness = false`.

use std::process::Command;

use larder::conformance::race::{self, INCREMENTS_PER_TASK, PROCESSES, TASKS_PER_PROCESS};
use larder_object_store::LarderObjectStore;
use object_store::path::Path;
use object_store::{Error, ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};

fn main() {
    let rt = race::runtime();
    if let Ok(url) = std::env::var("LARDER_OS_RACE_URL") {
        let conflicts = rt.block_on(worker(&url));
        println!("conflicts={conflicts}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("fs://{}/root", dir.path().display());
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .env("LARDER_OS_RACE_URL", &url)
                .output_async()
        })
        .collect();
    let mut conflicts = 0u64;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "a worker failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        conflicts += stdout
            .lines()
            .find_map(|l| l.strip_prefix("conflicts="))
            .and_then(|n| n.parse::<u64>().ok())
            .expect("the worker reports its conflicts");
    }
    let expected = race::TOTAL;
    let value = rt.block_on(async {
        let store = LarderObjectStore::open(&url).await.unwrap();
        let bytes = store.get(&counter()).await.unwrap().bytes().await.unwrap();
        std::str::from_utf8(&bytes).unwrap().parse::<u64>().unwrap()
    });
    println!(
        "test cross_process::fs_update_race ... {} ({value} of {expected} increments, \
         {conflicts} lost races retried)",
        if value == expected { "ok" } else { "FAILED" }
    );
    assert_eq!(value, expected, "increments were lost");
    // The writers really raced (otherwise the test would prove nothing about the condition).
    assert!(
        conflicts > 0,
        "no conflicting update: the writers did not overlap"
    );
}

fn counter() -> Path {
    Path::from("counters/visits")
}

trait SpawnOutput {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnOutput for Command {
    /// Starts the process with its output captured, without waiting for it.
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// `TASKS_PER_PROCESS` tasks, each doing `INCREMENTS_PER_TASK` read-modify-write increments.
/// Returns how many attempts lost a race.
async fn worker(url: &str) -> u64 {
    let store = LarderObjectStore::open(url).await.unwrap();
    let tasks: Vec<_> = (0..TASKS_PER_PROCESS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..INCREMENTS_PER_TASK {
                    conflicts += increment(&store).await;
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    conflicts
}

/// One increment; returns how many attempts lost a race first.
async fn increment(store: &dyn ObjectStore) -> u64 {
    let path = counter();
    let mut lost = 0;
    loop {
        let (value, mode) = match store.get(&path).await {
            Ok(r) => {
                let mode = PutMode::Update(UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                });
                let bytes = r.bytes().await.unwrap();
                let v: u64 = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
                (v, mode)
            }
            Err(Error::NotFound { .. }) => (0, PutMode::Create),
            Err(e) => panic!("{e}"),
        };
        let next = (value + 1).to_string();
        match store.put_opts(&path, next.into(), mode.into()).await {
            Ok(_) => return lost,
            Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => lost += 1,
            Err(e) => panic!("{e}"),
        }
    }
}
