//! Every route and error path, in process (`oneshot`), without root: the
//! engine publishes into a cell the tests read back.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use microseg_dataplane::packet::proto;
use serde_json::Value;
use tower::ServiceExt;

use super::*;

mod visibility;
use crate::engine::PolicyEngine;
use crate::store::Store;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const LIMIT: usize = 64 * 1024;

const POLICY: &str = r#"{
  "workloads": [
    {"name": "web-1", "addresses": ["10.1.0.1"], "labels": {"role": "web"}},
    {"name": "app-1", "addresses": ["10.1.0.2"], "labels": {"role": "app"}}
  ],
  "policies": [{"name": "shop", "rules": [
    {"name": "web-to-app", "from": "role=web", "to": "role=app", "services": ["tcp/8080"], "action": "allow"}
  ]}]
}"#;

struct Bed {
    state: Arc<ApiState>,
    engine: Arc<PolicyEngine>,
    dir: std::path::PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bed(name: &str) -> Bed {
    let dir = std::env::temp_dir().join(format!("microseg-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).expect("store");
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let observer: Arc<dyn crate::engine::SwapObserver> = Arc::clone(&metrics) as _;
    let engine = Arc::new(
        PolicyEngine::restore(store, None, Some(observer))
            .expect("restore")
            .engine,
    );
    let tokens = Tokens::parse(
        &format!("admin alice {ADMIN}\nviewer grafana {VIEWER}\n"),
        "test",
    )
    .expect("tokens");
    let state = Arc::new(ApiState {
        engine: Some(Arc::clone(&engine)),
        appliance: None,
        tokens,
        anonymous_reads: false,
        body_limit: LIMIT,
        metrics,
        visibility: None,
    });
    Bed { state, engine, dir }
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    json: Value,
    text: String,
}

async fn call(
    bed: &Bed,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(kind) = content_type {
        request = request.header(header::CONTENT_TYPE, kind);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body.to_string())).expect("request");
    let response = router(Arc::clone(&bed.state))
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        etag,
        json,
        text,
    }
}

fn passes(bed: &Bed, src: &str, dst: &str, port: u16) -> bool {
    let tcp = crate::test_support::flow(src, dst, proto::TCP, port);
    bed.engine.cell().load().decide(&tcp).pass
}

/// An error reply: the status, JSON with `error` and `detail`.
fn assert_error(reply: &Reply, status: StatusCode, error: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.json["error"], error, "{}", reply.text);
    assert!(
        reply.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        reply.text
    );
}

const JSON: Option<&str> = Some("application/json");

