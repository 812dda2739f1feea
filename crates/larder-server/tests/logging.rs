//! Each failed request is logged once: a retryable backend error (503) and a failed readiness
//! check each give one WARN line, from the router, carrying the route and the cause.
//!
//! The store is an s3 store pointed at a closed port (connections refused, retries bounded to
//! 200 ms), so every request to it fails as a retryable backend error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use larder_server::Config;
use reqwest::StatusCode;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records the server's events at WARN and above: level and fields.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(Level, String)>>>, Arc<AtomicU64>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl Subscriber for Lines {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // ERROR is "less" than WARN in tracing's order (fewer events).
        m.target().starts_with("larder") && *m.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.1.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        self.0.lock().unwrap().push((*e.metadata().level(), f.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_failed_request_is_logged_once() {
    let lines = Lines::default();
    let _guard = tracing::subscriber::set_default(lines.clone());
    // One thread, so every task of the server logs to this thread's subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config {
            store: format!(
                "s3://bucket?endpoint=http://127.0.0.1:{closed}&allow_http=true&region=r\
                 &access_key_id=a&secret_access_key=s&retry_timeout_ms=200"
            ),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = larder_server::spawn_configured(listener, config)
            .await
            .unwrap();
        let client = reqwest::Client::new();
        for (path, what) in [("/v1/objects/a", "backend error"), ("/readyz", "not ready")] {
            lines.0.lock().unwrap().clear();
            let r = client
                .get(format!("{}{path}", server.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            let logged = lines.0.lock().unwrap().clone();
            assert_eq!(logged.len(), 1, "{what}: logged {logged:?}");
            let (level, fields) = &logged[0];
            assert_eq!(*level, Level::WARN, "{what}: {fields}");
            assert!(
                fields.contains("route=") && fields.contains(&format!("127.0.0.1:{closed}")),
                "{what}: the line names the route and the cause: {fields}"
            );
        }
        server.shutdown().await.unwrap();
    });
}
