//! Idle and slow connections: hundreds of clients that send nothing, a partial request line, an
//! HTTP/2 preface and nothing more, or sit on a keep-alive connection, neither stop a normal
//! client from being answered nor stay open past the server's timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_server::{Config, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any single step a test waits for: generous, the machine may be loaded.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(max_connections: usize) -> Config {
    Config {
        max_connections,
        ..timeouts(1, 2)
    }
}

/// The default config with a header-read and an idle timeout, in seconds.
fn timeouts(header_read: u64, idle: u64) -> Config {
    Config {
        header_read_timeout: Duration::from_secs(header_read),
        idle_timeout: Duration::from_secs(idle),
        ..Config::default()
    }
}

/// Reads from `s` until what came so far satisfies `done`; fails if the server closes first.
async fn read_until(s: &mut TcpStream, what: &str, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while !done(&got) {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before {what}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

async fn start(config: Config) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = Arc::new(larder::drivers::memory::MemoryStore::new());
    larder_server::spawn(listener, store, config)
}

/// The kinds of bad client.
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a request line.
    PartialLine,
    /// Sends headers without the blank line that ends them.
    PartialHeaders,
    /// Gets one answer on a keep-alive connection, then sends nothing.
    IdleKeepAlive,
    /// Sends the HTTP/2 connection preface, then nothing.
    Http2Preface,
}

const KINDS: [Slow; 5] = [
    Slow::Silent,
    Slow::PartialLine,
    Slow::PartialHeaders,
    Slow::IdleKeepAlive,
    Slow::Http2Preface,
];

/// Opens a connection misbehaving as `kind`. `None` if the server closed it before it was set
/// up (an eviction at the connection cap).
async fn open(addr: SocketAddr, kind: Slow) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let sent: &[u8] = match kind {
        Slow::Silent => b"",
        Slow::PartialLine => b"GET /v1/obj",
        Slow::PartialHeaders => b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1",
        Slow::IdleKeepAlive => b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Slow::Http2Preface => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    };
    s.write_all(sent).await.ok()?;
    if let Slow::IdleKeepAlive = kind {
        // Read the whole answer (`ok` is the body), so the connection is idle between requests.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    Some(s)
}

/// Opens `n` connections one after the other, misbehaving in each of the ways in turn: each
/// with its kind, and `None` where the server closed it before it was set up.
async fn open_many(addr: SocketAddr, n: usize) -> Vec<(Slow, Option<TcpStream>)> {
    let mut opened = Vec::with_capacity(n);
    for i in 0..n {
        let kind = KINDS[i % KINDS.len()];
        opened.push((kind, open(addr, kind).await));
    }
    opened
}

/// Waits for the server to close `s` (reading and discarding anything it sends first).
/// Whether it did within `within`.
async fn closed_by_server(mut s: TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// A normal client's GETs of /healthz, each on a new connection; how long the slowest took.
async fn normal_client_answers(addr: SocketAddr, n: usize) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let r = tokio::time::timeout(
            PATIENCE,
            client.get(format!("http://{addr}/healthz")).send(),
        )
        .await
        .expect("a normal client is answered")
        .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test]
