//! `POST /v1/reachability` with `{"from": SELECTOR, "to": SELECTOR}`: can
//! any allowed path exist between the two sets of workloads under the
//! policy in force, which rules allow it, was such traffic seen. JSON, or
//! with `?format=markdown` the readable report `microseg report` writes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::flows::parameters;
use super::policy::{blocking, read_body};
use super::{ApiError, ApiState, Role};
use crate::reach::{reachability as answer, report};

/// The question.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub from: String,
    pub to: String,
}

pub async fn reachability(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let mut markdown = false;
    for (name, value) in &parameters(query)? {
        match (name.as_str(), value.as_str()) {
            ("format", "json") => markdown = false,
            ("format", "markdown") => markdown = true,
            (name, value) => {
                return Err(ApiError::bad_parameter(
                    name,
                    format!("`{name}={value}`: the only parameter is format=json|markdown"),
                ));
            }
        }
    }
    let question: Question = read_body(&state, &headers, body).await?;
    let records = match &state.visibility {
        Some(visibility) => visibility.flows().all(),
        None => Vec::new(),
    };
    let (found, version) = blocking(move || {
        let in_force = state.in_force()?;
        let (version, document) = match &state.engine {
            Some(engine) => {
                let (version, document) = engine.current();
                (Some(version), document)
            }
            None => (None, Default::default()),
        };
        let found = answer(
            &question.from,
            &question.to,
            &document,
            &in_force.snapshot,
            &in_force.book,
            &records,
        )?;
        Ok::<_, ApiError>((found, version))
    })
    .await?;
    if markdown {
        let now = crate::alerts::time::rfc3339_utc_millis(crate::alerts::time::now_unix_ms());
        return Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report(&found, &now, version),
        )
            .into_response());
    }
    Ok(Json(found).into_response())
}
