//! Root testbed: `microseg demo --once` runs end to end, every traffic
//! check comes out as its sample policy says, with the deciding rule (so
//! the demo cannot rot).

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
        "status API: http://127.0.0.1:",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
}
