//! Root testbed: `microseg demo` runs end to end and every traffic check
//! comes out as its sample policy says (so the demo cannot rot).

mod common;

use common::run_microseg;
use common::testbed::root_or_skip;

#[test]
fn the_demo_runs_and_every_check_is_as_expected() {
    if !root_or_skip("the_demo_runs_and_every_check_is_as_expected") {
        return;
    }
    let out = run_microseg(&["demo"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("demo: every check as expected"), "{report}");
    assert!(report.contains("web -> app tcp/8080  ALLOWED"), "{report}");
    assert!(report.contains("web -> db  tcp/5432  DENIED"), "{report}");
    assert!(report.contains("would-deny"), "{report}");
}
