//! The `alerts:` section of the appliance configuration: where alerts go
//! and how many may go. Parsed strictly (unknown fields are errors), then
//! checked as a whole so that every problem is reported at once with the
//! field it is about (`alerts.sinks[1].syslog.address: …`).
//!
//! ```yaml
//! rate_limit: {per_minute: 60, burst: 10}   # per (kind, rule, source address)
//! queue: 1024                               # alerts held per sink; more are dropped (counted)
//! sinks:
//!   - syslog: {address: "127.0.0.1:514", transport: udp, format: rfc5424}   # udp|tcp, rfc5424|cef
//!   - file: {path: /var/log/microseg/alerts.jsonl}                          # JSON lines
//!   - webhook: {url: "http://127.0.0.1:8080/hook", retries: 5, timeout_ms: 2000, backoff_ms: 200}
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::sinks::webhook::HttpUrl;

/// Largest `queue`: a million alerts of a few hundred bytes per sink.
const MAX_QUEUE: usize = 1_000_000;
/// Largest `retries` for a sink.
const MAX_RETRIES: u32 = 100;
/// Largest webhook `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 300_000;
/// Retry delays double from `backoff_ms` up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The `alerts:` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Alerts held per sink before new ones are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            rate_limit: RateLimitConfig::default(),
            queue: default_queue(),
            sinks: Vec::new(),
        }
    }
}

fn default_queue() -> usize {
    1024
}

/// A token bucket per (kind, rule, source address): `burst` alerts at
/// once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_minute: default_per_minute(),
            burst: default_burst(),
        }
    }
}

fn default_per_minute() -> u32 {
    60
}

fn default_burst() -> u32 {
    10
}

/// One place alerts go: in YAML a map with one key, the sink's type
/// (`- syslog: {…}`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SinkEntry")]
pub enum SinkConfig {
    Syslog(SyslogSinkConfig),
    File(FileSinkConfig),
    Webhook(WebhookSinkConfig),
}

/// A sink as written. (serde_yaml would want a `!syslog` tag for an enum;
/// a one-key map reads better and works in JSON as well.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkEntry {
    syslog: Option<SyslogSinkConfig>,
    file: Option<FileSinkConfig>,
    webhook: Option<WebhookSinkConfig>,
}

impl TryFrom<SinkEntry> for SinkConfig {
    type Error = &'static str;

