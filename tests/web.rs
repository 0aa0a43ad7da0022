//! The web page (`GET /`) in headless Chromium, against the real router
//! with real data: a dataplane pipeline judges synthetic frames under a
//! policy, the collector records them, the API serves them on a loopback
//! port, and the page shows them (the map, the flows, the violations,
//! quarantines). Then quarantine is put in force and lifted by clicking
//! through the page. No root needed.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use microseg_control::api::{ApiState, Tokens};
use microseg_control::engine::PolicyEngine;
use microseg_control::flows::{Clock, CollectorConfig, Names};
use microseg_control::metrics::Metrics;
use microseg_control::policy::PolicyDocument;
use microseg_control::quarantine::Quarantines;
use microseg_control::store::Store;
use microseg_control::visibility::{Attached, Visibility, VisibilityConfig};
use microseg_dataplane::conntrack::{ConntrackConfig, ConntrackTable};
use microseg_dataplane::pipeline::{DropCause, Frame, FrameAction, Pipeline};
use microseg_dataplane::switch::{MacTable, SwitchConfig};

use common::ScratchDir;

/// The admin token the served API accepts (reads need none: the demo's
/// anonymous reads are on).
const TOKEN: &str = "web-test-admin-token-0123456789";

const WEB: [u8; 4] = [10, 1, 0, 1];
const APP: [u8; 4] = [10, 1, 0, 2];
const DB: [u8; 4] = [10, 1, 0, 3];

const POLICY: &str = r#"{
  "workloads": [
    {"name": "web-1", "addresses": ["10.1.0.1"], "labels": {"role": "web", "app": "shop"}},
    {"name": "app-1", "addresses": ["10.1.0.2"], "labels": {"role": "app", "app": "shop"}},
    {"name": "db-1", "addresses": ["10.1.0.3"], "labels": {"role": "db", "app": "shop"}}
  ],
  "policies": [{"name": "shop", "rules": [
    {"name": "web-to-app", "from": "role=web", "to": "role=app", "services": ["tcp/8080"], "action": "allow"}
  ]}],
  "default_action": "deny"
}"#;

/// A quarantine reason that would run script if the page inserted it
/// as markup.
const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"> ransomware";

/// The control plane's API over a pipeline with visibility and
/// quarantine, served on a loopback port from a thread of its own;
/// stopped (server, collector) on drop.
struct Served {
    addr: SocketAddr,
    state: Arc<ApiState>,
    pipeline: Arc<Pipeline>,
    visibility: Arc<Visibility>,
    started: Instant,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
    _scratch: ScratchDir,
}

