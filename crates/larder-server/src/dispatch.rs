//! What the server serves: the object routes (`/v1/objects/{*key}` and the empty key's
//! `/v1/objects/`, methods GET, HEAD, PUT, POST and DELETE) and unstorage's (keys and bases
//! under `/unstorage/`, every method: its handler answers 405 to those it does not serve,
//! as behind the router) dispatched directly to their
//! handlers, every other request to the [`Router`].
//!
//! Why: these are nearly all of a server's requests, and axum's router costs each of them more
//! than the rest of the request (matching, URL parameters and `MatchedPath` put in the request's
//! extensions, a boxed route future and a boxed [`Observe`](crate::observe) future, service
//! clones). Here the route is told by a prefix test, and the handler's future and the observe
//! rules run inline, unboxed. The answers are the router's: the same handler functions (the
//! router's handlers are thin wrappers of them), the same observe rules
//! ([`observed`](crate::observe::observed): timeout, panic → 500, 5xx logs, metrics under the
//! same route labels) and what axum's method router adds to an answer (`Content-Length` from
//! an exact body size, no body for HEAD). The router keeps those routes too, so
//! [`router`](crate::router) alone serves the same API (embedders, tests); a test below checks
//! that both answer alike.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use tower_service::Service;

use crate::objects::{self, OBJECTS_PREFIX, OBJECT_ROUTE};
use crate::observe::observed;
use crate::unstorage::{self, UNSTORAGE_PREFIX, UNSTORAGE_ROUTE};
use crate::AppState;

/// The server's service (see the [module docs](self)); cheap to clone.
#[derive(Clone)]
pub(crate) struct Dispatch(Arc<Inner>);

struct Inner {
    state: Arc<AppState>,
    router: Router,
}

impl Dispatch {
    /// Serves the object routes over `state` directly, and the rest with `router` (which must
    /// be the router over the same state).
    pub(crate) fn new(state: Arc<AppState>, router: Router) -> Self {
        Dispatch(Arc::new(Inner { state, router }))
    }

    /// The answer to `req`. Boxed once, here: the future is then moved as a pointer by the
    /// layers above (the connection's service, hyper's dispatcher), where a future held by
    /// value was copied whole at each of them, some 1.4 KB five times per request.
    pub(crate) fn call<B>(&self, req: Request<B>) -> Pin<Box<dyn Future<Output = Response> + Send>>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (method, path) = (req.method(), req.uri().path());
        let direct = match object_route(method, path) {
            Some(route) => Some((route, Api::Objects)),
            None => unstorage_route(path).map(|route| (route, Api::Unstorage)),
        };
        match direct {
            Some((route, api)) => {
                let (parts, body) = req.into_parts();
                Box::pin(answer(self.0.clone(), route, api, parts, body))
            }
            None => {
                let routed = self.0.router.clone().call(req);
                Box::pin(async move {
                    routed
                        .await
                        .unwrap_or_else(|never: Infallible| match never {})
                })
            }
        }
    }
}

/// The route label of a request the dispatch answers itself (the router's template for it), or
/// `None` for one the router answers. Every path under [`OBJECTS_PREFIX`] is one of the two
/// object routes; other methods get the router's 405.
fn object_route(method: &Method, path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix(OBJECTS_PREFIX)?;
    if !matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
    ) {
        return None;
    }
    Some(if rest.is_empty() {
        OBJECTS_PREFIX
    } else {
        OBJECT_ROUTE
    })
}

/// The route label of an unstorage request the dispatch answers itself: a key or base under
/// the mount (`/unstorage/…`, not the mount itself), whatever its method (unstorage's handler
/// decides which it serves). The mount's own paths go to the router.
fn unstorage_route(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix(UNSTORAGE_PREFIX)?;
    (rest.len() >= 2 && rest.starts_with('/')).then_some(UNSTORAGE_ROUTE)
}

/// Which API a directly dispatched request is for.
#[derive(Clone, Copy)]
enum Api {
    /// The native object routes.
    Objects,
    /// unstorage's protocol under [`UNSTORAGE_PREFIX`].
    Unstorage,
}

