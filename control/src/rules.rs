//! The rules file: the policy of `microseg run` until the label-based
//! policy engine (issue 6) replaces it. Address-based rules, first match
//! wins, a default action, and the L2 settings:
//!
//! ```yaml
//! default_action: deny          # allow | deny
//! rules:
//!   - name: web-to-app
//!     from: 10.203.10.1         # address, CIDR or any
//!     to: 10.203.10.2/32
//!     services: [tcp/8080, icmp/8]   # default: any
//!     action: allow             # allow | deny
//!     mode: enforce             # enforce | monitor | disabled
//! l2:
//!   arp: true                   # switch ARP (default true)
//!   neighbour_discovery: true   # switch IPv6 ND (default true)
//!   other_ethertypes: false     # switch LLDP and the like (default false)
//! ```
//!
//! Loading checks everything and reports every problem with its path
//! (`rules[2].services[1]: port 70000 out of range`); a file with any
//! problem changes nothing.

use std::path::Path;

use microseg_dataplane::classifier::{IpPrefix, Rule};
use microseg_dataplane::packet::AddrFamily;
use microseg_dataplane::pipeline::{Action, L2Policy, Mode, PolicySnapshot, RuleVerdict};
use serde::Deserialize;

use crate::file_error::FileError;
use crate::syntax::{parse_cidr, parse_service, AddressMatch, Service};

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: compiling the rules: {message}")]
    Compile { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default = "deny")]
    default_action: ActionText,
    #[serde(default)]
    rules: Vec<RuleText>,
    #[serde(default)]
    l2: L2Text,
}

