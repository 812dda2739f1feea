//! `/openapi.json`: the OpenAPI 3.1 document of the native API, `docs/openapi.json` in the
//! repository, served as committed. `tests/openapi.rs` checks it against the router (every
//! documented operation is routed, every routed method of a documented path is documented),
//! and schemathesis checks live responses against it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, as committed in `docs/openapi.json`.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT,
    )
        .into_response()
}
