//! Root testbed: visibility and response with real traffic through
//! `microseg run` in policy mode. Pings and TCP between the testbed's
//! namespaces become flow records; the map, explain, impact,
//! recommendations and reachability answer about them; a live stream
//! shows new flows; quarantine isolates a workload in XDP and lifts; and
//! alerts (denied, would-deny, quarantine, anomalies) arrive at a local
//! webhook receiver, over curl-driven API calls.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::appliance::{http_get, RunningAppliance, ScriptTestbed};
use common::testbed::root_or_skip;
use serde_json::Value;

/// web -> app (ping, tcp/8080) allowed; app -> db tcp/5432 denied in
/// monitor mode (it passes and is reported); everything else denied.
fn policy(bed: &ScriptTestbed) -> String {
    let mut text = String::from("workloads:\n");
    for (workload, role) in [
        ("web", "web"),
        ("app", "app"),
        ("db", "db"),
        ("out", "outsider"),
    ] {
        text.push_str(&format!(
            "  - {{name: {workload}, addresses: [{}], labels: {{role: {role}}}}}\n",
            bed.addr(workload)
        ));
    }
    text.push_str(
        "policies:\n  - name: shop\n    rules:\n      - {name: web-to-app, from: role=web, to: role=app, services: [icmp/8, tcp/8080], action: allow}\n      - {name: app-to-db, from: role=app, to: role=db, services: [tcp/5432], action: deny, mode: monitor}\ndefault_action: deny\n",
    );
    text
}

/// A webhook receiver on loopback: answers 200 and keeps every body.
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        // The thread ends with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(json) = serde_json::from_slice(&body) {
                        kept.lock().expect("lock").push(json);
                    }
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self { url, bodies }
    }

    fn kinds(&self) -> Vec<String> {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|b| b["kind"].as_str().map(str::to_string))
            .collect()
    }
}

