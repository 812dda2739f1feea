//! The Larder HTTP server: the native API of `docs/http-api.md` over any [`larder::Store`],
//! with RFC 9110 conditional requests decided atomically by the store.
//!
//! - [`ServeArgs`]: the `larder serve` arguments (flatten into a clap command);
//!   [`Config::from_args`] resolves them with the environment and the TOML file.
//! - [`serve`]: opens the store, binds, serves until SIGTERM / Ctrl-C, then drains in-flight
//!   requests (for at most the request timeout).
//! - [`spawn`]: serves a given store on a given listener in the background, for tests and
//!   embedding; [`ServerHandle::shutdown`] stops it gracefully.
//! - [`router`]: the axum router itself.
//!
//! Logging goes through `tracing` (a `TraceLayer` span per request); installing a subscriber is
//! the caller's business (the CLI does it).
//!
//! ```no_run
//! # async fn demo() {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let store = std::sync::Arc::new(larder::drivers::memory::MemoryStore::new());
//! let server = larder_server::spawn(listener, store, larder_server::Config::default()).await;
//! println!("serving on {}", server.url());
//! server.shutdown().await.unwrap();
//! # }
//! ```

#![warn(missing_docs)]

mod auth;
pub mod config;
pub mod error;
pub mod headers;
pub mod metrics;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tower_http::trace::TraceLayer;

pub use config::{Config, Scope, ServeArgs, TokenConfig};
pub use error::{ApiError, ServerError};
pub use metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn larder::Store>,
    pub(crate) config: Arc<Config>,
    pub(crate) uploads: Arc<Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
}

/// The router serving `store` under `config` (its limits and tokens; `listen` and `store` are
/// not used here), with its metrics registry.
pub fn router(store: Arc<dyn larder::Store>, config: Config) -> (Router, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let st = AppState {
        store,
        uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
        config: Arc::new(config),
        metrics: metrics.clone(),
    };
    let object = get(routes::get_object)
        .head(routes::head_object)
        .put(routes::put_object)
        .post(routes::put_object)
        .delete(routes::delete_object);
    let app = Router::new()
        .route("/v1/objects", get(routes::list))
        .route("/v1/objects/{*key}", object)
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::fallback)
        // Innermost first: auth, then the timeout, tracing, and metrics (which counts all).
        .layer(from_fn_with_state(st.clone(), auth::require_token))
        .layer(from_fn_with_state(st.clone(), request_timeout))
        .layer(TraceLayer::new_for_http())
        .layer(from_fn_with_state(st.clone(), metrics::track))
        // Bodies are streamed and bounded by max_object_size, not buffered.
        .layer(DefaultBodyLimit::disable())
        .with_state(st);
    (app, metrics)
}

/// 408 in the contract's JSON when the response has not started within the request timeout.
/// Dropping the handler drops an unfinished upload, which stores nothing.
async fn request_timeout(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(st.config.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {}s",
                st.config.request_timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

/// A server running in the background (from [`spawn`]).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits for that.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| std::io::Error::other(format!("server task: {e}")))?
    }
}

/// Serves `store` on `listener` in the background until [`ServerHandle::shutdown`] (graceful,
/// without a drain deadline) or until the handle is dropped (the task keeps running detached).
/// Does not check `config.listen` or the exposure rule: the caller chose the listener.
pub async fn spawn(
    listener: TcpListener,
    store: Arc<dyn larder::Store>,
    config: Config,
) -> ServerHandle {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (app, metrics) = router(store, config);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    ServerHandle {
        addr,
        metrics,
        shutdown: Some(tx),
        task,
    }
}

/// Opens `config.store`, binds `config.listen` (refusing a non-loopback address without tokens
/// unless `insecure`), and serves until SIGTERM or Ctrl-C; then stops accepting, lets in-flight
/// requests finish for at most `request_timeout`, and returns.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    serve_until(config, shutdown_signal()).await
}

/// [`serve`] with a caller-given shutdown signal.
pub async fn serve_until(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(config.listen.as_str())
        .await
        .map_err(|e| ServerError::Config(format!("listen address {:?}: {e}", config.listen)))?
        .collect();
    for addr in &addrs {
        config.check_exposure(*addr)?;
    }
    let store = larder::open(&config.store).await?;
    let listener = TcpListener::bind(addrs.as_slice()).await?;
    let addr = listener.local_addr()?;
    config.check_exposure(addr)?;
    let drain = config.request_timeout;
    tracing::info!(
        %addr,
        store = %redact_url(&config.store),
        driver = store.capabilities().name,
        auth = !config.tokens.is_empty(),
        "larder serving"
    );
    let (app, _metrics) = router(store, config);
    let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        signal.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    });
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r?,
        () = deadline => tracing::warn!(
            "in-flight requests still running after {}s; closing them", drain.as_secs()
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// A store URL without its password or query (which may carry secrets), for logs.
fn redact_url(url: &str) -> String {
    let no_query = url.split('?').next().unwrap_or_default();
    match (no_query.find("://"), no_query.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}://***@{}", &no_query[..s], &no_query[at + 1..])
        }
        _ => no_query.to_owned(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
