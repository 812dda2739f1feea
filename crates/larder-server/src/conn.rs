//! Accepting and serving connections, with every resource a client can hold bounded.
//!
//! - A request head must arrive whole within the header-read timeout, counted from when the
//!   connection opens or its previous response ends (hyper's HTTP/1 `header_read_timeout`), so a
//!   client that sends nothing, a partial request line, or sits on a keep-alive connection is
//!   closed.
//! - A connection with no request being handled and no byte moving either way for the idle
//!   timeout is closed: this also covers HTTP/2 connections (where hyper has no header timer).
//!   One that has sent nothing at all is closed after the header-read timeout.
//! - At most `max_connections` are open. At the cap, a new connection evicts the open one that
//!   has been idle longest (no request in flight), so a crowd of idle or slow connections cannot
//!   lock out a client that sends a whole request; when every connection is busy, the new one
//!   waits for a slot (in the kernel's accept queue).
//! - Shutdown: stop accepting (the listener is closed), let requests in flight finish (each
//!   connection closes after its current response), and after `grace` close what is left.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// The bounds on connections (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// A request head must arrive whole within this.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight and no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish after the shutdown signal.
    pub grace: Duration,
}

/// What the accept loop knows of one open connection.
struct ConnState {
    /// Milliseconds since [`Registry::epoch`] when a byte last moved, or a request ended.
    last_active: AtomicU64,
    /// Requests being handled (until their response head is produced).
    in_flight: AtomicUsize,
    /// Told to close (evicted, or the grace period ran out).
    closing: AtomicBool,
    /// The client has sent at least one byte.
    spoke: AtomicBool,
    close: Notify,
    epoch: Instant,
}

impl ConnState {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_active.load(Ordering::Relaxed)))
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// Resolves once the connection has had nothing in flight and no traffic for `limit`, or
    /// for `silent` while the client has sent nothing at all (before its first byte the server
    /// cannot yet tell HTTP/1 from HTTP/2, so hyper's header timer is not running).
    async fn idle_past(&self, limit: Duration, silent: Duration) {
        loop {
            let limit = if self.spoke.load(Ordering::Relaxed) {
                limit
            } else {
                silent.min(limit)
            };
            let idle = self.idle_for();
            let wait = if !self.is_idle() {
                limit
            } else if idle >= limit {
                return;
            } else {
                limit - idle
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counts a request in flight on a connection, until dropped.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn new() -> Self {
        Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(self: &Arc<Self>) -> Registered {
        let state = Arc::new(ConnState {
            last_active: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            spoke: AtomicBool::new(false),
            close: Notify::new(),
            epoch: self.epoch,
        });
        state.touch();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, state.clone());
        Registered {
            registry: self.clone(),
            id,
            state,
        }
    }

    /// Closes the connection idle longest, if any has nothing in flight. Whether one was.
    fn evict_idlest(&self) -> bool {
        let conns = self.lock();
        let idlest = conns
            .values()
            .filter(|c| c.is_idle() && !c.closing.load(Ordering::Acquire))
            .max_by_key(|c| c.idle_for());
        match idlest {
            Some(c) => {
                c.close();
                true
            }
            None => false,
        }
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.close();
        }
    }
}

/// A connection's entry in the registry, removed when dropped.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A socket that notes when bytes move, for the idle timeout.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.touch();
            self.state.spoke.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accept errors that concern one connection (it went away before being accepted), not the
/// listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let registry = Arc::new(Registry::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (or the like): free one if a connection is idle,
                    // and give the system a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    registry.evict_idlest();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                registry.evict_idlest();
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let entry = registry.add();
        let router = router.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            serve_one(tcp, entry, router, limits, stopping).await;
            drop(permit);
        });
    }
    // Stop accepting: new connections are refused from here on.
    drop(listener);
    let _ = stop.send(true);
    tracker.close();
    if tokio::time::timeout(limits.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.grace, "requests still in flight after the grace period; stopping");
        registry.close_all();
        // Closing is immediate (the connections are dropped); don't wait on anything else.
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    Ok(())
}

async fn serve_one(
    tcp: TcpStream,
    entry: Registered,
    router: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let state = entry.state.clone();
    let io = TokioIo::new(Watched {
        inner: tcp,
        state: state.clone(),
    });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = InFlight::new(&state);
            let mut router = router.clone();
            async move {
                let response = router.call(req.map(Body::new)).await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            r = stopping.wait_for(|s| *s), if !draining => {
                draining = true;
                if r.is_ok() {
                    // Closes after the response in flight, or now if there is none.
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = state.idle_past(limits.idle_timeout, limits.header_read_timeout) => {
                tracing::debug!("closing an idle connection");
                return;
            }
            () = state.close.notified() => {
                tracing::debug!("closing a connection to make room, or past the grace period");
                return;
            }
        }
    }
}