/// The answer to an object request to `route`, observed as the router's are.
///
/// An `async` block, not an `async fn`: an `async fn` keeps a second copy of its arguments in
/// its state (the request's parts are 224 bytes), which took this future, allocated per
/// request, past the size glibc serves from its per-thread cache.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn answer<B>(
    this: Arc<Inner>,
    route: &'static str,
    api: Api,
    parts: Parts,
    body: B,
) -> impl Future<Output = Response>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    async move {
        let started = Instant::now();
        let state = &*this.state;
        let handling = std::panic::catch_unwind(AssertUnwindSafe(|| async {
            let (uri, headers) = (&parts.uri, &parts.headers);
            if let Api::Unstorage = api {
                // What follows the mount, as the nested router hands it on. Boxed, as a PUT is.
                let path = &uri.path()[UNSTORAGE_PREFIX.len()..];
                let body = Body::new(body);
                return Box::pin(unstorage::answer(state, &parts.method, path, headers, body))
                    .await;
            }
            let answered = match parts.method {
                Method::GET => objects::get_object(state, uri, headers).await,
                Method::HEAD => objects::head_object(state, uri, headers).await,
                Method::DELETE => objects::delete_object(state, uri, headers).await,
                // PUT and POST (`object_route` lets no other method through).
                // Boxed: a PUT's future is the largest, and would size every request's.
                _ => Box::pin(objects::put_object(state, uri, headers, Body::new(body))).await,
            };
            answered.unwrap_or_else(IntoResponse::into_response)
        }));
        let mut response = observed(state, route, &parts.method, started, handling).await;
        // What axum's method router does to every answer of a route (`RouteFuture`): the length of
        // a body of known size, and no body for HEAD. Only HEAD needs the field here: for the rest,
        // hyper writes the same `Content-Length` from the body's size, without a field value
        // built and allocated per answer (nor one for a 304, where hyper drops it).
        if parts.method == Method::HEAD {
            if !response.headers().contains_key(header::CONTENT_LENGTH) {
                if let Some(size) = HttpBody::size_hint(response.body()).exact() {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                }
            }
            *response.body_mut() = Body::empty();
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Scope, TokenConfig};
    use crate::Config;
    use http_body_util::BodyExt;

    /// What a test compares of an answer, as hyper sends it: status, fields and body. Hyper
    /// writes the `Content-Length` of a body of known size when the answer has none (which is
    /// why the dispatch leaves it to hyper), and never sends one with a 204 or a 304.
    async fn seen(r: Response) -> (u16, Vec<(String, Vec<u8>)>, Bytes) {
        let (mut parts, body) = r.into_parts();
        if matches!(
            parts.status,
            axum::http::StatusCode::NO_CONTENT | axum::http::StatusCode::NOT_MODIFIED
        ) {
            parts.headers.remove(header::CONTENT_LENGTH);
        } else if let Some(size) = body.size_hint().exact() {
            parts
                .headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(size));
        }
        let mut fields: Vec<_> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        fields.sort();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status.as_u16(), fields, body)
    }

    /// `seen` without the modification dates, which differ between two stores written a moment
    /// apart: the `Last-Modified` field's value and the JSON bodies' `last_modified`.
    fn undated(
        (status, fields, body): (u16, Vec<(String, Vec<u8>)>, Bytes),
    ) -> (u16, Vec<(String, Vec<u8>)>, Bytes) {
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.remove("last_modified");
                    m.values_mut().for_each(strip);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let fields = fields
            .into_iter()
            .map(|(n, v)| {
                if n == "last-modified" {
                    (n, vec![])
                } else {
                    (n, v)
                }
            })
            .collect();
        let body = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(mut json) => {
                strip(&mut json);
                Bytes::from(json.to_string())
            }
            Err(_) => body,
        };
        (status, fields, body)
    }

    fn request(
        method: &str,
        path: &str,
        fields: &[(&str, &str)],
        body: &'static str,
    ) -> Request<Body> {
        let mut r = Request::builder().method(method).uri(path);
        for (n, v) in fields {
            r = r.header(*n, *v);
        }
        r.body(Body::from(body)).unwrap()
    }

    /// The dispatch answers every object request as the router alone does (statuses, fields,
    /// bodies, errors), records it under the same route label, and passes every other request
    /// to the router.
    #[tokio::test]
    async fn the_dispatch_answers_as_the_router_does() {
        let config = Config {
            tokens: vec![
                TokenConfig {
                    token: "writer-token-0123456789".into(),
                    scope: Scope::Write,
                    prefix: String::new(),
                },
                TokenConfig {
                    token: "reader-token-0123456789".into(),
                    scope: Scope::Read,
                    prefix: "pub/".into(),
                },
            ],
            ..Config::default()
        };
        let memory = || async { larder::open("memory://").await.unwrap() };
        let (state, router) = crate::app(memory().await, None, config.clone());
        let dispatch = Dispatch::new(state.clone(), router);
        let (alone_state, alone) = crate::app(memory().await, None, config);
        let w = ("authorization", "Bearer writer-token-0123456789");
        let r = ("authorization", "Bearer reader-token-0123456789");
        // The same sequence to both: writes first, so that the reads find objects. ETags agree
        // (both stores get the same bodies); dates are compared without their value.
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "PUT",
                "/v1/objects/pub/a",
                vec![w, ("content-type", "text/plain")],
                "hello",
            ),
            (
                "PUT",
                "/v1/objects/pub/a",
                vec![w, ("if-none-match", "*")],
                "again",
            ),
            (
                "POST",
                "/v1/objects/pub/b%20c",
                vec![w, ("x-larder-meta-k", "v")],
                "bb",
            ),
            ("PUT", "/v1/objects/pub/x", vec![r], "denied"),
            ("PUT", "/v1/objects/pub/x", vec![], "unauthorized"),
            ("PUT", "/v1/objects/", vec![w], "empty key"),
            ("PUT", "/v1/objects/a/../b", vec![w], "dots"),
            ("GET", "/v1/objects/pub/a", vec![r], ""),
            (
                "GET",
                "/v1/objects/pub/a",
                vec![r, ("range", "bytes=1-2")],
                "",
            ),
            (
                "GET",
                "/v1/objects/pub/a",
                vec![r, ("range", "bytes=0-0,2-3")],
                "",
            ),
            (
                "GET",
                "/v1/objects/pub/a",
                vec![r, ("range", "bytes=9-")],
                "",
            ),
            (
                "GET",
                "/v1/objects/pub/a",
                vec![r, ("if-none-match", "*")],
                "",
            ),
            (
                "GET",
                "/v1/objects/pub/a",
                vec![r, ("if-match", "\"nope\"")],
                "",
            ),
            ("GET", "/v1/objects/pub/a", vec![r, ("if-match", "bad")], ""),
            ("GET", "/v1/objects/pub/b%20c", vec![r], ""),
            ("GET", "/v1/objects/pub/missing", vec![r], ""),
            ("GET", "/v1/objects/priv/a", vec![r], ""),
            ("GET", "/v1/objects/%FF", vec![w], ""),
            ("GET", "/v1/objects/", vec![w], ""),
            ("GET", "/v1/objects//", vec![w], ""),
            ("HEAD", "/v1/objects/pub/a", vec![r], ""),
            ("HEAD", "/v1/objects/pub/missing", vec![r], ""),
            (
                "HEAD",
                "/v1/objects/pub/a",
                vec![r, ("if-none-match", "*")],
                "",
            ),
            ("HEAD", "/v1/objects/", vec![r], ""),
            (
                "DELETE",
                "/v1/objects/pub/b%20c",
                vec![w, ("if-match", "\"nope\"")],
                "",
            ),
            ("DELETE", "/v1/objects/pub/b%20c", vec![w], ""),
            ("DELETE", "/v1/objects/pub/b%20c", vec![w], ""),
            ("DELETE", "/v1/objects/pub/a", vec![r], ""),
            ("PATCH", "/v1/objects/pub/a", vec![w], ""),
            ("OPTIONS", "/v1/objects/", vec![w], ""),
            ("GET", "/v1/objects?prefix=pub/", vec![w], ""),
            ("GET", "/v1/objectsx", vec![w], ""),
            // unstorage's protocol: keys and bases under the mount are dispatched (every method),
            // the mount's own paths go to the router.
            ("PUT", "/unstorage/pub:u", vec![w], "value"),
            ("PUT", "/unstorage/pub/v", vec![w, ("x-ttl", "60")], "ttl"),
            ("PUT", "/unstorage/pub:x", vec![r], "denied"),
            (
                "PUT",
                "/unstorage/pub:x",
                vec![w, ("x-ttl", "-1")],
                "bad ttl",
            ),
            ("PUT", "/unstorage/pub:", vec![w], "a base"),
            ("GET", "/unstorage/pub:u", vec![r], ""),
            ("GET", "/unstorage/pub/v", vec![r], ""),
            (
                "GET",
                "/unstorage/pub:u",
                vec![r, ("accept", "application/octet-stream")],
                "",
            ),
            (
                "GET",
                "/unstorage/pub:u",
                vec![r, ("if-none-match", "*")],
                "",
            ),
            ("GET", "/unstorage/pub:missing", vec![r], ""),
            ("GET", "/unstorage/priv:a", vec![r], ""),
            ("GET", "/unstorage/%FF", vec![w], ""),
            ("GET", "/unstorage/pub:", vec![r], ""),
            ("GET", "/unstorage/pub/", vec![r], ""),
            ("HEAD", "/unstorage/pub:u", vec![r], ""),
            ("HEAD", "/unstorage/pub:missing", vec![r], ""),
            ("HEAD", "/unstorage/pub:", vec![r], ""),
            ("DELETE", "/unstorage/pub/v", vec![w], ""),
            ("DELETE", "/unstorage/pub:u", vec![r], ""),
            ("PATCH", "/unstorage/pub:u", vec![w], ""),
            ("POST", "/unstorage/pub:u", vec![w], "posted"),
            ("OPTIONS", "/unstorage/pub:", vec![w], ""),
            ("GET", "/unstorage//x", vec![w], ""),
            ("PUT", "/unstorage/a//b", vec![w], "doubled"),
            ("GET", "/unstorage/a/../b", vec![w], ""),
            ("GET", "/unstorage/%2e%2e/x", vec![w], ""),
            ("GET", "/unstorage/a%3Ab", vec![w], ""),
            ("GET", "/unstorage/", vec![w], ""),
            ("GET", "/unstorage", vec![w], ""),
            ("GET", "/unstoragex", vec![w], ""),
            ("DELETE", "/unstorage/pub:", vec![w], ""),
            ("GET", "/unstorage/pub:u", vec![r], ""),
            ("GET", "/healthz", vec![], ""),
        ];
        for (method, path, fields, body) in cases {
            let fast = dispatch.call(request(method, path, &fields, body)).await;
            let slow = alone
                .clone()
                .call(request(method, path, &fields, body))
                .await;
            let (fast, slow) = (seen(fast).await, seen(slow.unwrap()).await);
            assert_eq!(undated(fast), undated(slow), "{method} {path} {fields:?}");
        }
        let (fast, slow) = (state.metrics.render(), alone_state.metrics.render());
        let requests = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("larder_http_requests_total{"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(requests(&fast), requests(&slow));
        assert!(fast.contains(
            r#"larder_http_requests_total{method="GET",route="/v1/objects/{*key}",status="206"} 1"#
        ));
        assert!(fast.contains(
            r#"larder_http_requests_total{method="GET",route="/v1/objects/",status="400"} 1"#
        ));
        assert!(fast.contains(
            r#"larder_http_requests_total{method="GET",route="/unstorage/{*key}",status="200"}"#
        ));
    }
}
