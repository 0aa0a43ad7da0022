//! The policy model: what admins write (YAML or JSON), and its validation.
//!
//! ```yaml
//! workloads:
//!   - name: web-1
//!     addresses: [10.10.1.10, "fd00:10::10"]
//!     labels: {app: shop, role: web, env: prod}
//! ip_lists:
//!   - name: office
//!     cidrs: [192.0.2.0/24]
//! policies:
//!   - name: shop
//!     mode: enforce            # enforce | monitor | disabled
//!     priority: 100            # lower is evaluated first
//!     rules:
//!       - name: web-to-app
//!         from: "role=web,env=prod"
//!         to: "role=app,env=prod"
//!         services: ["tcp/8080", "icmp/8"]
//!         action: allow        # allow | deny
//!         mode: monitor        # optional: overrides the policy's mode for this rule
//! default_action: deny
//! ```
//!
//! Validation collects every problem with its path
//! (`policies[2].rules[0].services[1]: port 70000 out of range`), and
//! warnings that do not stop a policy: selectors that match nothing, and
//! rules that earlier rules shadow. Semantics: docs/policy.md.

mod compile;
pub mod selector;

pub use compile::{compile, compile_from, CompiledPolicy, RuleBook, RuleRef, SHADOW_CHECK_LIMIT};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::syntax::{parse_cidr, parse_service};
use selector::{check_label, parse_selector, Selector};

/// The whole policy document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub ip_lists: Vec<IpList>,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub default_action: ActionName,
}

/// A workload: addresses and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// May be left out in `PUT /v1/workloads/{name}` (the path names it).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A named list of CIDRs (`ip_list:NAME`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpList {
    pub name: String,
    #[serde(default)]
    pub cidrs: Vec<String>,
}

/// A policy: rules sharing a mode and a priority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub mode: ModeName,
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

fn default_priority() -> u32 {
    100
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub from: String,
    pub to: String,
    #[serde(default = "any_service")]
    pub services: Vec<String>,
    pub action: ActionName,
    /// Overrides the policy's mode for this rule alone (`monitor` to try a
    /// deny rule out, `disabled` to park it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeName>,
}

fn any_service() -> Vec<String> {
    vec!["any".into()]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Allow,
    #[default]
    Deny,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    #[default]
    Enforce,
    Monitor,
    Disabled,
}

/// A problem (or warning) and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The outcome of validation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A valid name, not used before by another of its kind (`seen`).
    fn check_unique_name<'a>(
        &mut self,
        at: &str,
        kind: &str,
        name: &'a str,
        seen: &mut HashSet<&'a str>,
    ) {
        if let Err(e) = check_name(name) {
            self.error(format!("{at}.name"), e);
        } else if !seen.insert(name) {
            self.error(
                format!("{at}.name"),
                format!("{kind} `{name}` is defined twice"),
            );
        }
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Why a document could not even be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("not a policy document: {0}")]
    Syntax(String),
    #[error("invalid policy: {}", .0.errors.iter().map(Problem::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Report),
    #[error("compiling the policy: {0}")]
    Compile(String),
}

/// Names: 1-63 of letters, digits, '-', '_', '.'.
fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` must be 1-63 characters of letters, digits, '-', '_', '.'"
        ))
    }
}

impl PolicyDocument {
    /// Reads YAML (JSON is YAML too); unknown keys and wrong types are
    /// errors that name their place.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        serde_yaml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))
    }

    /// Reads JSON.
    pub fn from_json(text: &[u8]) -> Result<Self, PolicyError> {
        serde_json::from_slice(text).map_err(|e| PolicyError::Syntax(e.to_string()))
    }

    /// Checks the whole document, shadowed rules included (which compiles
    /// it); see `Report`.
    pub fn validate(&self) -> Report {
        let mut report = self.check();
        if report.is_valid() {
            // Shadowing needs the compiled form (addresses resolved).
            match compile::compile(self, 0) {
                Ok(compiled) => report.warnings.extend(compiled.shadowed),
                Err(e) => report.error("policies", e.to_string()),
            }
        }
        report
    }

    /// Every check that does not need the compiled form: all errors, and
    /// the empty-selector warnings. `compile` reports shadowed rules, so a
    /// caller that compiles anyway (the engine) checks, then compiles once.
    pub fn check(&self) -> Report {
        let mut report = Report::default();
        let mut names = HashSet::new();
        let mut owners: HashMap<IpAddr, &str> = HashMap::new();
        for (i, workload) in self.workloads.iter().enumerate() {
            let at = format!("workloads[{i}]");
            report.check_unique_name(&at, "workload", &workload.name, &mut names);
            for (j, address) in workload.addresses.iter().enumerate() {
                match address.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        if let Some(other) = owners.insert(ip, &workload.name) {
                            report.error(
                                format!("{at}.addresses[{j}]"),
                                format!("{ip} also belongs to workload `{other}`"),
                            );
                        }
                    }
                    Err(_) => report.error(
                        format!("{at}.addresses[{j}]"),
                        format!("`{address}` is not an IP address"),
                    ),
                }
            }
            for (key, value) in &workload.labels {
                if let Err(e) = check_label(key, "label key") {
                    report.error(format!("{at}.labels"), e);
                }
                if let Err(e) = check_label(value, "label value") {
                    report.error(format!("{at}.labels.{key}"), e);
                }
            }
        }
        let mut lists = HashSet::new();
        for (i, list) in self.ip_lists.iter().enumerate() {
            let at = format!("ip_lists[{i}]");
            report.check_unique_name(&at, "ip_list", &list.name, &mut lists);
            for (j, cidr) in list.cidrs.iter().enumerate() {
                if let Err(e) = parse_cidr(cidr) {
                    report.error(format!("{at}.cidrs[{j}]"), e);
                }
            }
        }
        let mut policy_names = HashSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            report.check_unique_name(&at, "policy", &policy.name, &mut policy_names);
            for (j, rule) in policy.rules.iter().enumerate() {
                let at = format!("{at}.rules[{j}]");
                if let Some(name) = &rule.name {
                    if let Err(e) = check_name(name) {
                        report.error(format!("{at}.name"), e);
                    }
                }
                for (field, text) in [("from", &rule.from), ("to", &rule.to)] {
                    match parse_selector(text) {
                        Err(e) => report.error(format!("{at}.{field}"), e),
                        Ok(Selector::IpList(name)) if !lists.contains(name.as_str()) => report
                            .error(
                                format!("{at}.{field}"),
                                format!("no ip_list named `{name}`"),
                            ),
                        Ok(sel @ Selector::Labels(_)) => {
                            if !self.workloads.iter().any(|w| sel.selects(&w.labels)) {
                                report.warn(
                                    format!("{at}.{field}"),
                                    format!("`{text}` matches no workload (yet)"),
                                );
                            }
                        }
                        Ok(_) => {}
                    }
                }
                if rule.services.is_empty() {
                    report.error(
                        format!("{at}.services"),
                        "empty: write [any] to mean every service",
                    );
                }
                for (k, service) in rule.services.iter().enumerate() {
                    if let Err(e) = parse_service(service) {
                        report.error(format!("{at}.services[{k}]"), e);
                    }
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests;
