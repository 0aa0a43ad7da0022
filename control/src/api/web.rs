//! `GET /`: the web page (the live dependency map, flows, violations,
//! quarantine), served by the control plane itself.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
pub async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>microseg</title><p>microseg</p>",
    )
        .into_response()
}
