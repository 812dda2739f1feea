//! `docs/openapi.json` is what the server serves at `/openapi.json`, and it agrees with the
//! router: every documented operation is routed, and on every documented path the methods the
//! router answers are the documented ones (HEAD is implied by GET, as HTTP has it).

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "head", "put", "post", "delete", "patch", "options", "trace",
];

async fn start() -> larder_server::ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = Arc::new(larder::drivers::memory::MemoryStore::new());
    larder_server::spawn(listener, store, larder_server::Config::default())
}

/// Whether the router has no route for this method and path: 405, or the fallback's 404.
async fn unrouted(client: &reqwest::Client, method: &str, url: &str) -> bool {
    let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let r = client.request(m, url).send().await.unwrap();
    match r.status() {
        StatusCode::METHOD_NOT_ALLOWED => true,
        StatusCode::NOT_FOUND => {
            let body = r.text().await.unwrap();
            body.contains("no such route")
        }
        _ => false,
    }
}

#[tokio::test]
async fn the_document_is_served_and_matches_the_router() {
    let server = start().await;
    let client = reqwest::Client::new();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    let r = client
        .get(format!("{}/openapi.json", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let served = r.text().await.unwrap();
    assert_eq!(served, committed, "/openapi.json is docs/openapi.json");

    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let url = format!(
            "{}{}",
            server.url(),
            path.replace("{key}", "openapi-probe/a")
        );
        let documented =
            |m: &str| item.get(m).is_some() || (m == "head" && item.get("get").is_some());
        for m in METHODS {
            let routed = !unrouted(&client, m, &url).await;
            assert_eq!(
                routed,
                documented(m),
                "{} {path}: routed {routed}, documented {}",
                m.to_uppercase(),
                documented(m)
            );
        }
    }
    // Every route of the native API (as `router` registers them) is documented; unstorage's
    // protocol has its own page.
    for path in [
        "/v1/objects",
        "/v1/objects/{key}",
        larder::wire::CAPABILITIES_PATH,
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} is routed but not in docs/openapi.json"
        );
    }
    // Paths outside the document reach the fallback.
    for path in [
        "/",
        "/v1",
        "/v1/object",
        "/v2/objects/a",
        "/healthz/x",
        "/openapi.yaml",
    ] {
        for m in ["get", "put", "delete"] {
            assert!(
                unrouted(&client, m, &format!("{}{path}", server.url())).await,
                "{m} {path} is routed but not documented"
            );
        }
    }
    server.shutdown().await.unwrap();
}
