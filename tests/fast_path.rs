//! Root testbed: the XDP fast path (`fast_path: true`) through
//! `microseg run`. A TCP transfer allowed by the rules runs mostly in XDP,
//! its counts reach conntrack, it closes normally (FIN through
//! userspace), and a reload that denies the flow cuts an offloaded
//! connection at once.

mod common;

use std::time::{Duration, Instant};

use common::appliance::{ChildGuard, RunningAppliance, ScriptTestbed};
use common::testbed::root_or_skip;

/// A testbed with the fast path on, the appliance running on it, and an
/// iperf3 server on app:8080 (allowed from web by the testbed's rules).
fn fast_path_bed(tag: &str, subnet: u8) -> (ScriptTestbed, RunningAppliance, ChildGuard) {
    let bed = ScriptTestbed::up(tag, subnet, 1);
    bed.edit_config(
        "poll_mode: adaptive",
        "poll_mode: adaptive\nfast_path: true",
    );
    let appliance = RunningAppliance::start(&bed);
    let server = bed.spawn("app", &["iperf3", "-s", "-p", "8080"]);
    std::thread::sleep(Duration::from_millis(500));
    (bed, appliance, server)
}

/// A port's counter from the status API.
fn port_counter(appliance: &RunningAppliance, port: &str, field: &str) -> u64 {
    let status = appliance.status();
    status["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == port))
        .and_then(|p| p[field].as_u64())
        .unwrap_or_else(|| panic!("no {field} for {port} in {status}"))
}

fn fast_path_counter(appliance: &RunningAppliance, field: &str) -> u64 {
    let status = appliance.status();
    status["fast_path"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no fast_path.{field} in {status}"))
}

/// Waits until `check` holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

#[test]
fn an_allowed_transfer_runs_in_xdp_is_counted_and_closes() {
    if !root_or_skip("an_allowed_transfer_runs_in_xdp_is_counted_and_closes") {
        return;
    }
    let (bed, appliance, _server) = fast_path_bed("f", 36);
    let app = bed.addr("app");
    let client = bed.exec(
        "web",
        &[
            "timeout", "30", "iperf3", "-c", &app, "-p", "8080", "-t", "2",
        ],
    );
    assert!(
        client.status.success(),
        "iperf3 web -> app:8080 through the fast path: {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    let (web, app_port) = (bed.port("web"), bed.port("app"));
    let fast_web = port_counter(&appliance, &web, "xdp_fast_forwarded");
    let fast_app = port_counter(&appliance, &app_port, "xdp_fast_forwarded");
    let redirected = port_counter(&appliance, &web, "xdp_redirected");
    assert!(
        fast_web > 1_000 && fast_web > redirected,
        "the data went through XDP: {fast_web} fast, {redirected} to userspace"
    );
    assert!(fast_app > 0, "and the ACKs back: {fast_app}");
    assert!(fast_path_counter(&appliance, "installs") >= 2);
    // Within a sync, conntrack has every frame forwarded in XDP.
    assert!(
        eventually(Duration::from_secs(3), || {
            fast_path_counter(&appliance, "synced_frames") >= fast_web + fast_app
        }),
        "synced: {}",
        appliance.status()["fast_path"]
    );
    // The connections closed (FIN through userspace): their fast paths go.
    assert!(
        eventually(Duration::from_secs(5), || {
            fast_path_counter(&appliance, "installed") == 0
        }),
        "still installed: {}",
        appliance.status()["fast_path"]
    );
    assert_eq!(fast_path_counter(&appliance, "errors"), 0);
    // Denied flows stay denied.
    assert!(!bed.tcp_connect("web", &bed.addr("db"), 5432));
    let (exit, log) = appliance.stop();
    assert!(exit.success(), "exit {exit}: {log}");
    assert!(!log.contains("unaccounted"), "UMEM frames leaked: {log}");
}

#[test]
fn a_reload_that_denies_an_offloaded_connection_cuts_it() {
    if !root_or_skip("a_reload_that_denies_an_offloaded_connection_cuts_it") {
        return;
    }
    let (bed, appliance, _server) = fast_path_bed("g", 37);
    let app = bed.addr("app");
    let _client = bed.spawn("web", &["iperf3", "-c", &app, "-p", "8080", "-t", "30"]);
    let web = bed.port("web");
    assert!(
        eventually(Duration::from_secs(5), || {
            port_counter(&appliance, &web, "xdp_fast_forwarded") > 1_000
        }),
        "the transfer never took the fast path: {}",
        appliance.status()
    );
    // web -> app:8080 is no longer allowed.
    let rules = std::fs::read_to_string(bed.rules()).expect("rules");
    std::fs::write(
        bed.rules(),
        rules.replacen("services: [tcp/8080, icmp/8]", "services: [icmp/8]", 1),
    )
    .expect("write rules");
    appliance.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || {
        appliance.status()["generation"] == 2
    }));
    // Cut by whichever of its segments reached userspace first (data from
    // web or an ACK from app): its fast path is stale from the reload on.
    assert!(
        eventually(Duration::from_secs(5), || {
            appliance.status()["drops"]["policy:cut"].as_u64() > Some(0)
        }),
        "never cut: {}",
        appliance.status()
    );
    let stale = |port: &str| port_counter(&appliance, port, "xdp_fast_stale");
    assert!(stale(&web) + stale(&bed.port("app")) > 0);
    // Nothing more of it is forwarded, in XDP or otherwise.
    std::thread::sleep(Duration::from_millis(300));
    let fast = port_counter(&appliance, &web, "xdp_fast_forwarded");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(port_counter(&appliance, &web, "xdp_fast_forwarded"), fast);
    assert!(!bed.tcp_connect("web", &app, 8080), "new ones are denied");
    assert!(bed.ping("web", &app, 1, &[]), "pings still allowed");
    let (exit, log) = appliance.stop();
    assert!(exit.success(), "exit {exit}: {log}");
    assert!(!log.contains("unaccounted"), "UMEM frames leaked: {log}");
}
