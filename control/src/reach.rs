//! Reachability: can any allowed path exist from one set of workloads to
//! another under the compiled policy, which rules allow it, and was such
//! traffic seen? Compliance evidence (PCI DSS zone isolation): a "no"
//! here is a statement about every protocol and port, not a sample.
//!
//! For each pair of addresses, the classifier's rules that match the pair
//! are walked in match order over the whole (protocol, destination port)
//! space: each rule takes what earlier rules left, so an allow rule (or a
//! monitor-mode deny, which lets traffic pass) that takes anything is a
//! path, with the services it takes. What no rule takes falls to the
//! default action.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use microseg_dataplane::classifier::PortRange;
use microseg_dataplane::packet::{ip_to_u128, proto};
use microseg_dataplane::pipeline::{Action, Mode, PolicySnapshot, RuleVerdict, DEFAULT_RULE_ID};
use serde::Serialize;

use crate::flows::{FlowRecord, QueryError, Verdict};
use crate::policy::selector::{parse_selector, Selector};
use crate::policy::{PolicyDocument, RuleBook, RuleRef};
use crate::syntax::AddressMatch;

/// Most address pairs one question checks.
pub const MAX_PAIRS: usize = 10_000;

/// Most services listed per path.
const MAX_SERVICES: usize = 20;

/// One end of a question: a workload and one of its addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub workload: Option<String>,
    pub address: IpAddr,
}

fn bad(parameter: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        parameter: parameter.into(),
        message: message.into(),
    }
}

/// The members `text` stands for: a label selector's workloads, a
/// workload by name, or the workloads with an address in a CIDR (a bare
/// address with no workload stands for itself).
pub fn members(
    document: &PolicyDocument,
    text: &str,
    parameter: &str,
) -> Result<Vec<Member>, QueryError> {
    let addresses_of = |w: &crate::policy::Workload| -> Vec<Member> {
        w.addresses
            .iter()
            .filter_map(|a| a.trim().parse().ok())
            .map(|address| Member {
                workload: Some(w.name.clone()),
                address,
            })
            .collect()
    };
    if let Some(workload) = document.workloads.iter().find(|w| w.name == text.trim()) {
        return Ok(addresses_of(workload));
    }
    let selector = parse_selector(text).map_err(|e| bad(parameter, e))?;
    let found: Vec<Member> = match &selector {
        Selector::Labels(_) => document
            .workloads
            .iter()
            .filter(|w| selector.selects(&w.labels))
            .flat_map(addresses_of)
            .collect(),
        Selector::Cidr(AddressMatch::Prefix(prefix)) => {
            let inside: Vec<Member> = document
                .workloads
                .iter()
                .flat_map(addresses_of)
                .filter(|m| {
                    let (family, addr) = ip_to_u128(m.address);
                    family == prefix.family() && prefix.contains(addr)
                })
                .collect();
            let (lo, hi) = prefix.bounds();
            if inside.is_empty() && lo == hi {
                vec![Member {
                    workload: None,
                    address: microseg_dataplane::packet::u128_to_ip(prefix.family(), lo),
                }]
            } else {
                inside
            }
        }
        Selector::Any | Selector::Cidr(AddressMatch::Any) | Selector::IpList(_) => {
            return Err(bad(
                parameter,
                "give workloads: a label selector, a workload name, or a CIDR or address",
            ))
        }
    };
    if found.is_empty() {
        return Err(bad(parameter, format!("`{text}` matches no workload")));
    }
    Ok(found)
}

/// A way through: a rule (or the default) allowing some services from
/// one member to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Path {
    pub src: Member,
    pub dst: Member,
    /// The rule; None when the default action allows.
    pub rule: Option<RuleRef>,
    /// `allowed`, or `would_deny` for a monitor-mode deny.
    pub verdict: Verdict,
    /// What it lets through (`tcp/8080`, `tcp/1-1000`, `icmp/8`, `any`).
    pub services: Vec<String>,
}

/// Traffic seen between the two sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub src: String,
    pub dst: String,
    pub service: String,
    pub verdict: Verdict,
    pub flows: usize,
    pub last_flow: u64,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reachability {
    pub from: String,
    pub to: String,
    pub generation: u32,
    pub reachable: bool,
    pub paths: Vec<Path>,
    /// Flows seen between the sides that were let through.
    pub observed: Vec<Observed>,
    /// Flows seen between the sides that were denied or cut.
    pub observed_denied: Vec<Observed>,
    pub pairs_checked: usize,
    /// More pairs than `MAX_PAIRS`: the answer covers the first ones only.
    pub truncated: bool,
}

/// Destination port ranges by protocol.
type Taken = BTreeMap<u8, Vec<(u16, u16)>>;

/// Uncovered destination ports per protocol.
struct Space {
    uncovered: Vec<Vec<(u16, u16)>>,
}

fn has_ports(number: u8) -> bool {
    matches!(
        number,
        proto::TCP | proto::UDP | proto::SCTP | proto::ICMP | proto::ICMPV6
    )
}

