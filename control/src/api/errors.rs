//! API errors: JSON `{error, detail, path?, problems?}` with the status
//! that fits.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::engine::EngineError;
use crate::policy::{PolicyError, Problem};
use crate::store::StoreError;

/// An error response.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Every validation problem, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
            path: None,
            problems: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 400 about one request parameter or body field, named in `path`.
    pub fn bad_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        Self {
            path: Some(parameter.to_string()),
            ..Self::bad_request(detail)
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the {limit}-byte limit"),
        )
    }

    pub fn unsupported_media_type(found: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type `{found}`: send application/json or application/yaml"),
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<PolicyError> for ApiError {
    fn from(error: PolicyError) -> Self {
        match error {
            PolicyError::Invalid(report) => {
                let first = report.errors.first().cloned();
                Self {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_policy",
                    detail: format!(
                        "{} problem(s){}",
                        report.errors.len(),
                        first
                            .as_ref()
                            .map(|p| format!(", first: {p}"))
                            .unwrap_or_default()
                    ),
                    path: first.map(|p| p.path),
                    problems: report.errors,
                }
            }
            PolicyError::Syntax(message) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_document", message)
            }
            PolicyError::Compile(message) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_policy", message)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Policy(e) => e.into(),
            EngineError::Conflict { .. } => Self::conflict(error.to_string()),
            EngineError::NoWorkload(_) => Self::not_found(error.to_string()),
            EngineError::NameMismatch { .. } => Self::bad_request(error.to_string()),
            EngineError::Store(StoreError::NoVersion(_)) => Self::not_found(error.to_string()),
            EngineError::Store(e) => Self::internal(format!("the state directory failed: {e}")),
        }
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no resource at {}", uri.path()))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
