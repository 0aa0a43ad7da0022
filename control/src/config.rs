//! The appliance configuration of `microseg run -c CONFIG` (YAML):
//!
//! ```yaml
//! ports: [eth1, eth2]        # switch ports: interfaces (host ends of veths, NICs)
//! workers: auto              # a number, or auto: one per core less one, at least 1
//! cpus: [1]                  # optional: the core of each worker
//! poll_mode: adaptive        # adaptive (sleep when idle) | busy (spin)
//! frames_per_port: 4096      # UMEM frames per port and worker
//! fast_path: false           # forward admitted TCP/UDP flows in XDP (docs/operations.md)
//! rules: rules.yaml          # EITHER a rules file (relative to this file), reloaded on SIGHUP
//! policy: policy.yaml        # OR the policy engine: first start's document; then the API
//! state_dir: /var/lib/microseg   # policy versions, audit trail, generated API token
//! conntrack:
//!   max_entries: 1048576
//!   per_source_limit: 131072
//!   timeouts: {tcp_established: 432000, udp_replied: 120}   # seconds
//!   sweep_pass: 5            # s in which expiry visits the whole table once
//! api:
//!   listen: 127.0.0.1:9870   # the API; loopback by default
//!   tokens_file: tokens      # `ROLE NAME TOKEN` lines; absent: an admin token is generated
//!   body_limit: 4194304      # largest request body, bytes
//!   tls: {cert: cert.pem, key: key.pem}   # optional: serve HTTPS (PEM files)
//! visibility:
//!   flow_records: 100000     # flow records kept in memory
//!   learning_seconds: 3600   # edges seen this long are learned; new ones later are anomalies
//! alerts:                    # see docs/alerts.md
//!   rate_limit: {per_minute: 60, burst: 10}
//!   sinks:
//!     - syslog: {address: "127.0.0.1:514", transport: udp, format: rfc5424}
//!     - file: {path: alerts.jsonl}
//! ```
//!
//! Every problem is reported at once with the field it is about
//! (`ports[1]: interface msx9 does not exist`), and nothing starts until
//! the whole file is valid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use microseg_dataplane::conntrack::{ConntrackConfig, Timeouts};
use microseg_dataplane::worker::{default_worker_count, PollMode};
use serde::Deserialize;

use crate::alerts::AlertConfig;

/// Why a configuration was refused.
pub use crate::file_error::FileError as ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    ports: Vec<String>,
    #[serde(default)]
    workers: WorkersText,
    #[serde(default)]
    cpus: Option<Vec<usize>>,
    #[serde(default)]
    poll_mode: PollModeText,
    #[serde(default = "default_frames")]
    frames_per_port: u32,
    #[serde(default)]
    fast_path: bool,
    rules: Option<PathBuf>,
    policy: Option<PathBuf>,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default)]
    conntrack: ConntrackText,
    #[serde(default)]
    api: ApiText,
    #[serde(default)]
    visibility: VisibilityText,
    #[serde(default)]
    alerts: AlertConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibilityText {
    #[serde(default = "default_flow_records")]
    flow_records: usize,
    #[serde(default = "default_learning_seconds")]
    learning_seconds: u64,
}

impl Default for VisibilityText {
    fn default() -> Self {
        Self {
            flow_records: default_flow_records(),
            learning_seconds: default_learning_seconds(),
        }
    }
}

fn default_flow_records() -> usize {
    crate::visibility::DEFAULT_FLOW_CAPACITY
}

fn default_learning_seconds() -> u64 {
    crate::visibility::DEFAULT_LEARNING.as_secs()
}

fn default_frames() -> u32 {
    4096
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/microseg")
}

