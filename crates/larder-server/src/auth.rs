//! Bearer tokens: each grants read or write access to the keys under a prefix. With no tokens
//! configured every request is allowed (the server refuses to start that way on a non-loopback
//! address unless told `--insecure`).

use axum::http::{header, HeaderMap};

use crate::config::{Scope, TokenConfig};
use crate::error::ApiError;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// GET or HEAD of one key.
    Read,
    /// A listing under a prefix.
    List,
    /// PUT, POST or DELETE of one key.
    Write,
}

/// Checks the request's bearer token against `tokens` for `access` to `target` (a key, or a
/// listing's prefix).
pub fn authorize(
    tokens: &[TokenConfig],
    headers: &HeaderMap,
    access: Access,
    target: &str,
) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(ApiError::Unauthorized)?;
    let token = tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
        .ok_or(ApiError::Unauthorized)?;
    check_scope(token.scope, &token.prefix, access, target).map_err(ApiError::Forbidden)
}

/// Whether a credential with `scope` over keys under `prefix` grants `access` to `target`
/// (a key, or a listing's prefix): the one scope rule of bearer tokens and S3 access keys.
/// `Err` says why not.
pub fn check_scope(scope: Scope, prefix: &str, access: Access, target: &str) -> Result<(), String> {
    if access == Access::Write && scope != Scope::Write {
        return Err("this credential is read-only".into());
    }
    // A listing must stay inside the prefix too: its prefix must extend the credential's.
    if !target.starts_with(prefix) {
        return Err(format!(
            "this credential is limited to keys under {prefix:?}"
        ));
    }
    Ok(())
}

/// Compares without an early exit, so response times don't reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_token(t: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(t));
        h
    }

    #[test]
    fn scopes_and_prefixes() {
        let tokens = vec![
            TokenConfig {
                token: "reader-token-0123456789".into(),
                scope: Scope::Read,
                prefix: "public/".into(),
            },
            TokenConfig {
                token: "writer-token-0123456789".into(),
                scope: Scope::Write,
                prefix: String::new(),
            },
        ];
        let reader = with_token("Bearer reader-token-0123456789");
        let writer = with_token("bearer writer-token-0123456789");
        assert!(authorize(&tokens, &reader, Access::Read, "public/a").is_ok());
        assert!(authorize(&tokens, &reader, Access::List, "public/").is_ok());
        assert!(matches!(
            authorize(&tokens, &reader, Access::List, ""),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            authorize(&tokens, &reader, Access::Read, "private/a"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            authorize(&tokens, &reader, Access::Write, "public/a"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(authorize(&tokens, &writer, Access::Write, "x").is_ok());
        assert!(matches!(
            authorize(&tokens, &HeaderMap::new(), Access::Read, "public/a"),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authorize(
                &tokens,
                &with_token("Bearer nope"),
                Access::Read,
                "public/a"
            ),
            Err(ApiError::Unauthorized)
        ));
        assert!(authorize(&[], &HeaderMap::new(), Access::Write, "x").is_ok());
    }
}
