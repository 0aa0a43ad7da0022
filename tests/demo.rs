//! Root testbed: `microseg demo --once` runs end to end, every traffic
//! check comes out as its sample policy says, with the deciding rule from
//! the flow records; the map, the monitor-to-enforce step and the
//! quarantine show (so the demo cannot rot).

mod common;

use common::run_microseg;
use common::testbed::root_or_skip;

#[test]
fn the_demo_runs_and_every_check_is_as_expected() {
    if !root_or_skip("the_demo_runs_and_every_check_is_as_expected") {
        return;
    }
    let out = run_microseg(&["demo", "--once"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("demo: every check as expected"), "{report}");
    for line in [
        "web -> app tcp/8080  ALLOWED  by rule web-to-app",
        "app -> db  tcp/5432  ALLOWED  by rule app-to-db",
        "web -> db  tcp/5432  DENIED   by the default action",
        "web -> db  ping      ALLOWED  would be denied by watch-web-pings (monitor mode",
        "API: http://127.0.0.1:",
        "the web page: http://127.0.0.1:",
        "/#token=",
        "dependency map (",
        "  web -> db  icmp/8    would_deny -> denied",
        "  web -> db  ping      DENIED   by rule watch-web-pings",
        "quarantine of db (10.203.10.3)",
        "  app -> db  tcp/5432  DENIED   (",
        "quarantine of db lifted:\n  app -> db  tcp/5432  ALLOWED  by rule app-to-db",
        "events lost: 0",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
    // The map's edge for the denied attempts (each SYN sent is a record).
    let map = report
        .split("dependency map (")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_default();
    assert!(
        map.lines()
            .any(|l| l.starts_with("  web -> db  tcp/5432") && l.ends_with(" denied")),
        "{map}"
    );
}
