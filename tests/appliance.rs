//! Root testbed, end to end through `microseg run -c CONFIG`: the
//! testbed from `scripts/testbed.sh` (web, app, db, out), the appliance as
//! a process, real tools for traffic, the status API for counters, signals
//! for reload and shutdown. One test starts the appliance as a library, on
//! a testbed of its own, for what a process cannot show (the quarantine
//! map before `Quarantines::attach`).

mod common;

use std::time::Duration;

use common::appliance::{RunningAppliance, ScriptTestbed};
use common::testbed::root_or_skip;

/// No XDP program is left on any of the testbed's switch ports.
fn assert_detached(bed: &ScriptTestbed) {
    for workload in common::appliance::WORKLOADS {
        let port = bed.port(workload);
        let out = std::process::Command::new("ip")
            .args(["-d", "link", "show", &port])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("xdp"), "{port} still has XDP: {text}");
    }
}

#[test]
fn two_workers_enforce_the_rules_file_and_reload_it_on_sighup() {
    if !root_or_skip("two_workers_enforce_the_rules_file_and_reload_it_on_sighup") {
        return;
    }
    let bed = ScriptTestbed::up("a", 31, 2);
    bed.edit_config("workers: 1", "workers: 2");
    let appliance = RunningAppliance::start(&bed);

    // Where the system's THP mode asks for malloc's advice, it started
    // itself again, in the same process, with malloc's huge pages asked
    // for, under its own name, and got them (a start that glibc's bug left
    // without them was started again).
    let proc_file = |name: &str| {
        std::fs::read(format!("/proc/{}/{name}", appliance.pid())).expect("the process is there")
    };
    let log = appliance.log_text();
    assert!(log.contains("microseg: memory: "), "{log}");
    assert_eq!(proc_file("comm"), b"microseg\n");
    let mode = microseg_control::huge_pages::system_thp_mode();
    if mode.as_deref() == Some("madvise") {
        let environ = proc_file("environ");
        assert!(
            environ
                .split(|byte| *byte == 0)
                .any(|var| var == b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1"),
            "{}",
            String::from_utf8_lossy(&environ)
        );
        assert!(!log.contains(" 0 MiB on transparent huge pages"), "{log}");
    }

    // Allowed both ways by conntrack, IPv4 and IPv6; denied from outside.
    assert!(bed.ping("web", &bed.addr("app"), 3, &[]), "web -> app ping");
    assert!(
        bed.ping("web", &bed.addr6("app"), 3, &[]),
        "web -> app ping6"
    );
    assert!(
        !bed.ping("out", &bed.addr("app"), 2, &[]),
        "out -> app is denied"
    );
    assert!(
        !bed.ping("app", &bed.addr("web"), 2, &[]),
        "app -> web is denied"
    );
    let out_port = bed.port("out");
    assert!(appliance.port_drops(&out_port, "policy:denied") >= 2);
    // The same counters in Prometheus form.
    let metrics = common::appliance::http_get(bed.api, "/metrics", None).expect("metrics");
    for needle in [
        format!("microseg_dropped_frames_total{{port=\"{out_port}\",reason=\"policy:denied\"}}"),
        format!("microseg_xdp_frames_total{{outcome=\"redirected\",port=\"{out_port}\"}}"),
        "microseg_conntrack_created_total".to_string(),
        "microseg_conntrack_sweep_shards_total{outcome=\"scanned\"}".to_string(),
        "microseg_worker_rounds_total{busy=\"true\",worker=\"1\"}".to_string(),
        "microseg_rule_hits_total{policy=\"rules-file\",rule=\"web-to-app\"}".to_string(),
        "microseg_rule_hits_total{policy=\"default\",rule=\"default_action\"}".to_string(),
        format!("microseg_port_received_bytes_total{{port=\"{out_port}\"}}"),
    ] {
        assert!(metrics.contains(&needle), "no {needle} in\n{metrics}");
    }

    // TCP through real tools, many connections (they spread over both
    // workers' queues): web -> app:8080 allowed, web -> db:5432 denied.
    let server = bed.spawn_server("app", 8080);
    let db_server = bed.spawn_server("db", 5432);
    std::thread::sleep(Duration::from_millis(300));
    for attempt in 0..16 {
        assert!(
            bed.tcp_connect("web", &bed.addr("app"), 8080),
            "web -> app:8080 #{attempt}"
        );
    }
    assert!(
        !bed.tcp_connect("web", &bed.addr("db"), 5432),
        "web -> db:5432 is denied"
    );
    let status = appliance.status();
    let workers = status["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    for worker in workers {
        assert!(
            worker["busy_rounds"].as_u64() > Some(0),
            "every worker forwarded something: {status}"
        );
    }
    assert_eq!(status["generation"], 1);

    // SIGHUP: a new rule takes effect.
    let rules = std::fs::read_to_string(bed.rules()).expect("rules");
    let more = format!(
        "{rules}  - name: out-may-ping-app\n    from: {}\n    to: {}\n    services: [icmp/8]\n    action: allow\n",
        bed.addr("out"),
        bed.addr("app")
    );
    std::fs::write(bed.rules(), &more).expect("write rules");
    appliance.signal("HUP");
    wait_for_generation(&appliance, 2);
    assert!(
        bed.ping("out", &bed.addr("app"), 2, &[]),
        "out -> app after reload"
    );

    // A broken file changes nothing: generation 2 stays in force.
    std::fs::write(
        bed.rules(),
        format!("{more}  - {{from: nowhere, to: any, action: allow}}\n"),
    )
    .expect("write rules");
    appliance.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(appliance.status()["generation"], 2);
    assert!(bed.ping("out", &bed.addr("app"), 2, &[]), "still allowed");
    assert!(!bed.ping("out", &bed.addr("db"), 1, &[]), "still denied");

    drop((server, db_server));
    let (exit, log) = appliance.stop();
    assert!(exit.success(), "exit {exit}: {log}");
    assert!(
        log.contains("rules[4].from: `nowhere` is not an IP address"),
        "{log}"
    );
    assert!(log.contains("generation 2 stays in force"), "{log}");
    assert!(!log.contains("unaccounted"), "UMEM frames leaked: {log}");
    assert!(log.contains("microseg: stopped"), "{log}");
    assert_detached(&bed);
}

fn wait_for_generation(appliance: &RunningAppliance, generation: u64) {
    for _ in 0..100 {
        if appliance.status()["generation"].as_u64() == Some(generation) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "generation {generation} never came: {}",
        appliance.log_text()
    );
}

#[test]
fn frame_sizes_malformed_frames_and_floods_leave_no_frame_behind() {
    if !root_or_skip("frame_sizes_malformed_frames_and_floods_leave_no_frame_behind") {
        return;
    }
    let bed = ScriptTestbed::up("b", 32, 1);
    // Few frames per port, so that floods exhaust them and fill tx rings.
    bed.edit_config(
        "poll_mode: adaptive",
        "poll_mode: adaptive\nframes_per_port: 128",
    );
    let appliance = RunningAppliance::start(&bed);
    let (web, app) = (bed.addr("web"), bed.addr("app"));

    // Frames of 60 (64 with the FCS) to 1514 bytes: ICMP payloads 18..1472,
    // never fragmented.
    for payload in [18, 100, 512, 1000, 1472] {
        let size = payload.to_string();
        assert!(
            bed.ping("web", &app, 2, &["-s", &size, "-M", "do"]),
            "web -> app with {payload}-byte echo payloads"
        );
    }
    // Full-size TCP segments: 2 MB across, byte count checked at the far end.
    let received = bed.dir.join("received");
    let mut sink = bed.spawn_shell(
        "app",
        &format!("nc -l 8080 | wc -c > {}", received.display()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let sent = bed.exec(
        "web",
        &[
            "sh",
            "-c",
            &format!("head -c 2000000 /dev/zero | nc -N -w 5 {app} 8080"),
        ],
    );
    assert!(
        sent.status.success(),
        "TCP transfer: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    common::appliance::wait_exit(&mut sink, Duration::from_secs(5));
    let count = std::fs::read_to_string(&received).unwrap_or_default();
    assert_eq!(count.trim(), "2000000", "bytes that reached app");

    // Malformed frames from the outsider, while web pings app: each is
    // dropped and counted with its reason, and the pings are undisturbed.
    let pings = {
        let (ns, app) = (bed.namespace("web"), app.clone());
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-q", "-c", "10", "-i", "0.2", "-W", "1", &app,
                ])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    };
    let script = format!("{}/../tests/scapy/malformed.py", env!("CARGO_MANIFEST_DIR"));
    let crafted = bed.exec(
        "out",
        &[
            "/usr/bin/python3",
            &script,
            "eth0",
            &bed.mac("out"),
            &bed.mac("app"),
            &bed.addr("out"),
            &app,
            &bed.addr6("out"),
            &bed.addr6("app"),
        ],
    );
    assert!(
        crafted.status.success(),
        "scapy: {}",
        String::from_utf8_lossy(&crafted.stderr)
    );
    let reasons: Vec<String> = String::from_utf8_lossy(&crafted.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(reasons.len(), 15, "{reasons:?}");
    assert!(
        pings.join().expect("ping thread"),
        "pings lost during malformed frames"
    );
    let out_port = bed.port("out");
    let status = appliance.status();
    for reason in &reasons {
        let cause = format!("parse:{reason}");
        assert!(
            appliance.port_drops(&out_port, &cause) >= 1,
            "{cause} not counted on {out_port}: {status}"
        );
    }

    // Floods, allowed and denied at once, then the exit's leak check.
    let flood = |from: &str, to: &str| {
        bed.exec(
            from,
            &["timeout", "3", "ping", "-q", "-f", "-s", "1000", to],
        )
    };
    std::thread::scope(|scope| {
        scope.spawn(|| flood("web", &app));
        scope.spawn(|| flood("out", &app));
        scope.spawn(|| flood("db", &web));
    });
    let status = appliance.status();
    assert!(
        status["ports"][3]["drops"]["policy:denied"].as_u64() > Some(100),
        "{status}"
    );
    assert!(
        bed.ping("web", &app, 2, &[]),
        "forwarding goes on after the floods"
    );
    let (exit, log) = appliance.stop();
    assert!(exit.success(), "exit {exit}: {log}");
    assert!(log.contains("microseg: stopped"), "{log}");
    assert!(!log.contains("unaccounted"), "UMEM frames leaked: {log}");
    assert_detached(&bed);
}

/// The testbed's policy document: workloads with labels, web may reach
/// app (ping, tcp/8080); `out_may_ping_app` adds a rule for the outsider.
fn policy_document(bed: &ScriptTestbed, out_may_ping_app: bool) -> String {
    let mut text = String::from("workloads:\n");
    for (workload, role) in [
        ("web", "web"),
        ("app", "app"),
        ("db", "db"),
        ("out", "outsider"),
    ] {
        text.push_str(&format!(
            "  - name: {workload}\n    addresses: [{}, \"{}\"]\n    labels: {{role: {role}, env: test}}\n",
            bed.addr(workload),
            bed.addr6(workload)
        ));
    }
    text.push_str(
        "policies:\n  - name: shop\n    rules:\n      - name: web-to-app\n        from: role=web\n        to: role=app\n        services: [icmp/8, tcp/8080]\n        action: allow\n",
    );
    if out_may_ping_app {
        text.push_str(
            "      - name: outsider-ping\n        from: role=outsider\n        to: role=app\n        services: [icmp/8]\n        action: allow\n",
        );
    }
    text.push_str("default_action: deny\n");
    text
}

#[test]
fn policies_pushed_with_curl_take_effect_lose_no_allowed_frame_and_survive_restart_and_crash() {
    if !root_or_skip(
        "policies_pushed_with_curl_take_effect_lose_no_allowed_frame_and_survive_restart_and_crash",
    ) {
        return;
    }
    let bed = ScriptTestbed::up("c", 33, 1);
    let initial = bed.dir.join("policy.yaml");
    std::fs::write(&initial, policy_document(&bed, false)).expect("policy");
    bed.edit_config("rules: rules.yaml", "policy: policy.yaml");
    let appliance = RunningAppliance::start(&bed);
    let (app, out_ping_app) = (bed.addr("app"), || {
        bed.ping("out", &bed.addr("app"), 1, &[])
    });
    assert!(
        bed.ping("web", &app, 2, &[]),
        "web -> app by the initial policy"
    );
    assert!(!out_ping_app(), "out -> app denied");
    assert_eq!(
        appliance
            .get_json("/v1/policy/history")
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Allowed traffic runs (100 pings, 50 ms apart) while policies are
    // pushed with curl, alternating the outsider's rule in and out.
    let with = bed.dir.join("with.yaml");
    let without = bed.dir.join("without.yaml");
    std::fs::write(&with, policy_document(&bed, true)).expect("write");
    std::fs::write(&without, policy_document(&bed, false)).expect("write");
    let pings = {
        let (ns, app) = (bed.namespace("web"), app.clone());
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-c", "100", "-i", "0.05", "-W", "1", &app,
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        })
    };
    for push in 0..10 {
        let body = if push % 2 == 0 { &with } else { &without };
        let (code, reply) = appliance.curl_put("/v1/policy", "application/yaml", body);
        assert_eq!(code, 200, "push {push}: {reply}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let summary = pings.join().expect("ping thread");
    assert!(
        summary.contains("100 packets transmitted, 100 received"),
        "allowed frames were lost during the pushes: {summary}"
    );
    let status = appliance.status();
    assert_eq!(status["generation"], 11, "{status}");
    let metrics = common::appliance::http_get(bed.api, "/metrics", None).expect("metrics");
    assert!(
        metrics.contains("microseg_policy_generation 11"),
        "{metrics}"
    );
    assert!(
        metrics.contains("microseg_policy_swap_duration_seconds_count 10"),
        "{metrics}"
    );
    // The last push removed the outsider's rule; push it back, and keep it.
    let (code, reply) = appliance.curl_put("/v1/policy", "application/yaml", &with);
    assert_eq!(code, 200, "{reply}");
    assert!(out_ping_app(), "the pushed rule is in force");
    let metrics = common::appliance::http_get(bed.api, "/metrics", None).expect("metrics");
    assert!(
        metrics.contains("microseg_rule_hits_total{policy=\"shop\",rule=\"outsider-ping\"} 1"),
        "{metrics}"
    );
    // Every metric the shipped Grafana dashboard queries is exported
    // (alert delivery ones only with alert sinks: tests/visibility.rs).
    common::assert_dashboard_metrics(&metrics, &["microseg_alerts_"]);
    let (code, reply) = appliance.curl_put("/v1/policy", "text/plain", &with);
    assert_eq!(code, 415, "{reply}");

    // A restart brings the last applied version back before forwarding.
    let (exit, log) = appliance.stop();
    assert!(exit.success(), "{log}");
    let appliance = RunningAppliance::start(&bed);
    assert!(
        appliance.log_text().contains("policy version 12 restored"),
        "{}",
        appliance.log_text()
    );
    assert!(out_ping_app(), "restored after a restart");

    // A crash leaves the XDP programs behind (failing closed); the next
    // start replaces them and restores the policy.
    let log = appliance.crash();
    assert!(!log.contains("microseg: stopped"), "{log}");
    assert!(
        !bed.ping("web", &app, 1, &[]),
        "ports fail closed while nothing runs"
    );
    let appliance = RunningAppliance::start(&bed);
    assert!(
        bed.ping("web", &app, 2, &[]),
        "forwarding again after the crash"
    );
    assert!(out_ping_app(), "restored after a crash");
    let history = appliance.get_json("/v1/policy/history");
    assert_eq!(history.as_array().map(Vec::len), Some(12), "{history}");
    let (exit, log) = appliance.stop();
    assert!(exit.success(), "{log}");
    assert_detached(&bed);
}

/// Quarantines restored at start are in every port's XDP map before any
/// worker forwards: `Appliance::start` puts them there itself, with no
/// `Quarantines::attach` (which used to come after the workers started,
/// leaving a quarantined host forwarded in between in rules-file mode).
#[test]
fn restored_quarantines_are_dropped_in_xdp_from_the_start() {
    use microseg_control::appliance::{Appliance, PolicyFeed};
    use microseg_control::config::{Config, LocalMachine};
    use microseg_control::testbed::Testbed;

    if !root_or_skip("restored_quarantines_are_dropped_in_xdp_from_the_start") {
        return;
    }
    let bed = Testbed::with_ghost("rq", 6).expect("testbed");
    // Removed on drop, also when an assertion fails.
    let scratch = common::ScratchDir::new("restored-quarantine");
    let dir = scratch.0.clone();
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, "default_action: allow\nrules: []\n").expect("rules");
    let text = format!(
        "ports: [{}]\nworkers: 1\npoll_mode: adaptive\nrules: rules.yaml\nstate_dir: state\n\
         api:\n  listen: 127.0.0.1:0\n",
        bed.host_if
    );
    let config = Config::parse(&text, &dir, &LocalMachine).expect("config");
    let quarantined: std::net::IpAddr = bed.peer_addr.parse().expect("address");
    let appliance = Appliance::start(config, PolicyFeed::RulesFile(rules), &[quarantined])
        .expect("appliance starts");
    bed.ping_ghost(4);
    let port = &appliance.status().ports[0];
    assert!(
        port.xdp_quarantine_drops >= 4,
        "the workload's frames dropped in XDP: {port:?}"
    );
    drop(appliance);
}
