//! Peak memory of one large PUT into the sqlite store: how many times the body's size the
//! process's resident set grows by (peak RSS, `VmHWM`, after the put less RSS before it), each
//! measurement in a fresh process. The body arrives as a stream of 64 KiB chunks made on the
//! fly, as a server receives it, so the only copy the test itself holds is none.
//! Printed as `bench/run` rows (`section\tcase\timplementation\tmin\tmedian\tunit`).
//!
//! ```text
//! cargo bench -p larder --bench sqlite_put_rss            # 50 MiB, 3 processes
//! cargo bench -p larder --bench sqlite_put_rss -- 200     # another size, in MiB
//! ```

use std::process::Command;

use bytes::Bytes;
use larder::drivers::sqlite::{SqliteConfig, SqliteStore};
use larder::{Body, Key, PutOptions, Store};

const RUNS: usize = 3;
const CHUNK: usize = 64 * 1024;

/// A `/proc/self/status` field, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// One measurement: opens a store in a fresh file, puts `mib` MiB, prints the RSS growth.
async fn child(mib: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig {
        path: Some(dir.path().join("rss.db")),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = Key::new("big").unwrap();
    // Warm up the pool, the statements and the allocator with a small put.
    store
        .put(&key, Body::from(vec![1u8; CHUNK]), PutOptions::default())
        .await
        .unwrap();
    let before = status_bytes("VmRSS:");
    let chunks = (0..mib * 1024 * 1024 / CHUNK)
        .map(|i| Ok::<_, larder::Error>(Bytes::from(vec![(i % 251) as u8; CHUNK])));
    let body = Body::from_stream(futures::stream::iter(chunks));
    store.put(&key, body, PutOptions::default()).await.unwrap();
    let peak = status_bytes("VmHWM:");
    println!("{}", peak.saturating_sub(before));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let mib = args[i + 1].parse().unwrap();
        return tokio::runtime::Runtime::new().unwrap().block_on(child(mib));
    }
    let mib: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let mut xs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--child", &mib.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let grown: f64 = String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            grown / (mib * 1024 * 1024) as f64
        })
        .collect();
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let case = format!("sqlite PUT {mib} MiB: peak RSS growth");
    let label = std::env::var("LARDER_RSS_LABEL").unwrap_or_else(|_| "larder sqlite".into());
    println!("sql\t{case}\tthe body itself (floor)\t1.00\t1.00\t× body size");
    println!(
        "sql\t{case}\t{label}\t{:.2}\t{:.2}\t× body size",
        xs[0],
        xs[xs.len() / 2]
    );
}
