//! The ceiling for the server benchmark: a minimal hyper HTTP/1.1 server over a locked HashMap,
//! returning the same bytes as Larder would, with an ETag, 304 on If-None-Match, 412 on a failed
//! If-None-Match: * / If-Match. No hashing: the version is a counter.
//!
//! With `--sha256` after the port, a PUT's version is the SHA-256 of its body instead (what a
//! server whose ETags are content hashes, as Larder's, does at least on every write): the
//! ceiling for such a server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response, StatusCode};

type Map = Arc<Mutex<HashMap<String, (u64, Bytes)>>>;

/// The first 8 bytes of the SHA-256 of `body`: a content version (`--sha256`).
fn content_version(body: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(body);
    u64::from_be_bytes(d[..8].try_into().unwrap())
}

async fn handle(map: Map, hash: bool, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (inm, im) = (h("if-none-match"), h("if-match"));
    let resp = |s: StatusCode, tag: Option<u64>, b: Bytes| {
        let mut r = Response::builder().status(s);
        if let Some(t) = tag {
            r = r.header("etag", format!("\"{t}\""));
        }
        Ok(r.body(Full::new(b)).unwrap())
    };
    if req.method() == hyper::Method::GET {
        let m = map.lock().unwrap();
        return match m.get(&path) {
            None => resp(StatusCode::NOT_FOUND, None, Bytes::new()),
            Some((v, _)) if inm.as_deref() == Some(&format!("\"{v}\"")) => {
                resp(StatusCode::NOT_MODIFIED, Some(*v), Bytes::new())
            }
            Some((v, b)) => resp(StatusCode::OK, Some(*v), b.clone()),
        };
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut m = map.lock().unwrap();
    let cur = m.get(&path).map(|e| e.0);
    let ok = match (&inm, &im, cur) {
        (Some(s), _, Some(_)) if s == "*" => false,
        (_, Some(t), Some(v)) => *t == format!("\"{v}\""),
        (_, Some(_), None) => false,
        _ => true,
    };
    if !ok {
        return resp(StatusCode::PRECONDITION_FAILED, cur, Bytes::new());
    }
    let v = match hash {
        true => content_version(&body),
        false => cur.unwrap_or(0) + 1,
    };
    m.insert(path, (v, body));
    resp(StatusCode::OK, Some(v), Bytes::new())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let port: u16 = std::env::args().nth(1).map_or(8091, |p| p.parse().unwrap());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let hash = std::env::args().nth(2).as_deref() == Some("--sha256");
    let map: Map = Default::default();
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let map = map.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(map.clone(), hash, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}
