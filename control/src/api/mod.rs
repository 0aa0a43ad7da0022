//! The REST API (axum), under `/v1`, JSON. Today: the appliance's status
//! and health; the policy, workload and visibility resources come with
//! issues 6 and 7, one module per resource.
//!
//! Errors are JSON `{error, detail}` with a fitting status; no request
//! changes state unless it is valid.

mod status;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::appliance::Appliance;

/// The router over a running appliance.
pub fn router(appliance: Arc<Appliance>) -> Router {
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/v1/status", get(status::status))
        .fallback(not_found)
        .with_state(appliance)
}

/// An error response: `{error, detail}`.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    pub error: &'static str,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: "not_found",
        detail: format!("no resource at {}", uri.path()),
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    appliance: Arc<Appliance>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(appliance))
        .with_graceful_shutdown(shutdown)
        .await
}
