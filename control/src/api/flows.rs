//! `GET /v1/flows` (recorded flows, filtered) and `GET /v1/flows/stream`
//! (new records as server-sent events, with the same filters).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiState, Role};
use crate::flows::{FlowFilter, QueryError};
use crate::visibility::Visibility;

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        ApiError::bad_parameter(&error.parameter, error.to_string())
    }
}

/// The query's parameters, or a JSON 400 for a malformed query string.
pub fn parameters(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|e| ApiError::bad_request(format!("the query string is malformed: {e}")))
}

impl ApiState {
    /// The visibility services, or 404 without a running dataplane.
    pub fn visibility(&self) -> Result<&Arc<Visibility>, ApiError> {
        self.visibility
            .as_ref()
            .ok_or_else(|| ApiError::not_found("no dataplane runs in this process"))
    }
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let filter = FlowFilter::from_query(&parameters(query)?)?;
    let visibility = state.visibility()?;
    Ok(Json(json!({
        "flows": visibility.flows().query(&filter),
        "store": visibility.flows().stats(),
        "lost": visibility.lost(),
    })))
}

pub async fn stream(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let filter = FlowFilter::from_query(&parameters(query)?)?;
    let flows = Arc::clone(state.visibility()?.flows());
    let live = flows.subscribe();
    let events = stream::unfold(
        (live, flows, filter),
        |(mut live, flows, filter)| async move {
            loop {
                match live.recv().await {
                    Ok(record) if filter.matches(&record) => {
                        let event = Event::default()
                            .event("flow")
                            .id(record.id.to_string())
                            .json_data(&*record)
                            .unwrap_or_else(|_| Event::default().event("error"));
                        return Some((Ok(event), (live, flows, filter)));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        flows.count_stream_lost(missed);
                        let event = Event::default()
                            .event("lost")
                            .data(json!({ "records": missed }).to_string());
                        return Some((Ok(event), (live, flows, filter)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
