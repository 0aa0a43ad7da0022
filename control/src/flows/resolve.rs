//! Names for what the dataplane reports by number: addresses become
//! workloads with labels (from the policy document in force), rule ids
//! become the policy and rule that decided (per generation, since an event
//! may come from the generation before the one in force).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use microseg_dataplane::packet::{ip_to_u128, AddrFamily};
use microseg_dataplane::pipeline::{Action, Mode, DEFAULT_RULE_ID};

use super::record::{address_text, Endpoint, FlowRecord};
use crate::policy::{ActionName, ModeName, PolicyDocument, RuleBook, RuleRef};
use crate::rules::RuleSet;

/// Generations whose rule names are kept.
const GENERATIONS_KEPT: usize = 8;

/// A workload's name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Addresses to workloads, rule ids to rules.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    workloads: HashMap<(AddrFamily, u128), Arc<WorkloadInfo>>,
    generations: VecDeque<Arc<RuleBook>>,
}

impl Resolver {
    /// The workloads of `document` (addresses that do not parse are
    /// skipped: validation already refused them).
    pub fn set_workloads(&mut self, document: &PolicyDocument) {
        self.workloads.clear();
        for workload in &document.workloads {
            let info = Arc::new(WorkloadInfo {
                name: workload.name.clone(),
                labels: workload.labels.clone(),
            });
            for address in &workload.addresses {
                if let Ok(ip) = address.trim().parse::<IpAddr>() {
                    self.workloads.insert(ip_to_u128(ip), Arc::clone(&info));
                }
            }
        }
    }

    /// The rules of one more generation (the oldest kept is forgotten).
    pub fn add_generation(&mut self, book: Arc<RuleBook>) {
        if self.knows(book.generation) {
            return;
        }
        if self.generations.len() == GENERATIONS_KEPT {
            self.generations.pop_front();
        }
        self.generations.push_back(book);
    }

    /// A rules file's rules as a rule book (rules-file mode).
    pub fn rules_file_book(generation: u32, rules: &RuleSet) -> RuleBook {
        let rules = rules
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| RuleRef {
                policy: "rules-file".into(),
                rule: rules.names.get(i).cloned().unwrap_or_default(),
                path: format!("rules[{i}]"),
                action: match rule.action.action {
                    Action::Allow => ActionName::Allow,
                    Action::Deny => ActionName::Deny,
                },
                mode: match rule.action.mode {
                    Mode::Enforce => ModeName::Enforce,
                    Mode::Monitor => ModeName::Monitor,
                },
            })
            .collect();
        RuleBook { generation, rules }
    }

    /// The workload at an address.
    pub fn workload(&self, family: AddrFamily, addr: u128) -> Option<&Arc<WorkloadInfo>> {
        self.workloads.get(&(family, addr))
    }

    /// The addresses of the workload named `name`.
    pub fn addresses_of(&self, name: &str) -> Vec<IpAddr> {
        let mut found: Vec<IpAddr> = self
            .workloads
            .iter()
            .filter(|(_, w)| w.name == name)
            .map(|(&(family, addr), _)| microseg_dataplane::packet::u128_to_ip(family, addr))
            .collect();
        found.sort();
        found
    }

    /// Every workload known, by name.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<WorkloadInfo>> {
        self.workloads.values()
    }

    pub fn endpoint(&self, family: AddrFamily, addr: u128) -> Endpoint {
        let workload = self.workload(family, addr);
        Endpoint {
            address: address_text(family, addr),
            workload: workload.map(|w| w.name.clone()),
            labels: workload.map(|w| w.labels.clone()).unwrap_or_default(),
        }
    }

    /// Are the rules of `generation` known?
    pub fn knows(&self, generation: u32) -> bool {
        self.generations.iter().any(|b| b.generation == generation)
    }

    /// The rule behind `rule_id` in `generation`, if known.
    pub fn rule(&self, generation: u32, rule_id: u32) -> Option<&RuleRef> {
        self.generations
            .iter()
            .find(|b| b.generation == generation)?
            .rule(rule_id)
    }

    /// Fills the record's generation, policy, rule and mode; returns the
    /// rule's action (None for the default action or an unknown rule).
    pub fn name_rule(
        &self,
        record: &mut FlowRecord,
        generation: u32,
        rule_id: u32,
    ) -> Option<ActionName> {
        record.generation = generation;
        if rule_id == DEFAULT_RULE_ID {
            record.default = true;
            return None;
        }
        match self.rule(generation, rule_id) {
            Some(rule) => {
                record.policy = Some(rule.policy.clone());
                record.rule = Some(rule.rule.clone());
                record.mode = Some(rule.mode);
                Some(rule.action)
            }
            None => {
                record.rule = Some(format!("#{rule_id}"));
                None
            }
        }
    }
}