impl Served {
    fn start(name: &str) -> Self {
        let scratch = ScratchDir::new(&format!("web-{name}"));
        let state_dir = scratch.file("state");
        let document = PolicyDocument::from_json(POLICY.as_bytes()).expect("policy");
        let engine = Arc::new(
            PolicyEngine::restore(
                Store::open(&state_dir).expect("store"),
                Some(document),
                None,
            )
            .expect("restore")
            .engine,
        );
        let quarantines = Arc::new(
            Quarantines::open(
                Arc::new(Store::open(&state_dir).expect("store")),
                Some(Arc::clone(&engine)),
            )
            .expect("quarantines"),
        );
        let pipeline = Arc::new(Pipeline::new(
            Arc::clone(engine.cell()),
            Arc::new(ConntrackTable::new(ConntrackConfig::default())),
            Arc::new(MacTable::new(SwitchConfig::default())),
            1024,
        ));
        let started = Instant::now();
        let visibility = Arc::new(
            Visibility::start(
                Arc::clone(&pipeline),
                Clock::new(started),
                Names::Engine(Arc::clone(&engine)),
                Attached {
                    quarantines: Some(quarantines),
                    ..Attached::default()
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
        let state = Arc::new(ApiState {
            engine: Some(engine),
            appliance: None,
            tokens: Tokens::parse(&format!("admin alice {TOKEN}\n"), "test").expect("tokens"),
            anonymous_reads: true,
            body_limit: microseg_control::api::DEFAULT_BODY_LIMIT,
            metrics: Arc::new(Metrics::new()),
            visibility: Some(Arc::clone(&visibility)),
        });
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = common::api::serve_state(Arc::clone(&state), None, async move {
            let _ = stop.await;
        });
        Self {
            addr,
            state,
            pipeline,
            visibility,
            started,
            shutdown: Some(shutdown),
            server: Some(server),
            _scratch: scratch,
        }
    }

    fn url(&self, fragment: &str) -> String {
        format!("http://{}/{fragment}", self.addr)
    }

    /// A TCP SYN from `src` to `dst` through the pipeline; its action.
    fn syn(&self, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FrameAction {
        let frame = microseg_dataplane::frames::tcp_syn_between(src, dst, sport, dport);
        let mut out = [FrameAction::Drop(DropCause::Policy)];
        self.pipeline.process(
            &[Frame {
                data: &frame,
                port: 0,
            }],
            self.started.elapsed().as_nanos() as u64,
            &mut out,
        );
        out[0]
    }

    /// The two flows of the test: web-1 → app-1 tcp/8080 (allowed),
    /// app-1 → db-1 tcp/5432 (denied); returns once the API lists both.
    fn send_flows(&self) {
        let allowed = self.syn(WEB, APP, 40000, 8080);
        assert!(
            !matches!(allowed, FrameAction::Drop(_)),
            "web → app passes: {allowed:?}"
        );
        let denied = self.syn(APP, DB, 40001, 5432);
        assert!(
            matches!(denied, FrameAction::Drop(_)),
            "app → db is dropped: {denied:?}"
        );
        self.poll("/v1/flows", |json| {
            let flows = json["flows"].as_array().cloned().unwrap_or_default();
            ["allowed", "denied"]
                .iter()
                .all(|v| flows.iter().any(|f| f["verdict"] == *v))
        });
    }

    /// GETs `path` until `ready` holds for its JSON, or fails after 5 s.
    fn poll(&self, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = http(self.addr, "GET", path, None, None);
            assert_eq!(status, 200, "{path}: {body}");
            let json: Value = serde_json::from_str(&body).expect("JSON");
            if ready(&json) {
                return json;
            }
            assert!(Instant::now() < deadline, "{path}: never ready: {body}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        self.visibility.stop();
    }
}

/// One HTTP/1.1 request on loopback: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = json.unwrap_or("");
    let content = if json.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// The text between `open` (inclusive of its end) and the first `close`
/// after it.
fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {text}"))
        + open.len();
    let end = text[start..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close} after {open}"));
    &text[start..start + end]
}

/// The attributes of every `<tag ...>` in `html` (values as serialized).
fn tags(html: &str, tag: &str) -> Vec<Vec<(String, String)>> {
    let open = format!("<{tag} ");
    html.match_indices(&open)
        .map(|(at, _)| {
            let inside = &html[at + open.len()..];
            let inside = &inside[..inside.find('>').unwrap_or(inside.len())];
            let mut attributes = Vec::new();
            let mut rest = inside;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].trim().to_string();
                let value_start = eq + 2;
                let value_end = rest[value_start..]
                    .find('"')
                    .map_or(rest.len(), |e| value_start + e);
                attributes.push((name, rest[value_start..value_end].to_string()));
                rest = &rest[(value_end + 1).min(rest.len())..];
            }
            attributes
        })
        .collect()
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Markup removed: the text of an element's content (entities as they
/// were serialized).
fn text_of(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// The cells' texts of each row of `<table id="flows">`'s body.
fn flow_rows(dom: &str) -> Vec<Vec<String>> {
    let body = between(dom, "<table id=\"flows\">", "</table>");
    let body = between(body, "<tbody>", "</tbody>");
    body.split("</tr>")
        .filter(|row| row.contains("<td"))
        .map(|row| {
            row.split("</td>")
                .filter(|cell| cell.contains("<td"))
                .map(text_of)
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// The texts of the `<li>`s of `<ul id="ID">`.
fn list_items(dom: &str, id: &str) -> Vec<String> {
    between(dom, &format!("<ul id=\"{id}\">"), "</ul>")
        .split("</li>")
        .filter(|item| item.contains("<li"))
        .map(text_of)
        .collect()
}

/// Submits the page's quarantine form for `target` (a request the API
/// refuses) and returns the section's status once it shows `status`.
fn refused_quarantine(
    page: &mut browser::Session,
    target: &str,
    status: &str,
    within: Duration,
) -> Value {
    page.eval(&format!(
        "document.getElementById('q-target').value = '{target}';
         document.querySelector('#quarantine-form button[type=submit]').click();"
    ));
    page.wait_for(
        &format!(
            "document.getElementById('quarantine-status').textContent.includes('{status}') && \
             document.getElementById('quarantine-status').textContent"
        ),
        within,
    )
}

#[tokio::test]
async fn the_page_is_served_without_a_token() {
    let served = Served::start("served");
    let router = microseg_control::api::router(Arc::clone(&served.state));
    let response = router
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(
        headers[header::CONTENT_TYPE].to_str().ok(),
        Some("text/html; charset=utf-8")
    );
    let policy = headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("CSP")
        .to_string();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let page = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("UTF-8");
    for id in [
        "id=\"map\"",
        "id=\"group-by\"",
        "id=\"legend\"",
        "id=\"flows\"",
        "id=\"violations\"",
        "id=\"quarantine\"",
        "id=\"quarantine-form\"",
        "id=\"status\"",
        "id=\"token\"",
    ] {
        assert!(page.contains(id), "the page has no {id}");
    }
    // The script and style carry the response's nonce, which the CSP names.
    let nonce = between(&policy, "script-src 'nonce-", "'").to_string();
    assert!(nonce.len() >= 32, "{policy}");
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(page.contains(&format!("<style nonce=\"{nonce}\">")));
    assert!(!page.contains("__NONCE__"));
    // No external resources: nothing is loaded from another origin.
    for external in ["http://", "https://", "//cdn", "src=\""] {
        assert!(!page.contains(external), "the page refers to {external}");
    }

    // Over the port too, and a second answer has another nonce.
    let (status, again) = http(served.addr, "GET", "/", None, None);
    assert_eq!(status, 200);
    assert!(again.contains("<table id=\"flows\">"));
    assert!(!again.contains(&nonce), "the nonce is fresh per response");
}

#[test]
fn chromium_shows_the_map_flows_violations_and_quarantine() {
    if !browser::chromium_or_skip("chromium_shows_the_map_flows_violations_and_quarantine") {
        return;
    }
    let served = Served::start("dom");
    served.send_flows();
    let body = format!(
        r#"{{"target": "10.9.9.9", "ttl_seconds": 3600, "reason": {}}}"#,
        serde_json::to_string(HOSTILE).expect("JSON")
    );
    let (status, text) = http(
        served.addr,
        "POST",
        "/v1/quarantine",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(status, 201, "{text}");

    let dom = browser::dump_dom(&served.url(""));

    // The map: the three workloads, the denied edge app-1 → db-1, the
    // allowed one web-1 → app-1.
    let map = between(&dom, "<div id=\"map\">", "</div>");
    let groups = tags(map, "g");
    for workload in ["web-1", "app-1", "db-1"] {
        assert!(
            groups.iter().any(|g| attribute(g, "class") == Some("node")
                && attribute(g, "data-id") == Some(workload)),
            "no node {workload} in the map: {map}"
        );
    }
    let edge = |from: &str, to: &str| {
        groups
            .iter()
            .find(|g| {
                attribute(g, "data-from") == Some(from) && attribute(g, "data-to") == Some(to)
            })
            .unwrap_or_else(|| panic!("no edge {from} → {to} in the map: {map}"))
    };
    let denied = edge("app-1", "db-1");
    assert_eq!(attribute(denied, "data-verdict"), Some("denied"));
    assert_eq!(attribute(denied, "data-service"), Some("tcp/5432"));
    assert_eq!(attribute(denied, "class"), Some("edge denied"));
    assert_eq!(
        attribute(edge("web-1", "app-1"), "data-verdict"),
        Some("allowed")
    );

    // The flows table: both flows, with their verdicts and rules.
    let rows = flow_rows(&dom);
    let row = |from: &str, to: &str| {
        rows.iter()
            .find(|r| {
                r.get(2).map(String::as_str) == Some(from)
                    && r.get(3).map(String::as_str) == Some(to)
            })
            .unwrap_or_else(|| panic!("no flow {from} → {to} in {rows:?}"))
    };
    assert_eq!(
        row("web-1", "app-1")[4..7],
        ["tcp/8080", "allowed", "shop/web-to-app"]
    );
    assert_eq!(
        row("app-1", "db-1")[4..7],
        ["tcp/5432", "denied", "(default)"]
    );

    // Violations: the denied flow only.
    let violations = list_items(&dom, "violations");
    assert!(
        violations
            .iter()
            .any(|v| v.ends_with("app-1 → db-1 tcp/5432: denied (default)")),
        "{violations:?}"
    );
    assert!(
        violations.iter().all(|v| !v.contains("web-1 → app-1")),
        "{violations:?}"
    );

    // Quarantine: the entry, its reason as text (not markup), a Lift
    // button.
    let quarantined = list_items(&dom, "quarantine-list");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].starts_with("10.9.9.9 — &lt;img src=x"),
        "{quarantined:?}"
    );
    assert!(
        quarantined[0].contains("by alice since "),
        "{quarantined:?}"
    );
    assert!(quarantined[0].ends_with("Lift"), "{quarantined:?}");
    assert!(!dom.contains("<img"), "API text was inserted as markup");
    assert!(dom.contains("<title>microseg</title>"), "a script ran");

    // The status line: refreshed, anonymously, with no error.
    let status = between(&dom, "<p id=\"status\"", "</p>");
    assert!(
        status.contains("Last refresh") && status.contains("(anonymous)"),
        "{status}"
    );
    assert!(!status.contains("error"), "{status}");

    // A token from the fragment is sent: an unknown one is refused (401),
    // and the status line says so.
    let refused = browser::dump_dom(&served.url("#token=not-a-known-token"));
    let status = between(&refused, "<p id=\"status\"", "</p>");
    assert!(
        status.contains("class=\"error\"")
            && status.contains("401 unauthorized: the token is not known"),
        "{status}"
    );
    assert!(refused.contains("(with a token)"), "{status}");
    // The admin token reads everything.
    let admitted = browser::dump_dom(&served.url(&format!("#token={TOKEN}")));
    let status = between(&admitted, "<p id=\"status\"", "</p>");
    assert!(
        status.contains("(with a token)") && !status.contains("error"),
        "{status}"
    );

    // The screenshot: a PNG, not blank.
    let shots = ScratchDir::new("web-screenshot");
    let png = shots.file("web.png");
    browser::screenshot(&served.url(""), &png);
    let bytes = std::fs::read(&png).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &bytes[..bytes.len().min(8)]
    );
    assert!(bytes.len() > 10_000, "a blank page? {} bytes", bytes.len());
    if let Some(dir) = std::env::var_os("MICROSEG_SCREENSHOT_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::copy(&png, dir.join("web.png")).expect("copy the screenshot");
        eprintln!("screenshot: {}", dir.join("web.png").display());
    }
}

#[test]
fn the_map_is_regrouped_and_quarantine_put_in_force_and_lifted_from_the_page() {
    if !browser::chromium_or_skip(
        "the_map_is_regrouped_and_quarantine_put_in_force_and_lifted_from_the_page",
    ) {
        return;
    }
    let served = Served::start("quarantine");
    served.send_flows();
    let within = Duration::from_secs(10);
    let mut page = browser::Session::open(&served.url(&format!("#token={TOKEN}")));
    page.wait_for(
        "document.getElementById('status').textContent.includes('Last refresh')",
        within,
    );
    // The token left the address bar; the page keeps it for the tab.
    assert_eq!(page.eval("location.hash"), "");
    assert_eq!(page.eval("document.getElementById('token').value"), TOKEN);

    // Grouped by role: the map's nodes are the roles.
    page.eval(
        "{
           const select = document.getElementById('group-by');
           select.value = 'role';
           select.dispatchEvent(new Event('change'));
         }",
    );
    // (Until the next answer, the map is the ungrouped one.)
    let groups = page.wait_for(
        "(() => {
           const ids = Array.from(document.querySelectorAll('#map g.node'), g => g.dataset.id);
           return ids.length && ids.every(id => id.startsWith('role=')) ? ids.sort().join(' ') : '';
         })()",
        within,
    );
    assert_eq!(groups, "role=app role=db role=web");
    let edge = page.eval(
        "{
           const e = document.querySelector('#map g.edge[data-verdict=denied]');
           e.dataset.from + ' -> ' + e.dataset.to
         }",
    );
    assert_eq!(edge, "role=app -> role=db");

    // Quarantine app-1 for ten minutes through the form.
    page.eval(
        "document.getElementById('q-target').value = 'app-1';
         document.getElementById('q-ttl').value = '600';
         document.getElementById('q-reason').value = 'lateral movement';
         document.querySelector('#quarantine-form button[type=submit]').click();",
    );
    let shown = page.wait_for(
        "document.querySelector('#quarantine-list li[data-target=\"app-1\"]')?.textContent ?? ''",
        within,
    );
    let shown = shown.as_str().expect("text");
    assert!(
        shown.starts_with("app-1 (10.1.0.2) — lateral movement — by alice since "),
        "{shown}"
    );
    assert!(
        shown.contains(", until ") && shown.ends_with("Lift"),
        "{shown}"
    );
    let status = page.eval("document.getElementById('quarantine-status').textContent");
    assert_eq!(status, "quarantined app-1 (0 connections cut)");
    let list = served.poll("/v1/quarantine", |_| true);
    assert_eq!(list[0]["target"], "app-1", "{list}");
    assert_eq!(list[0]["who"], "alice", "{list}");
    assert_eq!(list[0]["reason"], "lateral movement", "{list}");
    let ttl =
        list[0]["expires"].as_u64().expect("expires") - list[0]["since"].as_u64().expect("since");
    assert_eq!(ttl, 600, "{list}");
    // The policy enforces it: web-1 no longer reaches app-1.
    let cut = served.syn(WEB, APP, 40100, 8080);
    assert!(matches!(cut, FrameAction::Drop(_)), "{cut:?}");

    // The same target again: the API's 409 shows in the section.
    let conflict = refused_quarantine(&mut page, "app-1", "409", within);
    assert!(
        conflict
            .as_str()
            .unwrap_or("")
            .starts_with("quarantine failed: 409 conflict: "),
        "{conflict}"
    );

    // Lift it with its button: web-1 reaches app-1 again.
    page.eval(
        "document.querySelector('#quarantine-list li[data-target=\"app-1\"] button').click()",
    );
    page.wait_for(
        "!document.querySelector('#quarantine-list li[data-target]') && \
         document.getElementById('quarantine-status').textContent === 'lifted app-1'",
        within,
    );
    let list = served.poll("/v1/quarantine", |_| true);
    assert_eq!(list, serde_json::json!([]), "lifted in the API too");
    let passes = served.syn(WEB, APP, 40101, 8080);
    assert!(!matches!(passes, FrameAction::Drop(_)), "{passes:?}");

    // Without a token, writing is refused; the page says why.
    page.eval("document.getElementById('token-forget').click()");
    page.wait_for(
        "document.getElementById('status').textContent.includes('(anonymous)')",
        within,
    );
    let refused = refused_quarantine(&mut page, "web-1", "401", within);
    assert!(
        refused
            .as_str()
            .unwrap_or("")
            .starts_with("quarantine failed: 401 unauthorized: "),
        "{refused}"
    );
    let list = served.poll("/v1/quarantine", |_| true);
    assert_eq!(list, serde_json::json!([]), "nothing was quarantined");
}
