//! `GET /v1/status`: policy generation, ports, workers and their counters;
//! `GET /healthz`: the process answers.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::appliance::{Appliance, Status};

pub async fn status(State(appliance): State<Arc<Appliance>>) -> Json<Status> {
    Json(appliance.status())
}

pub async fn healthz() -> &'static str {
    "ok\n"
}
