//! `GET /v1/explain`: why a flow is allowed or denied, asked with
//! `src`, `dst`, `proto`, `dport` (and `sport`), or `flow=ID` for a
//! recorded flow.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;

use super::flows::parameters;
use super::{ApiError, ApiState, Role};
use crate::explain::{explain as answer, Explanation, Question, Sources};

pub async fn explain(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Explanation>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let params = parameters(query)?;
    // Reading the policy in force may wait for a change being compiled.
    tokio::task::spawn_blocking(move || answer_query(&state, &params))
        .await
        .map_err(|e| ApiError::internal(format!("explain failed: {e}")))?
        .map(Json)
}

fn answer_query(
    state: &ApiState,
    params: &HashMap<String, String>,
) -> Result<Explanation, ApiError> {
    let in_force = state.in_force()?;
    let question = match params.get("flow") {
        Some(id) => {
            if params.len() > 1 {
                return Err(ApiError::bad_parameter(
                    "flow",
                    "give either `flow` or src/dst/proto/dport, not both",
                ));
            }
            let id: u64 = id
                .parse()
                .map_err(|_| ApiError::bad_parameter("flow", format!("`{id}` is not a flow id")))?;
            let record = state.visibility()?.flows().find(id).ok_or_else(|| {
                ApiError::not_found(format!("no recorded flow {id} (it may have been evicted)"))
            })?;
            Question::from_record(&record).ok_or_else(|| {
                ApiError::bad_parameter("flow", format!("flow {id} has no explainable 5-tuple"))
            })?
        }
        None => Question::from_query(params, &in_force.resolver)?,
    };
    let visibility = state.visibility.as_ref();
    let conntrack = visibility.map(|v| (v.pipeline().conntrack(), v.clock()));
    Ok(answer(
        &question,
        Sources {
            snapshot: &in_force.snapshot,
            book: &in_force.book,
            resolver: &in_force.resolver,
            conntrack,
        },
    ))
}
