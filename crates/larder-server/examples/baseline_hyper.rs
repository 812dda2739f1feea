//! The baseline of `bench/server.sh`: a minimal hyper server that answers every GET with the
//! same bytes from memory (with an ETag, and 304 on a matching `If-None-Match`) and every PUT by
//! reading the body and answering 201. What `larder serve --store memory://` is compared with:
//! the difference is Larder's own cost (routing, header parsing, hashing, the store, metrics).
//!
//! `cargo run --release -p larder-server --example baseline_hyper -- ADDR SIZE`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ETAG, IF_NONE_MATCH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7071".into())
        .parse()
        .expect("ADDR");
    let size: usize = args.next().map_or(1024, |s| s.parse().expect("SIZE"));
    let body = Bytes::from(vec![b'x'; size]);
    let etag: &'static str = Box::leak(larder::ETag::of(&body).to_string().into_boxed_str());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("baseline serving {size} bytes on {addr}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, body.clone(), etag));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    body: Bytes,
    etag: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    resp.headers_mut()
        .insert(ETAG, etag.parse().expect("ascii"));
    match *req.method() {
        Method::GET
            if req
                .headers()
                .get(IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes()) =>
        {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
        }
        Method::GET => *resp.body_mut() = Full::new(body),
        Method::PUT | Method::POST => {
            let _ = req.into_body().collect().await;
            *resp.status_mut() = StatusCode::CREATED;
        }
        _ => *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED,
    }
    Ok(resp)
}
