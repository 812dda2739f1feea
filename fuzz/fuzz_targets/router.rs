//! Whole requests through the server's router over a memory store: method, path and query
//! (keys, listing queries), header fields, body. No request may panic (a caught panic is a 500)
//! or be answered 500.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use larder::drivers::memory::{MemoryConfig, MemoryStore};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt
            .block_on(MemoryStore::open(MemoryConfig {
                max_bytes: Some(1 << 20),
                default_ttl: None,
            }))
            .unwrap();
        let store = Arc::new(store);
        let router = larder_server::router(store, larder_server::Config::default());
        World { rt, router }
    })
}

fuzz_target!(|data: &[u8]| {
    // `METHOD\nPATH\nname: value\n…\n\nbody`
    let mut lines = data.split(|b| *b == b'\n');
    let (Some(method), Some(path)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(path) else {
        return;
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    let mut consumed = 0;
    let mut body_at = data.len();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        consumed += line.len() + 1;
        if i < 2 {
            continue;
        }
        if line.is_empty() {
            body_at = consumed.min(data.len());
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            req = req.header(n, v);
        }
    }
    let Ok(req) = req.body(Body::from(data[body_at..].to_vec())) else {
        return;
    };
    let w = world();
    w.rt.block_on(async {
        let response = w.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24).await;
        assert_ne!(status, http::StatusCode::INTERNAL_SERVER_ERROR, "{body:?}");
    });
});
