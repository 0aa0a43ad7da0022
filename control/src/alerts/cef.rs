//! ArcSight Common Event Format, the record most SIEMs (ArcSight, QRadar,
//! Sentinel, Splunk's CEF add-on) map to their own fields without a
//! custom parser. Sent as the MSG of an RFC 5424 syslog message.
//!
//! `CEF:0|microseg|microseg|VERSION|SIGNATURE_ID|NAME|SEVERITY|EXTENSION`:
//! the signature ID is the alert kind, the name a fixed title per kind
//! (so a SIEM can group on it; the alert's own message goes in `msg`),
//! and the severity the syslog severity mapped onto CEF's 0–10 scale
//! (10 the most severe). Header fields escape `\` and `|`; extension
//! values escape `\`, `=` and line breaks (CEF specification, rev. 25).

use super::{Alert, AlertKind};

const VENDOR: &str = "microseg";
const PRODUCT: &str = "microseg";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The alert as one CEF record (no trailing newline).
pub fn cef_line(alert: &Alert) -> String {
    let header = [
        VENDOR,
        PRODUCT,
        VERSION,
        alert.kind.name(),
        kind_title(alert.kind),
    ]
    .map(escape_header);
    format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|{}",
        header[0],
        header[1],
        header[2],
        header[3],
        header[4],
        cef_severity(alert.severity),
        extension(alert)
    )
}

/// A fixed, human title per kind: CEF's Name.
fn kind_title(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Denied => "Flow denied",
        AlertKind::WouldDeny => "Flow would be denied",
        AlertKind::Cut => "Connection cut",
        AlertKind::Quarantine => "Quarantine",
        AlertKind::QuarantineLifted => "Quarantine lifted",
        AlertKind::ConntrackPressure => "Connection table pressure",
        AlertKind::Anomaly => "Anomalous flow",
    }
}

/// Syslog severity (0 emergency .. 7 debug) on CEF's scale (0 .. 10, 10
/// the most severe).
pub fn cef_severity(syslog_severity: u8) -> u8 {
    match syslog_severity {
        0 => 10,
        1 => 9,
        2 => 8,
        3 => 7,
        4 => 5,
        5 => 3,
        6 => 2,
        _ => 0,
    }
}

/// `key=value` pairs in CEF's standard keys: `rt` (unix ms), `src`/`dst`
/// (addresses), `proto`, `dpt`, `cs1` the rule, `cs2`/`cs3` the source and
/// destination workloads, `cnt` the suppressed count, `msg` the message.
fn extension(alert: &Alert) -> String {
    let mut pairs: Vec<(&str, String)> = vec![("rt", alert.time_ms.to_string())];
    let mut optional = |key: &'static str, value: Option<&str>| {
        if let Some(value) = value {
            pairs.push((key, value.to_string()));
        }
    };
    optional("src", alert.src_addr.as_deref());
    optional("dst", alert.dst_addr.as_deref());
    optional("proto", alert.proto.as_deref());
    if let Some(port) = alert.dport {
        pairs.push(("dpt", port.to_string()));
    }
    if let Some(rule) = &alert.rule {
        pairs.push(("cs1", rule.clone()));
        pairs.push(("cs1Label", "rule".into()));
    }
    if let Some(workload) = &alert.src {
        pairs.push(("cs2", workload.clone()));
        pairs.push(("cs2Label", "srcWorkload".into()));
    }
    if let Some(workload) = &alert.dst {
        pairs.push(("cs3", workload.clone()));
        pairs.push(("cs3Label", "dstWorkload".into()));
    }
    if alert.suppressed > 0 {
        pairs.push(("cnt", alert.suppressed.to_string()));
    }
    pairs.push(("msg", alert.message.clone()));
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", escape_extension(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A header field: `\` and `|` escaped; line breaks, which a header may
/// not hold, become spaces.
pub fn escape_header(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' | '|' => {
                escaped.push('\\');
                escaped.push(c);
            }
            c if c.is_control() => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

/// An extension value: `\` and `=` escaped, line breaks as `\n` / `\r`,
/// other control characters as spaces.
pub fn escape_extension(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' | '=' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c if c.is_control() => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut() -> Alert {
        Alert {
            time_ms: 1_709_210_096_789,
            kind: AlertKind::Cut,
            severity: 3,
            rule: Some("shop/web=db".into()),
            src: Some("shop/web".into()),
            dst: None,
            src_addr: Some("10.0.0.5".into()),
            dst_addr: Some("10.0.1.9".into()),
            proto: Some("tcp".into()),
            dport: Some(5432),
            message: "cut after policy v7\nby admin".into(),
            suppressed: 3,
        }
    }

    #[test]
    fn a_cef_record_maps_fields_to_standard_keys() {
        assert_eq!(
            cef_line(&cut()),
            format!(
                "CEF:0|microseg|microseg|{VERSION}|cut|Connection cut|7|rt=1709210096789 \
                 src=10.0.0.5 dst=10.0.1.9 proto=tcp dpt=5432 cs1=shop/web\\=db cs1Label=rule \
                 cs2=shop/web cs2Label=srcWorkload cnt=3 msg=cut after policy v7\\nby admin"
            )
        );
    }

    #[test]
    fn header_escapes_pipe_and_backslash() {
        assert_eq!(escape_header(r"a|b\c=d"), r"a\|b\\c=d");
        assert_eq!(escape_header("x\ny"), "x y");
    }

    #[test]
    fn extension_escapes_equals_backslash_and_line_breaks() {
        assert_eq!(escape_extension(r"a=b\c|d"), r"a\=b\\c|d");
        assert_eq!(escape_extension("1\r\n2"), r"1\r\n2");
    }

    #[test]
    fn severities_map_most_severe_to_ten() {
        assert_eq!(cef_severity(0), 10);
        assert_eq!(cef_severity(4), 5);
        assert_eq!(cef_severity(7), 0);
        assert_eq!(cef_severity(99), 0);
    }

    #[test]
    fn a_minimal_alert_has_time_and_message_only() {
        let alert = Alert {
            time_ms: cut().time_ms,
            ..Alert::now(AlertKind::ConntrackPressure, 2, "table 95% full".into())
        };
        assert!(
            cef_line(&alert).ends_with(
                "|conntrack_pressure|Connection table pressure|8|rt=1709210096789 msg=table 95% full"
            ),
            "{}",
            cef_line(&alert)
        );
    }
}
