//! Syslog messages in the RFC 5424 format, which rsyslog, syslog-ng and
//! every SIEM collector parse without configuration, plus the RFC 6587
//! octet-counting frame for syslog over TCP. Pure functions: the sending
//! host and process are passed in, the time comes from the alert.
//!
//! Facility: `local0` (16). Alerts are network-security events from an
//! appliance, which collectors conventionally route by a `localN`
//! facility; `authpriv` would mix them with the host's login records.
//!
//! A line is `<PRI>1 TIMESTAMP HOSTNAME microseg PROCID MSGID [SD] MSG`:
//! PRI = 16 × 8 + severity, MSGID the alert kind, the structured data
//! element `[microseg@32473 kind="…" rule="…" …]` carrying every field
//! the alert has, and MSG the alert's message (or, in CEF format, the
//! CEF record with no structured data). Control characters (newlines
//! included) in values and message become spaces: one alert, one line.

use super::cef::cef_line;
use super::config::SyslogFormat;
use super::time::rfc3339_utc_millis;
use super::Alert;

/// Syslog facility `local0`.
pub const FACILITY_LOCAL0: u8 = 16;
/// The structured-data ID: name `microseg` under IANA private enterprise
/// number 32473, the number RFC 5612 reserves for documentation.
const SD_ID: &str = "microseg@32473";
const APP_NAME: &str = "microseg";
/// RFC 5424's NILVALUE.
const NIL: &str = "-";

/// Who sends the message: HOSTNAME and PROCID of the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogOrigin {
    hostname: String,
    procid: String,
}

impl SyslogOrigin {
    /// `hostname` is cut to what RFC 5424 allows (printable ASCII without
    /// spaces, at most 255 characters); nothing left gives `-`.
    pub fn new(hostname: &str, procid: u32) -> Self {
        let hostname: String = hostname
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        Self {
            hostname: if hostname.is_empty() {
                NIL.to_string()
            } else {
                hostname
            },
            procid: procid.to_string(),
        }
    }

    /// This machine's host name (from the kernel) and this process.
    pub fn this_process() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Self::new(hostname.trim(), std::process::id())
    }
}

/// The alert as one RFC 5424 message (no trailing newline), its MSG part
/// in `format`.
pub fn syslog_line(alert: &Alert, origin: &SyslogOrigin, format: SyslogFormat) -> String {
    let severity = alert.severity.min(7);
    let priority = u16::from(FACILITY_LOCAL0) * 8 + u16::from(severity);
    let (structured_data, message) = match format {
        SyslogFormat::Rfc5424 => (structured_data(alert), one_line(&alert.message)),
        SyslogFormat::Cef => (NIL.to_string(), cef_line(alert)),
    };
    format!(
        "<{priority}>1 {} {} {APP_NAME} {} {} {structured_data} {message}",
        rfc3339_utc_millis(alert.time_ms),
        origin.hostname,
        origin.procid,
        alert.kind.name(),
    )
}

/// RFC 6587 octet counting: `LENGTH SP MESSAGE`, the length in bytes.
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// `[microseg@32473 kind="denied" rule="…" …]` with the fields the alert has.
fn structured_data(alert: &Alert) -> String {
    let dport = alert.dport.map(|port| port.to_string());
    let suppressed = (alert.suppressed > 0).then(|| alert.suppressed.to_string());
    let params: [(&str, Option<&str>); 9] = [
        ("kind", Some(alert.kind.name())),
        ("rule", alert.rule.as_deref()),
        ("src", alert.src.as_deref()),
        ("dst", alert.dst.as_deref()),
        ("src_addr", alert.src_addr.as_deref()),
        ("dst_addr", alert.dst_addr.as_deref()),
        ("proto", alert.proto.as_deref()),
        ("dport", dport.as_deref()),
        ("suppressed", suppressed.as_deref()),
    ];
    let mut element = format!("[{SD_ID}");
    for (name, value) in params {
        if let Some(value) = value {
            element.push_str(&format!(" {name}=\"{}\"", escape_param_value(value)));
        }
    }
    element.push(']');
    element
}

