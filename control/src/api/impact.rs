//! `POST /v1/policy/impact`: a candidate policy document judged against
//! the recorded flows: which would change verdict (a dry run; nothing is
//! applied).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use super::policy::{blocking, read_body};
use super::{ApiError, ApiState, Role};
use crate::impact::{analyse, Impact, Judge};
use crate::policy::{compile, PolicyDocument, PolicyError, RuleBook};

pub async fn impact(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Impact>, ApiError> {
    state.authorize(&headers, Role::Viewer)?;
    let candidate: PolicyDocument = read_body(&state, &headers, body).await?;
    let records = state.visibility()?.flows().all();
    let report = candidate.check();
    if !report.is_valid() {
        return Err(PolicyError::Invalid(report).into());
    }
    let impact = blocking(move || {
        let in_force = state.in_force()?;
        let compiled = compile(&candidate, 0).map_err(ApiError::from)?;
        let candidate_book = RuleBook {
            generation: 0,
            rules: compiled.rules,
        };
        Ok::<_, ApiError>(analyse(
            &records,
            Judge {
                snapshot: &in_force.snapshot,
                book: &in_force.book,
            },
            Judge {
                snapshot: &compiled.snapshot,
                book: &candidate_book,
            },
        ))
    })
    .await?;
    Ok(Json(impact))
}