/// Polls `path` until `ready` holds, or fails after `seconds`.
fn poll(
    appliance: &RunningAppliance,
    path: &str,
    seconds: u64,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let json = appliance.get_json(path);
        if ready(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{path}: never ready: {json}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn flows(json: &Value) -> Vec<Value> {
    json["flows"].as_array().cloned().unwrap_or_default()
}

fn has_flow(json: &Value, src: &str, dst: &str, verdict: &str) -> bool {
    flows(json).iter().any(|f| {
        f["src"]["workload"] == src && f["dst"]["workload"] == dst && f["verdict"] == verdict
    })
}

#[test]
fn real_traffic_is_recorded_explained_mapped_alerted_and_quarantined() {
    if !root_or_skip("real_traffic_is_recorded_explained_mapped_alerted_and_quarantined") {
        return;
    }
    let bed = ScriptTestbed::up("v", 34, 1);
    let webhook = Webhook::start();
    std::fs::write(bed.dir.join("policy.yaml"), policy(&bed)).expect("policy");
    bed.edit_config("rules: rules.yaml", "policy: policy.yaml");
    let mut config = std::fs::read_to_string(bed.config()).expect("config");
    config.push_str(&format!(
        "visibility: {{learning_seconds: 0}}\nalerts:\n  rate_limit: {{per_minute: 600, burst: 100}}\n  sinks:\n    - webhook: {{url: \"{}\", retries: 2, backoff_ms: 50}}\n    - file: {{path: alerts.jsonl}}\n",
        webhook.url
    ));
    std::fs::write(bed.config(), config).expect("config");
    let appliance = RunningAppliance::start(&bed);
    let (app, db) = (bed.addr("app"), bed.addr("db"));

    // A live stream opened before the traffic (curl, 8 s at most).
    let stream = std::process::Command::new("curl")
        .args(["-s", "-N", "--max-time", "8", "-H"])
        .arg(format!("Authorization: Bearer {}", bed.token()))
        .arg(format!("http://{}/v1/flows/stream?verdict=denied", bed.api))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl stream");
    let mut stream = common::appliance::ChildGuard(stream);
    std::thread::sleep(Duration::from_millis(500));

    // Traffic: allowed, denied, and would-deny (monitor mode).
    let _db_server = bed.spawn_server("db", 5432);
    let _app_server = bed.spawn_server("app", 8080);
    std::thread::sleep(Duration::from_millis(300));
    assert!(bed.ping("web", &app, 2, &[]), "web -> app allowed");
    assert!(
        bed.tcp_connect("web", &app, 8080),
        "web -> app tcp/8080 allowed"
    );
    assert!(!bed.ping("out", &app, 1, &[]), "out -> app denied");
    assert!(
        bed.tcp_connect("app", &db, 5432),
        "app -> db passes in monitor mode"
    );

    // Flow records, filtered.
    let all = poll(&appliance, "/v1/flows?limit=100", 5, |j| {
        has_flow(j, "web", "app", "allowed")
            && has_flow(j, "out", "app", "denied")
            && has_flow(j, "app", "db", "would_deny")
    });
    let denied = appliance.get_json("/v1/flows?verdict=denied");
    assert!(
        flows(&denied).iter().all(|f| f["verdict"] == "denied"),
        "{denied}"
    );
    assert!(has_flow(&denied, "out", "app", "denied"), "{denied}");
    let web_app = flows(&all)
        .into_iter()
        .find(|f| f["src"]["workload"] == "web" && f["dport"] == 8080)
        .expect("web -> app tcp/8080 record");
    assert_eq!(web_app["rule"], "web-to-app");
    // The stream saw the denied flow.
    let mut streamed = String::new();
    if let Some(out) = stream.0.stdout.as_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        while Instant::now() < deadline && reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            streamed.push_str(&line);
            if streamed.contains(&format!("\"address\":\"{}\"", bed.addr("out"))) {
                break;
            }
            line.clear();
        }
    }
    drop(stream);
    assert!(streamed.contains("event: flow"), "{streamed}");
    assert!(
        streamed.contains(&format!("\"address\":\"{}\"", bed.addr("out"))),
        "{streamed}"
    );

    // The map: the denied edge is marked, in JSON and SVG.
    let map = appliance.get_json("/v1/map");
    let edge = map["edges"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["from"] == "out" && e["to"] == "app")
                .cloned()
        })
        .expect("out -> app edge");
    assert_eq!(edge["policy_now"], "denied", "{edge}");
    let svg = http_get(bed.api, "/v1/map?format=svg", Some(&bed.token())).expect("svg");
    assert!(svg.contains("data-from=\"out\" data-to=\"app\""), "{svg}");
    // The web page in headless Chromium: the testbed's workloads and the
    // denied edge are drawn; a screenshot is taken.
    if browser::chromium_or_skip("the web page on the testbed") {
        let page = format!("http://{}/#token={}", bed.api, bed.token());
        let dom = browser::dump_dom(&page);
        for workload in ["web", "app", "out"] {
            assert!(
                dom.contains(&format!("data-id=\"{workload}\"")),
                "{workload}: {dom}"
            );
        }
        assert!(
            dom.contains("data-from=\"out\" data-to=\"app\"")
                && dom.contains("data-verdict=\"denied\""),
            "{dom}"
        );
        let png = bed.dir.join("web.png");
        browser::screenshot(&page, &png);
        let bytes = std::fs::read(&png).expect("screenshot");
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{} bytes",
            bytes.len()
        );
    }

    // Explain, on a live connection's tuple and on a recorded flow.
    let explained = appliance.get_json(&format!("/v1/explain?flow={}", web_app["id"]));
    assert_eq!(explained["verdict"], "allowed", "{explained}");
    assert_eq!(explained["decided_by"]["rule"], "web-to-app");
    assert!(
        explained["connection"]["state"].is_string(),
        "the connection is tracked: {explained}"
    );
    let monitored = appliance.get_json("/v1/explain?src=app&dst=db&dport=5432");
    assert_eq!(monitored["verdict"], "would_deny", "{monitored}");
    let microseg = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_microseg"))
            .args(args)
            .args(["--api", &format!("http://{}", bed.api)])
            .env("MICROSEG_TOKEN", bed.token())
            .output()
            .expect("microseg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = microseg(&["flows", "--verdict", "denied"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&format!("out ({})", bed.addr("out"))) && l.contains("denied")),
        "{listed}"
    );
    let why = microseg(&["explain", "app", "db", "tcp/5432"]);
    assert!(
        why.contains("WOULD_DENY") && why.contains("shop/app-to-db"),
        "{why}"
    );

    // Impact of enforcing the monitored rule; recommendations; reachability.
    let candidate = bed.dir.join("candidate.yaml");
    std::fs::write(&candidate, policy(&bed).replace(", mode: monitor", "")).expect("write");
    let (code, body) = appliance.curl(
        "POST",
        "/v1/policy/impact",
        Some(("application/yaml", &candidate)),
    );
    assert_eq!(code, 200, "{body}");
    let impact: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        impact["transitions"]["would_deny -> denied"].as_u64() >= Some(1),
        "{impact}"
    );
    let recommended = appliance.get_json("/v1/recommendations");
    let rules = recommended["policy"]["policies"][0]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        rules
            .iter()
            .any(|r| r["from"] == "role=web" && r["to"] == "role=app"),
        "{recommended}"
    );
    assert!(
        recommended["learning"]["anomalies_total"].as_u64() >= Some(1),
        "{recommended}"
    );
    let question = bed.dir.join("reach.json");
    std::fs::write(&question, r#"{"from": "role=outsider", "to": "role=app"}"#).expect("write");
    let (code, body) = appliance.curl(
        "POST",
        "/v1/reachability",
        Some(("application/json", &question)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reachable\":false"), "{body}");

    // Quarantine app: isolated in XDP at once; lifted, it answers again.
    let request = bed.dir.join("quarantine.json");
    std::fs::write(
        &request,
        r#"{"target": "app", "reason": "test", "ttl_seconds": 600}"#,
    )
    .expect("write");
    let (code, body) = appliance.curl(
        "POST",
        "/v1/quarantine",
        Some(("application/json", &request)),
    );
    assert_eq!(code, 201, "{body}");
    assert!(
        !bed.ping("web", &app, 1, &[]),
        "a quarantined workload is cut off"
    );
    let drops: u64 = appliance.status()["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p["xdp_quarantine_drops"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert!(drops > 0, "dropped in XDP: {}", appliance.status());
    // The CLI lists it and lifts it.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_microseg"))
            .args(["quarantine", "--api", &format!("http://{}", bed.api)])
            .args(args)
            .env("MICROSEG_TOKEN", bed.token())
            .output()
            .expect("microseg quarantine");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(&["list"]);
    assert!(listed.starts_with(&format!("app ({app})")), "{listed}");
    assert!(listed.contains(": test"), "{listed}");
    let lifted = cli(&["lift", "app"]);
    assert!(lifted.starts_with("lifted: app"), "{lifted}");
    assert!(bed.ping("web", &app, 2, &[]), "lifted");

    // Alerts at the webhook (and in the file sink).
    let deadline = Instant::now() + Duration::from_secs(5);
    let wanted = [
        "denied",
        "would_deny",
        "quarantine",
        "quarantine_lifted",
        "anomaly",
    ];
    while !wanted
        .iter()
        .all(|k| webhook.kinds().iter().any(|seen| seen == k))
    {
        assert!(
            Instant::now() < deadline,
            "alerts at the webhook: {:?}",
            webhook.kinds()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let file = std::fs::read_to_string(bed.dir.join("alerts.jsonl")).unwrap_or_default();
    assert!(file.contains("\"kind\":\"denied\""), "{file}");
    let metrics = http_get(bed.api, "/metrics", None).expect("metrics");
    assert!(
        metrics.contains("microseg_alerts_sent_total{sink=\"webhook"),
        "{metrics}"
    );
    common::assert_dashboard_metrics(&metrics, &[]);

    let (exit, log) = appliance.stop();
    assert!(exit.success(), "{log}");
    assert!(log.contains("microseg: stopped"), "{log}");
}
