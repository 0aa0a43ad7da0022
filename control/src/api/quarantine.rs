//! `GET /v1/quarantine` (viewer), `POST /v1/quarantine` (admin: isolate a
//! workload or address, with an optional TTL and break-glass services) and
//! `DELETE /v1/quarantine/{target}` (admin: lift it).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::policy::{blocking, read_body};
use super::{ApiError, ApiState, Role};
use crate::quarantine::{QuarantineError, QuarantineRequest, Quarantined, Quarantines};

impl From<QuarantineError> for ApiError {
    fn from(error: QuarantineError) -> Self {
        match error {
            QuarantineError::Invalid { ref path, .. } => {
                ApiError::bad_parameter(path, error.to_string())
            }
            QuarantineError::Already(_) => ApiError::conflict(error.to_string()),
            QuarantineError::NotQuarantined(_) => ApiError::not_found(error.to_string()),
            QuarantineError::Engine(e) => e.into(),
            QuarantineError::Store(_) | QuarantineError::Damaged(_) => {
                ApiError::internal(format!("the state directory failed: {error}"))
            }
        }
    }
}

impl ApiState {
    /// Quarantine, or 404 without a dataplane.
    fn quarantines(&self) -> Result<Arc<Quarantines>, ApiError> {
        self.visibility()?
            .quarantines()
            .cloned()
            .ok_or_else(|| ApiError::not_found("quarantine is not set up in this process"))
    }
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Quarantined>>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    Ok(Json(state.quarantines()?.list()))
}

pub async fn add(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = state.authorize(&headers, Role::Admin)?;
    let request: QuarantineRequest = read_body(&state, &headers, body).await?;
    let quarantines = state.quarantines()?;
    let done = blocking(move || quarantines.add(request, &caller.name)).await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

pub async fn lift(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(target): Path<String>,
) -> Result<Response, ApiError> {
    let caller = state.authorize(&headers, Role::Admin)?;
    let quarantines = state.quarantines()?;
    let done = blocking(move || quarantines.lift(&target, &caller.name)).await?;
    Ok(Json(done).into_response())
}
