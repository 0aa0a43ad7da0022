//! Policy → classifier rules → a policy snapshot, off the packet path.
//!
//! Order: policies by priority (lower first); within one priority, deny
//! rules before allow rules (deny wins a tie); then document order. Each
//! rule becomes the cross product of its `from` addresses, its `to`
//! addresses and its services, per address family. Workload addresses are
//! merged into the fewest CIDRs that cover exactly them (consecutive
//! addresses become one prefix), which keeps the classifier small when
//! workloads are numbered in blocks.
//!
//! Rules of a `monitor` policy carry monitor mode (a deny passes and is
//! reported); `disabled` policies are left out.

use std::collections::HashMap;

use microseg_dataplane::classifier::{BuildConfig, IpPrefix, Rule};
use microseg_dataplane::packet::{ip_to_u128, AddrFamily};
use microseg_dataplane::pipeline::{Action, L2Policy, Mode, PolicySnapshot, RuleVerdict};
use serde::Serialize;

use super::selector::{parse_selector, Selector};
use super::{ActionName, ModeName, Policy, PolicyDocument, PolicyError, Problem};
use crate::syntax::{parse_cidr, parse_service, AddressMatch, Service};

/// Above this many classifier rules, shadowed rules are not looked for
/// (the check is quadratic).
pub const SHADOW_CHECK_LIMIT: usize = 4000;

/// What a rule id stands for (explain, flow records, metrics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub policy: String,
    /// The rule's name, or its index (`rules[2]`) if unnamed.
    pub rule: String,
    /// Its place in the document (`policies[0].rules[2]`).
    pub path: String,
    pub action: ActionName,
    pub mode: ModeName,
}

/// The rules of one policy generation, by id: what flow records, explain
/// and metrics name rule ids with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleBook {
    pub generation: u32,
    /// Rule id n is `rules[n - 1]`.
    pub rules: Vec<RuleRef>,
}

impl RuleBook {
    /// The rule behind an id (None for the default action or an unknown id).
    pub fn rule(&self, rule_id: u32) -> Option<&RuleRef> {
        self.rules.get((rule_id as usize).checked_sub(1)?)
    }
}

/// A compiled policy, ready to publish.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub snapshot: PolicySnapshot,
    /// Rule id n is `rules[n - 1]`.
    pub rules: Vec<RuleRef>,
    /// Classifier rules generated.
    pub classifier_rules: usize,
    /// Warnings about rules that can never match first.
    pub shadowed: Vec<Problem>,
}

impl CompiledPolicy {
    /// The rule behind an id (None for the default action).
    pub fn rule(&self, rule_id: u32) -> Option<&RuleRef> {
        self.rules.get((rule_id as usize).checked_sub(1)?)
    }
}

/// Addresses a selector stands for.
#[derive(Debug, Default)]
struct Endpoints {
    any: bool,
    prefixes: Vec<IpPrefix>,
}

impl Endpoints {
    fn for_family(&self, family: AddrFamily) -> Vec<IpPrefix> {
        if self.any {
            return vec![IpPrefix::any(family)];
        }
        self.prefixes
            .iter()
            .filter(|p| p.family() == family)
            .copied()
            .collect()
    }
}

/// The fewest prefixes covering exactly `addrs` (one family).
fn aggregate(family: AddrFamily, mut addrs: Vec<u128>) -> Vec<IpPrefix> {
    addrs.sort_unstable();
    addrs.dedup();
    let bits = if family == AddrFamily::V4 { 32 } else { 128 };
    let mut out = Vec::new();
    let mut i = 0;
    while i < addrs.len() {
        // A run of consecutive addresses [lo, hi].
        let lo = addrs[i];
        let mut hi = lo;
        while i + 1 < addrs.len() && addrs[i + 1] == hi.wrapping_add(1) {
            hi = addrs[i + 1];
            i += 1;
        }
        i += 1;
        // Cut the run into aligned power-of-two blocks.
        let mut start = lo;
        loop {
            let mut size_log = if start == 0 {
                bits
            } else {
                start.trailing_zeros().min(bits)
            };
            while size_log > 0 {
                let last = start.checked_add((1u128 << size_log) - 1);
                if size_log < 128 && last.is_some_and(|l| l <= hi) {
                    break;
                }
                size_log -= 1;
            }
            let len = (bits - size_log) as u8;
            if let Ok(prefix) = IpPrefix::new(family, start, len) {
                out.push(prefix);
            }
            let next = start.checked_add(1u128 << size_log);
            match next {
                Some(n) if n <= hi && n > start => start = n,
                _ => break,
            }
        }
    }
    out
}

