//! The REST API (axum), JSON, under `/v1`:
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /` | none | the web page (it asks for a token to read the API) |
//! | `GET /healthz`, `GET /readyz` | none | the process answers; the dataplane forwards |
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /v1/status` | viewer | generation, ports, workers, counters |
//! | `GET /v1/policy` | viewer | the document in force, `ETag: "VERSION"` |
//! | `PUT /v1/policy` | admin | replace it (`If-Match` for optimistic concurrency) |
//! | `POST /v1/policy/validate` | viewer | dry run: the validation report |
//! | `POST /v1/policy/impact` | viewer | which recorded flows a candidate policy would change |
//! | `GET /v1/policy/history` | viewer | every stored version |
//! | `POST /v1/policy/rollback/{version}` | admin | re-apply a stored version |
//! | `GET`/`PUT`/`DELETE /v1/workloads/{name}` | viewer / admin | one workload |
//! | `GET /v1/flows` | viewer | flow records: `src`, `dst`, `verdict`, `since`, `limit` |
//! | `GET /v1/flows/stream` | viewer | new flow records as server-sent events |
//! | `GET /v1/map` | viewer | the dependency map (`group_by`, `format=json|dot|svg`, `since`) |
//! | `GET /v1/recommendations` | viewer | allow rules learned from flows (`by`, `since`, `include_denied`), anomalies |
//! | `POST /v1/reachability` | viewer | can `from` reach `to` under the policy (`?format=markdown`: a report) |
//! | `GET /v1/quarantine` | viewer | quarantines in force |
//! | `POST /v1/quarantine` | admin | isolate a workload or address (`ttl_seconds`, `break_glass`) |
//! | `DELETE /v1/quarantine/{target}` | admin | lift a quarantine |
//! | `GET /v1/explain` | viewer | why a flow (`src`, `dst`, `proto`, `dport`; or `flow=ID`) is allowed or denied |
//!
//! Errors are JSON `{error, detail, path?}` with a fitting status: 400
//! invalid, 401 no or unknown token, 403 role too weak, 404, 409 conflict,
//! 413 body too large, 415 content type other than JSON or YAML. A
//! request that fails never changes state, and bad input never causes a
//! 500. The OpenAPI document is `docs/openapi.yaml`; a test checks that it
//! lists exactly these routes.

mod auth;
mod errors;
mod explain;
mod flows;
mod impact;
mod learn;
mod map;
mod policy;
mod quarantine;
mod reach;
mod status;
pub mod tls;
mod web;

pub use auth::{random_token, Caller, Role, Tokens, TokensError};
pub use errors::ApiError;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::appliance::Appliance;
use crate::engine::PolicyEngine;
use crate::flows::Resolver;
use crate::metrics::Metrics;
use crate::policy::RuleBook;

/// Largest request body accepted unless configured otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

/// What the API serves.
#[derive(Debug)]
pub struct ApiState {
    /// The policy engine; None when the appliance runs from a rules file.
    pub engine: Option<Arc<PolicyEngine>>,
    /// The running dataplane; None in tests of the control plane alone.
    pub appliance: Option<Arc<Appliance>>,
    pub tokens: Tokens,
    /// Let reads through without a token (the demo only).
    pub anonymous_reads: bool,
    pub body_limit: usize,
    pub metrics: Arc<Metrics>,
    /// Flow records and the rest of visibility; None without a dataplane.
    pub visibility: Option<Arc<crate::visibility::Visibility>>,
}

/// The policy in force, with names (see `ApiState::in_force`).
#[derive(Debug)]
pub struct InForce {
    pub snapshot: Arc<microseg_dataplane::pipeline::PolicySnapshot>,
    pub book: Arc<RuleBook>,
    pub resolver: Resolver,
}