    fn try_from(entry: SinkEntry) -> Result<Self, Self::Error> {
        match (entry.syslog, entry.file, entry.webhook) {
            (Some(syslog), None, None) => Ok(SinkConfig::Syslog(syslog)),
            (None, Some(file), None) => Ok(SinkConfig::File(file)),
            (None, None, Some(webhook)) => Ok(SinkConfig::Webhook(webhook)),
            _ => Err("a sink is one of `syslog: {…}`, `file: {…}` or `webhook: {…}`"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// `IP:PORT` of the receiver.
    pub address: String,
    #[serde(default)]
    pub transport: SyslogTransport,
    #[serde(default)]
    pub format: SyslogFormat,
    /// Further attempts after a failed send (TCP: after a reconnect).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first retry's delay; each next one doubles (up to 30 s).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// One datagram per alert.
    #[default]
    Udp,
    /// One connection, RFC 6587 octet-counted frames.
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// RFC 5424 with the alert's fields as structured data.
    #[default]
    Rfc5424,
    /// A CEF record as the message of an RFC 5424 line.
    Cef,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// JSON lines are appended here; the directory must exist.
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// `http://HOST[:PORT][/PATH]`.
    pub url: String,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// For connecting, sending and reading the answer, each.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_retries() -> u32 {
    3
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_backoff_ms() -> u64 {
    200
}

impl SinkConfig {
    /// How stats and errors name the sink: `syslog udp 127.0.0.1:514`,
    /// `file /var/log/alerts.jsonl`, `webhook http://…`.
    pub fn name(&self) -> String {
        match self {
            SinkConfig::Syslog(syslog) => {
                let transport = match syslog.transport {
                    SyslogTransport::Udp => "udp",
                    SyslogTransport::Tcp => "tcp",
                };
                format!("syslog {transport} {}", syslog.address)
            }
            SinkConfig::File(file) => format!("file {}", file.path.display()),
            SinkConfig::Webhook(webhook) => format!("webhook {}", webhook.url),
        }
    }
}

/// Collects problems under a field path.
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    fn at_least_one(&mut self, field: String, value: u64) {
        if value == 0 {
            self.add(field, "must be at least 1");
        }
    }

    fn at_most(&mut self, field: String, value: u64, max: u64) {
        if value > max {
            self.add(field, format!("{value} is more than {max}"));
        }
    }
}

impl AlertConfig {
    /// Every problem, as (field path, message); empty when valid.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = Problems(Vec::new());
        let rate = &self.rate_limit;
        problems.at_least_one(
            "alerts.rate_limit.per_minute".into(),
            rate.per_minute.into(),
        );
        problems.at_least_one("alerts.rate_limit.burst".into(), rate.burst.into());
        problems.at_least_one("alerts.queue".into(), self.queue as u64);
        problems.at_most("alerts.queue".into(), self.queue as u64, MAX_QUEUE as u64);
        for (index, sink) in self.sinks.iter().enumerate() {
            check_sink(sink, &format!("alerts.sinks[{index}]"), &mut problems);
            let name = sink.name();
            if let Some(first) = self.sinks[..index].iter().position(|s| s.name() == name) {
                problems.add(
                    format!("alerts.sinks[{index}]"),
                    format!("`{name}` is already alerts.sinks[{first}]"),
                );
            }
        }
        problems.0
    }

    /// Relative file-sink paths made relative to `folder` (the appliance
    /// configuration's folder).
    pub fn anchor_paths(&mut self, folder: &Path) {
        for sink in &mut self.sinks {
            if let SinkConfig::File(file) = sink {
                if file.path.is_relative() && !file.path.as_os_str().is_empty() {
                    file.path = folder.join(&file.path);
                }
            }
        }
    }
}

fn check_sink(sink: &SinkConfig, at: &str, problems: &mut Problems) {
    match sink {
        SinkConfig::Syslog(syslog) => {
            let at = format!("{at}.syslog");
            if let Err(message) = receiver_address(&syslog.address) {
                problems.add(format!("{at}.address"), message);
            }
            check_retries(&at, syslog.retries, syslog.backoff_ms, problems);
        }
        SinkConfig::File(file) => check_file(&format!("{at}.file.path"), &file.path, problems),
        SinkConfig::Webhook(webhook) => {
            let at = format!("{at}.webhook");
            if let Err(message) = HttpUrl::parse(&webhook.url) {
                problems.add(format!("{at}.url"), message);
            }
            problems.at_least_one(format!("{at}.timeout_ms"), webhook.timeout_ms);
            problems.at_most(
                format!("{at}.timeout_ms"),
                webhook.timeout_ms,
                MAX_TIMEOUT_MS,
            );
            check_retries(&at, webhook.retries, webhook.backoff_ms, problems);
        }
    }
}

fn check_retries(at: &str, retries: u32, backoff_ms: u64, problems: &mut Problems) {
    problems.at_most(format!("{at}.retries"), retries.into(), MAX_RETRIES.into());
    problems.at_least_one(format!("{at}.backoff_ms"), backoff_ms);
    let cap_ms = u64::try_from(BACKOFF_CAP.as_millis()).unwrap_or(u64::MAX);
    problems.at_most(format!("{at}.backoff_ms"), backoff_ms, cap_ms);
}

fn check_file(field: &str, path: &Path, problems: &mut Problems) {
    if path.as_os_str().is_empty() {
        problems.add(field, "is empty");
        return;
    }
    if path.is_dir() {
        problems.add(field, format!("{} is a directory", path.display()));
        return;
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        problems.add(
            field,
            format!("directory {} does not exist", directory.display()),
        );
    }
}

/// A syslog receiver's `IP:PORT`.
pub(crate) fn receiver_address(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<SocketAddr>() {
        Ok(address) if address.port() == 0 => Err(format!("`{text}`: port 0 is not a port")),
        Ok(address) => Ok(address),
        Err(_) => Err(format!(
            "`{text}` is not IP:PORT (like 127.0.0.1:514 or [::1]:514)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> AlertConfig {
        serde_yaml::from_str(yaml).expect("valid YAML for AlertConfig")
    }

    fn fields(problems: &[(String, String)]) -> Vec<&str> {
        problems.iter().map(|(field, _)| field.as_str()).collect()
    }

    #[test]
    fn an_absent_section_means_no_sinks_and_the_default_limits() {
        let config = parse("{}");
        assert_eq!(config, AlertConfig::default());
        assert!(config.sinks.is_empty());
        assert_eq!(
            config.rate_limit,
            RateLimitConfig {
                per_minute: 60,
                burst: 10
            }
        );
        assert_eq!(config.queue, 1024);
        assert!(config.check().is_empty());
    }

    #[test]
    fn the_documented_example_parses_and_is_valid() {
        let dir = std::env::temp_dir();
        let config = parse(&format!(
            r#"
rate_limit: {{per_minute: 30, burst: 5}}
queue: 64
sinks:
  - syslog: {{address: "127.0.0.1:514", transport: tcp, format: cef}}
  - file: {{path: {}/alerts.jsonl}}
  - webhook: {{url: "http://127.0.0.1:8080/hook", retries: 5, timeout_ms: 2000, backoff_ms: 200}}
"#,
            dir.display()
        ));
        assert_eq!(config.check(), Vec::<(String, String)>::new());
        assert_eq!(config.queue, 64);
        assert_eq!(config.sinks[0].name(), "syslog tcp 127.0.0.1:514");
        match &config.sinks[0] {
            SinkConfig::Syslog(syslog) => {
                assert_eq!(syslog.transport, SyslogTransport::Tcp);
                assert_eq!(syslog.format, SyslogFormat::Cef);
                assert_eq!(syslog.retries, 3);
            }
            other => panic!("not a syslog sink: {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_and_sink_types_are_refused() {
        for yaml in [
            "queues: 3",
            "rate_limit: {per_minute: 1, bursts: 2}",
            "sinks: [{syslog: {address: '127.0.0.1:514', transprot: tcp}}]",
            "sinks: [{kafka: {topic: x}}]",
            "sinks: [{}]",
            "sinks: [{file: {path: /a}, syslog: {address: '127.0.0.1:514'}}]",
            "sinks: [{syslog: {address: '127.0.0.1:514', transport: quic}}]",
        ] {
            assert!(
                serde_yaml::from_str::<AlertConfig>(yaml).is_err(),
                "accepted: {yaml}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let config = parse(
            r#"
rate_limit: {per_minute: 0, burst: 0}
queue: 0
sinks:
  - syslog: {address: "localhost:514"}
  - syslog: {address: "127.0.0.1:0", backoff_ms: 0}
  - file: {path: ""}
  - file: {path: /nonexistent-microseg-dir/alerts.jsonl}
  - webhook: {url: "https://siem.example/hook", timeout_ms: 0}
  - webhook: {url: "ftp://x/y", retries: 1000}
"#,
        );
        let problems = config.check();
        assert_eq!(
            fields(&problems),
            [
                "alerts.rate_limit.per_minute",
                "alerts.rate_limit.burst",
                "alerts.queue",
                "alerts.sinks[0].syslog.address",
                "alerts.sinks[1].syslog.address",
                "alerts.sinks[1].syslog.backoff_ms",
                "alerts.sinks[2].file.path",
                "alerts.sinks[3].file.path",
                "alerts.sinks[4].webhook.url",
                "alerts.sinks[4].webhook.timeout_ms",
                "alerts.sinks[5].webhook.url",
                "alerts.sinks[5].webhook.retries",
            ],
            "{problems:#?}"
        );
        let message = |field: &str| {
            problems
                .iter()
                .find(|(f, _)| f == field)
                .map(|(_, m)| m.as_str())
                .unwrap_or_default()
        };
        assert!(message("alerts.sinks[0].syslog.address").contains("not IP:PORT"));
        assert!(message("alerts.sinks[2].file.path").contains("empty"));
        assert!(message("alerts.sinks[3].file.path").contains("does not exist"));
        assert!(message("alerts.sinks[4].webhook.url").contains("https is not supported yet"));
    }

    #[test]
    fn the_same_sink_twice_is_a_problem() {
        let config = parse(
            "sinks: [{syslog: {address: '127.0.0.1:514'}}, {syslog: {address: '127.0.0.1:514'}}]",
        );
        assert_eq!(
            config.check(),
            [(
                "alerts.sinks[1]".to_string(),
                "`syslog udp 127.0.0.1:514` is already alerts.sinks[0]".to_string()
            )]
        );
    }

    #[test]
    fn relative_file_paths_are_anchored_at_the_config_folder() {
        let mut config = parse("sinks: [{file: {path: alerts.jsonl}}, {file: {path: /a/b}}]");
        config.anchor_paths(Path::new("/etc/microseg"));
        assert_eq!(config.sinks[0].name(), "file /etc/microseg/alerts.jsonl");
        assert_eq!(config.sinks[1].name(), "file /a/b");
    }
}
