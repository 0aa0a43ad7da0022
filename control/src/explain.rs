//! Explain: why a flow is (or would be) allowed or denied.
//!
//! A question names two endpoints (workloads or addresses) and a service;
//! the answer gives the verdict under the policy in force, the rule that
//! decides it, the rules that also match but lose to it (shadowed for this
//! flow), and the connection's state if one is tracked. It never touches
//! the packet path's counters (`PolicySnapshot::judge`).

use std::collections::HashMap;
use std::net::IpAddr;

use microseg_dataplane::conntrack::{ConnKey, ConntrackTable};
use microseg_dataplane::packet::{ip_to_u128, proto, FlowKey};
use microseg_dataplane::pipeline::{PolicySnapshot, DEFAULT_RULE_ID};
use serde::Serialize;

use crate::flows::{Clock, Endpoint, EndpointFilter, FlowRecord, QueryError, Resolver, Verdict};
use crate::policy::{ActionName, RuleBook, RuleRef};

/// Source port assumed when a question does not give one.
pub const DEFAULT_SOURCE_PORT: u16 = 49152;

/// A flow to explain, in its opener's direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Question {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    /// The destination port, or for ICMP the message type.
    pub dport: u16,
}

fn bad(parameter: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        parameter: parameter.into(),
        message: message.into(),
    }
}

/// A protocol by name (`tcp`, `udp`, `icmp`, `icmpv6`) or number.
pub fn parse_proto(text: &str) -> Option<u8> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(proto::TCP),
        "udp" => Some(proto::UDP),
        "icmp" => Some(proto::ICMP),
        "icmpv6" => Some(proto::ICMPV6),
        other => other.parse().ok(),
    }
}

impl Question {
    /// From `src`, `dst` (workload names or addresses), `proto` (default
    /// tcp), `dport` (required for tcp and udp; for icmp the type, default
    /// echo request) and `sport` (default 49152).
    pub fn from_query(
        params: &HashMap<String, String>,
        resolver: &Resolver,
    ) -> Result<Self, QueryError> {
        for name in params.keys() {
            if !["src", "dst", "proto", "dport", "sport"].contains(&name.as_str()) {
                return Err(bad(
                    name,
                    "unknown parameter (src, dst, proto, dport, sport)",
                ));
            }
        }
        let text = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let proto_text = text("proto").unwrap_or("tcp");
        let proto = parse_proto(proto_text).ok_or_else(|| {
            bad(
                "proto",
                format!("`{proto_text}` is not tcp, udp, icmp, icmpv6 or a number"),
            )
        })?;
        let port = |name: &str, default: Option<u16>| -> Result<u16, QueryError> {
            match text(name) {
                Some(v) => v
                    .parse()
                    .map_err(|_| bad(name, format!("`{v}` is not a number from 0 to 65535"))),
                None => default.ok_or_else(|| bad(name, "required for tcp and udp")),
            }
        };
        let icmp_echo = match proto {
            proto::ICMP => Some(8),
            proto::ICMPV6 => Some(128),
            _ => None,
        };
        let has_ports = matches!(proto, proto::TCP | proto::UDP | proto::SCTP);
        let dport = port(
            "dport",
            if has_ports {
                None
            } else {
                icmp_echo.or(Some(0))
            },
        )?;
        let sport = port("sport", Some(DEFAULT_SOURCE_PORT))?;
        let src_text = text("src").ok_or_else(|| bad("src", "required"))?;
        let dst_text = text("dst").ok_or_else(|| bad("dst", "required"))?;
        let (src, dst) = endpoints(resolver, src_text, dst_text)?;
        Ok(Self {
            src,
            dst,
            proto,
            sport,
            dport,
        })
    }

    /// The question a recorded flow answers.
    pub fn from_record(record: &FlowRecord) -> Option<Self> {
        Some(Self {
            src: record.src.address.parse().ok()?,
            dst: record.dst.address.parse().ok()?,
            proto: parse_proto(&record.proto)?,
            sport: record.sport.unwrap_or(DEFAULT_SOURCE_PORT),
            dport: match (record.dport, record.icmp_type, record.proto.as_str()) {
                (Some(port), _, _) => port,
                (None, Some(kind), _) => kind.into(),
                // An echo exchange seen by conntrack: its request.
                (None, None, "icmp") => 8,
                (None, None, "icmpv6") => 128,
                (None, None, _) => 0,
            },
        })
    }