fn deny() -> ActionText {
    ActionText::Deny
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ActionText {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum ModeText {
    #[default]
    Enforce,
    Monitor,
    Disabled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    name: Option<String>,
    from: String,
    to: String,
    #[serde(default)]
    services: Vec<String>,
    action: ActionText,
    #[serde(default)]
    mode: ModeText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct L2Text {
    #[serde(default = "yes")]
    arp: bool,
    #[serde(default = "yes")]
    neighbour_discovery: bool,
    #[serde(default)]
    other_ethertypes: bool,
}

fn yes() -> bool {
    true
}

impl Default for L2Text {
    fn default() -> Self {
        Self {
            arp: true,
            neighbour_discovery: true,
            other_ethertypes: false,
        }
    }
}

/// A validated rules file, ready to compile.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Compiled-form rules, in match order; rule ids are 1-based positions
    /// in the file.
    pub rules: Vec<Rule<RuleVerdict>>,
    /// Names by rule id - 1 (`rules[i]` when unnamed).
    pub names: Vec<String>,
    pub default_action: Action,
    pub l2: L2Policy,
}

impl RuleSet {
    /// Reads and validates a rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        Ok(crate::file_error::load(path, Self::parse_text)?)
    }

    /// Validates rules-file text.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        Ok(Self::parse_text(text)?)
    }

    fn parse_text(text: &str) -> Result<Self, FileError> {
        let file: RulesFile = serde_yaml::from_str(text).map_err(|e| FileError::Syntax {
            path: "rules file".into(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let mut names = Vec::new();
        for (index, rule) in file.rules.iter().enumerate() {
            let id = index as u32 + 1;
            names.push(
                rule.name
                    .clone()
                    .unwrap_or_else(|| format!("rules[{index}]")),
            );
            let at = |field: &str| format!("rules[{index}].{field}");
            let from = parse_cidr(&rule.from).map_err(|e| format!("{}: {e}", at("from")));
            let to = parse_cidr(&rule.to).map_err(|e| format!("{}: {e}", at("to")));
            let services: Vec<Service> = if rule.services.is_empty() {
                vec![Service::ANY]
            } else {
                rule.services
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        parse_service(s)
                            .map_err(|e| {
                                problems.push(format!("{}: {e}", at(&format!("services[{i}]"))))
                            })
                            .ok()
                    })
                    .collect()
            };
            let (from, to) = match (from, to) {
                (Ok(from), Ok(to)) => (from, to),
                (from, to) => {
                    problems.extend(from.err());
                    problems.extend(to.err());
                    continue;
                }
            };
            let mode = match rule.mode {
                ModeText::Enforce => Mode::Enforce,
                ModeText::Monitor => Mode::Monitor,
                ModeText::Disabled => continue,
            };
            let verdict = RuleVerdict {
                action: match rule.action {
                    ActionText::Allow => Action::Allow,
                    ActionText::Deny => Action::Deny,
                },
                mode,
                rule_id: id,
            };
            match expand(from, to, &services, id, verdict) {
                Ok(mut compiled) => rules.append(&mut compiled),
                Err(e) => problems.push(format!("rules[{index}]: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(FileError::Invalid {
                path: "rules file".into(),
                problems,
            });
        }
        Ok(Self {
            rules,
            names,
            default_action: match file.default_action {
                ActionText::Allow => Action::Allow,
                ActionText::Deny => Action::Deny,
            },
            l2: L2Policy {
                switch_arp: file.l2.arp,
                switch_neighbour_discovery: file.l2.neighbour_discovery,
                switch_other_ethertypes: file.l2.other_ethertypes,
            },
        })
    }

    /// Compiles into a policy snapshot of `generation`.
    pub fn compile(&self, generation: u32) -> Result<PolicySnapshot, RulesError> {
        PolicySnapshot::build(generation, self.rules.clone(), self.default_action, self.l2).map_err(
            |e| RulesError::Compile {
                path: "rules".into(),
                message: e.to_string(),
            },
        )
    }

    /// The name of a rule id (`default` for the default action).
    pub fn rule_name(&self, rule_id: u32) -> &str {
        rule_id
            .checked_sub(1)
            .and_then(|i| self.names.get(i as usize))
            .map_or("default", String::as_str)
    }
}

/// One classifier rule per (address family, service): a rule between two
/// `any`s applies to IPv4 and IPv6; a CIDR fixes the family, and the two
/// ends (and an ICMP flavour) must agree on it.
fn expand(
    from: AddressMatch,
    to: AddressMatch,
    services: &[Service],
    id: u32,
    verdict: RuleVerdict,
) -> Result<Vec<Rule<RuleVerdict>>, String> {
    let family_of = |m: AddressMatch| match m {
        AddressMatch::Any => None,
        AddressMatch::Prefix(p) => Some(p.family()),
    };
    let fixed = match (family_of(from), family_of(to)) {
        (Some(a), Some(b)) if a != b => {
            return Err("`from` and `to` are of different address families".into())
        }
        (a, b) => a.or(b),
    };
    let prefix = |m: AddressMatch, family| match m {
        AddressMatch::Any => IpPrefix::any(family),
        AddressMatch::Prefix(p) => p,
    };
    let mut out = Vec::new();
    for service in services {
        let families: Vec<AddrFamily> = match (fixed, service.family) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "an {} service between {a:?} addresses",
                    if b == AddrFamily::V4 {
                        "icmp"
                    } else {
                        "icmpv6"
                    }
                ))
            }
            (Some(f), _) | (None, Some(f)) => vec![f],
            (None, None) => vec![AddrFamily::V4, AddrFamily::V6],
        };
        for family in families {
            out.push(Rule {
                id,
                src: prefix(from, family),
                dst: prefix(to, family),
                src_ports: microseg_dataplane::classifier::PortRange::ANY,
                dst_ports: service.ports,
                proto: service.proto,
                action: verdict,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_problems, flow};
    use microseg_dataplane::packet::proto;

    const SAMPLE: &str = "
default_action: deny
rules:
  - name: web-to-app
    from: 10.0.0.1
    to: 10.0.0.2
    services: [tcp/8080, icmp/8]
    action: allow
  - name: watch-db
    from: any
    to: 10.0.0.3/32
    action: deny
    mode: monitor
  - name: off
    from: any
    to: any
    action: allow
    mode: disabled
  - from: any
    to: fd00::/64
    services: [icmpv6/128]
    action: allow
";

    #[test]
    fn a_valid_file_compiles_to_what_it_says() {
        let set = RuleSet::parse(SAMPLE).expect("valid");
        let policy = set.compile(7).expect("compiles");
        assert_eq!(policy.generation, 7);
        let web_app = policy.decide(&flow("10.0.0.1", "10.0.0.2", proto::TCP, 8080));
        assert!(web_app.pass && !web_app.would_deny);
        assert_eq!(set.rule_name(web_app.rule_id), "web-to-app");
        assert!(
            !policy
                .decide(&flow("10.0.0.1", "10.0.0.2", proto::TCP, 22))
                .pass
        );
        let db = policy.decide(&flow("10.0.0.9", "10.0.0.3", proto::UDP, 53));
        assert!(db.pass && db.would_deny, "monitor mode passes and reports");
        assert_eq!(set.rule_name(db.rule_id), "watch-db");
        // The disabled allow-all changes nothing; the unnamed rule is named
        // by its path.
        assert!(
            !policy
                .decide(&flow("10.0.0.9", "10.0.0.8", proto::TCP, 1))
                .pass
        );
        let mut ping6 = flow("fd00::9", "fd00::1", proto::ICMPV6, 128 << 8);
        ping6.src_port = 1;
        let v6 = policy.decide(&ping6);
        assert!(v6.pass);
        assert_eq!(set.rule_name(v6.rule_id), "rules[3]");
        assert_eq!(set.rule_name(u32::MAX), "default");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = "
rules:
  - from: 10.0.0.1/33
    to: web
    action: allow
  - from: any
    to: any
    services: [tcp/443, tcp/70000, gre]
    action: deny
  - from: 10.0.0.1
    to: fd00::1
    action: allow
  - from: 10.0.0.1
    to: any
    services: [icmpv6/128]
    action: allow
";
        let RulesError::File(FileError::Invalid { problems, .. }) =
            RuleSet::parse(bad).expect_err("invalid")
        else {
            panic!("a validation error")
        };
        assert_problems(
            &problems,
            &[
                "rules[0].from: `10.0.0.1/33`: prefix length must be 0..=32",
                "rules[0].to: `web` is not an IP address or CIDR",
                "rules[1].services[1]: `tcp/70000`: port 70000 out of range",
                "rules[1].services[2]: `gre`: unknown protocol",
                "rules[2]: `from` and `to` are of different address families",
                "rules[3]: an icmpv6 service between V4 addresses",
            ],
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let typo = "rules:\n  - from: any\n    to: any\n    acton: allow\n";
        let message = RuleSet::parse(typo).expect_err("typo").to_string();
        assert!(
            message.contains("rules[0]") && message.contains("acton"),
            "{message}"
        );
        let action = "rules:\n  - from: any\n    to: any\n    action: permit\n";
        let message = RuleSet::parse(action).expect_err("bad action").to_string();
        assert!(
            message.contains("rules[0].action") && message.contains("permit"),
            "{message}"
        );
        let top = "default_acton: deny\n";
        let message = RuleSet::parse(top).expect_err("unknown key").to_string();
        assert!(message.contains("default_acton"), "{message}");
    }
}