impl Space {
    /// The whole space: every port of port protocols (ICMP keys carry type
    /// and code there), port 0 of the others.
    fn full() -> Self {
        Self {
            uncovered: (0..=255u8)
                .map(|p| {
                    if has_ports(p) {
                        vec![(0, u16::MAX)]
                    } else {
                        vec![(0, 0)]
                    }
                })
                .collect(),
        }
    }

    /// Removes `ports` of `number`; returns what it took.
    fn take(&mut self, number: u8, ports: PortRange) -> Vec<(u16, u16)> {
        let (lo, hi) = (ports.lo(), ports.hi());
        let mut taken = Vec::new();
        let mut left = Vec::new();
        for &(a, b) in &self.uncovered[usize::from(number)] {
            if b < lo || a > hi {
                left.push((a, b));
                continue;
            }
            taken.push((a.max(lo), b.min(hi)));
            if a < lo {
                left.push((a, lo - 1));
            }
            if b > hi {
                left.push((hi + 1, b));
            }
        }
        self.uncovered[usize::from(number)] = left;
        taken
    }
}

/// `tcp/8080`, `tcp/1-1000`, `tcp` (every port), `icmp/8`, `proto/47`.
fn service_text(number: u8, (lo, hi): (u16, u16)) -> String {
    let name = crate::flows::proto_name(number);
    match number {
        proto::TCP | proto::UDP | proto::SCTP if (lo, hi) == (0, u16::MAX) => name,
        proto::TCP | proto::UDP | proto::SCTP if lo == hi => format!("{name}/{lo}"),
        proto::TCP | proto::UDP | proto::SCTP => format!("{name}/{lo}-{hi}"),
        proto::ICMP | proto::ICMPV6 if (lo, hi) == (0, u16::MAX) => name,
        proto::ICMP | proto::ICMPV6
            if lo >> 8 == hi >> 8 && lo & 0xff == 0 && hi & 0xff == 0xff =>
        {
            format!("{name}/{}", lo >> 8)
        }
        proto::ICMP | proto::ICMPV6 if lo == hi => format!("{name}/{}/{}", lo >> 8, lo & 0xff),
        proto::ICMP | proto::ICMPV6 => format!("{name} (types {}-{})", lo >> 8, hi >> 8),
        _ => format!("proto/{number}"),
    }
}

/// Services as text, every protocol collapsed to `any` when all of them
/// are in whole, and the list capped.
fn services_text(taken: &Taken) -> Vec<String> {
    let whole = |p: u8, ranges: &Vec<(u16, u16)>| {
        let full = if has_ports(p) { (0, u16::MAX) } else { (0, 0) };
        ranges.as_slice() == [full]
    };
    if taken.len() == 256 && taken.iter().all(|(p, r)| whole(*p, r)) {
        return vec!["any".into()];
    }
    let mut out: Vec<String> = taken
        .iter()
        .flat_map(|(p, ranges)| ranges.iter().map(|r| service_text(*p, *r)))
        .collect();
    if out.len() > MAX_SERVICES {
        let more = out.len() - MAX_SERVICES;
        out.truncate(MAX_SERVICES);
        out.push(format!("(and {more} more)"));
    }
    out
}

/// Does the verdict let traffic through? (`Some(would_deny)`.)
fn passes(verdict: &RuleVerdict) -> Option<bool> {
    match (verdict.action, verdict.mode) {
        (Action::Allow, _) => Some(false),
        (Action::Deny, Mode::Monitor) => Some(true),
        (Action::Deny, Mode::Enforce) => None,
    }
}

/// The paths from `src` to `dst` under `snapshot`.
fn paths_between(
    snapshot: &PolicySnapshot,
    book: &RuleBook,
    src: &Member,
    dst: &Member,
) -> Vec<Path> {
    let (family, s) = ip_to_u128(src.address);
    let (dst_family, d) = ip_to_u128(dst.address);
    if family != dst_family {
        return Vec::new();
    }
    let mut space = Space::full();
    // rule id -> (would_deny, what it takes)
    let mut found: BTreeMap<u32, (bool, Taken)> = BTreeMap::new();
    for rule in snapshot.classifier.rules() {
        if rule.family() != family || !rule.src.contains(s) || !rule.dst.contains(d) {
            continue;
        }
        let protocols: Vec<u8> = match rule.proto {
            Some(p) => vec![p],
            None => (0..=255).collect(),
        };
        let pass = passes(&rule.action);
        for p in protocols {
            let taken = space.take(p, rule.dst_ports);
            if let (Some(would_deny), false) = (pass, taken.is_empty()) {
                let entry = found
                    .entry(rule.action.rule_id)
                    .or_insert((would_deny, BTreeMap::new()));
                entry.1.entry(p).or_default().extend(taken);
            }
        }
    }
    if snapshot.default_action == Action::Allow {
        let rest: Taken = (0..=255u8)
            .filter_map(|p| {
                let left = space.uncovered[usize::from(p)].clone();
                (!left.is_empty()).then_some((p, left))
            })
            .collect();
        if !rest.is_empty() {
            found.insert(DEFAULT_RULE_ID, (false, rest));
        }
    }
    found
        .into_iter()
        .map(|(rule_id, (would_deny, taken))| Path {
            src: src.clone(),
            dst: dst.clone(),
            rule: book.rule(rule_id).cloned(),
            verdict: if would_deny {
                Verdict::WouldDeny
            } else {
                Verdict::Allowed
            },
            services: services_text(&taken),
        })
        .collect()
}