    /// The flow key the dataplane would build for the first packet.
    pub fn flow(&self) -> FlowKey {
        let (family, src) = ip_to_u128(self.src);
        let (_, dst) = ip_to_u128(self.dst);
        let is_icmp = matches!(self.proto, proto::ICMP | proto::ICMPV6);
        FlowKey {
            family,
            src,
            dst,
            proto: self.proto,
            src_port: if is_icmp { 0 } else { self.sport },
            // ICMP keys carry type << 8 | code in the destination port.
            dst_port: if is_icmp && self.dport <= 255 {
                self.dport << 8
            } else {
                self.dport
            },
            ..FlowKey::default()
        }
    }
}

/// Both endpoints as addresses of one family: a workload name stands for
/// its addresses, and the pair is chosen in the family both have.
fn endpoints(
    resolver: &Resolver,
    src_text: &str,
    dst_text: &str,
) -> Result<(IpAddr, IpAddr), QueryError> {
    let candidates = |name: &str, text: &str| -> Result<Vec<IpAddr>, QueryError> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match EndpointFilter::parse(text) {
            EndpointFilter::Workload(workload) => {
                let addresses = resolver.addresses_of(&workload);
                if addresses.is_empty() {
                    Err(bad(
                        name,
                        format!("`{text}` is neither an address nor a workload with one"),
                    ))
                } else {
                    Ok(addresses)
                }
            }
            EndpointFilter::Prefix(_) => Err(bad(
                name,
                format!("`{text}` is a network; give one address or a workload"),
            )),
        }
    };
    let sources = candidates("src", src_text)?;
    let destinations = candidates("dst", dst_text)?;
    sources
        .iter()
        .find_map(|s| {
            destinations
                .iter()
                .find(|d| d.is_ipv4() == s.is_ipv4())
                .map(|d| (*s, *d))
        })
        .ok_or_else(|| bad("dst", "the two endpoints have no address family in common"))
}

/// The connection tracked for a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub state: &'static str,
    /// From the opener, and replies.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The generation and rule that admitted it.
    pub generation: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_by: Option<RuleRef>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub question: Question,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub verdict: Verdict,
    pub generation: u32,
    /// The deciding rule; None when the default action decides.
    pub decided_by: Option<RuleRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_action: Option<ActionName>,
    /// Later rules that match this flow too but never decide it.
    pub also_matching: Vec<RuleRef>,
    /// The tracked connection, if any.
    pub connection: Option<Connection>,
}

/// What explain reads.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    pub snapshot: &'a PolicySnapshot,
    pub book: &'a RuleBook,
    pub resolver: &'a Resolver,
    /// The connection table and its clock, when a dataplane runs.
    pub conntrack: Option<(&'a ConntrackTable, Clock)>,
}

/// Explains `question` under `sources`.
pub fn explain(question: &Question, sources: Sources<'_>) -> Explanation {
    let flow = question.flow();
    let decision = sources.snapshot.judge(&flow);
    let verdict = Verdict::of(&decision);
    let name = |rule_id: u32| sources.book.rule(rule_id).cloned();
    // Every rule matching the flow, in match order, once per policy rule.
    let mut matching: Vec<u32> = Vec::new();
    for rule in sources.snapshot.classifier.rules() {
        if rule.matches(&flow) && !matching.contains(&rule.action.rule_id) {
            matching.push(rule.action.rule_id);
        }
    }
    let also_matching = matching
        .iter()
        .filter(|&&id| id != decision.rule_id)
        .filter_map(|&id| name(id))
        .collect();
    let default = decision.rule_id == DEFAULT_RULE_ID;
    let connection = sources.conntrack.and_then(|(table, clock)| {
        let (key, _) = ConnKey::from_flow(&flow, 0);
        let entry = table.get(&key)?;
        let opener = usize::from(entry.originator & 1);
        let other = 1 - opener;
        Some(Connection {
            state: entry.state.name(),
            packets: [entry.packets[opener].into(), entry.packets[other].into()],
            bytes: [entry.bytes[opener], entry.bytes[other]],
            first_seen_ms: clock.unix_ms(entry.first_seen),
            last_seen_ms: clock.unix_ms(entry.last_seen),
            generation: entry.generation,
            admitted_by: (entry.generation == sources.snapshot.generation)
                .then(|| name(entry.rule_id))
                .flatten(),
        })
    });
    let (family_src, src) = ip_to_u128(question.src);
    let (family_dst, dst) = ip_to_u128(question.dst);
    Explanation {
        question: question.clone(),
        src: sources.resolver.endpoint(family_src, src),
        dst: sources.resolver.endpoint(family_dst, dst),
        verdict,
        generation: sources.snapshot.generation,
        decided_by: if default {
            None
        } else {
            name(decision.rule_id)
        },
        default_action: default.then_some(match sources.snapshot.default_action {
            microseg_dataplane::pipeline::Action::Allow => ActionName::Allow,
            microseg_dataplane::pipeline::Action::Deny => ActionName::Deny,
        }),
        also_matching,
        connection,
    }
}
