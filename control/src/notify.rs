//! What becomes an alert: new flows denied, would-deny flows (monitor
//! mode), connections cut, quarantine actions, anomalies, and conntrack
//! pressure. Each is turned into an `Alert` here and handed to the alert
//! hub, which rate-limits and delivers it without blocking anyone.

use std::sync::Arc;

use crate::alerts::{Alert, AlertHub, AlertKind};
use crate::flows::{FlowObserver, FlowRecord, RecordKind, Verdict};
use crate::learn::Anomaly;
use crate::quarantine::QuarantineAction;

/// Syslog severities used.
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const ERROR: u8 = 3;

/// `web-1` or the address.
fn name(endpoint: &crate::flows::Endpoint) -> String {
    endpoint
        .workload
        .clone()
        .unwrap_or_else(|| endpoint.address.clone())
}

/// An alert about a flow record.
fn flow_alert(kind: AlertKind, severity: u8, record: &FlowRecord, what: &str) -> Alert {
    let rule = match (&record.policy, &record.rule) {
        (Some(policy), Some(rule)) => Some(format!("{policy}/{rule}")),
        _ if record.default => Some("default".into()),
        _ => record.rule.clone(),
    };
    Alert {
        time_ms: record.time_ms,
        kind,
        severity,
        message: format!(
            "{what}: {} -> {} {} ({})",
            name(&record.src),
            name(&record.dst),
            record.service(),
            rule.as_deref().unwrap_or("no rule")
        ),
        rule,
        src: Some(name(&record.src)),
        dst: Some(name(&record.dst)),
        src_addr: Some(record.src.address.clone()),
        dst_addr: Some(record.dst.address.clone()),
        proto: Some(record.proto.clone()),
        dport: record.dport.or(record.icmp_type.map(u16::from)),
        suppressed: 0,
    }
}

/// The alert a flow record raises, if any.
pub fn for_record(record: &FlowRecord) -> Option<Alert> {
    if record.kind != RecordKind::Verdict {
        return None;
    }
    Some(match record.verdict {
        Verdict::Denied => flow_alert(AlertKind::Denied, WARNING, record, "flow denied"),
        Verdict::WouldDeny => flow_alert(
            AlertKind::WouldDeny,
            NOTICE,
            record,
            "flow would be denied (monitor mode)",
        ),
        Verdict::Cut => flow_alert(
            AlertKind::Cut,
            WARNING,
            record,
            "connection cut by a policy change",
        ),
        Verdict::Allowed => return None,
    })
}

/// Raises alerts for flow records as the collector makes them.
#[derive(Debug)]
pub struct FlowAlerts(pub Arc<AlertHub>);

impl FlowObserver for FlowAlerts {
    fn observe(&self, record: &FlowRecord) {
        if let Some(alert) = for_record(record) {
            self.0.submit(alert);
        }
    }
}

/// The alert for a quarantine put in force (`put`) or lifted.
pub fn for_quarantine(action: &QuarantineAction, put: bool) -> Alert {
    let q = &action.quarantine;
    let addresses: Vec<String> = q.addresses.iter().map(ToString::to_string).collect();
    let message = if put {
        format!(
            "quarantined {} ({}) by {}{}{}",
            q.target,
            addresses.join(", "),
            q.who,
            q.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            if action.connections_cut > 0 {
                format!("; {} connection(s) cut", action.connections_cut)
            } else {
                String::new()
            }
        )
    } else {
        format!("quarantine of {} lifted", q.target)
    };
    let (kind, severity) = if put {
        (AlertKind::Quarantine, WARNING)
    } else {
        (AlertKind::QuarantineLifted, NOTICE)
    };
    Alert {
        rule: Some(format!("quarantine:{}", q.target)),
        src: Some(q.target.clone()),
        src_addr: addresses.first().cloned(),
        ..Alert::now(kind, severity, message)
    }
}

/// The alert for an anomaly.
pub fn for_anomaly(anomaly: &Anomaly, record: &FlowRecord) -> Alert {
    let mut alert = flow_alert(
        AlertKind::Anomaly,
        WARNING,
        record,
        "new traffic after the learning window",
    );
    alert.message = format!(
        "new traffic after the learning window: {} -> {} {} ({})",
        anomaly.from,
        anomaly.to,
        anomaly.service,
        anomaly.verdict.name()
    );
    alert
}

/// The alert for a connection table this full, if it is full enough
/// (90 % of its maximum).
pub fn for_pressure(entries: usize, max_entries: usize) -> Option<Alert> {
    (max_entries > 0 && entries * 10 >= max_entries * 9).then(|| {
        Alert::now(
            AlertKind::ConntrackPressure,
            ERROR,
            format!(
                "connection table at {entries} of {max_entries} entries: new connections may be refused or embryonic ones dropped early"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{endpoint, record};

    #[test]
    fn verdict_records_become_alerts_and_others_do_not() {
        let web = endpoint(Some("web-1"), "10.1.0.1", "web");
        let db = endpoint(None, "10.1.0.3", "");
        let denied = record(
            RecordKind::Verdict,
            web.clone(),
            db.clone(),
            5432,
            Verdict::Denied,
        );
        let mut denied = (*denied).clone();
        denied.default = true;
        let alert = for_record(&denied).expect("an alert");
        assert_eq!((alert.kind, alert.severity), (AlertKind::Denied, 4));
        assert_eq!(
            alert.message,
            "flow denied: web-1 -> 10.1.0.3 tcp/5432 (default)"
        );
        assert_eq!(alert.src_addr.as_deref(), Some("10.1.0.1"));
        assert_eq!(alert.dport, Some(5432));
        let mut watched = (*record(
            RecordKind::Verdict,
            web.clone(),
            db.clone(),
            22,
            Verdict::WouldDeny,
        ))
        .clone();
        watched.policy = Some("tighten".into());
        watched.rule = Some("no-ssh".into());
        let alert = for_record(&watched).expect("an alert");
        assert_eq!(alert.kind, AlertKind::WouldDeny);
        assert_eq!(alert.rule.as_deref(), Some("tighten/no-ssh"));
        assert!(for_record(&record(
            RecordKind::Start,
            web.clone(),
            db.clone(),
            1,
            Verdict::Allowed
        ))
        .is_none());
        assert!(
            for_record(&record(RecordKind::Start, web, db, 1, Verdict::WouldDeny)).is_none(),
            "reported by its verdict record"
        );
    }

    #[test]
    fn pressure_starts_at_ninety_percent() {
        assert!(for_pressure(899, 1000).is_none());
        let alert = for_pressure(900, 1000).expect("an alert");
        assert_eq!(alert.kind, AlertKind::ConntrackPressure);
        assert!(alert.message.contains("900 of 1000"), "{}", alert.message);
        assert!(for_pressure(0, 0).is_none());
    }
}
