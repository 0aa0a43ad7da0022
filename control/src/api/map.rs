//! `GET /v1/map`: the dependency map of recorded flows, as JSON, Graphviz
//! DOT (`format=dot`) or SVG (`format=svg`), by workload or grouped by
//! labels (`group_by=app,role`), each edge marked with what the policy in
//! force says about it now.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::flows::parameters;
use super::{ApiError, ApiState, Role};
use crate::explain::Question;
use crate::flows::{parse_since, FlowRecord, Verdict};
use crate::map::{build, to_dot, to_svg, Grouping};

pub async fn map(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let params = parameters(query)?;
    let mut grouping = Grouping::default();
    let mut format = "json".to_string();
    let mut since_ms = None;
    for (name, value) in &params {
        match name.as_str() {
            "group_by" => {
                grouping =
                    Grouping::parse(value).map_err(|e| ApiError::bad_parameter("group_by", e))?
            }
            "format" if ["json", "dot", "svg"].contains(&value.as_str()) => format = value.clone(),
            "format" => {
                return Err(ApiError::bad_parameter(
                    "format",
                    format!("`{value}` is not json, dot or svg"),
                ))
            }
            "since" => since_ms = Some(parse_since(value)?),
            other => {
                return Err(ApiError::bad_parameter(
                    other,
                    "unknown parameter (group_by, format, since)",
                ));
            }
        }
    }
    let records = state.visibility()?.flows().all();
    let dependency_map = tokio::task::spawn_blocking(move || {
        let in_force = state.in_force()?;
        let judge = |record: &FlowRecord| -> Verdict {
            match Question::from_record(record) {
                Some(question) => Verdict::of(&in_force.snapshot.judge(&question.flow())),
                None => record.verdict,
            }
        };
        let recent: Vec<Arc<FlowRecord>> = records
            .into_iter()
            .filter(|r| since_ms.is_none_or(|since| r.time_ms >= since))
            .collect();
        Ok::<_, ApiError>(build(&recent, &grouping, Some(&judge)))
    })
    .await
    .map_err(|e| ApiError::internal(format!("drawing the map failed: {e}")))??;
    Ok(match format.as_str() {
        "dot" => (
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            to_dot(&dependency_map),
        )
            .into_response(),
        "svg" => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            to_svg(&dependency_map),
        )
            .into_response(),
        _ => Json(dependency_map).into_response(),
    })
}
