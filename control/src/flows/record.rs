//! One flow record, as the API shows it: endpoints named, the verdict and
//! the rule that decided, counters of both directions.

use std::collections::BTreeMap;

use microseg_dataplane::conntrack::{ConnEntry, ConnKey, EndReason};
use microseg_dataplane::packet::{proto, u128_to_ip, AddrFamily, FlowKey};
use microseg_dataplane::pipeline::{Decision, VerdictEvent, VerdictKind};
use serde::{Deserialize, Serialize};

use super::resolve::Resolver;
use crate::policy::{ActionName, ModeName};

/// What the policy did with a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    Denied,
    /// Passed only because the deciding rule is in monitor mode.
    WouldDeny,
    /// An established connection a policy change cut.
    Cut,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::WouldDeny => "would_deny",
            Verdict::Cut => "cut",
        }
    }

    /// The verdict of a policy decision.
    pub fn of(decision: &Decision) -> Self {
        match (decision.pass, decision.would_deny) {
            (true, false) => Verdict::Allowed,
            (true, true) => Verdict::WouldDeny,
            (false, _) => Verdict::Denied,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Verdict::Allowed,
            Verdict::Denied,
            Verdict::WouldDeny,
            Verdict::Cut,
        ]
        .into_iter()
        .find(|v| v.name() == text)
    }
}

/// Which event a record reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A connection admitted.
    Start,
    /// A long connection still running (its counters so far).
    Update,
    /// A connection over (expired, closed, reset, removed).
    End,
    /// A verdict on a new flow that created no connection (denied,
    /// would-deny), or a cut.
    Verdict,
}

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A flow record. `src` opened the flow; `[0]` of the counters is its
/// direction, `[1]` the replies.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRecord {
    /// Increasing; the live stream's event id.
    pub id: u64,
    pub kind: RecordKind,
    /// When the event happened, Unix milliseconds.
    pub time_ms: u64,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    pub verdict: Verdict,
    /// The deciding policy and rule; absent when the default action
    /// decided (`default: true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeName>,
    pub default: bool,
    pub generation: u32,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Connection state (TCP states; `new`/`established` otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<&'static str>,
}

/// The protocol's name in records and services.
pub fn proto_name(number: u8) -> String {
    match number {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn has_ports(number: u8) -> bool {
    matches!(number, proto::TCP | proto::UDP | proto::SCTP)
}

fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Expired => "expired",
        EndReason::Closed => "closed",
        EndReason::Reset => "reset",
        EndReason::Removed => "removed",
        EndReason::EarlyDrop => "early_drop",
    }
}

impl FlowRecord {
    /// Does this record stand for a new flow? A connection's start, or a
    /// denial (a denied flow makes no connection). A would-deny flow has a
    /// verdict record and a start record: only the start counts, so each
    /// flow is counted once.
    pub fn opens_flow(&self) -> bool {
        self.kind == RecordKind::Start
            || (self.kind == RecordKind::Verdict && self.verdict == Verdict::Denied)
    }

    /// The service as policy writes it: `tcp/443`, `udp/53`, `icmp/8`,
    /// `icmp` (an echo exchange seen by conntrack), `proto/47`.
    pub fn service(&self) -> String {
        match (self.dport, self.icmp_type) {
            (Some(port), _) => format!("{}/{port}", self.proto),
            (None, Some(kind)) => format!("{}/{kind}", self.proto),
            (None, None) if self.proto.parse::<u8>().is_ok() => format!("proto/{}", self.proto),
            (None, None) => self.proto.clone(),
        }
    }

    /// A record of a verdict event.
    pub fn from_verdict(event: &VerdictEvent, resolver: &Resolver, clock_ms: u64) -> Self {
        let flow = &event.flow;
        let verdict = match event.kind {
            VerdictKind::Denied => Verdict::Denied,
            VerdictKind::WouldDeny => Verdict::WouldDeny,
            VerdictKind::Cut => Verdict::Cut,
        };
        let (sport, dport, icmp_type) = flow_ports(flow);
        let mut record = Self::blank(
            RecordKind::Verdict,
            clock_ms,
            resolver.endpoint(flow.family, flow.src),
            resolver.endpoint(flow.family, flow.dst),
            flow.proto,
            verdict,
        );
        (record.sport, record.dport, record.icmp_type) = (sport, dport, icmp_type);
        resolver.name_rule(&mut record, event.generation, event.rule_id);
        record
    }

    /// A record of a connection start, update or end.
    pub fn from_connection(
        kind: RecordKind,
        key: &ConnKey,
        entry: &ConnEntry,
        reason: Option<EndReason>,
        resolver: &Resolver,
        to_ms: impl Fn(u64) -> u64,
    ) -> Self {
        let opener = entry.originator & 1;
        let other = 1 - opener;
        let time = match kind {
            RecordKind::Start => entry.first_seen,
            _ => entry.last_seen,
        };
        let mut record = Self::blank(
            kind,
            to_ms(time),
            resolver.endpoint(key.family, key.addr(opener)),
            resolver.endpoint(key.family, key.addr(other)),
            key.proto,
            Verdict::Allowed,
        );
        if has_ports(key.proto) {
            record.sport = Some(key.ports[usize::from(opener)]);
            record.dport = Some(key.ports[usize::from(other)]);
        }
        // Conntrack tracks ICMP echo exchanges (by their identifier); the
        // opener sent an echo request.
        record.icmp_type = match key.proto {
            proto::ICMP => Some(8),
            proto::ICMPV6 => Some(128),
            _ => None,
        };
        let (o, r) = (usize::from(opener), usize::from(other));
        record.packets = [entry.packets[o].into(), entry.packets[r].into()];
        record.bytes = [entry.bytes[o], entry.bytes[r]];
        record.first_seen_ms = Some(to_ms(entry.first_seen));
        record.last_seen_ms = Some(to_ms(entry.last_seen));
        record.state = Some(entry.state.name());
        record.end_reason = reason.map(end_reason_name);
        // A connection a monitor-mode deny rule let through.
        if resolver.name_rule(&mut record, entry.generation, entry.rule_id)
            == Some(ActionName::Deny)
        {
            record.verdict = Verdict::WouldDeny;
        }
        record
    }

    /// A record with what every record has; the rest empty.
    pub(crate) fn blank(
        kind: RecordKind,
        time_ms: u64,
        src: Endpoint,
        dst: Endpoint,
        number: u8,
        verdict: Verdict,
    ) -> FlowRecord {
        FlowRecord {
            id: 0,
            kind,
            time_ms,
            src,
            dst,
            proto: proto_name(number),
            sport: None,
            dport: None,
            icmp_type: None,
            verdict,
            policy: None,
            rule: None,
            mode: None,
            default: false,
            generation: 0,
            packets: [0; 2],
            bytes: [0; 2],
            first_seen_ms: None,
            last_seen_ms: None,
            state: None,
            end_reason: None,
        }
    }
}

/// (source port, destination port, ICMP type) of a packet's key.
fn flow_ports(flow: &FlowKey) -> (Option<u16>, Option<u16>, Option<u8>) {
    if has_ports(flow.proto) {
        (Some(flow.src_port), Some(flow.dst_port), None)
    } else {
        (None, None, flow.icmp_type())
    }
}

/// The address as text.
pub fn address_text(family: AddrFamily, addr: u128) -> String {
    u128_to_ip(family, addr).to_string()
}
