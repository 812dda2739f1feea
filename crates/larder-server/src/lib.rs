//! The Larder HTTP server: the native API (docs/http-api.md) over any [`larder::Store`], with
//! RFC 9110 conditional requests, bearer-token auth, Prometheus metrics and graceful shutdown.
//!
//! - [`config`]: flags, environment, TOML; [`serve`] runs a server from a [`Config`].
//! - [`headers`]: HTTP fields ↔ typed options; [`error`]: errors → statuses.
//! - [`objects`]: the handlers; [`auth`], [`metrics`].
//! - [`spawn`]: a server on a listener you bound (tests, embedding).

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod error;
pub mod headers;
pub mod metrics;
pub mod objects;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
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
    let state = Arc::new(AppState {
        store,
        uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
        config,
        metrics: Metrics::new().with_tiers(tiers),
    });
    Router::new()
        .route("/v1/objects", get(objects::list))
        .route(larder::wire::CAPABILITIES_PATH, get(objects::capabilities))
        .route(
            "/v1/objects/{*key}",
            get(objects::get)
                .head(objects::head)
                .put(objects::put)
                .post(objects::put)
                .delete(objects::delete),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics))
        .fallback(|| async {
            ApiError::Store(larder::Error::NotFound {
                key: "no such route".into(),
            })
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
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

/// Bounds each request by the configured timeout and records it in the metrics.
async fn observe(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let response = match tokio::time::timeout(s.config.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    };
    let status = response.status();
    s.metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    s.metrics
        .latency
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match status {
        StatusCode::NOT_MODIFIED => Some("not_modified"),
        StatusCode::PRECONDITION_FAILED => Some("precondition_failed"),
        _ => None,
    };
    if let Some(outcome) = outcome {
        s.metrics
            .preconditions
            .with_label_values(&[outcome, method.as_str()])
            .inc();
    }
    response
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
    use axum::serve::ListenerExt;
    // Small responses go out at once rather than waiting on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Requests in flight get at most one request timeout to finish after the signal, so a
    // stalled download can't hold the process forever.
    let grace = config.request_timeout;
    let (signalled, on_signal) = oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        router_with_tiers(opened.store, opened.tiered, config),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled.send(());
    });
    tokio::select! {
        r = server => r,
        () = async {
            if on_signal.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(?grace, "requests still in flight after the grace period; stopping");
            Ok(())
        }
    }
}

/// Runs `larder serve`: opens the configured store, listens, and serves until SIGTERM or
/// Ctrl-C, then finishes the requests in flight.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    config.validate()?;
    let opened = open_configured(&config).await?;
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        store = %redact(&config.store),
        driver = opened.store.capabilities().name,
        tiers = opened.tiered.is_some(),
        auth = !config.tokens.is_empty(),
        "larder serving"
    );
    run(listener, opened, config, shutdown_signal()).await?;
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