/// Answers "can `from` reach `to`?".
pub fn reachability(
    from: &str,
    to: &str,
    document: &PolicyDocument,
    snapshot: &PolicySnapshot,
    book: &RuleBook,
    records: &[Arc<FlowRecord>],
) -> Result<Reachability, QueryError> {
    let sources = members(document, from, "from")?;
    let destinations = members(document, to, "to")?;
    let mut paths = Vec::new();
    let (mut pairs, mut truncated) = (0, false);
    'pairs: for src in &sources {
        for dst in &destinations {
            if src.address == dst.address {
                continue;
            }
            if pairs == MAX_PAIRS {
                truncated = true;
                break 'pairs;
            }
            pairs += 1;
            paths.extend(paths_between(snapshot, book, src, dst));
        }
    }
    let is_in = |members: &[Member], address: &str| {
        members.iter().any(|m| m.address.to_string() == address)
    };
    let mut seen: BTreeMap<(bool, String, String, String, Verdict), Observed> = BTreeMap::new();
    for record in records.iter().filter(|r| r.opens_flow()) {
        if !is_in(&sources, &record.src.address) || !is_in(&destinations, &record.dst.address) {
            continue;
        }
        let name =
            |e: &crate::flows::Endpoint| e.workload.clone().unwrap_or_else(|| e.address.clone());
        let passed = matches!(record.verdict, Verdict::Allowed | Verdict::WouldDeny);
        let key = (
            passed,
            name(&record.src),
            name(&record.dst),
            record.service(),
            record.verdict,
        );
        let entry = seen.entry(key).or_insert_with(|| Observed {
            src: name(&record.src),
            dst: name(&record.dst),
            service: record.service(),
            verdict: record.verdict,
            flows: 0,
            last_flow: 0,
        });
        entry.flows += 1;
        entry.last_flow = entry.last_flow.max(record.id);
    }
    let (observed, observed_denied): (Vec<_>, Vec<_>) =
        seen.into_iter().partition(|((passed, ..), _)| *passed);
    Ok(Reachability {
        from: from.to_string(),
        to: to.to_string(),
        generation: snapshot.generation,
        reachable: !paths.is_empty(),
        paths,
        observed: observed.into_iter().map(|(_, o)| o).collect(),
        observed_denied: observed_denied.into_iter().map(|(_, o)| o).collect(),
        pairs_checked: pairs,
        truncated,
    })
}

/// The answer as a readable report (Markdown), for auditors.
pub fn report(answer: &Reachability, generated: &str, version: Option<u64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Reachability report: `{}` → `{}`\n",
        answer.from, answer.to
    );
    let _ = writeln!(out, "- generated: {generated}");
    if let Some(version) = version {
        let _ = writeln!(
            out,
            "- policy version {version}, generation {}",
            answer.generation
        );
    } else {
        let _ = writeln!(out, "- policy generation {}", answer.generation);
    }
    let _ = writeln!(
        out,
        "- address pairs checked: {}{}",
        answer.pairs_checked,
        if answer.truncated {
            " (truncated: the first pairs only)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "\n## Verdict: {}\n",
        if answer.reachable {
            "REACHABLE: the policy allows traffic between these zones"
        } else {
            "ISOLATED: no protocol or port is allowed from the first zone to the second"
        }
    );
    if !answer.paths.is_empty() {
        let _ = writeln!(
            out,
            "## Allowed paths\n\n| from | to | rule | verdict | services |\n|---|---|---|---|---|"
        );
        for path in &answer.paths {
            let member = |m: &Member| match &m.workload {
                Some(name) => format!("{name} ({})", m.address),
                None => m.address.to_string(),
            };
            let rule = path
                .rule
                .as_ref()
                .map_or("default action".to_string(), |r| {
                    format!("{}/{} ({})", r.policy, r.rule, r.path)
                });
            let _ = writeln!(
                out,
                "| {} | {} | {rule} | {} | {} |",
                member(&path.src),
                member(&path.dst),
                path.verdict.name(),
                path.services.join(", ")
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Traffic observed\n");
    if answer.observed.is_empty() && answer.observed_denied.is_empty() {
        let _ = writeln!(out, "No flow between these zones is in the flow records.");
    } else {
        let _ = writeln!(
            out,
            "| from | to | service | verdict | flows | last flow id |\n|---|---|---|---|---|---|"
        );
        for o in answer.observed.iter().chain(&answer.observed_denied) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                o.src,
                o.dst,
                o.service,
                o.verdict.name(),
                o.flows,
                o.last_flow
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Method\n\nEvery pair of addresses was checked against the compiled rules in match order over every protocol and destination port; a rule takes only what earlier rules left. Monitor-mode deny rules count as paths (they let traffic through). Observed traffic comes from the appliance's flow records (bounded; older records may have been evicted)."
    );
    out
}

#[cfg(test)]
mod tests;
