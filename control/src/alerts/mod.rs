//! Alerts: what the appliance tells a security team as it happens (denied
//! and would-deny new flows, cut connections, quarantine actions,
//! conntrack pressure, anomalies), rate-limited and delivered to sinks
//! (syslog, CEF, JSON lines, webhook) without ever blocking the caller.

use serde::{Deserialize, Serialize};

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A new flow the policy denied.
    Denied,
    /// A new flow a monitor-mode rule would have denied; it passed.
    WouldDeny,
    /// An established connection a policy change cut.
    Cut,
    /// A workload or address put in quarantine.
    Quarantine,
    /// A quarantine lifted (by request or by its TTL).
    QuarantineLifted,
    /// The connection table is near or at capacity.
    ConntrackPressure,
    /// A flow between endpoints never seen talking during the learning window.
    Anomaly,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Denied => "denied",
            AlertKind::WouldDeny => "would_deny",
            AlertKind::Cut => "cut",
            AlertKind::Quarantine => "quarantine",
            AlertKind::QuarantineLifted => "quarantine_lifted",
            AlertKind::ConntrackPressure => "conntrack_pressure",
            AlertKind::Anomaly => "anomaly",
        }
    }
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub kind: AlertKind,
    /// Syslog severity, 0 (emergency) to 7 (debug).
    pub severity: u8,
    /// The deciding policy and rule (`shop/web-to-app`), when one did.
    pub rule: Option<String>,
    /// Endpoints: the workload's name when known, else the address.
    pub src: Option<String>,
    pub dst: Option<String>,
    pub src_addr: Option<String>,
    pub dst_addr: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: Option<String>,
    pub dport: Option<u16>,
    /// One line for humans.
    pub message: String,
    /// Alerts with the same key held back by the rate limit since the
    /// last one of that key went out.
    pub suppressed: u64,
}

impl Alert {
    /// An alert of `kind` raised now, with only its message: the optional
    /// fields (rule, endpoints, service) are empty, for the caller to set
    /// those that apply.
    pub fn now(kind: AlertKind, severity: u8, message: String) -> Self {
        Self {
            time_ms: time::now_unix_ms(),
            kind,
            severity,
            rule: None,
            src: None,
            dst: None,
            src_addr: None,
            dst_addr: None,
            proto: None,
            dport: None,
            message,
            suppressed: 0,
        }
    }
}

mod cef;
pub mod config;
mod delivery;
pub mod hub;
mod queue;
pub mod rate_limit;
mod rfc5424;
mod sinks;
pub mod stats;
pub mod time;

pub use config::{AlertConfig, RateLimitConfig, SinkConfig, SyslogFormat, SyslogTransport};
pub use hub::{AlertError, AlertHub};
pub use stats::{AlertStats, SinkStats};

/// The formats a sink writes, as pure functions of an alert (and, for
/// syslog, of the sending host), so they can be tested without I/O.
pub mod format {
    pub use super::cef::cef_line;
    pub use super::rfc5424::{octet_counted, syslog_line, SyslogOrigin, FACILITY_LOCAL0};

    /// The alert as one line of JSON, newline-terminated.
    pub fn json_line(alert: &super::Alert) -> Result<String, serde_json::Error> {
        serde_json::to_string(alert).map(|mut line| {
            line.push('\n');
            line
        })
    }
}
