//! Two server replicas over one authoritative fs store, each with its own memory tier, with
//! Redis pub/sub invalidation: a write through one is never served stale by the other once the
//! write's response arrived. (In-process servers: the CLI's two-process `larder serve` variant
//! waits for the CLI.)

use larder::tiered::{InvalidationConfig, TierConfig, TierEntry};
use larder_server::config::Config;
use tokio::net::TcpListener;

async fn replica(
    auth_dir: &std::path::Path,
    redis: &str,
    channel: &str,
) -> larder_server::ServerHandle {
    let tiered = TierConfig {
        tiers: vec![
            TierEntry {
                store: "memory://".into(),
                freshness_secs: Some(3600),
            },
            TierEntry {
                store: format!("fs://{}", auth_dir.display()),
                freshness_secs: None,
            },
        ],
        invalidation: Some(InvalidationConfig {
            url: redis.into(),
            channel: Some(channel.into()),
            ack_timeout_ms: None,
        }),
        ..Default::default()
    };
    let config = Config {
        tiered: Some(tiered),
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    larder_server::spawn_configured(listener, config)
        .await
        .unwrap()
}

/// The value of a metric line `name{labels} value` in a Prometheus text page.
fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_tier_counters_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        tiered: Some(TierConfig {
            tiers: vec![
                TierEntry {
                    store: "memory://".into(),
                    freshness_secs: Some(3600),
                },
                TierEntry {
                    store: format!("fs://{}", dir.path().join("auth").display()),
                    freshness_secs: None,
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = larder_server::spawn_configured(listener, config)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/objects/hot/key", server.url());
    // Written through (or invalidated), then read: the first read may fill the memory tier,
    // the next ones are hits there.
    http.put(&url).body("v1").send().await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            http.get(&url).send().await.unwrap().text().await.unwrap(),
            "v1"
        );
    }
    let page = http
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("# TYPE larder_tier_hits_total counter"));
    assert!(
        metric(&page, "larder_tier_hits_total{tier=\"0\"}") >= 2,
        "the memory tier answered the repeated reads:\n{page}"
    );
    let misses = metric(&page, "larder_tier_misses_total{tier=\"0\"}");
    let backfills = metric(&page, "larder_tier_backfills_total{tier=\"0\"}");
    assert!(misses <= 1 && backfills <= 1, "{page}");
    metric(&page, "larder_tier_stale_reads_refused_total{tier=\"1\"}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_one_replica_is_not_served_stale_by_the_other() {
    let Ok(redis) = std::env::var("LARDER_TEST_REDIS_URL") else {
        return larder::conformance::skip_or_fail("Redis", "LARDER_TEST_REDIS_URL unset")
            .unwrap_or(());
    };
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    let channel = larder::conformance::fresh_prefix("replicas");
    let a = replica(&auth, &redis, &channel).await;
    let b = replica(&auth, &redis, &channel).await;
    let http = reqwest::Client::new();
    let url = |h: &larder_server::ServerHandle| format!("{}/v1/objects/shared/x", h.url());
    for i in 0..20 {
        let body = format!("v{i}");
        let r = http.put(url(&a)).body(body.clone()).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let r = http.get(url(&b)).send().await.unwrap();
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag, "round {i}");
        assert_eq!(r.text().await.unwrap(), body, "round {i}");
        // B's memory tier now holds this version; a conditional read on it is a 304.
        let r = http
            .get(url(&b))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "round {i}");
    }
    let r = http.delete(url(&a)).send().await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(http.get(url(&b)).send().await.unwrap().status(), 404);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