/// Every route, for the OpenAPI check: (method, path).
pub const ROUTES: [(&str, &str); 24] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/status"),
    ("get", "/v1/policy"),
    ("put", "/v1/policy"),
    ("post", "/v1/policy/validate"),
    ("get", "/v1/policy/history"),
    ("post", "/v1/policy/rollback/{version}"),
    ("get", "/v1/workloads/{name}"),
    ("put", "/v1/workloads/{name}"),
    ("delete", "/v1/workloads/{name}"),
    ("get", "/v1/workloads"),
    ("get", "/v1/flows"),
    ("get", "/v1/flows/stream"),
    ("get", "/v1/explain"),
    ("get", "/v1/map"),
    ("get", "/v1/quarantine"),
    ("post", "/v1/quarantine"),
    ("delete", "/v1/quarantine/{target}"),
    ("post", "/v1/policy/impact"),
    ("get", "/v1/recommendations"),
    ("post", "/v1/reachability"),
    ("get", "/"),
];

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .route("/v1/status", get(status::status))
        .route(
            "/v1/policy",
            get(policy::get_policy).put(policy::put_policy),
        )
        .route("/v1/policy/validate", post(policy::validate))
        .route("/v1/policy/impact", post(impact::impact))
        .route("/v1/policy/history", get(policy::history))
        .route("/v1/policy/rollback/{version}", post(policy::rollback))
        .route("/v1/workloads", get(policy::list_workloads))
        .route(
            "/v1/workloads/{name}",
            get(policy::get_workload)
                .put(policy::put_workload)
                .delete(policy::delete_workload),
        )
        .route("/v1/flows", get(flows::list))
        .route("/v1/flows/stream", get(flows::stream))
        .route("/v1/explain", get(explain::explain))
        .route("/v1/map", get(map::map))
        .route("/v1/recommendations", get(learn::recommendations))
        .route("/v1/reachability", post(reach::reachability))
        .route(
            "/v1/quarantine",
            get(quarantine::list).post(quarantine::add),
        )
        .route("/v1/quarantine/{target}", delete(quarantine::lift))
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .with_state(state)
}

/// Serves the API on `listener` (plain TCP, or `tls::TlsListener`) until
/// `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

impl ApiState {
    /// The caller behind the request's token, if it may act with `role`.
    pub fn authorize(
        &self,
        headers: &axum::http::HeaderMap,
        role: Role,
    ) -> Result<Caller, ApiError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if header.is_none() && self.anonymous_reads && role == Role::Viewer {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Role::Viewer,
            });
        }
        let caller = self.tokens.identify(header).ok_or_else(|| {
            ApiError::unauthorized(if header.is_none() {
                "send `Authorization: Bearer TOKEN`"
            } else {
                "the token is not known"
            })
        })?;
        if caller.role < role {
            return Err(ApiError::forbidden(format!(
                "`{}` is a viewer; this needs the admin role",
                caller.name
            )));
        }
        Ok(caller)
    }

    /// The policy in force: its snapshot, the names of its rules (of the
    /// same generation) and its workloads; from the engine, or else the
    /// appliance's rules file.
    pub fn in_force(&self) -> Result<InForce, ApiError> {
        if let Some(engine) = &self.engine {
            // The snapshot and the rule book are published one after the
            // other; read until both are of one generation.
            loop {
                let book = engine.rules();
                let snapshot = engine.cell().load_full();
                if snapshot.generation == book.generation {
                    let mut resolver = Resolver::default();
                    resolver.set_workloads(&engine.current().1);
                    resolver.add_generation(Arc::clone(&book));
                    return Ok(InForce {
                        snapshot,
                        book,
                        resolver,
                    });
                }
                std::thread::yield_now();
            }
        }
        let appliance = self
            .appliance
            .as_ref()
            .ok_or_else(|| ApiError::not_found("no policy is in force in this process"))?;
        let snapshot = appliance.policy();
        let book = Arc::new(match appliance.rules() {
            Some(rules) => Resolver::rules_file_book(snapshot.generation, &rules),
            None => RuleBook::default(),
        });
        let mut resolver = Resolver::default();
        resolver.add_generation(Arc::clone(&book));
        Ok(InForce {
            snapshot,
            book,
            resolver,
        })
    }

    /// The engine, or 404 when the appliance runs from a rules file.
    pub fn engine(&self) -> Result<&Arc<PolicyEngine>, ApiError> {
        self.engine.as_ref().ok_or_else(|| {
            ApiError::not_found(
                "the appliance runs from a rules file; configure `policy` to manage policy here",
            )
        })
    }
}

#[cfg(test)]
mod tests;