async fn hundreds_of_slow_connections_are_closed_and_do_not_block_others() {
    let server = start(config(2048)).await;
    let addr = server.local_addr();
    let slow: Vec<_> = open_many(addr, 500)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (kind, s))| {
            (
                kind,
                s.unwrap_or_else(|| panic!("{kind:?} connection {i} set up")),
            )
        })
        .collect();
    let slowest = normal_client_answers(addr, 20).await;
    println!("500 slow connections open: the slowest of 20 normal requests took {slowest:?}");

    // Every one of them is closed by the server, after its timeout (1 s for a request head,
    // 2 s idle), well within PATIENCE.
    let started = Instant::now();
    let checks = slow
        .into_iter()
        .map(|(kind, s)| async move { (kind, closed_by_server(s, PATIENCE).await) });
    for (kind, closed) in futures::future::join_all(checks).await {
        assert!(
            closed,
            "a {kind:?} connection was still open after {PATIENCE:?}"
        );
    }
    println!("all closed after {:?}", started.elapsed());
    normal_client_answers(addr, 5).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room() {
    // Far more slow connections than the cap: each new one evicts the idlest, and a normal
    // client still gets in.
    let server = start(config(32)).await;
    let addr = server.local_addr();
    let opened = open_many(addr, 300).await;
    let slow: Vec<_> = opened.into_iter().filter_map(|(_, s)| s).collect();
    let slowest = normal_client_answers(addr, 20).await;
    println!("cap 32, 300 slow connections: the slowest of 20 normal requests took {slowest:?}");
    for s in slow {
        assert!(closed_by_server(s, PATIENCE).await);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_in_flight_is_not_idle() {
    // An upload whose body stalls longer than the idle timeout is still a request in flight:
    // it is bounded by the request timeout, not cut off as idle.
    let server = start(config(64)).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(b"PUT /v1/objects/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.write_all(b"56789").await.unwrap();
    let got = read_until(&mut s, "the answer's head", |g| {
        g.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_connection_gets_the_header_timeout_not_the_idle_one() {
    // Before its first byte a connection is neither HTTP/1 nor HTTP/2 yet; it must still be
    // closed after the header-read timeout (1 s), long before the idle timeout (60 s).
    let server = start(timeouts(1, 60)).await;
    let s = open(server.local_addr(), Slow::Silent).await.unwrap();
    assert!(closed_by_server(s, PATIENCE).await);
    server.shutdown().await.unwrap();
}

/// Whether the server closed `s` within `within` while the client trickles one header line every
/// 200 ms (so that bytes keep moving and only the header-read timeout can close it).
async fn closed_while_trickling(mut s: TcpStream, within: Duration) -> bool {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < within {
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => panic!("answered a request head never finished: {:?}", &buf[..n]),
            Err(_) => {}
        }
    }
    false
}

#[tokio::test]
async fn a_trickled_request_head_gets_the_header_timeout() {
    // Slowloris: a header line every 200 ms keeps the connection busy (never idle for the 60 s
    // idle timeout), but the head is not whole after the header-read timeout (1 s): closed.
    // On a fresh connection, and on a keep-alive one after its first answer.
    let server = start(timeouts(1, 60)).await;
    for kind in [Slow::PartialHeaders, Slow::IdleKeepAlive] {
        let s = open(server.local_addr(), kind).await.unwrap();
        let mut s = s;
        if let Slow::IdleKeepAlive = kind {
            s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        }
        let started = Instant::now();
        assert!(closed_while_trickling(s, PATIENCE).await, "{kind:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "{kind:?} closed early: {took:?}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_download_is_not_cut_by_the_header_timeout() {
    // The header-read timeout counts from the end of the previous response: a response whose
    // body takes longer than it to reach a slow reader is sent whole, and the connection then
    // serves the next request.
    let server = start(timeouts(1, 60)).await;
    let url = format!("{}/v1/objects/big", server.url());
    let size = 24 << 20;
    let put = reqwest::Client::new()
        .put(&url)
        .body(vec![b'x'; size])
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let mut s = socket.connect(server.local_addr()).await.unwrap();
    let get = b"GET /v1/objects/big HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(get).await.unwrap();
    let started = Instant::now();
    let (mut got, mut next_pause) = (0usize, 1 << 20);
    let mut buf = vec![0u8; 64 << 10];
    // Read 100 ms apart per MiB: 2.4 s for the body, far more than any socket buffers hold.
    while got < size {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {got} bytes, {:?}", started.elapsed());
        got += n;
        if got >= next_pause {
            next_pause += 1 << 20;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(started.elapsed() > Duration::from_secs(2));
    // The head and the whole body came (`got` counts the head too), and the connection goes on.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, "answering the next request", |g| {
        g.ends_with(b"\r\n\r\nok")
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_http2_connection_gets_the_idle_timeout_not_the_header_one() {
    // hyper's header-read timeout is HTTP/1's: an HTTP/2 connection that went quiet after its
    // preface is closed by the idle timeout (3 s), not the header-read one (1 s).
    let server = start(timeouts(1, 3)).await;
    let s = open(server.local_addr(), Slow::Http2Preface).await.unwrap();
    let started = Instant::now();
    assert!(closed_by_server(s, PATIENCE).await);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "closed after {took:?}");
    server.shutdown().await.unwrap();
}
