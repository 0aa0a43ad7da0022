//! The throughput benchmark's generator (`testbed-xdp gen`), root only: the
//! XDP loop (for kernels that refuse live frames) and `auto`, which picks a
//! way the kernel allows, each deliver frames to a sink at the other end of
//! a veth pair, and the loop leaves no interface behind.

#[path = "common/testbed.rs"]
mod testbed;

use std::process::Command;

use testbed::{root_or_skip, Testbed};

const GENERATOR: &str = env!("CARGO_BIN_EXE_testbed-xdp");

/// Frames the sink must at least count in the generator's 2 s: a
/// generator that sends nothing, or one seed frame at a time, stays far
/// below it (either way makes ~2.5 M/s here).
const AT_LEAST: u64 = 100_000;

/// What a generator run printed, and what the sink counted meanwhile.
struct Outcome {
    report: String,
    notes: String,
    offered: u64,
    counted_udp: u64,
}

/// Runs the sink on the testbed's host end and `gen METHOD` in its
/// namespace, for 2 s.
fn generate(bed: &Testbed, method: &str) -> Outcome {
    let sink = Command::new(GENERATOR)
        .args(["sink", "--ifname", &bed.host_if])
        .args(["--interval-ms", "100", "--seconds", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the sink");
    // The sink ends by itself after its 4 s, also when an assertion below
    // fails first.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let gen = Command::new("ip")
        .args(["netns", "exec", &bed.namespace, GENERATOR, "gen"])
        .args(["--ifname", &bed.peer_if, "--method", method])
        .args([
            "--src-mac",
            "02:00:00:00:00:01",
            "--dst-mac",
            "02:00:00:00:00:02",
        ])
        .args(["--src-ip", &bed.peer_addr, "--dst-ip", &bed.ghost_addr])
        .args(["--flows", "16", "--seconds", "2"])
        .output()
        .expect("running the generator");
    let report = String::from_utf8_lossy(&gen.stdout).into_owned();
    let notes = String::from_utf8_lossy(&gen.stderr).into_owned();
    assert!(
        gen.status.success(),
        "gen --method {method} failed: {notes}"
    );
    let counts = sink.wait_with_output().expect("waiting for the sink");
    let counts = String::from_utf8_lossy(&counts.stdout);
    let last = counts.lines().last().unwrap_or_default().to_owned();
    let counted_udp = last
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sink printed no counts: {counts:?}"));
    let offered = report
        .strip_prefix("gen: ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("generator printed no count: {report:?}"));
    Outcome {
        report,
        notes,
        offered,
        counted_udp,
    }
}

fn links_in(bed: &Testbed) -> String {
    bed.ns(&["ip", "-o", "link", "show"])
        .expect("listing the namespace's links")
}

#[test]
fn the_xdp_loop_and_auto_deliver_frames_and_leave_no_interface() {
    if !root_or_skip("the_xdp_loop_and_auto_deliver_frames_and_leave_no_interface") {
        return;
    }
    let bed = Testbed::host("tg", 40, 1).expect("testbed");
    let before = links_in(&bed);

    let looped = generate(&bed, "loop");
    assert!(
        looped.report.contains("XDP loop"),
        "the report names the loop: {}",
        looped.report
    );
    assert!(
        looped.counted_udp >= AT_LEAST,
        "the sink counted {} frames of the loop (report: {})",
        looped.counted_udp,
        looped.report
    );
    assert!(
        looped.counted_udp <= looped.offered,
        "the sink counted more ({}) than the loop offered ({})",
        looped.counted_udp,
        looped.offered
    );
    assert_eq!(
        links_in(&bed),
        before,
        "the loop's veth pair is removed when the generator ends"
    );

    // Live frames where the kernel allows them, else the loop, named on
    // standard error; either way frames arrive.
    let auto = generate(&bed, "auto");
    let way_named = auto.report.contains("live frames")
        || (auto.report.contains("XDP loop") && auto.notes.contains("refuses"));
    assert!(
        way_named,
        "auto names its way: {} / {}",
        auto.report, auto.notes
    );
    assert!(
        auto.counted_udp >= AT_LEAST,
        "the sink counted {} frames under auto (report: {})",
        auto.counted_udp,
        auto.report
    );
    assert_eq!(links_in(&bed), before, "nothing left behind by auto");
}
