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

/// The PromQL expressions of the shipped Grafana dashboard
/// (`docs/grafana-dashboard.json`), and the metric names they query.
pub fn grafana_queries() -> (Vec<String>, std::collections::BTreeSet<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the Grafana dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find("microseg_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            names.insert(family.to_string());
        }
    }
    (exprs, names)
}

/// Every metric the shipped Grafana dashboard queries is in `metrics` (a
/// `/metrics` text), except those starting with one of `unless`.
pub fn assert_dashboard_metrics(metrics: &str, unless: &[&str]) {
    let (_, names) = grafana_queries();
    for name in names
        .iter()
        .filter(|n| !unless.iter().any(|u| n.starts_with(u)))
    {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
}
