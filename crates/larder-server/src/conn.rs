//! Accepting and serving connections, with every resource a client can hold bounded.
//!
//! - An HTTP/1 request head must arrive whole within the header-read timeout, counted from when
//!   the connection turns out to be HTTP/1 or its previous response ends, so a client that
//!   trickles a request head, sends a partial request line, or sits on a keep-alive connection
//!   is closed. (This is the rule of hyper's HTTP/1 `header_read_timeout`, kept here by the
//!   connection's one watchdog timer: hyper's arms, polls and drops a timer for every request.)
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
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use larder::clock::{self, CoarseInstant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::task::TaskTracker;

use crate::dispatch::Dispatch;

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

/// The protocol of a connection, as hyper's automatic builder tells it from the first bytes.
const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// What the accept loop knows of one open connection.
struct ConnState {
    /// Milliseconds since [`Registry::epoch`] when a byte last moved, or a request ended.
    last_active: AtomicU64,
    /// Requests being handled (until their response head is produced).
    in_flight: AtomicUsize,
    /// Requests whose response has not been sent whole yet (from their head to the end of the
    /// response body).
    responding: AtomicUsize,
    /// Milliseconds since the epoch when the connection began waiting for a request head: when
    /// it turned out to be HTTP/1, or its last response ended (hyper drops a response body when
    /// it has taken its last bytes, which may still wait to be written: see `last_write`).
    head_since: AtomicU64,
    /// Milliseconds since the epoch when bytes were last written.
    last_write: AtomicU64,
    /// [`UNKNOWN`] until the first bytes tell, then [`HTTP1`] or [`HTTP2`].
    protocol: AtomicU8,
    /// Told to close (evicted, or the grace period ran out).
    closing: AtomicBool,
    /// The client has sent at least one byte.
    spoke: AtomicBool,
    close: Notify,
    epoch: CoarseInstant,
}

impl ConnState {
    /// Milliseconds since the epoch, on the coarse clock: read several times per request, and
    /// the watchdog's bounds are seconds, where the clock's few milliseconds of lag are nothing.
    fn now_ms(&self) -> u64 {
        clock::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    fn touch(&self) {
        self.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    fn wrote(&self) {
        let now = self.now_ms();
        self.last_active.store(now, Ordering::Relaxed);
        self.last_write.store(now, Ordering::Release);
    }

    fn idle_for(&self) -> Duration {
        let now = self.now_ms();
        Duration::from_millis(now.saturating_sub(self.last_active.load(Ordering::Relaxed)))
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// How long until the connection has waited `head_timeout` for an HTTP/1 request head
    /// (zero: it has), or `None` while it is not waiting for one (a response is under way, or
    /// the connection is not HTTP/1).
    fn head_wait_left(&self, head_timeout: Duration) -> Option<Duration> {
        if self.protocol.load(Ordering::Acquire) != HTTP1
            || self.responding.load(Ordering::Acquire) != 0
        {
            return None;
        }
        // The wait starts once the last response is written whole.
        let since = self
            .head_since
            .load(Ordering::Acquire)
            .max(self.last_write.load(Ordering::Acquire));
        let waited = self.now_ms().saturating_sub(since);
        Some(head_timeout.saturating_sub(Duration::from_millis(waited)))
    }

    /// Resolves once the connection has had nothing in flight and no traffic for `limit`, or
    /// for `head` while the client has sent nothing at all (before its first byte the server
    /// cannot yet tell HTTP/1 from HTTP/2), or once an HTTP/1 connection has waited `head` for
    /// a request head. One timer serves every request on the connection: it is re-armed only
    /// when it fires, for what is then left of the nearest bound.
    async fn idle_past(&self, limit: Duration, head: Duration) {
        loop {
            let idle_limit = if self.spoke.load(Ordering::Relaxed) {
                limit
            } else {
                head.min(limit)
            };
            let idle = self.idle_for();
            let mut wait = if !self.is_idle() {
                idle_limit
            } else if idle >= idle_limit {
                return;
            } else {
                idle_limit - idle
            };
            if let Some(left) = self.head_wait_left(head) {
                if left.is_zero() {
                    return;
                }
                wait = wait.min(left);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counts a request on a connection: in flight until [`Serving::answered`] (its response head
/// is produced), and responding until dropped (with the response body, once sent whole).
struct Serving {
    state: Arc<ConnState>,
    answered: bool,
}

impl Serving {
    fn new(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.responding.fetch_add(1, Ordering::AcqRel);
        Serving {
            state: state.clone(),
            answered: false,
        }
    }

    /// The response head is produced: the request is no longer in flight.
    fn answered(&mut self) {
        if !std::mem::replace(&mut self.answered, true) {
            self.state.touch();
            self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.answered();
        if self.state.responding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last response has ended: the wait for the next request head starts.
            self.state
                .head_since
                .store(self.state.now_ms(), Ordering::Release);
        }
    }
}

/// A response body that holds its request's [`Serving`] until the body has been sent whole
/// (hyper drops it then) or the connection is gone.
struct Tracked {
    body: Body,
    _serving: Serving,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// The open connections.
struct Registry {
    epoch: CoarseInstant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn new() -> Self {
        Registry {
            epoch: clock::now(),
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
            responding: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            protocol: AtomicU8::new(UNKNOWN),
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

/// The first bytes of every HTTP/2 connection (RFC 9113 3.4): hyper's automatic builder serves
/// HTTP/2 when a connection starts with them, HTTP/1 otherwise.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A socket that notes when bytes move, for the idle timeout, and tells HTTP/1 from HTTP/2 by
/// the first bytes, as hyper does, for the header-read timeout.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    /// Bytes of [`H2_PREFACE`] received so far, while the protocol is unknown.
    preface: usize,
}

impl Watched {
    /// Looks at the first bytes received until they tell the protocol.
    fn classify(&mut self, new: &[u8]) {
        let wanted = &H2_PREFACE[self.preface..];
        let n = new.len().min(wanted.len());
        let protocol = if new[..n] != wanted[..n] {
            HTTP1
        } else if n == wanted.len() {
            HTTP2
        } else {
            self.preface += n;
            return;
        };
        if protocol == HTTP1 {
            // hyper starts reading the first request head now.
            self.state
                .head_since
                .store(self.state.now_ms(), Ordering::Release);
        }
        self.state.protocol.store(protocol, Ordering::Release);
    }
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
            if self.state.protocol.load(Ordering::Relaxed) == UNKNOWN {
                self.state.spoke.store(true, Ordering::Relaxed);
                let this = &mut *self;
                this.classify(&buf.filled()[before..]);
            }
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
            self.state.wrote();
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
            self.state.wrote();
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

/// Serves `service` on `listener` within `limits` until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Dispatch,
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
        let service = service.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            serve_one(tcp, entry, service, limits, stopping).await;
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
    dispatch: Dispatch,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let state = entry.state.clone();
    let io = TokioIo::new(Watched {
        inner: tcp,
        state: state.clone(),
        preface: 0,
    });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut serving = Serving::new(&state);
            let answering = dispatch.call(req);
            async move {
                let response = answering.await;
                serving.answered();
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _serving: serving,
                }))
            }
        })
    };
    // No hyper timer: the header-read timeout is the watchdog's below.
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut draining = false;
    loop {
        // The connection's stop conditions, polled only when one of them wakes the task (see
        // `Guarded`): a request wakes it about twice, for the connection's sake.
        let watching = async {
            tokio::select! {
                r = stopping.wait_for(|s| *s), if !draining => Stop::Drain(r.is_ok()),
                () = state.idle_past(limits.idle_timeout, limits.header_read_timeout) => Stop::Idle,
                () = state.close.notified() => Stop::Close,
            }
        };
        match (Guarded::new(conn.as_mut(), watching)).await {
            Ok(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Err(Stop::Drain(signalled)) => {
                draining = true;
                if signalled {
                    // Closes after the response in flight, or now if there is none.
                    conn.as_mut().graceful_shutdown();
                }
            }
            Err(Stop::Idle) => {
                tracing::debug!("closing an idle connection");
                return;
            }
            Err(Stop::Close) => {
                tracing::debug!("closing a connection to make room, or past the grace period");
                return;
            }
        }
    }
}

/// Why a connection's watchers stopped it.
enum Stop {
    /// The shutdown signal (`true`) or its sender gone (`false`): close after the response in
    /// flight.
    Drain(bool),
    /// Idle past its bounds.
    Idle,
    /// Told to close (evicted, or past the grace period).
    Close,
}

pin_project_lite::pin_project! {
    /// `work` raced against `watch`, where `watch` is polled only when it woke the task itself
    /// (and on the first poll): `Ok` with `work`'s output, or `Err` with `watch`'s. Polling
    /// every branch on every wake, as `select!` does, polled the connection's three watchers
    /// at each of a request's wakes (about 400 instructions per request).
    struct Guarded<W, S> {
        #[pin]
        work: W,
        #[pin]
        watch: S,
        woken: Arc<WatchWaker>,
    }
}

impl<W, S> Guarded<W, S> {
    fn new(work: W, watch: S) -> Self {
        let woken = Arc::new(WatchWaker {
            // The first poll polls the watchers, which register their wakers.
            woken: AtomicBool::new(true),
            task: futures::task::AtomicWaker::new(),
        });
        Guarded { work, watch, woken }
    }
}

/// The waker the watchers of a [`Guarded`] get: notes that they woke it, then wakes the task.
struct WatchWaker {
    woken: AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for WatchWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<W: Future, S: Future> Future for Guarded<W, S> {
    type Output = Result<W::Output, S::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // Registered before the flag is read, so a wake between the two is not lost.
        this.woken.task.register(cx.waker());
        if this.woken.woken.swap(false, Ordering::AcqRel) {
            let waker = std::task::Waker::from(this.woken.clone());
            if let Poll::Ready(out) = this.watch.poll(&mut Context::from_waker(&waker)) {
                return Poll::Ready(Err(out));
            }
        }
        Poll::Pending
    }
}
