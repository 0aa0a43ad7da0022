//! `GET /v1/status` (generation, ports, workers, counters), `/healthz`
//! (the process answers), `/readyz` (the dataplane forwards), `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiState, Role};
use crate::appliance::Status;

pub async fn status(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let appliance = state
        .appliance
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no dataplane runs in this process"))?;
    Ok(Json(appliance.status()))
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the dataplane forwards with a policy in force.
pub async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    match &state.appliance {
        Some(appliance) if appliance.is_running() => "ready\n".into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the dataplane is not running\n",
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let state = Arc::clone(&state);
    let text = tokio::task::spawn_blocking(move || {
        let engine_rules = state.engine.as_ref().map(|e| e.rules());
        let file_rules = state.appliance.as_ref().and_then(|a| a.rules());
        let name = |id: u32| -> (String, String) {
            if id == microseg_dataplane::pipeline::DEFAULT_RULE_ID {
                return ("default".into(), "default_action".into());
            }
            if let Some(rule) = engine_rules.as_ref().and_then(|book| book.rule(id)) {
                return (rule.policy.clone(), rule.rule.clone());
            }
            match &file_rules {
                Some(rules) => ("rules-file".into(), rules.rule_name(id).to_string()),
                None => ("unknown".into(), id.to_string()),
            }
        };
        state.metrics.render(
            state.appliance.as_deref(),
            state.visibility.as_deref(),
            &name,
        )
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
