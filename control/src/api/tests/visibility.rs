//! The visibility routes in process: a pipeline judges synthetic frames
//! under the engine's policy, the collector records them, the API serves
//! them (list, filters, errors, the live stream).

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use microseg_dataplane::conntrack::{ConntrackConfig, ConntrackTable};
use microseg_dataplane::pipeline::Pipeline;
use microseg_dataplane::switch::{MacTable, SwitchConfig};

use super::*;
use crate::flows::{Clock, CollectorConfig, Names};
use crate::test_support::{send, tcp_syn};
use crate::visibility::{Attached, Visibility, VisibilityConfig};

const WEB: [u8; 4] = [10, 1, 0, 1];
const APP: [u8; 4] = [10, 1, 0, 2];

/// The API bed with a dataplane pipeline and visibility behind it.
struct Seen {
    bed: Bed,
    pipeline: Arc<Pipeline>,
    visibility: Arc<Visibility>,
    started: Instant,
}

async fn seen(name: &str) -> Seen {
    let mut bed = bed(name);
    let reply = call(
        &bed,
        Method::PUT,
        "/v1/policy",
        Some(ADMIN),
        JSON,
        POLICY,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let pipeline = Arc::new(Pipeline::new(
        Arc::clone(bed.engine.cell()),
        Arc::new(ConntrackTable::new(ConntrackConfig::default())),
        Arc::new(MacTable::new(SwitchConfig::default())),
        1024,
    ));
    let started = Instant::now();
    let config = VisibilityConfig {
        flow_capacity: 1000,
        collector: CollectorConfig {
            interval: Duration::from_millis(5),
            ..CollectorConfig::default()
        },
        // No learning: every edge is new, so anomalies show at once.
        learning: Duration::ZERO,
    };
    let visibility = Arc::new(
        Visibility::start(
            Arc::clone(&pipeline),
            Clock::new(started),
            Names::Engine(Arc::clone(&bed.engine)),
            Attached::default(),
            config,
        )
        .expect("collector"),
    );
    let state = Arc::new(ApiState {
        engine: Some(Arc::clone(&bed.engine)),
        appliance: None,
        tokens: Tokens::parse(
            &format!("admin alice {ADMIN}\nviewer grafana {VIEWER}\n"),
            "test",
        )
        .expect("tokens"),
        anonymous_reads: false,
        body_limit: LIMIT,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        visibility: Some(Arc::clone(&visibility)),
    });
    bed.state = state;
    Seen {
        bed,
        pipeline,
        visibility,
        started,
    }
}

impl Seen {
    /// A viewer's GET.
    async fn ask(&self, path: &str) -> Reply {
        call(&self.bed, Method::GET, path, Some(VIEWER), None, "", &[]).await
    }

    /// PUTs a policy document as the admin; it must be accepted.
    async fn put_policy(&self, document: &str) {
        let reply = call(
            &self.bed,
            Method::PUT,
            "/v1/policy",
            Some(ADMIN),
            JSON,
            document,
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }

    /// Each GET is refused with 400 and names its bad parameter.
    async fn refuses(&self, cases: &[(&str, &str)]) {
        for (path, parameter) in cases {
            let reply = self.ask(path).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                reply.text
            );
            assert_eq!(reply.json["path"], *parameter, "{path}");
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// GETs `path` until `ready` holds for its JSON (the collector runs
    /// on its own thread), or fails after two seconds.
    async fn poll(&self, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let reply = call(&self.bed, Method::GET, path, Some(VIEWER), None, "", &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            if ready(&reply.json) {
                return reply.json;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: never ready: {}",
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn flows_of(json: &Value) -> Vec<Value> {
    json["flows"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn flows_are_listed_and_filtered() {
    let seen = seen("flows-list").await;
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    let all = seen.poll("/v1/flows", |j| flows_of(j).len() == 2).await;
    let flows = flows_of(&all);
    let denied = flows
        .iter()
        .find(|f| f["verdict"] == "denied")
        .expect("a denied flow");
    assert_eq!(denied["src"]["workload"], "app-1");
    assert_eq!(denied["dst"]["workload"], "web-1");
    assert_eq!(denied["dport"], 22);
    assert_eq!(denied["default"], true);
    let allowed = flows
        .iter()
        .find(|f| f["verdict"] == "allowed")
        .expect("an allowed flow");
    assert_eq!(allowed["kind"], "start");
    assert_eq!(allowed["policy"], "shop");
    assert_eq!(allowed["rule"], "web-to-app");
    assert_eq!(allowed["src"]["labels"]["role"], "web");
    assert_eq!(all["store"]["recorded"], 2);
    assert_eq!(all["lost"]["verdict_queue"], 0);

    let only_denied = seen.poll("/v1/flows?verdict=denied", |_| true).await;
    assert_eq!(flows_of(&only_denied).len(), 1);
    let from_web = seen
        .poll("/v1/flows?src=web-1&dst=10.1.0.0/24", |_| true)
        .await;
    assert_eq!(flows_of(&from_web).len(), 1);
    assert_eq!(flows_of(&from_web)[0]["rule"], "web-to-app");
    let limited = seen.poll("/v1/flows?limit=1", |_| true).await;
    assert_eq!(flows_of(&limited).len(), 1);
}

#[tokio::test]
async fn flow_queries_refuse_bad_parameters_and_callers() {
    let seen = seen("flows-errors").await;
    for (path, parameter) in [
        ("/v1/flows?verdict=perhaps", "verdict"),
        ("/v1/flows?limit=0", "limit"),
        ("/v1/flows?limit=100000", "limit"),
        ("/v1/flows?since=yesterday", "since"),
        ("/v1/flows?colour=red", "colour"),
        ("/v1/flows/stream?verdict=x", "verdict"),
    ] {
        let reply = call(&seen.bed, Method::GET, path, Some(VIEWER), None, "", &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text
        );
        assert_eq!(reply.json["path"], parameter, "{path}: {}", reply.text);
        assert_eq!(reply.json["error"], "bad_request");
    }
    let reply = call(&seen.bed, Method::GET, "/v1/flows", None, None, "", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = call(
        &seen.bed,
        Method::POST,
        "/v1/flows",
        Some(ADMIN),
        JSON,
        "{}",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    // Without a dataplane there is nothing to show.
    let plain = bed("flows-none");
    let reply = call(
        &plain,
        Method::GET,
        "/v1/flows",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
}

#[tokio::test]
async fn the_stream_sends_new_flows_and_ends_when_visibility_stops() {
    let seen = seen("flows-stream").await;
    let request = Request::builder()
        .uri("/v1/flows/stream?verdict=denied")
        .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
        .body(Body::empty())
        .expect("request");
    let response = router(Arc::clone(&seen.bed.state))
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    // One allowed flow (filtered out), then one denied.
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("an event within 2 s")
            .expect("the stream goes on")
            .expect("a frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    assert!(text.starts_with("event: flow\n"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    let record: Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(record["verdict"], "denied");
    assert_eq!(record["dport"], 22);
    assert!(text.contains(&format!("id: {}", record["id"])), "{text}");
    seen.visibility.stop();
    let end = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("the stream ends when visibility stops");
    assert!(end.is_none(), "no more events");
}

/// Two policies that overlap on app's ports: the later one matches too.
const OVERLAPPING: &str = r#"{
  "workloads": [
    {"name": "web-1", "addresses": ["10.1.0.1", "fd00::1"], "labels": {"role": "web"}},
    {"name": "app-1", "addresses": ["10.1.0.2", "fd00::2"], "labels": {"role": "app"}}
  ],
  "policies": [
    {"name": "shop", "priority": 10, "rules": [
      {"name": "web-to-app", "from": "role=web", "to": "role=app", "services": ["tcp/8080"], "action": "allow"}
    ]},
    {"name": "lockdown", "priority": 20, "rules": [
      {"name": "app-ports", "from": "any", "to": "role=app", "services": ["tcp/8000-8100"], "action": "deny"}
    ]}
  ]
}"#;

#[tokio::test]
async fn explain_names_the_deciding_rule_the_losers_and_the_connection() {
    let seen = seen("explain").await;
    seen.put_policy(OVERLAPPING).await;
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    let allowed = seen
        .ask("/v1/explain?src=web-1&dst=app-1&proto=tcp&dport=8080&sport=40000")
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    let json = &allowed.json;
    assert_eq!(json["verdict"], "allowed", "{json}");
    assert_eq!(json["decided_by"]["policy"], "shop");
    assert_eq!(json["decided_by"]["rule"], "web-to-app");
    assert_eq!(json["also_matching"][0]["rule"], "app-ports", "{json}");
    assert_eq!(json["src"]["workload"], "web-1");
    assert_eq!(json["question"]["src"], "10.1.0.1");
    assert_eq!(json["connection"]["state"], "SYN_SENT", "{json}");
    assert_eq!(json["connection"]["admitted_by"]["rule"], "web-to-app");
    assert_eq!(json["connection"]["packets"][0], 1);

    // Another port in the range: the lockdown decides; no connection.
    let denied = seen
        .ask("/v1/explain?src=10.1.0.1&dst=app-1&dport=8081")
        .await;
    assert_eq!(denied.json["verdict"], "denied", "{}", denied.text);
    assert_eq!(denied.json["decided_by"]["rule"], "app-ports");
    assert_eq!(
        denied.json["also_matching"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(denied.json["connection"], Value::Null);
    // Nothing matches: the default action, in IPv6 when both have it.
    let default = seen
        .ask("/v1/explain?src=app-1&dst=fd00::1&proto=icmpv6")
        .await;
    assert_eq!(default.json["verdict"], "denied", "{}", default.text);
    assert_eq!(default.json["decided_by"], Value::Null);
    assert_eq!(default.json["default_action"], "deny");
    assert_eq!(default.json["question"]["src"], "fd00::2");
    assert_eq!(default.json["question"]["dport"], 128);
}

#[tokio::test]
async fn explain_answers_for_a_recorded_flow_and_refuses_bad_questions() {
    let seen = seen("explain-flow").await;
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    let flows = seen
        .poll("/v1/flows?verdict=denied", |j| !flows_of(j).is_empty())
        .await;
    let id = flows_of(&flows)[0]["id"].as_u64().expect("id");
    let path = format!("/v1/explain?flow={id}");
    let reply = call(&seen.bed, Method::GET, &path, Some(VIEWER), None, "", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["verdict"], "denied");
    assert_eq!(reply.json["question"]["dport"], 22);
    assert_eq!(reply.json["question"]["sport"], 40001);

    for (path, status, parameter) in [
        ("/v1/explain?dst=app-1&dport=80", 400, "src"),
        ("/v1/explain?src=web-1&dst=nobody&dport=80", 400, "dst"),
        ("/v1/explain?src=web-1&dst=app-1", 400, "dport"),
        ("/v1/explain?src=web-1&dst=app-1&dport=70000", 400, "dport"),
        ("/v1/explain?src=web-1&dst=app-1&proto=gre2", 400, "proto"),
        ("/v1/explain?src=10.0.0.0/8&dst=app-1&dport=1", 400, "src"),
        (
            "/v1/explain?src=web-1&dst=app-1&dport=1&colour=red",
            400,
            "colour",
        ),
        ("/v1/explain?flow=1&src=web-1", 400, "flow"),
        ("/v1/explain?flow=abc", 400, "flow"),
    ] {
        let reply = call(&seen.bed, Method::GET, path, Some(VIEWER), None, "", &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text);
        assert_eq!(reply.json["path"], parameter, "{path}: {}", reply.text);
    }
    let reply = call(
        &seen.bed,
        Method::GET,
        "/v1/explain?flow=99999",
        Some(VIEWER),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let reply = call(
        &seen.bed,
        Method::GET,
        "/v1/explain?src=web-1&dst=app-1&dport=1",
        None,
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_map_shows_observed_edges_marked_by_the_policy_in_force() {
    let seen = seen("map").await;
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    let json = seen
        .poll("/v1/map", |j| {
            j["edges"].as_array().is_some_and(|e| e.len() == 2)
        })
        .await;
    let edge = |from: &str| {
        json["edges"]
            .as_array()
            .and_then(|edges| edges.iter().find(|e| e["from"] == from).cloned())
            .expect("edge")
    };
    assert_eq!(edge("web-1")["to"], "app-1");
    assert_eq!(edge("web-1")["service"], "tcp/8080");
    assert_eq!(edge("web-1")["policy_now"], "allowed");
    assert_eq!(edge("app-1")["policy_now"], "denied");
    assert_eq!(edge("app-1")["denied"], true);
    let nodes: Vec<&str> = json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(nodes, vec!["app-1", "web-1"]);

    // Grouped by role; then as DOT and SVG.
    let grouped = seen.ask("/v1/map?group_by=role").await;
    assert_eq!(grouped.json["group_by"][0], "role", "{}", grouped.text);
    assert!(grouped.text.contains("\"role=web\""), "{}", grouped.text);
    let dot = seen.ask("/v1/map?format=dot").await;
    assert_eq!(dot.status, StatusCode::OK);
    assert!(dot.text.contains("\"web-1\" -> \"app-1\""), "{}", dot.text);
    let svg = seen.ask("/v1/map?format=svg&group_by=role").await;
    assert!(svg.text.starts_with("<svg"), "{}", svg.text);
    assert!(svg.text.contains("data-from=\"role=app\" data-to=\"role=web\" data-service=\"tcp/22\" data-verdict=\"denied\""), "{}", svg.text);
    // A policy change that allows app -> web ssh: the edge is now allowed,
    // though the flow seen was denied.
    let allow_ssh = POLICY.replace(
        r#"{"name": "web-to-app""#,
        r#"{"name": "app-ssh", "from": "role=app", "to": "role=web", "services": ["tcp/22"], "action": "allow"},
    {"name": "web-to-app""#,
    );
    seen.put_policy(&allow_ssh).await;
    let after = seen.ask("/v1/map").await;
    let ssh = after.json["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|e| e["service"] == "tcp/22").cloned())
        .expect("ssh edge");
    assert_eq!(ssh["policy_now"], "allowed", "{ssh}");
    assert_eq!(ssh["denied"], true, "what was seen stays");

    seen.refuses(&[
        ("/v1/map?format=png", "format"),
        ("/v1/map?group_by=a;b", "group_by"),
        ("/v1/map?since=soon", "since"),
        ("/v1/map?zoom=2", "zoom"),
    ])
    .await;
}

const WEB_TO_APP: &str = "/v1/explain?src=web-1&dst=app-1&dport=8080";

/// The API bed with quarantine set up (state beside the engine's), and
/// alerts written to `alerts.jsonl` there if `alerts`.
async fn guarded(name: &str) -> (Seen, Arc<crate::quarantine::Quarantines>) {
    guarded_with(name, false).await
}

async fn guarded_with(name: &str, alerts: bool) -> (Seen, Arc<crate::quarantine::Quarantines>) {
    let mut seen = seen(name).await;
    let quarantines = Arc::new(
        crate::quarantine::Quarantines::open(
            Arc::new(Store::open(&seen.bed.dir).expect("store")),
            Some(Arc::clone(&seen.bed.engine)),
        )
        .expect("quarantines"),
    );
    let visibility = Arc::new(
        Visibility::start(
            Arc::clone(&seen.pipeline),
            Clock::new(seen.started),
            Names::Engine(Arc::clone(&seen.bed.engine)),
            Attached {
                quarantines: Some(Arc::clone(&quarantines)),
                alerts: alerts.then(|| {
                    let config: crate::alerts::AlertConfig = serde_yaml::from_str(&format!(
                        "sinks:\n  - file: {{path: {}}}\n",
                        seen.bed.dir.join("alerts.jsonl").display()
                    ))
                    .expect("alert config");
                    Arc::new(crate::alerts::AlertHub::start(&config).expect("hub"))
                }),
            },
            VisibilityConfig {
                collector: CollectorConfig {
                    interval: Duration::from_millis(5),
                    ..CollectorConfig::default()
                },
                ..VisibilityConfig::default()
            },
        )
        .expect("visibility"),
    );
    seen.visibility.stop();
    seen.visibility = Arc::clone(&visibility);
    let state = ApiState {
        visibility: Some(visibility),
        tokens: Tokens::parse(
            &format!("admin alice {ADMIN}\nviewer grafana {VIEWER}\n"),
            "test",
        )
        .expect("tokens"),
        engine: seen.bed.state.engine.clone(),
        appliance: None,
        anonymous_reads: false,
        body_limit: LIMIT,
        metrics: Arc::clone(&seen.bed.state.metrics),
    };
    seen.bed.state = Arc::new(state);
    (seen, quarantines)
}

/// `POST /v1/quarantine` with `body` as the holder of `token`.
async fn post_quarantine(seen: &Seen, token: &str, body: &str) -> Reply {
    call(
        &seen.bed,
        Method::POST,
        "/v1/quarantine",
        Some(token),
        JSON,
        body,
        &[],
    )
    .await
}

#[tokio::test]
async fn quarantine_through_the_api_isolates_and_lifts() {
    let (seen, _quarantines) = guarded("quarantine").await;
    assert_eq!(seen.ask(WEB_TO_APP).await.json["verdict"], "allowed");
    let body = r#"{"target": "app-1", "ttl_seconds": 3600, "reason": "beaconing",
                  "break_glass": [{"from": "10.1.0.9/32", "services": ["tcp/22"]}]}"#;
    let reply = post_quarantine(&seen, ADMIN, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["quarantine"]["target"], "app-1");
    assert_eq!(reply.json["quarantine"]["who"], "alice");
    assert!(reply.json["generation"].as_u64().is_some());
    assert_eq!(seen.ask(WEB_TO_APP).await.json["verdict"], "denied");
    let glass = seen
        .ask("/v1/explain?src=10.1.0.9&dst=app-1&dport=22")
        .await;
    assert_eq!(glass.json["verdict"], "allowed", "{}", glass.text);
    assert_eq!(glass.json["decided_by"]["rule"], "break-glass[0]");
    let list = seen.ask("/v1/quarantine").await;
    assert_eq!(list.json[0]["target"], "app-1", "{}", list.text);
    assert!(list.json[0]["expires"].as_u64().is_some());

    // Again: a conflict; errors name the field; viewers may not.
    let again = post_quarantine(&seen, ADMIN, body).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    for (body, status, path) in [
        (r#"{"target": "nobody"}"#, 400, Some("target")),
        (
            r#"{"target": "web-1", "ttl_seconds": 0}"#,
            400,
            Some("ttl_seconds"),
        ),
        (
            r#"{"target": "web-1", "break_glass": [{"from": "role=", "services": ["tcp/22"]}]}"#,
            400,
            Some("break_glass[0].from"),
        ),
        (r#"{"target": "web-1", "colour": "red"}"#, 400, None),
        (r#"{"target": "#, 400, None),
    ] {
        let reply = post_quarantine(&seen, ADMIN, body).await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {}", reply.text);
        if let Some(path) = path {
            assert_eq!(reply.json["path"], path, "{body}: {}", reply.text);
        }
    }
    let viewer = post_quarantine(&seen, VIEWER, body).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);
    let list = seen.ask("/v1/quarantine").await;
    assert_eq!(
        list.json.as_array().map(Vec::len),
        Some(1),
        "refused requests changed nothing"
    );

    let lift = call(
        &seen.bed,
        Method::DELETE,
        "/v1/quarantine/app-1",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(lift.status, StatusCode::OK, "{}", lift.text);
    assert_eq!(seen.ask(WEB_TO_APP).await.json["verdict"], "allowed");
    let none = call(
        &seen.bed,
        Method::DELETE,
        "/v1/quarantine/app-1",
        Some(ADMIN),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);
    // Without quarantine set up: 404.
    let unset = self::seen("quarantine-unset").await;
    let reply = unset.ask("/v1/quarantine").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
}

#[tokio::test]
async fn impact_lists_the_recorded_flows_a_candidate_would_change() {
    let seen = seen("impact").await;
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40002, 8080), seen.now());
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    seen.poll("/v1/flows", |j| flows_of(j).len() == 3).await;
    // The candidate: web -> app only in monitor mode as a deny, and ssh
    // from app to web allowed.
    let candidate = r#"{
      "workloads": [
        {"name": "web-1", "addresses": ["10.1.0.1"], "labels": {"role": "web"}},
        {"name": "app-1", "addresses": ["10.1.0.2"], "labels": {"role": "app"}}
      ],
      "policies": [{"name": "next", "rules": [
        {"name": "no-web", "from": "role=web", "to": "role=app", "services": ["tcp/8080"], "action": "deny", "mode": "monitor"},
        {"name": "ssh", "from": "role=app", "to": "role=web", "services": ["tcp/22"], "action": "allow"}
      ]}]
    }"#;
    let reply = call(
        &seen.bed,
        Method::POST,
        "/v1/policy/impact",
        Some(VIEWER),
        JSON,
        candidate,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let json = &reply.json;
    assert_eq!(json["flows_checked"], 3, "{json}");
    assert_eq!(json["flows_changed"], 3, "{json}");
    assert_eq!(json["transitions"]["allowed -> would_deny"], 2, "{json}");
    assert_eq!(json["transitions"]["denied -> allowed"], 1, "{json}");
    let changes = json["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "grouped by endpoints and service");
    let web = changes
        .iter()
        .find(|c| c["service"] == "tcp/8080")
        .expect("web change");
    assert_eq!(web["flows"], 2);
    assert_eq!(web["rule_now"], "shop/web-to-app");
    assert_eq!(web["rule_candidate"], "next/no-web");
    let ssh = changes
        .iter()
        .find(|c| c["service"] == "tcp/22")
        .expect("ssh change");
    assert_eq!(
        (ssh["now"].as_str(), ssh["candidate"].as_str()),
        (Some("denied"), Some("allowed"))
    );
    assert_eq!(ssh["rule_now"], Value::Null, "the default decided");
    // Nothing was applied.
    let explain = seen.ask("/v1/explain?src=web-1&dst=app-1&dport=8080").await;
    assert_eq!(explain.json["verdict"], "allowed");
    // An invalid candidate: 400 with every problem.
    let bad = r#"{"policies": [{"name": "p", "rules": [{"from": "role=", "to": "any", "action": "allow"}]}]}"#;
    let reply = call(
        &seen.bed,
        Method::POST,
        "/v1/policy/impact",
        Some(VIEWER),
        JSON,
        bad,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json["error"], "invalid_policy");
    assert_eq!(reply.json["path"], "policies[0].rules[0].from");
    let reply = call(
        &seen.bed,
        Method::POST,
        "/v1/policy/impact",
        None,
        JSON,
        candidate,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn recommendations_cover_the_traffic_seen_and_apply_as_they_are() {
    let seen = seen("recommend").await;
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    seen.poll("/v1/flows", |j| flows_of(j).len() == 2).await;
    let reply = seen.ask("/v1/recommendations").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let json = &reply.json;
    assert_eq!(json["flows_used"], 1, "the denied flow is left out: {json}");
    let rules = &json["policy"]["policies"][0]["rules"];
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(rules[0]["from"], "role=web");
    assert_eq!(rules[0]["to"], "role=app");
    assert_eq!(rules[0]["services"][0], "tcp/8080");
    assert_eq!(json["policy"]["policies"][0]["mode"], "monitor");
    // With no learning window both edges are anomalies.
    assert_eq!(json["learning"]["anomalies_total"], 2, "{json}");
    let with_denied = seen
        .ask("/v1/recommendations?include_denied=true&by=role")
        .await;
    assert_eq!(with_denied.json["flows_used"], 2, "{}", with_denied.text);
    // The recommendation is a policy the engine takes as it is.
    let body = json["policy"].to_string();
    seen.put_policy(&body).await;
    let explain = seen.ask("/v1/explain?src=web-1&dst=app-1&dport=8080").await;
    assert_eq!(
        explain.json["decided_by"]["policy"], "recommended",
        "{}",
        explain.text
    );
    seen.refuses(&[
        ("/v1/recommendations?by=", "by"),
        ("/v1/recommendations?include_denied=maybe", "include_denied"),
        ("/v1/recommendations?since=x", "since"),
        ("/v1/recommendations?window=1", "window"),
    ])
    .await;
}

#[tokio::test]
async fn reachability_answers_in_json_and_as_a_report() {
    let seen = seen("reach").await;
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    seen.poll("/v1/flows", |j| flows_of(j).len() == 1).await;
    let bed = &seen.bed;
    let ask = |body: &'static str, query: &'static str| {
        let path = format!("/v1/reachability{query}");
        async move { call(bed, Method::POST, &path, Some(VIEWER), JSON, body, &[]).await }
    };
    let reply = ask(r#"{"from": "role=web", "to": "role=app"}"#, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["reachable"], true);
    assert_eq!(reply.json["paths"][0]["rule"]["rule"], "web-to-app");
    assert_eq!(reply.json["paths"][0]["services"][0], "tcp/8080");
    assert_eq!(reply.json["observed"][0]["flows"], 1, "{}", reply.text);
    let reply = ask(r#"{"from": "role=app", "to": "role=web"}"#, "").await;
    assert_eq!(reply.json["reachable"], false, "{}", reply.text);
    let report = ask(
        r#"{"from": "role=app", "to": "role=web"}"#,
        "?format=markdown",
    )
    .await;
    assert_eq!(report.status, StatusCode::OK);
    assert!(
        report.text.contains("## Verdict: ISOLATED"),
        "{}",
        report.text
    );
    for (body, query, status, path) in [
        (r#"{"from": "any", "to": "role=web"}"#, "", 400, "from"),
        (
            r#"{"from": "role=web", "to": "role=nobody"}"#,
            "",
            400,
            "to",
        ),
        (r#"{"from": "role=web"}"#, "", 400, ""),
        (
            r#"{"from": "role=web", "to": "role=app"}"#,
            "?format=pdf",
            400,
            "format",
        ),
    ] {
        let reply = ask(body, query).await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {}", reply.text);
        if !path.is_empty() {
            assert_eq!(reply.json["path"], path, "{body}: {}", reply.text);
        }
    }
}

#[tokio::test]
async fn denied_flows_and_quarantines_raise_alerts_counted_in_metrics() {
    let (seen, _quarantines) = guarded_with("alerts", true).await;
    send(&seen.pipeline, &tcp_syn(APP, WEB, 40001, 22), seen.now());
    send(&seen.pipeline, &tcp_syn(WEB, APP, 40000, 8080), seen.now());
    let body = r#"{"target": "10.1.0.7", "reason": "test"}"#;
    let reply = post_quarantine(&seen, ADMIN, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let file = seen.bed.dir.join("alerts.jsonl");
    let deadline = Instant::now() + Duration::from_secs(3);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert!(kinds.contains(&"denied"), "{lines:?}");
    assert!(kinds.contains(&"quarantine"), "{lines:?}");
    assert_eq!(kinds.len(), 2, "the allowed flow raises none: {lines:?}");
    let denied = lines
        .iter()
        .find(|l| l["kind"] == "denied")
        .expect("denied");
    assert_eq!(denied["src"], "app-1");
    assert_eq!(denied["dport"], 22);
    assert_eq!(denied["rule"], "default");
    let metrics = seen.ask("/metrics").await;
    assert!(
        metrics.text.contains(&format!(
            "microseg_alerts_sent_total{{sink=\"file {}\"}} 2",
            file.display()
        )),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("microseg_flow_records_total 2"),
        "{}",
        metrics.text
    );
}
