//! Object-store listings (issue 15): the S3 driver on moto (`LARDER_TEST_S3_URL`) and the
//! Azure driver on Azurite (`LARDER_TEST_AZURE_URL`), with 1,000 and 10,000 keys
//! (`OBJLIST_SIZES`) spread evenly under 100 prefixes. Not a test: run it with
//!
//! ```text
//! cargo bench -p larder --features s3,azure --bench objstore_list [-- --tsv]
//! ```
//!
//! Two listings, each timed and each counted in requests by a proxy in front of the server:
//!
//! - `tree`: a delimiter listing of the root (the 100 prefixes), then one of each prefix;
//! - `flat`: every key, in pages of 1,000.
//!
//! Two implementations on the same server and keys: the driver (its paginated, delimited
//! listing: one LIST per page, a HEAD only for objects on a page on S3, none on Azure), and as
//! the baseline the same store without its native operations, which scans the prefix flat
//! through `object_store` and heads every blob (the S3 listing before issue 15).
//!
//! With `--tsv`, rows are `objstore-list<TAB>case<TAB>implementation<TAB>min<TAB>median<TAB>unit`
//! (baseline first) for `bench/run`; otherwise a table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder::drivers::objstore::ObjStore;
use larder::{Key, ListOptions, Store, StoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFIXES: usize = 100;
/// Key counts (`OBJLIST_SIZES`, comma-separated; default 1,000 and 10,000).
fn sizes() -> Vec<usize> {
    std::env::var("OBJLIST_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000])
}
/// Timed runs of each listing (`OBJLIST_RUNS`, default 2): min and median are reported.
fn runs() -> usize {
    std::env::var("OBJLIST_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// Requests seen by the proxy, by kind.
#[derive(Default)]
struct Counts {
    list: AtomicU64,
    head: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn reset(&self) {
        for c in [&self.list, &self.head, &self.other] {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// Counts the request that `buf` (a read from the client) starts, if it starts one: the
    /// clients send a request only after the previous response, so a request's first read
    /// starts with its method.
    fn see(&self, buf: &[u8]) {
        let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        let line = String::from_utf8_lossy(&buf[..line_end]);
        if line.starts_with("HEAD ") {
            self.head.fetch_add(1, Ordering::Relaxed);
        } else if line.starts_with("GET ")
            && (line.contains("list-type=2") || line.contains("comp=list"))
        {
            self.list.fetch_add(1, Ordering::Relaxed);
        } else if ["GET ", "PUT ", "POST ", "DELETE "]
            .iter()
            .any(|m| line.starts_with(m))
        {
            self.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A TCP proxy to `upstream` on a free local port, counting requests; returns its port.
async fn proxy(upstream: String, counts: Arc<Counts>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (upstream, counts) = (upstream.clone(), counts.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        counts.see(&buf[..n]);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    port
}

/// `url` with its `endpoint` parameter pointed at the proxy on `port` and its path set to
/// `prefix`; returns it with the original endpoint's host:port.
fn through_proxy(url: &str, port: u16, prefix: &str) -> (String, String) {
    let mut u = url::Url::parse(url).unwrap();
    let mut upstream = String::new();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            if k == "endpoint" {
                let e = url::Url::parse(&v).unwrap();
                upstream = format!("{}:{}", e.host_str().unwrap(), e.port().unwrap());
                let mut proxied = e.clone();
                proxied.set_port(Some(port)).unwrap();
                (
                    k.into_owned(),
                    proxied.to_string().trim_end_matches('/').to_owned(),
                )
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.set_path(prefix);
    (u.to_string(), upstream)
}

/// Every entry of the tree: the root's prefixes with a delimiter, then each prefix's keys.
async fn walk_tree(store: &dyn Store) -> usize {
    let mut entries = 0;
    let mut prefixes = Vec::new();
    let mut opts = ListOptions {
        delimiter: Some('/'),
        ..Default::default()
    };
    loop {
        let page = store.list(opts.clone()).await.unwrap();
        entries += page.objects.len() + page.common_prefixes.len();
        prefixes.extend(page.common_prefixes);
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => break,
        }
    }
    for p in prefixes {
        let mut opts = ListOptions {
            prefix: p,
            delimiter: Some('/'),
            ..Default::default()
        };
        loop {
            let page = store.list(opts.clone()).await.unwrap();
            entries += page.objects.len() + page.common_prefixes.len();
            match page.next_cursor {
                Some(c) => opts.cursor = Some(c),
                None => break,
            }
        }
    }
    entries
}

/// Every key, in pages of 1,000.
async fn walk_flat(store: &dyn Store) -> usize {
    let mut entries = 0;
    let mut opts = ListOptions::default();
    loop {
        let page = store.list(opts.clone()).await.unwrap();
        entries += page.objects.len();
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => break,
        }
    }
    entries
}

struct Row {
    case: String,
    implementation: &'static str,
    times: Vec<Duration>,
    lists: u64,
    heads: u64,
}

async fn bench_backend(name: &'static str, url: &str, rows: &mut Vec<Row>) {
    let counts = Arc::new(Counts::default());
    let probe = url::Url::parse(url).unwrap();
    let upstream_of = |u: &url::Url| {
        u.query_pairs()
            .find(|(k, _)| k == "endpoint")
            .map(|(_, v)| {
                let e = url::Url::parse(&v).unwrap();
                format!("{}:{}", e.host_str().unwrap(), e.port().unwrap())
            })
            .unwrap()
    };
    let port = proxy(upstream_of(&probe), counts.clone()).await;
    for n in sizes() {
        let prefix = format!(
            "bench-list-{}-{}-{n}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let (proxied, _) = through_proxy(url, port, &prefix);
        if name == "azure" {
            // object_store takes the emulator's address from this variable only.
            std::env::set_var(
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{port}"),
            );
        }
        let store = match ObjStore::from_url(&proxied).await {
            Ok(s) => Arc::new(s),
            Err(e) => return eprintln!("{name} skipped: {e}"),
        };
        // Fill: n keys, n / 100 under each prefix, 32 writes at a time.
        let started = Instant::now();
        let keys: Vec<Key> = (0..n)
            .map(|i| Key::new(format!("p{:03}/k{i:05}", i % PREFIXES)).unwrap())
            .collect();
        futures::future::join_all((0..32).map(|w| {
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                for k in keys.iter().skip(w).step_by(32) {
                    store.put_bytes(k, "x".into()).await.unwrap();
                }
            }
        }))
        .await;
        eprintln!("{name}: wrote {n} keys in {:?}", started.elapsed());
        let bare = ObjStore::new(name, store.backend().clone(), &prefix, 1 << 30).unwrap();
        let implementations: [(&'static str, &dyn Store); 2] = [
            ("flat scan + HEAD per blob (baseline)", &bare),
            ("larder paginated, delimited", store.as_ref()),
        ];
        for (case, tree) in [("tree", true), ("flat", false)] {
            for (implementation, s) in implementations {
                let mut times = Vec::new();
                let (mut lists, mut heads) = (0, 0);
                for _ in 0..runs() {
                    counts.reset();
                    let t = Instant::now();
                    let entries = if tree {
                        walk_tree(s).await
                    } else {
                        walk_flat(s).await
                    };
                    times.push(t.elapsed());
                    let want = if tree { n + PREFIXES } else { n };
                    assert_eq!(entries, want, "{name} {case} {implementation}");
                    lists = counts.list.load(Ordering::SeqCst);
                    heads = counts.head.load(Ordering::SeqCst);
                }
                times.sort();
                rows.push(Row {
                    case: format!("{name} {case} {n} keys / {PREFIXES} prefixes"),
                    implementation,
                    times,
                    lists,
                    heads,
                });
            }
        }
    }
}

fn main() {
    let tsv = std::env::args().any(|a| a == "--tsv");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        match std::env::var("LARDER_TEST_S3_URL") {
            Ok(url) => bench_backend("s3", &url, &mut rows).await,
            Err(_) => eprintln!("s3 skipped: LARDER_TEST_S3_URL is not set"),
        }
        match std::env::var("LARDER_TEST_AZURE_URL") {
            Ok(url) => bench_backend("azure", &url, &mut rows).await,
            Err(_) => eprintln!("azure skipped: LARDER_TEST_AZURE_URL is not set"),
        }
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in &rows {
        let (min, median) = (ms(r.times[0]), ms(r.times[r.times.len() / 2]));
        if tsv {
            println!(
                "objstore-list\t{}\t{}\t{min:.1}\t{median:.1}\tms",
                r.case, r.implementation
            );
            for (what, count) in [("LIST", r.lists), ("HEAD", r.heads)] {
                println!(
                    "objstore-list\t{} ({what} requests)\t{}\t{count}\t{count}\trequests",
                    r.case, r.implementation
                );
            }
        } else {
            println!(
                "{:<40} {:<38} min {:>9.1} ms  median {:>9.1} ms  LIST {:>6}  HEAD {:>6}",
                r.case, r.implementation, min, median, r.lists, r.heads
            );
        }
    }
}
