//! Helpers shared by the integration tests in `tests/` (compiled as the
//! `microseg-control` package's integration tests, so that cargo builds the
//! `microseg` binary for them and tells them where it is).
#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Command, Output};

/// Runs the `microseg` binary with `args` and returns its output.
pub fn run_microseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microseg"))
        .args(args)
        .output()
        .expect("run microseg")
}