#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
enum WorkersText {
    #[default]
    #[serde(skip)]
    Auto,
    Count(usize),
    Word(String),
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum PollModeText {
    #[default]
    Adaptive,
    Busy,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConntrackText {
    max_entries: Option<usize>,
    per_source_limit: Option<u32>,
    /// Seconds.
    sweep_pass: Option<u64>,
    #[serde(default)]
    timeouts: TimeoutsText,
}

/// Longest `conntrack.sweep_pass`: an expired entry's end is reported at
/// most this late.
const MAX_SWEEP_PASS_SECONDS: u64 = 600;

/// Seconds; absent ones keep Linux nf_conntrack's defaults.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TimeoutsText {
    tcp_syn_sent: Option<u64>,
    tcp_syn_recv: Option<u64>,
    tcp_established: Option<u64>,
    tcp_fin_wait: Option<u64>,
    tcp_close_wait: Option<u64>,
    tcp_last_ack: Option<u64>,
    tcp_time_wait: Option<u64>,
    tcp_close: Option<u64>,
    udp_unreplied: Option<u64>,
    udp_replied: Option<u64>,
    icmp: Option<u64>,
    other_unreplied: Option<u64>,
    other_replied: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiText {
    #[serde(default = "default_listen")]
    listen: String,
    tokens_file: Option<PathBuf>,
    tls: Option<TlsText>,
    #[serde(default = "default_body_limit")]
    body_limit: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsText {
    cert: PathBuf,
    key: PathBuf,
}

fn default_body_limit() -> usize {
    crate::api::DEFAULT_BODY_LIMIT
}

impl Default for ApiText {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tokens_file: None,
            tls: None,
            body_limit: default_body_limit(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9870".into()
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ports: Vec<String>,
    pub workers: usize,
    /// The core of each worker (None: not pinned).
    pub cpus: Vec<Option<usize>>,
    pub poll_mode: PollMode,
    pub frames_per_port: u32,
    /// Forward the frames of admitted flows in XDP (the fast path).
    pub fast_path: bool,
    /// Where the policy comes from (paths absolute, or relative to the
    /// working directory).
    pub source: PolicySource,
    pub state_dir: PathBuf,
    pub conntrack: ConntrackConfig,
    pub api_listen: SocketAddr,
    pub api_tokens: Option<PathBuf>,
    pub api_body_limit: usize,
    /// (certificate chain, private key), PEM: serve the API over TLS.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// Flow records kept in memory.
    pub flow_records: usize,
    /// How long edges are learned before new ones are anomalies.
    pub learning: std::time::Duration,
    /// Alert sinks and rate limit (file paths anchored to the config's
    /// folder).
    pub alerts: AlertConfig,
}

/// The policy's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A rules file, reloaded on SIGHUP.
    Rules(PathBuf),
    /// The policy engine; the document applied at the first start (later
    /// starts restore the version in force from the state directory).
    Policy(Option<PathBuf>),
}

/// What the machine offers, for checking a configuration against it.
pub trait Machine {
    fn cores(&self) -> usize;
    /// The interface's receive queues; None if it does not exist.
    fn rx_queues(&self, ifname: &str) -> Option<u32>;
}

/// This machine.
#[derive(Debug, Clone, Copy)]
pub struct LocalMachine;

impl Machine for LocalMachine {
    /// CPUs online on the machine, not just those this process may use
    /// (a `taskset` on the appliance must not hide the workers' CPUs).
    fn cores(&self) -> usize {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|list| online_cpus(&list))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    fn rx_queues(&self, ifname: &str) -> Option<u32> {
        if ifname.is_empty() || ifname.contains('/') || ifname.len() > 15 {
            return None;
        }
        microseg_dataplane::xsk::rx_queues(ifname).ok()
    }
}

/// The number of CPUs in a kernel CPU list (`0-3,6`): the highest + 1.
fn online_cpus(list: &str) -> Option<usize> {
    list.trim()
        .split([',', '-'])
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .max()
        .map(|highest| highest + 1)
}

const SECOND: u64 = 1_000_000_000;

impl Config {
    /// Reads and validates a configuration file; a relative rules path is
    /// taken from the file's folder.
    pub fn load(path: &Path, machine: &impl Machine) -> Result<Self, ConfigError> {
        let folder = path.parent().unwrap_or(Path::new("."));
        crate::file_error::load(path, |text| Self::parse(text, folder, machine))
    }

    /// Validates configuration text; `folder` anchors a relative rules path.
    pub fn parse(text: &str, folder: &Path, machine: &impl Machine) -> Result<Self, ConfigError> {
        let file: ConfigFile = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: "config".into(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let cores = machine.cores();
        let workers = match &file.workers {
            WorkersText::Auto => default_worker_count(),
            WorkersText::Word(w) if w == "auto" => default_worker_count(),
            WorkersText::Count(n) if (1..=cores).contains(n) => *n,
            WorkersText::Count(n) => {
                problems.push(format!(
                    "workers: {n} is not between 1 and the {cores} cores"
                ));
                1
            }
            WorkersText::Word(w) => {
                problems.push(format!("workers: `{w}` is neither a number nor `auto`"));
                1
            }
        };
        if file.ports.is_empty() {
            problems.push("ports: at least one port is needed".into());
        }
        for (index, port) in file.ports.iter().enumerate() {
            if file.ports[..index].contains(port) {
                problems.push(format!("ports[{index}]: {port} is listed twice"));
                continue;
            }
            match machine.rx_queues(port) {
                None => problems.push(format!("ports[{index}]: interface {port} does not exist")),
                Some(queues) if (queues as usize) < workers => problems.push(format!(
                    "ports[{index}]: {port} has {queues} receive queue(s); {workers} workers need {workers}"
                )),
                Some(_) => {}
            }
        }
        let cpus = match &file.cpus {
            None => (0..workers)
                .map(|w| Some(if cores > 1 { (w + 1) % cores } else { 0 }))
                .collect(),
            Some(list) => {
                if list.len() != workers {
                    problems.push(format!(
                        "cpus: {} listed for {workers} worker(s)",
                        list.len()
                    ));
                }
                for (index, cpu) in list.iter().enumerate() {
                    if *cpu >= cores {
                        problems.push(format!(
                            "cpus[{index}]: CPU {cpu} does not exist ({cores} cores)"
                        ));
                    }
                }
                list.iter().map(|c| Some(*c)).collect()
            }
        };
        if !(64..=1 << 20).contains(&file.frames_per_port)
            || !file.frames_per_port.is_power_of_two()
        {
            problems.push(format!(
                "frames_per_port: {} must be a power of two from 64 to 1048576",
                file.frames_per_port
            ));
        }
        let conntrack = conntrack_config(&file.conntrack, &mut problems);
        let api_listen = match file.api.listen.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                problems.push(format!(
                    "api.listen: `{}` is not an address:port",
                    file.api.listen
                ));
                SocketAddr::from(([127, 0, 0, 1], 9870))
            }
        };
        let anchored = |path: &PathBuf| {
            if path.is_absolute() {
                path.clone()
            } else {
                folder.join(path)
            }
        };
        let readable = |problems: &mut Vec<String>, field: &str, path: &PathBuf| {
            if !path.is_file() {
                problems.push(format!(
                    "{field}: {} is not a readable file",
                    path.display()
                ));
            }
        };
        let source = match (&file.rules, &file.policy) {
            (Some(_), Some(_)) => {
                problems.push("rules, policy: give one of the two, not both".into());
                PolicySource::Policy(None)
            }
            (Some(rules), None) => {
                let path = anchored(rules);
                readable(&mut problems, "rules", &path);
                PolicySource::Rules(path)
            }
            (None, Some(policy)) => {
                let path = anchored(policy);
                readable(&mut problems, "policy", &path);
                PolicySource::Policy(Some(path))
            }
            (None, None) => PolicySource::Policy(None),
        };
        let api_tokens = file.api.tokens_file.as_ref().map(anchored);
        let api_tls = file
            .api
            .tls
            .as_ref()
            .map(|t| (anchored(&t.cert), anchored(&t.key)));
        if let Some((cert, key)) = &api_tls {
            readable(&mut problems, "api.tls.cert", cert);
            readable(&mut problems, "api.tls.key", key);
        }
        if let Some(tokens) = &api_tokens {
            readable(&mut problems, "api.tokens_file", tokens);
        }
        if !(1024..=1 << 30).contains(&file.api.body_limit) {
            problems.push(format!(
                "api.body_limit: {} must be 1024 to 1073741824 bytes",
                file.api.body_limit
            ));
        }
        let state_dir = anchored(&file.state_dir);
        if !(1..=10_000_000).contains(&file.visibility.flow_records) {
            problems.push(format!(
                "visibility.flow_records: {} must be 1 to 10000000",
                file.visibility.flow_records
            ));
        }
        let mut alerts = file.alerts;
        alerts.anchor_paths(folder);
        problems.extend(
            alerts
                .check()
                .into_iter()
                .map(|(path, message)| format!("{path}: {message}")),
        );
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: "config".into(),
                problems,
            });
        }
        Ok(Self {
            ports: file.ports,
            workers,
            cpus,
            poll_mode: match file.poll_mode {
                PollModeText::Adaptive => PollMode::Adaptive,
                PollModeText::Busy => PollMode::Busy,
            },
            frames_per_port: file.frames_per_port,
            fast_path: file.fast_path,
            source,
            state_dir,
            conntrack,
            api_listen,
            api_tokens,
            api_body_limit: file.api.body_limit,
            flow_records: file.visibility.flow_records,
            learning: std::time::Duration::from_secs(file.visibility.learning_seconds),
            alerts,
            api_tls,
        })
    }
}

