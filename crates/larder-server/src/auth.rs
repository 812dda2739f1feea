//! Bearer-token authentication: each token has a scope (read, or write which includes read) and
//! a key prefix. With no tokens configured, every request is allowed.
//!
//! `/healthz` and `/metrics` are open; object and listing routes need a token when any is
//! configured: 401 (`WWW-Authenticate: Bearer`) without a valid one, 403 when the method needs
//! more than its scope or the key (listing: the requested prefix) is outside its prefix.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::{Scope, TokenConfig};
use crate::error::ApiError;
use crate::routes::{key_from_path, list_query, OBJECTS_PREFIX};
use crate::AppState;

/// The middleware.
pub(crate) async fn require_token(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if st.config.tokens.is_empty() {
        return next.run(req).await;
    }
    match check(&st.config.tokens, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(tokens: &[TokenConfig], req: &Request) -> Result<(), ApiError> {
    let path = req.uri().path();
    let is_object = path.starts_with(OBJECTS_PREFIX);
    let is_listing = path == "/v1/objects";
    if !is_object && !is_listing {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
    let token = tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    let needed = match *req.method() {
        Method::GET | Method::HEAD => Scope::Read,
        _ => Scope::Write,
    };
    if token.scope < needed {
        return Err(ApiError::forbidden("the token does not allow writing"));
    }
    if token.prefix.is_empty() {
        return Ok(());
    }
    // A request the handler would refuse as malformed is let through to get its 400: it
    // reads and writes nothing.
    let target = if is_listing {
        match list_query(req.uri().query()) {
            Ok(opts) => opts.prefix,
            Err(_) => return Ok(()),
        }
    } else {
        match key_from_path(path) {
            Ok(key) => key.into_string(),
            Err(_) => return Ok(()),
        }
    };
    if !target.starts_with(&token.prefix) {
        return Err(ApiError::forbidden(format!(
            "the token only allows keys under {:?}",
            token.prefix
        )));
    }
    Ok(())
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