/// Compiles a validated document into generation `generation`.
pub fn compile(doc: &PolicyDocument, generation: u32) -> Result<CompiledPolicy, PolicyError> {
    compile_from(doc, &[], generation, &BuildConfig::default(), None)
}

/// Compiles a validated document, with `overlay` policies evaluated before
/// all of it (each rule in its given order: quarantine), into the snapshot
/// that will replace `previous`, whose classifier plan is reused where it
/// still fits (it makes a policy edit's swap faster, and changes no
/// verdict).
pub fn compile_from(
    doc: &PolicyDocument,
    overlay: &[Policy],
    generation: u32,
    config: &BuildConfig,
    previous: Option<&PolicySnapshot>,
) -> Result<CompiledPolicy, PolicyError> {
    let lists: HashMap<&str, &Vec<String>> = doc
        .ip_lists
        .iter()
        .map(|l| (l.name.as_str(), &l.cidrs))
        .collect();
    let resolve = |text: &str| -> Result<Endpoints, PolicyError> {
        let selector = parse_selector(text).map_err(PolicyError::Compile)?;
        let mut endpoints = Endpoints::default();
        let add = |m: AddressMatch, endpoints: &mut Endpoints| match m {
            AddressMatch::Any => endpoints.any = true,
            AddressMatch::Prefix(p) => endpoints.prefixes.push(p),
        };
        match selector {
            Selector::Any => endpoints.any = true,
            Selector::Cidr(m) => add(m, &mut endpoints),
            Selector::IpList(name) => {
                let cidrs = lists
                    .get(name.as_str())
                    .ok_or_else(|| PolicyError::Compile(format!("no ip_list named `{name}`")))?;
                for cidr in cidrs.iter() {
                    add(
                        parse_cidr(cidr).map_err(PolicyError::Compile)?,
                        &mut endpoints,
                    );
                }
            }
            sel @ Selector::Labels(_) => {
                let (mut v4, mut v6) = (Vec::new(), Vec::new());
                for workload in doc.workloads.iter().filter(|w| sel.selects(&w.labels)) {
                    for address in &workload.addresses {
                        let ip = address.trim().parse().map_err(|_| {
                            PolicyError::Compile(format!("`{address}` is not an IP address"))
                        })?;
                        match ip_to_u128(ip) {
                            (AddrFamily::V4, a) => v4.push(a),
                            (AddrFamily::V6, a) => v6.push(a),
                        }
                    }
                }
                endpoints.prefixes = aggregate(AddrFamily::V4, v4);
                endpoints.prefixes.extend(aggregate(AddrFamily::V6, v6));
            }
        }
        Ok(endpoints)
    };

    // (tier, priority, deny first, policy index, rule index): the overlay
    // (tier 0) in its own order, then the document (tier 1).
    let mut order = Vec::new();
    for (p, policy) in overlay.iter().enumerate() {
        for r in 0..policy.rules.len() {
            order.push((0, p as u32, false, p, r));
        }
    }
    for (p, policy) in doc.policies.iter().enumerate() {
        if policy.mode == ModeName::Disabled {
            continue;
        }
        for (r, rule) in policy.rules.iter().enumerate() {
            if rule.mode == Some(ModeName::Disabled) {
                continue;
            }
            order.push((1, policy.priority, rule.action == ActionName::Allow, p, r));
        }
    }
    order.sort();

    let mut rules = Vec::new();
    let mut refs = Vec::new();
    // Where the document's classifier rules start: the overlay's are left
    // out of the shadowing check (a quarantine shadows on purpose).
    let mut document_start = None;
    for &(tier, _, _, p, r) in &order {
        let (policy, path) = if tier == 0 {
            (&overlay[p], format!("{}.rules[{r}]", overlay[p].name))
        } else {
            document_start.get_or_insert(rules.len());
            (&doc.policies[p], format!("policies[{p}].rules[{r}]"))
        };
        let rule = &policy.rules[r];
        let mode = rule.mode.unwrap_or(policy.mode);
        let id = refs.len() as u32 + 1;
        refs.push(RuleRef {
            policy: policy.name.clone(),
            rule: rule.name.clone().unwrap_or_else(|| format!("rules[{r}]")),
            path,
            action: rule.action,
            mode,
        });
        let verdict = RuleVerdict {
            action: match rule.action {
                ActionName::Allow => Action::Allow,
                ActionName::Deny => Action::Deny,
            },
            mode: if mode == ModeName::Monitor {
                Mode::Monitor
            } else {
                Mode::Enforce
            },
            rule_id: id,
        };
        let (from, to) = (resolve(&rule.from)?, resolve(&rule.to)?);
        for text in &rule.services {
            let service: Service = parse_service(text).map_err(PolicyError::Compile)?;
            for family in [AddrFamily::V4, AddrFamily::V6] {
                if service.family.is_some_and(|f| f != family) {
                    continue;
                }
                let (sources, destinations) = (from.for_family(family), to.for_family(family));
                for src in &sources {
                    for dst in &destinations {
                        rules.push(Rule {
                            id,
                            src: *src,
                            dst: *dst,
                            src_ports: microseg_dataplane::classifier::PortRange::ANY,
                            dst_ports: service.ports,
                            proto: service.proto,
                            action: verdict,
                        });
                    }
                }
            }
        }
    }
    let shadowed = shadowed_rules(&rules[document_start.unwrap_or(rules.len())..], &refs);
    let classifier_rules = rules.len();
    let default_action = match doc.default_action {
        ActionName::Allow => Action::Allow,
        ActionName::Deny => Action::Deny,
    };
    let snapshot = PolicySnapshot::build_from(
        generation,
        rules,
        default_action,
        L2Policy::default(),
        config,
        previous,
    )
    .map_err(|e| PolicyError::Compile(e.to_string()))?;
    Ok(CompiledPolicy {
        snapshot,
        rules: refs,
        classifier_rules,
        shadowed,
    })
}