/// An SD-PARAM value: `"`, `\` and `]` escaped with a backslash (RFC 5424
/// §6.3.3), control characters replaced by spaces.
pub fn escape_param_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' | '\\' | ']' => {
                escaped.push('\\');
                escaped.push(c);
            }
            c if c.is_control() => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Control characters replaced by spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;

    fn denied() -> Alert {
        Alert {
            time_ms: 1_709_210_096_789,
            kind: AlertKind::Denied,
            severity: 4,
            rule: Some("shop/web-to-db".into()),
            src: Some("shop/web".into()),
            dst: Some("shop/db".into()),
            src_addr: Some("10.0.0.5".into()),
            dst_addr: Some("10.0.1.9".into()),
            proto: Some("tcp".into()),
            dport: Some(5432),
            message: "denied shop/web -> shop/db tcp/5432".into(),
            suppressed: 0,
        }
    }

    #[test]
    fn an_rfc5424_line_has_every_part_in_order() {
        let origin = SyslogOrigin::new("fw1", 4242);
        assert_eq!(
            syslog_line(&denied(), &origin, SyslogFormat::Rfc5424),
            "<132>1 2024-02-29T12:34:56.789Z fw1 microseg 4242 denied \
             [microseg@32473 kind=\"denied\" rule=\"shop/web-to-db\" src=\"shop/web\" \
             dst=\"shop/db\" src_addr=\"10.0.0.5\" dst_addr=\"10.0.1.9\" proto=\"tcp\" \
             dport=\"5432\"] denied shop/web -> shop/db tcp/5432"
        );
    }

    #[test]
    fn priority_is_local0_times_eight_plus_severity() {
        let origin = SyslogOrigin::new("fw1", 1);
        for (severity, priority) in [(0, "<128>"), (4, "<132>"), (7, "<135>"), (200, "<135>")] {
            let alert = Alert {
                severity,
                ..denied()
            };
            assert!(
                syslog_line(&alert, &origin, SyslogFormat::Rfc5424).starts_with(priority),
                "severity {severity}"
            );
        }
    }

    #[test]
    fn absent_fields_are_left_out_and_suppressed_counts_shown() {
        let alert = Alert {
            time_ms: denied().time_ms,
            suppressed: 12,
            ..Alert::now(
                AlertKind::ConntrackPressure,
                denied().severity,
                "conntrack 95% full".into(),
            )
        };
        let line = syslog_line(&alert, &SyslogOrigin::new("fw1", 1), SyslogFormat::Rfc5424);
        assert!(
            line.ends_with(
                " conntrack_pressure [microseg@32473 kind=\"conntrack_pressure\" suppressed=\"12\"] conntrack 95% full"
            ),
            "{line}"
        );
    }

    #[test]
    fn param_values_escape_quote_backslash_and_bracket() {
        assert_eq!(escape_param_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(escape_param_value("two\nlines"), "two lines");
        assert_eq!(escape_param_value("plain [x]"), "plain [x\\]");
    }

    #[test]
    fn a_message_stays_on_one_line() {
        let alert = Alert {
            message: "one\ntwo\r\nthree".into(),
            ..denied()
        };
        let line = syslog_line(&alert, &SyslogOrigin::new("fw1", 1), SyslogFormat::Rfc5424);
        assert!(line.ends_with("] one two  three"), "{line}");
    }

    #[test]
    fn cef_goes_in_the_message_part_without_structured_data() {
        let line = syslog_line(&denied(), &SyslogOrigin::new("fw1", 7), SyslogFormat::Cef);
        assert!(
            line.starts_with(
                "<132>1 2024-02-29T12:34:56.789Z fw1 microseg 7 denied - CEF:0|microseg|microseg|"
            ),
            "{line}"
        );
    }

    #[test]
    fn hostnames_are_cut_to_printable_ascii() {
        assert_eq!(SyslogOrigin::new("my host", 1).hostname, "myhost");
        assert_eq!(SyslogOrigin::new("", 1).hostname, "-");
        assert_eq!(SyslogOrigin::new(&"h".repeat(300), 1).hostname.len(), 255);
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        assert_eq!(octet_counted("abc"), "3 abc");
        assert_eq!(octet_counted("é"), "2 é");
    }
}
