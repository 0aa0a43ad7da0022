//! `microseg policy ...` against a real API server (the control plane
//! alone, in this process, on a loopback port): every subcommand, its
//! output and exit status, and refusals that name the problem.

mod common;

use std::path::Path;
use std::process::Output;

use common::api::serve;
use common::ScratchDir;

const TOKEN: &str = common::api::TOKEN;

fn policy(url: &str, token: Option<&Path>, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_microseg"));
    command.args(["policy", "--api", url]);
    match token {
        Some(file) => {
            command.arg("--token-file").arg(file);
            command.env_remove("MICROSEG_TOKEN");
        }
        None => {
            command.env("MICROSEG_TOKEN", TOKEN);
        }
    }
    command.args(args).output().expect("run microseg")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GOOD: &str = "
workloads:
  - {name: web, addresses: [10.9.0.1], labels: {role: web}}
  - {name: app, addresses: [10.9.0.2], labels: {role: app}}
policies:
  - name: shop
    rules:
      - {name: web-to-app, from: role=web, to: role=app, services: [tcp/8080], action: allow}
      - {name: nobody, from: role=ghost, to: any, action: allow}
";

#[test]
fn every_policy_subcommand_against_a_live_api() {
    let scratch = ScratchDir::new("policy-cli");
    let url = format!("http://{}", serve(&scratch.file("state")));
    let good = scratch.file("good.yaml");
    std::fs::write(&good, GOOD).expect("write");
    let bad = scratch.file("bad.yaml");
    std::fs::write(&bad, GOOD.replace("tcp/8080", "tcp/80800")).expect("write");

    let valid = policy(&url, None, &["validate", good.to_str().expect("utf-8")]);
    assert!(valid.status.success(), "{}", text(&valid));
    assert!(
        text(&valid)
            .contains("warning: policies[0].rules[1].from: `role=ghost` matches no workload"),
        "{}",
        text(&valid)
    );
    let invalid = policy(&url, None, &["validate", bad.to_str().expect("utf-8")]);
    assert_eq!(invalid.status.code(), Some(1), "{}", text(&invalid));
    assert!(
        text(&invalid).contains(
            "error: policies[0].rules[0].services[0]: `tcp/80800`: port 80800 out of range"
        ),
        "{}",
        text(&invalid)
    );

    let diff = policy(&url, None, &["diff", good.to_str().expect("utf-8")]);
    assert_eq!(diff.status.code(), Some(1), "a difference: {}", text(&diff));
    assert!(
        text(&diff).contains("workloads +2, policies +1"),
        "{}",
        text(&diff)
    );
    for line in [
        "+   - name: web-to-app",
        "+     from: role=web",
        "- workloads: []",
    ] {
        assert!(
            text(&diff).contains(line),
            "missing {line:?} in {}",
            text(&diff)
        );
    }

    let applied = policy(&url, None, &["apply", good.to_str().expect("utf-8")]);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        text(&applied).contains("version 2 in force: generation 2"),
        "{}",
        text(&applied)
    );
    let refused = policy(&url, None, &["apply", bad.to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("HTTP 400: invalid_policy"),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("policies[0].rules[0].services[0]"),
        "{}",
        text(&refused)
    );
    let stale = policy(
        &url,
        None,
        &["apply", good.to_str().expect("utf-8"), "--if-match", "1"],
    );
    assert!(
        text(&stale).contains("HTTP 409: conflict"),
        "{}",
        text(&stale)
    );

    let same = policy(&url, None, &["diff", good.to_str().expect("utf-8")]);
    assert!(same.status.success(), "no difference now: {}", text(&same));
    assert!(text(&same).contains("no change"), "{}", text(&same));

    let got = policy(&url, None, &["get"]);
    assert!(text(&got).starts_with("# version 2"), "{}", text(&got));
    assert!(text(&got).contains("web-to-app"), "{}", text(&got));
    let json = policy(&url, None, &["get", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(parsed["workloads"][0]["name"], "web");

    let rolled = policy(&url, None, &["rollback", "1"]);
    assert!(
        text(&rolled).contains("version 3 in force"),
        "{}",
        text(&rolled)
    );
    let history = policy(&url, None, &["history"]);
    let lines = text(&history);
    assert!(
        lines.contains("rollback to version 1") && lines.contains("initial policy"),
        "{lines}"
    );
    let missing = policy(&url, None, &["rollback", "42"]);
    assert!(text(&missing).contains("HTTP 404"), "{}", text(&missing));

    // The token from a file (a server tokens-file line works too), and a
    // wrong one.
    let token_file = scratch.file("token");
    std::fs::write(&token_file, format!("admin cli {TOKEN}\n")).expect("write");
    assert!(policy(&url, Some(&token_file), &["history"])
        .status
        .success());
    std::fs::write(&token_file, "wrong-token-0123456789\n").expect("write");
    let wrong = policy(&url, Some(&token_file), &["history"]);
    assert!(
        text(&wrong).contains("HTTP 401: unauthorized"),
        "{}",
        text(&wrong)
    );
    let nowhere = policy("http://127.0.0.1:1", None, &["get"]);
    assert!(
        text(&nowhere).contains("cannot reach the API"),
        "{}",
        text(&nowhere)
    );
}

/// `microseg ARGS` with the token from the environment.
fn microseg(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_microseg"))
        .env("MICROSEG_TOKEN", TOKEN)
        .args(args)
        .output()
        .expect("run microseg")
}

#[test]
fn report_explain_and_quarantine_commands_against_a_live_api() {
    let scratch = ScratchDir::new("report-cli");
    let url = format!("http://{}", serve(&scratch.file("state")));
    let good = scratch.file("good.yaml");
    std::fs::write(&good, GOOD).expect("write");
    let applied = policy(&url, None, &["apply", good.to_str().expect("utf-8")]);
    assert!(applied.status.success(), "{}", text(&applied));

    let report = scratch.file("report.md");
    let out = microseg(&[
        "report",
        "--api",
        &url,
        "--from",
        "role=web",
        "--to",
        "role=app",
        "--out",
        report.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(&report).expect("report written");
    assert!(written.contains("## Verdict: REACHABLE"), "{written}");
    assert!(written.contains("shop/web-to-app"), "{written}");
    assert!(written.contains("tcp/8080"), "{written}");
    let out = microseg(&["report", "--api", &url, "--from", "role=app", "--to", "web"]);
    assert!(
        text(&out).contains("## Verdict: ISOLATED"),
        "{}",
        text(&out)
    );
    let out = microseg(&["report", "--api", &url, "--from", "any", "--to", "web"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("from: give workloads"),
        "{}",
        text(&out)
    );

    // Explain works without a dataplane (no connection table).
    let out = microseg(&["explain", "--api", &url, "web", "app", "tcp/8080"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ALLOWED"), "{}", text(&out));
    assert!(
        text(&out).contains("decided by   shop/web-to-app"),
        "{}",
        text(&out)
    );
    let out = microseg(&["explain", "--api", &url, "app", "web", "udp/53", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["verdict"], "denied");
    let out = microseg(&["explain", "--api", &url, "web", "nobody", "tcp/1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("dst"), "{}", text(&out));
    // Quarantine needs a running dataplane: the API says so.
    let out = microseg(&["quarantine", "--api", &url, "list"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("HTTP 404"), "{}", text(&out));
    let out = microseg(&[
        "quarantine",
        "--api",
        &url,
        "add",
        "web",
        "--allow",
        "tcp/22",
    ]);
    assert!(text(&out).contains("--allow tcp/22"), "{}", text(&out));
}
