//! Root-only testbeds for the tests: `microseg_control::testbed`, plus the
//! rule that root tests skip without root but fail under CI.

#[allow(unused_imports)] // each test binary uses a different subset
pub use microseg_control::testbed::{run, ChildGuard, Testbed, TestbedSwitch};

/// True when the test may use root testbeds. Without root it skips,
/// except under CI (CI=true), where root tests must run: it fails.
pub fn root_or_skip(test: &str) -> bool {
    if microseg_control::testbed::is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI must run it"
    );
    eprintln!("skipping {test}: needs root");
    false
}
