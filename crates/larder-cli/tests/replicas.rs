//! Two `larder serve` processes in front of one authoritative fs store, each with its own memory
//! tier: the operator's replica set. A write through one replica is never served stale by the
//! other past the freshness window, and, with Redis pub/sub invalidation, not at all once the
//! write has returned. Conditions are always decided by the authoritative tier, even while a
//! replica's memory tier still holds an old copy.

use std::time::Duration;

use larder::{Error, Key, StoreExt};

mod common;
use common::Server;

/// A counter of `server`'s `/metrics` page, e.g. `larder_tier_backfills_total{tier="0"}`.
fn metric(server: &Server, series: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    tcp.read_to_string(&mut page).unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two replicas sharing `auth` as their last tier, each configured with `extra` TOML.
fn replicas(root: &std::path::Path, extra: &str) -> (Server, Server) {
    let auth = root.join("authoritative");
    let toml = format!(
        "{extra}\n[[tiers]]\nstore = \"memory://\"\n[[tiers]]\nstore = \"fs://{}\"\n",
        auth.display()
    );
    let start = |name: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Server::with_config_only(&dir, &toml)
    };
    (start("a"), start("b"))
}

#[test]
fn stale_reads_end_with_the_freshness_window() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = replicas(root.path(), "freshness_secs = 1");
    runtime().block_on(async {
        let via_a = larder::open(&a.url()).await.unwrap();
        let via_b = larder::open(&b.url()).await.unwrap();
        let key = Key::new("shared/doc").unwrap();
        let v1 = via_a.create(&key, "v1".into()).await.unwrap();
        // B reads v1 from the authoritative tier and keeps it in its memory tier.
        assert_eq!(via_b.get_bytes(&key).await.unwrap().1.etag, v1.etag);
        let v2 = via_a.swap(&key, &v1.etag, "v2".into()).await.unwrap();
        // Whatever B's memory tier holds, a condition on v1 is decided by the authoritative
        // tier: B refuses the stale swap and reports v2 as current.
        match via_b.swap(&key, &v1.etag, "lost".into()).await {
            Err(Error::PreconditionFailed { current }) => {
                assert_eq!(current.unwrap().etag, v2.etag)
            }
            other => panic!("a swap on a stale ETag through the other replica: {other:?}"),
        }
        // Past the window, B revalidates and serves v2.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (bytes, meta) = via_b.get_bytes(&key).await.unwrap();
        assert_eq!((&bytes[..], meta.etag), (&b"v2"[..], v2.etag));
    });
    // B really held v1 nearer, and refused it once the window had passed.
    assert!(metric(&b, "larder_tier_backfills_total{tier=\"0\"}") >= 1);
    assert!(metric(&b, "larder_tier_stale_reads_refused_total{tier=\"0\"}") >= 1);
}

#[test]
fn pubsub_invalidation_leaves_no_stale_window() {
    let Ok(redis) = std::env::var("LARDER_TEST_REDIS_URL") else {
        return larder::conformance::skip_or_fail("Redis", "LARDER_TEST_REDIS_URL is not set")
            .unwrap_or(());
    };
    let root = tempfile::tempdir().unwrap();
    let channel = larder::conformance::fresh_prefix("replicas").replace('/', "-");
    // A window of an hour: only the invalidation can make B see the new version.
    let extra = format!(
        "freshness_secs = 3600\n[invalidation]\nurl = \"{redis}\"\nchannel = \"{channel}\"\n"
    );
    let (a, b) = replicas(root.path(), &extra);
    runtime().block_on(async {
        let via_a = larder::open(&a.url()).await.unwrap();
        let via_b = larder::open(&b.url()).await.unwrap();
        let key = Key::new("shared/counter").unwrap();
        let mut current = via_a.create(&key, "0".into()).await.unwrap();
        for i in 1..=20 {
            // B holds the current version in its memory tier...
            assert_eq!(via_b.get_bytes(&key).await.unwrap().1.etag, current.etag);
            // ...and once A's write returns, B serves the new one.
            current = via_a
                .swap(&key, &current.etag, i.to_string().into())
                .await
                .unwrap();
            let (bytes, meta) = via_b.get_bytes(&key).await.unwrap();
            assert_eq!(
                meta.etag, current.etag,
                "round {i}: B served a stale version"
            );
            assert_eq!(bytes, i.to_string().as_bytes());
        }
        via_a.remove(&key).await.unwrap();
        assert!(
            via_b.stat(&key).await.unwrap().is_none(),
            "B resurrected a deleted key"
        );
    });
}
