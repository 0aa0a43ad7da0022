//! A real Prometheus server (Debian's package) scrapes `/metrics`, and its
//! query API returns what the control plane exported: the policy
//! generation after a change, and the swap-duration histogram; and it
//! evaluates every query of the shipped Grafana dashboard. Prometheus
//! runs on loopback with its own scratch storage and is ended by PID.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::appliance::http_get;
use common::ScratchDir;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn query(prometheus: SocketAddr, expr: &str) -> Option<String> {
    let body = http_get(prometheus, &format!("/api/v1/query?query={expr}"), None)?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["data"]["result"][0]["value"][1]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_real_prometheus_scrapes_the_metrics() {
    let binary = "/usr/bin/prometheus";
    if !std::path::Path::new(binary).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus is missing: scripts/deps.sh installs it"
        );
        eprintln!("skipping: {binary} is missing (scripts/deps.sh installs it)");
        return;
    }
    let scratch = ScratchDir::new("prometheus");
    let api = common::api::serve(&scratch.file("state"));
    // A policy change: generation 2 and one swap observed.
    let policy = scratch.file("p.yaml");
    std::fs::write(&policy, "default_action: deny\n").expect("write");
    let applied = Command::new(env!("CARGO_BIN_EXE_microseg"))
        .args(["policy", "--api", &format!("http://{api}"), "apply"])
        .arg(&policy)
        .env("MICROSEG_TOKEN", common::api::TOKEN)
        .output()
        .expect("microseg policy apply");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let listen = free_port();
    let config = scratch.file("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: microseg\n    static_configs:\n      - targets: ['{api}']\n"
        ),
    )
    .expect("write");
    let server = Prometheus(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.file("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut generation = None;
    while Instant::now() < deadline {
        generation = query(listen, "microseg_policy_generation");
        if generation.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        generation.as_deref(),
        Some("2"),
        "Prometheus never scraped the generation"
    );
    assert_eq!(
        query(listen, "microseg_policy_swap_duration_seconds_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        query(listen, "up").as_deref(),
        Some("1"),
        "the scrape target is up"
    );
    // Every query of the shipped Grafana dashboard is valid PromQL that
    // this Prometheus evaluates (the appliance test checks that the
    // metrics it names are exported).
    let (exprs, _) = common::grafana_queries();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        let path = format!(
            "/api/v1/query?query={}",
            microseg_control::client::percent_encode(expr)
        );
        let body = http_get(listen, &path, None).unwrap_or_default();
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(reply["status"], "success", "{expr}: {body}");
    }
    drop(server);
}