/// (content type, body, extra headers, expected status, expected error)
type BadCase<'a> = (
    Option<&'a str>,
    &'a str,
    &'a [(&'a str, &'a str)],
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn health_readiness_and_metrics() {
    let bed = bed("health");
    let health = call(&bed, Method::GET, "/healthz", None, None, "", &[]).await;
    assert_eq!(
        (health.status, health.text.as_str()),
        (StatusCode::OK, "ok\n")
    );
    let ready = call(&bed, Method::GET, "/readyz", None, None, "", &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no dataplane here"
    );
    call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[],
    )
    .await;
    let metrics = call(&bed, Method::GET, "/metrics", None, None, "", &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.text.contains("microseg_policy_generation 2"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("microseg_policy_swap_duration_seconds_count 1"),
        "{}",
        metrics.text
    );
    let status = call(&bed, Method::GET, "/v1/status", Some(VIEWER), None, "", &[]).await;
    assert_error(&status, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn tokens_and_roles_guard_every_route() {
    let bed = bed("auth");
    let none = call(&bed, Method::GET, "/v1/policy", None, None, "", &[]).await;
    assert_error(&none, StatusCode::UNAUTHORIZED, "unauthorized");
    let unknown = call(
        &bed,
        Method::GET,
        "/v1/policy",
        Some("not-a-token-at-all"),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "unauthorized");
    let viewer_reads = call(&bed, Method::GET, "/v1/policy", Some(VIEWER), None, "", &[]).await;
    assert_eq!(viewer_reads.status, StatusCode::OK);
    for (method, path) in [
        (Method::PUT, "/v1/policy"),
        (Method::POST, "/v1/policy/rollback/1"),
        (Method::PUT, "/v1/workloads/x"),
        (Method::DELETE, "/v1/workloads/x"),
    ] {
        let reply = call(&bed, method.clone(), path, Some(VIEWER), JSON, POLICY, &[]).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
        let reply = call(&bed, method, path, None, JSON, POLICY, &[]).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(bed.engine.current().0, 1, "nothing changed");
}

#[tokio::test]
async fn put_policy_publishes_a_new_generation_atomically() {
    let bed = bed("put");
    let before = call(&bed, Method::GET, "/v1/policy", Some(VIEWER), None, "", &[]).await;
    assert_eq!(before.etag.as_deref(), Some("\"1\""));
    assert!(
        !passes(&bed, "10.1.0.1", "10.1.0.2", 8080),
        "default deny at first"
    );

    let put = call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.etag.as_deref(), Some("\"2\""));
    assert_eq!(
        (
            put.json["version"].as_u64(),
            put.json["generation"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert!(passes(&bed, "10.1.0.1", "10.1.0.2", 8080));
    assert!(!passes(&bed, "10.1.0.2", "10.1.0.1", 8080));

    let get = call(&bed, Method::GET, "/v1/policy", Some(VIEWER), None, "", &[]).await;
    assert_eq!(get.json["policies"][0]["rules"][0]["name"], "web-to-app");

    // YAML works too; If-Match with the current ETag is accepted.
    let yaml =
        "policies:\n  - name: open\n    rules:\n      - {from: any, to: any, action: allow}\n";
    let put = call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        Some("application/yaml"),
        yaml,
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert!(passes(&bed, "10.1.0.2", "10.1.0.1", 22));
    // A stale ETag is a conflict, and changes nothing.
    let stale = call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_error(&stale, StatusCode::CONFLICT, "conflict");
    assert_eq!(bed.engine.current().0, 3);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_right_status_and_changes_nothing() {
    let bed = bed("bad");
    call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[],
    )
    .await;
    let generation = bed.engine.generation();

    let invalid = r#"{"policies": [{"name": "p", "rules": [
        {"from": "any", "to": "any", "services": ["tcp/443", "tcp/70000"], "action": "allow"}]}]}"#;
    let reply = call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        invalid,
        &[],
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_policy");
    assert_eq!(reply.json["path"], "policies[0].rules[0].services[1]");
    assert!(reply.json["problems"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("port 70000 out of range")));

    let cases: [BadCase<'_>; 6] = [
        (
            JSON,
            "{not json",
            &[],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
        (
            JSON,
            r#"{"polices": []}"#,
            &[],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
        (
            Some("text/plain"),
            POLICY,
            &[],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            None,
            POLICY,
            &[],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            JSON,
            POLICY,
            &[("if-match", "yesterday")],
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Some("application/yaml"),
            "workloads: [",
            &[],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
    ];
    for (kind, body, extra, status, error) in cases {
        let reply = call(
            &bed,
            Method::PUT,
            "/v1/policy",
            Some(ADMIN),
            kind,
            body,
            extra,
        )
        .await;
        assert_error(&reply, status, error);
    }
    let huge = format!(
        r#"{{"ip_lists": [{{"name": "big", "cidrs": [{}]}}]}}"#,
        vec!["\"10.0.0.0/8\""; LIMIT / 10].join(",")
    );
    let reply = call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        &huge,
        &[],
    )
    .await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    assert_eq!(bed.engine.generation(), generation, "nothing published");
    assert_eq!(bed.engine.current().0, 2, "nothing stored");
    let unknown = call(
        &bed,
        Method::GET,
        "/v1/nothing",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let wrong = call(
        &bed,
        Method::DELETE,
        "/v1/policy",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn validate_is_a_dry_run() {
    let bed = bed("validate");
    let bad = r#"{"policies": [{"name": "p", "rules": [{"from": "role=", "to": "any", "action": "allow"}]}]}"#;
    let reply = call(
        &bed,
        Method::POST,
        "/v1/policy/validate",
        Some(VIEWER),
        JSON,
        bad,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["valid"], false);
    assert_eq!(reply.json["errors"][0]["path"], "policies[0].rules[0].from");
    let good = call(
        &bed,
        Method::POST,
        "/v1/policy/validate",
        Some(VIEWER),
        JSON,
        POLICY,
        &[],
    )
    .await;
    assert_eq!(good.json["valid"], true, "{}", good.text);
    assert_eq!(bed.engine.current().0, 1, "nothing applied");
}

#[tokio::test]
async fn history_and_rollback() {
    let bed = bed("history");
    call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[],
    )
    .await;
    assert!(passes(&bed, "10.1.0.1", "10.1.0.2", 8080));
    let rollback = call(
        &bed,
        Method::POST,
        "/v1/policy/rollback/1",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.text);
    assert_eq!(rollback.json["version"], 3);
    assert!(
        !passes(&bed, "10.1.0.1", "10.1.0.2", 8080),
        "version 1 is back in force"
    );
    let history = call(
        &bed,
        Method::GET,
        "/v1/policy/history",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    let versions = history.json.as_array().expect("a list");
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[1]["author"], "alice");
    assert_eq!(versions[2]["summary"], "rollback to version 1");
    let missing = call(
        &bed,
        Method::POST,
        "/v1/policy/rollback/99",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    let word = call(
        &bed,
        Method::POST,
        "/v1/policy/rollback/latest",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&word, StatusCode::BAD_REQUEST, "bad_request");
    let trail = bed.engine.store().audit_trail().expect("audit");
    let actions: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| (e.who.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("startup", "initial policy"),
            ("alice", "apply"),
            ("alice", "rollback to version 1")
        ]
    );
    assert!(
        trail[1].detail.contains("workloads +2"),
        "{}",
        trail[1].detail
    );
}

#[tokio::test]
async fn workloads_come_and_go_without_a_full_push() {
    let bed = bed("workloads");
    call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[],
    )
    .await;
    let missing = call(
        &bed,
        Method::GET,
        "/v1/workloads/web-2",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    assert!(!passes(&bed, "10.1.0.9", "10.1.0.2", 8080));

    let web2 = r#"{"addresses": ["10.1.0.9"], "labels": {"role": "web"}}"#;
    let put = call(
        &bed,
        Method::PUT,
        "/v1/workloads/web-2",
        Some(ADMIN),
        JSON,
        web2,
        &[],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert!(
        passes(&bed, "10.1.0.9", "10.1.0.2", 8080),
        "the selector binds the newcomer"
    );
    let get = call(
        &bed,
        Method::GET,
        "/v1/workloads/web-2",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(get.json["addresses"][0], "10.1.0.9");
    let list = call(
        &bed,
        Method::GET,
        "/v1/workloads",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(list.json.as_array().map(Vec::len), Some(3));

    let mismatch = call(
        &bed,
        Method::PUT,
        "/v1/workloads/web-2",
        Some(ADMIN),
        JSON,
        r#"{"name": "other"}"#,
        &[],
    )
    .await;
    assert_error(&mismatch, StatusCode::BAD_REQUEST, "bad_request");
    let taken = r#"{"addresses": ["10.1.0.2"]}"#;
    let clash = call(
        &bed,
        Method::PUT,
        "/v1/workloads/web-3",
        Some(ADMIN),
        JSON,
        taken,
        &[],
    )
    .await;
    assert_error(&clash, StatusCode::BAD_REQUEST, "invalid_policy");
    assert!(
        clash.json["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(".addresses[0]")),
        "{}",
        clash.text
    );

    let delete = call(
        &bed,
        Method::DELETE,
        "/v1/workloads/web-2",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(delete.status, StatusCode::OK);
    assert!(!passes(&bed, "10.1.0.9", "10.1.0.2", 8080));
    let again = call(
        &bed,
        Method::DELETE,
        "/v1/workloads/web-2",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let mut documented = Vec::new();
    for (route, methods) in doc["paths"].as_mapping().expect("paths") {
        for (method, _) in methods.as_mapping().expect("methods") {
            documented.push((
                method.as_str().unwrap_or("").to_string(),
                route.as_str().unwrap_or("").to_string(),
            ));
        }
    }
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
}