fn conntrack_config(text: &ConntrackText, problems: &mut Vec<String>) -> ConntrackConfig {
    let mut config = ConntrackConfig::default();
    if let Some(max) = text.max_entries {
        if max == 0 || max > 1 << 28 {
            problems.push(format!(
                "conntrack.max_entries: {max} must be 1 to 268435456"
            ));
        } else {
            config.max_entries = max;
        }
    }
    if let Some(limit) = text.per_source_limit {
        if limit == 0 {
            problems.push("conntrack.per_source_limit: must be at least 1".into());
        } else {
            config.per_source_limit = limit;
        }
    }
    match text.sweep_pass {
        Some(s) if s == 0 || s > MAX_SWEEP_PASS_SECONDS => problems.push(format!(
            "conntrack.sweep_pass: {s} s must be 1 to {MAX_SWEEP_PASS_SECONDS}"
        )),
        Some(s) => config.sweep_pass = s * SECOND,
        None => {}
    }
    let t = &text.timeouts;
    let fields: [(&str, Option<u64>, &mut u64); 13] = {
        let Timeouts {
            tcp_syn_sent,
            tcp_syn_recv,
            tcp_established,
            tcp_fin_wait,
            tcp_close_wait,
            tcp_last_ack,
            tcp_time_wait,
            tcp_close,
            udp_unreplied,
            udp_replied,
            icmp,
            other_unreplied,
            other_replied,
        } = &mut config.timeouts;
        [
            ("tcp_syn_sent", t.tcp_syn_sent, tcp_syn_sent),
            ("tcp_syn_recv", t.tcp_syn_recv, tcp_syn_recv),
            ("tcp_established", t.tcp_established, tcp_established),
            ("tcp_fin_wait", t.tcp_fin_wait, tcp_fin_wait),
            ("tcp_close_wait", t.tcp_close_wait, tcp_close_wait),
            ("tcp_last_ack", t.tcp_last_ack, tcp_last_ack),
            ("tcp_time_wait", t.tcp_time_wait, tcp_time_wait),
            ("tcp_close", t.tcp_close, tcp_close),
            ("udp_unreplied", t.udp_unreplied, udp_unreplied),
            ("udp_replied", t.udp_replied, udp_replied),
            ("icmp", t.icmp, icmp),
            ("other_unreplied", t.other_unreplied, other_unreplied),
            ("other_replied", t.other_replied, other_replied),
        ]
    };
    for (name, seconds, slot) in fields {
        match seconds {
            Some(0) => problems.push(format!("conntrack.timeouts.{name}: must be at least 1 s")),
            Some(s) if s > 10 * 365 * 86_400 => problems.push(format!(
                "conntrack.timeouts.{name}: {s} s is over ten years"
            )),
            Some(s) => *slot = s * SECOND,
            None => {}
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeMachine;

    impl Machine for FakeMachine {
        fn cores(&self) -> usize {
            4
        }
        fn rx_queues(&self, ifname: &str) -> Option<u32> {
            match ifname {
                "one" => Some(1),
                "two" | "other" => Some(2),
                _ => None,
            }
        }
    }

    fn folder_with_rules() -> scratch::Folder {
        scratch::Folder::new("rules.yaml", "rules: []\n")
    }

    /// A scratch folder without a tempfile crate: under the target
    /// directory's tmp, removed on drop.
    mod scratch {
        pub struct Folder(pub std::path::PathBuf);
        impl Folder {
            pub fn new(file: &str, text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "microseg-config-test-{}-{file}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&path).expect("scratch folder");
                std::fs::write(path.join(file), text).expect("scratch file");
                Self(path)
            }
        }
        impl Drop for Folder {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn cpu_lists_count_cpus() {
        assert_eq!(online_cpus("0-1\n"), Some(2));
        assert_eq!(online_cpus("0-3,6"), Some(7));
        assert_eq!(online_cpus("0"), Some(1));
        assert_eq!(online_cpus(""), None);
        assert!(LocalMachine.cores() >= 1);
    }

    #[test]
    fn a_full_config_is_read_with_units_and_defaults() {
        let folder = folder_with_rules();
        let text = "
ports: [two, other]
workers: 2
cpus: [2, 3]
poll_mode: busy
frames_per_port: 2048
fast_path: true
rules: rules.yaml
conntrack:
  max_entries: 1000
  sweep_pass: 2
  timeouts: {tcp_established: 3600, icmp: 5}
api: {listen: '127.0.0.1:9999'}
visibility: {flow_records: 500, learning_seconds: 60}
alerts:
  rate_limit: {per_minute: 10, burst: 2}
  sinks:
    - syslog: {address: '127.0.0.1:5514', transport: tcp, format: cef}
    - file: {path: alerts.jsonl}
";
        let config = Config::parse(text, &folder.0, &FakeMachine).expect("valid");
        assert_eq!(config.flow_records, 500);
        assert_eq!(config.learning.as_secs(), 60);
        assert_eq!(config.alerts.sinks.len(), 2);
        assert_eq!(
            config.alerts.sinks[1].name(),
            format!("file {}", folder.0.join("alerts.jsonl").display()),
            "relative to the config's folder"
        );
        assert_eq!(config.ports, ["two", "other"]);
        assert_eq!(
            (config.workers, config.cpus.clone()),
            (2, vec![Some(2), Some(3)])
        );
        assert_eq!(config.poll_mode, PollMode::Busy);
        assert!(config.fast_path);
        assert_eq!(config.conntrack.max_entries, 1000);
        assert_eq!(config.conntrack.sweep_pass, 2 * SECOND);
        assert_eq!(config.conntrack.timeouts.tcp_established, 3600 * SECOND);
        assert_eq!(config.conntrack.timeouts.icmp, 5 * SECOND);
        let defaults = Timeouts::default();
        assert_eq!(
            config.conntrack.timeouts.tcp_syn_sent,
            defaults.tcp_syn_sent
        );
        assert_eq!(config.api_listen.port(), 9999);
        assert_eq!(
            config.source,
            PolicySource::Rules(folder.0.join("rules.yaml"))
        );

        let minimal = Config::parse("ports: [one]\nrules: rules.yaml\n", &folder.0, &FakeMachine)
            .expect("valid");
        assert_eq!(minimal.poll_mode, PollMode::Adaptive);
        assert!(!minimal.fast_path, "off unless asked for");
        assert_eq!(
            minimal.conntrack.sweep_pass,
            microseg_dataplane::conntrack::DEFAULT_SWEEP_PASS
        );
        assert_eq!(minimal.workers, default_worker_count());
        assert!(minimal.api_listen.ip().is_loopback(), "loopback by default");
    }

    #[test]
    fn every_problem_names_its_field() {
        let folder = folder_with_rules();
        let text = "
ports: [one, missing, one]
workers: 2
cpus: [9]
frames_per_port: 1000
rules: nowhere.yaml
conntrack:
  max_entries: 0
  sweep_pass: 0
  timeouts: {udp_replied: 0}
api: {listen: 'localhost'}
visibility: {flow_records: 0}
alerts:
  sinks:
    - syslog: {address: 'localhost:514'}
";
        let ConfigError::Invalid { problems, .. } =
            Config::parse(text, &folder.0, &FakeMachine).expect_err("invalid")
        else {
            panic!("a validation error")
        };
        crate::test_support::assert_problems(
            &problems,
            &[
                "ports[0]: one has 1 receive queue(s); 2 workers need 2",
                "ports[1]: interface missing does not exist",
                "ports[2]: one is listed twice",
                "cpus: 1 listed for 2 worker(s)",
                "cpus[0]: CPU 9 does not exist",
                "frames_per_port: 1000 must be a power of two",
                "rules: ",
                "conntrack.max_entries: 0",
                "conntrack.sweep_pass: 0 s must be 1 to 600",
                "conntrack.timeouts.udp_replied: must be at least 1 s",
                "api.listen: `localhost` is not an address:port",
                "visibility.flow_records: 0 must be 1 to 10000000",
                "alerts.sinks[0].syslog.address",
            ],
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let folder = folder_with_rules();
        for (text, expected) in [
            ("ports: [one]\nrules: rules.yaml\nworkrs: 1\n", "workrs"),
            (
                "ports: [one]\nrules: rules.yaml\nconntrack: {max_entires: 5}\n",
                "max_entires",
            ),
            (
                "ports: [one]\nrules: rules.yaml\npoll_mode: lazy\n",
                "poll_mode",
            ),
            ("ports: one\nrules: rules.yaml\n", "ports"),
            ("rules: rules.yaml\n", "ports"),
            (
                "ports: [one]\nrules: rules.yaml\nworkers: many\n",
                "workers",
            ),
        ] {
            let message = Config::parse(text, &folder.0, &FakeMachine)
                .expect_err(text)
                .to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }
}
