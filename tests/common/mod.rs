//! Helpers shared by the integration tests in `tests/` (compiled as the
//! `microseg-control` package's integration tests, so that cargo builds the
//! `microseg` binary for them and tells them where it is).
#![allow(dead_code)] // each test binary uses a different subset

pub mod testbed;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `microseg` binary with `args` and returns its output.
pub fn run_microseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microseg"))
        .args(args)
        .output()
        .expect("run microseg")
}

/// The shared ClassBench sets: `$MICROSEG_CLASSBENCH`, else
/// `../shared/classbench` beside the repository. Missing sets fail the
/// test loudly: they are part of the test suite's input.
pub fn classbench_path(set: &str) -> PathBuf {
    let dir = std::env::var_os("MICROSEG_CLASSBENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/classbench")
        });
    let path = dir.join(set);
    assert!(
        path.is_file(),
        "ClassBench set {} not found (set MICROSEG_CLASSBENCH to its folder)",
        path.display()
    );
    path
}

/// A scratch directory for one test, removed on drop (also on failure).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("microseg-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
pub mod api;
pub mod appliance;
