//! `GET /v1/recommendations`: least-privilege allow rules in label terms,
//! drawn from the recorded flows, as a policy document ready to apply in
//! monitor mode; with the anomaly detector's state (learning window,
//! edges learned, anomalies since).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::flows::parameters;
use super::{ApiError, ApiState, Role};
use crate::flows::parse_since;
use crate::learn::{recommend, Generalize};
use crate::map::Grouping;
use crate::policy::PolicyDocument;

pub async fn recommendations(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let mut generalize = Generalize::default();
    let (mut since_ms, mut include_denied) = (None, false);
    for (name, value) in &parameters(query)? {
        match name.as_str() {
            "by" => {
                let keys = Grouping::parse(value)
                    .map_err(|e| ApiError::bad_parameter("by", e))?
                    .by;
                if keys.is_empty() {
                    return Err(ApiError::bad_parameter("by", "name at least one label key"));
                }
                generalize.by = keys;
            }
            "since" => since_ms = Some(parse_since(value)?),
            "include_denied" => {
                include_denied = value.parse().map_err(|_| {
                    ApiError::bad_parameter(
                        "include_denied",
                        format!("`{value}` is not true or false"),
                    )
                })?
            }
            other => {
                return Err(ApiError::bad_parameter(
                    other,
                    "unknown parameter (by, since, include_denied)",
                ))
            }
        }
    }
    let visibility = state.visibility()?;
    let records: Vec<_> = visibility
        .flows()
        .all()
        .into_iter()
        .filter(|r| since_ms.is_none_or(|since| r.time_ms >= since))
        .collect();
    let document = match &state.engine {
        Some(engine) => engine.current().1,
        None => PolicyDocument::default(),
    };
    let found = recommend(&records, &generalize, &document, include_denied);
    Ok(Json(json!({
        "flows_used": found.flows_used,
        "policy": found.policy,
        "learning": visibility.anomalies().status(),
    })))
}
