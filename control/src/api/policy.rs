//! `/v1/policy` and `/v1/workloads`: the policy document, its versions,
//! and workload churn without a whole-document push.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ApiError, ApiState, Role};
use crate::engine::{Applied, EngineError};
use crate::policy::{PolicyDocument, Report, Workload};
use crate::store::VersionInfo;

/// The body's format, from its content type.
#[derive(Clone, Copy)]
enum Format {
    Json,
    Yaml,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(Format::Yaml),
        _ => Err(ApiError::unsupported_media_type(if value.is_empty() {
            "(none)"
        } else {
            value
        })),
    }
}

/// Reads and parses a body within the size limit.
pub(super) async fn read_body<T: DeserializeOwned>(
    state: &ApiState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let format = format_of(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.body_limit) {
        return Err(ApiError::too_large(state.body_limit));
    }
    let bytes = axum::body::to_bytes(body, state.body_limit)
        .await
        .map_err(|_| ApiError::too_large(state.body_limit))?;
    let parsed = match format {
        Format::Json => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Format::Yaml => std::str::from_utf8(&bytes)
            .map_err(|_| "the body is not UTF-8".to_string())
            .and_then(|text| serde_yaml::from_str(text).map_err(|e| e.to_string())),
    };
    parsed.map_err(|message| ApiError {
        error: "invalid_document",
        ..ApiError::bad_request(message)
    })
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `If-Match: "N"` → Some(N); `*` or absent → None.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError {
            path: Some("If-Match".into()),
            ..ApiError::bad_request(format!(
                "If-Match `{text}` is not an ETag this API sent (\"VERSION\")"
            ))
        })
}

fn applied(result: Applied) -> Response {
    let version = result.version;
    let mut response = Json(result).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

/// Runs a blocking engine call (compile, fsync) off the async workers.
pub(super) async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    ApiError: From<E>,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the change did not finish: {e}")))?
        .map_err(ApiError::from)
}

pub async fn get_policy(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let (version, document) = state.engine()?.current();
    let mut response = Json(document).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    Ok(response)
}

pub async fn put_policy(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let caller = state.authorize(&headers, Role::Admin)?;
    let engine = Arc::clone(state.engine()?);
    let expected = if_match(&headers)?;
    let document: PolicyDocument = read_body(&state, &headers, body).await?;
    let result = blocking(move || engine.apply(document, expected, &caller.name, started)).await?;
    Ok(applied(result))
}

/// The dry run's answer.
#[derive(Serialize)]
pub struct Validation {
    pub valid: bool,
    #[serde(flatten)]
    pub report: Report,
}

pub async fn validate(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Validation>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let engine = Arc::clone(state.engine()?);
    let document: PolicyDocument = read_body(&state, &headers, body).await?;
    let report = tokio::task::spawn_blocking(move || engine.validate(&document))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Validation {
        valid: report.is_valid(),
        report,
    }))
}

pub async fn history(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let engine = Arc::clone(state.engine()?);
    Ok(Json(blocking(move || engine.history()).await?))
}

pub async fn rollback(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let caller = state.authorize(&headers, Role::Admin)?;
    let engine = Arc::clone(state.engine()?);
    let version: u64 = version.parse().map_err(|_| ApiError {
        path: Some("version".into()),
        ..ApiError::bad_request(format!("`{version}` is not a version number"))
    })?;
    let result = blocking(move || engine.rollback(version, &caller.name, started)).await?;
    Ok(applied(result))
}

pub async fn list_workloads(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Workload>>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    Ok(Json(state.engine()?.current().1.workloads))
}

pub async fn get_workload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Workload>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let (_, document) = state.engine()?.current();
    document
        .workloads
        .into_iter()
        .find(|w| w.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::from(EngineError::NoWorkload(name)))
}

pub async fn put_workload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let caller = state.authorize(&headers, Role::Admin)?;
    let engine = Arc::clone(state.engine()?);
    let mut workload: Workload = read_body(&state, &headers, body).await?;
    if workload.name.is_empty() {
        workload.name = name.clone();
    }
    if workload.name != name {
        return Err(EngineError::NameMismatch {
            path: name,
            body: workload.name,
        }
        .into());
    }
    let result = blocking(move || engine.put_workload(workload, &caller.name, started)).await?;
    Ok(applied(result))
}

pub async fn delete_workload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let caller = state.authorize(&headers, Role::Admin)?;
    let engine = Arc::clone(state.engine()?);
    let result = blocking(move || engine.delete_workload(&name, &caller.name, started)).await?;
    let mut response = applied(result);
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
