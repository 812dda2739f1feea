//! The Larder HTTP server: the native API (docs/http-api.md) over any [`larder::Store`], with
//! RFC 9110 conditional requests, bearer-token auth, Prometheus metrics and graceful shutdown.
//!
//! - [`config`]: flags, environment, TOML; [`serve`] runs a server from a [`Config`].
//! - [`headers`]: HTTP fields ↔ typed options; [`error`]: errors → statuses.
//! - [`objects`]: the handlers; [`auth`], [`metrics`].
//! - [`unstorage`]: unstorage's storage-server protocol at `/unstorage` (docs/unstorage.md).
//! - [`spawn`]: a server on a listener you bound (tests, embedding).
//! - [`health`]: `/readyz`; [`openapi`]: `/openapi.json`. Connections are served with bounded
//!   header-read and idle timeouts and a connection cap (`conn.rs`); the object routes are
//!   dispatched to their handlers directly, the rest through the router (`dispatch.rs`).

#![deny(missing_docs)]

pub mod auth;
pub mod config;
mod conn;
mod dispatch;
pub mod error;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod objects;
mod observe;
pub mod openapi;
pub mod s3;
pub mod unstorage;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use larder::Store;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

pub use config::{Config, ServeArgs};

use auth::Access;
use error::ApiError;
use metrics::Metrics;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A bad setting.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] larder::Error),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What every handler shares.
pub struct AppState {
    /// The store being served.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Config,
    /// The metrics.
    pub metrics: Metrics,
    /// Permits for uploads in flight.
    pub uploads: Arc<Semaphore>,
}

impl AppState {
    fn authorize(&self, h: &HeaderMap, access: Access, target: &str) -> Result<(), ApiError> {
        auth::authorize(&self.config.tokens, h, access, target)
    }
}

/// The router of the native API over `store`.
pub fn router(store: Arc<dyn Store>, config: Config) -> Router {
    router_with_tiers(store, None, config)
}

/// The router of the native API over `store`, exporting the per-tier counters of `tiers` (the
/// tiered store inside it, if any) at `/metrics`.
pub fn router_with_tiers(
    store: Arc<dyn Store>,
    tiers: Option<larder::tiered::TieredStore>,
    config: Config,
) -> Router {
    app(store, tiers, config).1
}

/// The shared state and the router over it (see [`router_with_tiers`]). The server serves the
/// router behind `dispatch.rs`, which answers the object routes itself.
fn app(
    store: Arc<dyn Store>,
    tiers: Option<larder::tiered::TieredStore>,
    config: Config,
) -> (Arc<AppState>, Router) {
    let state = Arc::new(AppState {
        store,
        uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
        config,
        metrics: Metrics::new().with_tiers(tiers),
    });
    let router = Router::new()
        .route("/v1/objects", get(objects::list))
        .route(larder::wire::CAPABILITIES_PATH, get(objects::capabilities))
        .route(
            objects::OBJECT_ROUTE,
            get(objects::get)
                .head(objects::head)
                .put(objects::put)
                .post(objects::put)
                .delete(objects::delete),
        )
        // The empty key: its own route, so that it is `400 invalid_key` like every bad key
        // rather than an unknown route.
        .route(
            objects::OBJECTS_PREFIX,
            get(objects::get)
                .head(objects::head)
                .put(objects::put)
                .post(objects::put)
                .delete(objects::delete),
        )
        .nest(unstorage::UNSTORAGE_PREFIX, unstorage::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(render_metrics))
        .fallback(|| async {
            ApiError::Store(larder::Error::NotFound {
                key: "no such route".into(),
            })
        })
        // The request timeout, metrics, and the last line of defence: a panicking handler
        // answers 500 (logged with its route) instead of dropping the connection and every
        // request queued on it.
        .layer(observe::ObserveLayer(state.clone()))
        .with_state(state.clone());
    (state, router)
}

async fn render_metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// A server running in the background (see [`spawn`]).
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets requests in flight finish, and waits for that.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Serves `store` on `listener` until [`ServerHandle::shutdown`].
pub fn spawn(listener: TcpListener, store: Arc<dyn Store>, config: Config) -> ServerHandle {
    let opened = OpenedStore {
        store,
        tiered: None,
    };
    spawn_opened(listener, opened, config)
}

/// Opens the store `config` names (its tiers and mounts included, with their metrics) and
/// serves it on `listener` until [`ServerHandle::shutdown`].
pub async fn spawn_configured(
    listener: TcpListener,
    config: Config,
) -> Result<ServerHandle, ServerError> {
    let opened = open_configured(&config).await?;
    Ok(spawn_opened(listener, opened, config))
}

fn spawn_opened(listener: TcpListener, opened: OpenedStore, config: Config) -> ServerHandle {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, opened, config, async {
        let _ = stopped.await;
    }));
    ServerHandle {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn run(
    listener: TcpListener,
    opened: OpenedStore,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = conn::Limits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        // Requests in flight get at most one request timeout to finish after the signal, so a
        // stalled download can't hold the process forever.
        grace: config.request_timeout,
    };
    let (state, router) = app(opened.store, opened.tiered, config);
    let service = dispatch::Dispatch::new(state, router);
    conn::serve(listener, service, limits, shutdown).await
}

/// Runs `larder serve`: opens the configured store, listens, and serves until SIGTERM or
/// Ctrl-C, then finishes the requests in flight.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    config.validate()?;
    let opened = open_configured(&config).await?;
    let listener = TcpListener::bind(config.listen).await?;
    // With tiers, `config.store` is not opened: name the authoritative (last) tier.
    let store = match config.tiered.as_ref().and_then(|t| t.tiers.last()) {
        Some(tier) => &tier.store,
        None => &config.store,
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        store = %redact(store),
        driver = opened.store.capabilities().name,
        tiers = opened.tiered.is_some(),
        auth = !config.tokens.is_empty(),
        "larder serving"
    );
    let s3 = s3::start(&config, opened.store.clone()).await?;
    run(listener, opened, config, shutdown_signal()).await?;
    if let Some(s3) = s3 {
        s3.shutdown().await?;
    }
    tracing::info!("larder stopped");
    Ok(())
}

/// Opens the configured store: the tiers and mounts when configured, else the store URL.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServerError> {
    Ok(open_configured(config).await?.store)
}

/// A store to serve, and the tiered store inside it (for its per-tier metrics): the tiered
/// config's opened form, also for a store opened from a URL.
use larder::tiered::OpenedConfig as OpenedStore;

async fn open_configured(config: &Config) -> Result<OpenedStore, ServerError> {
    Ok(match &config.tiered {
        Some(t) => larder::tiered::open_config_parts(t).await?,
        None => OpenedStore {
            store: larder::open(&config.store).await?,
            tiered: None,
        },
    })
}

/// The store URL without a password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

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
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
