//! The `microseg` command line: flags are checked and bad ones named.

mod common;
use common::run_microseg;

#[test]
fn version_prints_the_crate_version() {
    let out = run_microseg(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn unknown_subcommand_is_named_in_the_error() {
    let out = run_microseg(&["frobnicate"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("frobnicate"), "{text}");
}