fn covers(earlier: &Rule<RuleVerdict>, later: &Rule<RuleVerdict>) -> bool {
    let contains = |outer: &IpPrefix, inner: &IpPrefix| {
        let ((olo, ohi), (ilo, ihi)) = (outer.bounds(), inner.bounds());
        outer.family() == inner.family() && olo <= ilo && ihi <= ohi
    };
    contains(&earlier.src, &later.src)
        && contains(&earlier.dst, &later.dst)
        && earlier.src_ports.lo() <= later.src_ports.lo()
        && later.src_ports.hi() <= earlier.src_ports.hi()
        && earlier.dst_ports.lo() <= later.dst_ports.lo()
        && later.dst_ports.hi() <= earlier.dst_ports.hi()
        && earlier.proto.is_none_or(|p| Some(p) == later.proto)
}

/// Policy rules none of whose classifier rules can ever match first.
fn shadowed_rules(rules: &[Rule<RuleVerdict>], refs: &[RuleRef]) -> Vec<Problem> {
    if rules.len() > SHADOW_CHECK_LIMIT {
        return vec![Problem {
            path: "policies".into(),
            message: format!(
                "{} classifier rules: shadowed rules were not looked for (limit {SHADOW_CHECK_LIMIT})",
                rules.len()
            ),
        }];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < rules.len() {
        let id = rules[start].id;
        let end = start + rules[start..].iter().take_while(|r| r.id == id).count();
        let all_covered = rules[start..end]
            .iter()
            .all(|later| rules[..start].iter().any(|earlier| covers(earlier, later)));
        if all_covered && start > 0 {
            let by = rules[..start]
                .iter()
                .rev()
                .find(|earlier| rules[start..end].iter().any(|l| covers(earlier, l)))
                .and_then(|earlier| refs.get(earlier.id as usize - 1));
            if let Some(this) = refs.get(id as usize - 1) {
                out.push(Problem {
                    path: this.path.clone(),
                    message: format!(
                        "rule `{}` of policy `{}` never matches first: earlier rules cover it{}",
                        this.rule,
                        this.policy,
                        by.map(|b| format!(" (for example `{}` of `{}`)", b.rule, b.policy))
                            .unwrap_or_default()
                    ),
                });
            }
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_covers_exactly_the_addresses() {
        let base = 0x0a00_0000u128; // 10.0.0.0
        let addrs: Vec<u128> = (0..6).map(|i| base + i).chain([base + 9]).collect();
        let prefixes = aggregate(AddrFamily::V4, addrs.clone());
        // 10.0.0.0/30, 10.0.0.4/31, 10.0.0.9/32
        let lens: Vec<u8> = prefixes.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [30, 31, 32]);
        for a in 0..16 {
            let covered = prefixes.iter().any(|p| p.contains(base + a));
            assert_eq!(covered, addrs.contains(&(base + a)), "10.0.0.{a}");
        }
        let everything = aggregate(AddrFamily::V4, (0..256).map(|i| base + i).collect());
        assert_eq!(everything.len(), 1);
        assert_eq!(everything[0].len(), 24);
        assert!(aggregate(AddrFamily::V6, vec![]).is_empty());
        let top = aggregate(AddrFamily::V6, vec![u128::MAX]);
        assert_eq!((top.len(), top[0].len()), (1, 128));
    }
}
