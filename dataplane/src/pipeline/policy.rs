//! The policy snapshot the pipeline judges against: compiled rules with
//! their verdicts, the default action, and what to do with L2 traffic.
//!
//! Immutable once built; the control plane publishes a new one with a new
//! generation (RCU through `arc_swap`), and each packet is judged by
//! exactly one snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::classifier::{BuildConfig, BuildError, Classifier, Rule};
use crate::packet::FlowKey;

/// What a rule (or the default) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

/// How a rule's action is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The action is carried out.
    Enforce,
    /// Would-deny traffic passes and is reported.
    Monitor,
}

/// The payload of a compiled rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleVerdict {
    pub action: Action,
    pub mode: Mode,
    /// The policy rule this came from (explain, flow records).
    pub rule_id: u32,
}

/// Rule ids above this are not counted in `rule_hits` (bounds the
/// counter array whatever ids a caller chooses).
pub const MAX_COUNTED_RULE_ID: usize = 1 << 20;

/// The rule id reported when the default action decided.
pub const DEFAULT_RULE_ID: u32 = u32::MAX;

/// Non-fragmented handling of L2 and odd IP traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Policy {
    /// Switch ARP without judging it (DESIGN invariant 4).
    pub switch_arp: bool,
    /// Switch IPv6 neighbour discovery (ICMPv6 133–137) and multicast
    /// listener discovery (130–132, 143, to a group) without judging them.
    pub switch_neighbour_discovery: bool,
    /// Switch ethertypes other than IPv4, IPv6 and ARP (LLDP, ...).
    pub switch_other_ethertypes: bool,
}

impl Default for L2Policy {
    fn default() -> Self {
        Self {
            switch_arp: true,
            switch_neighbour_discovery: true,
            switch_other_ethertypes: false,
        }
    }
}

/// One policy generation, compiled.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub generation: u32,
    pub classifier: Classifier<RuleVerdict>,
    /// Applied, in enforce mode, when no rule matches.
    pub default_action: Action,
    pub l2: L2Policy,
    /// Decisions per rule id (index), the default's in the last slot: how
    /// many new flows (and re-checks) each rule decided. Counted on the
    /// conntrack-miss path only, so the shared counter is touched once
    /// per flow, not per packet.
    hits: Box<[AtomicU64]>,
}

/// The decision for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Does the packet pass?
    pub pass: bool,
    /// Would it have been denied, had monitor mode not let it pass?
    pub would_deny: bool,
    pub rule_id: u32,
}

impl PolicySnapshot {
    /// Compiles rules (position = priority) into a snapshot.
    pub fn build(
        generation: u32,
        rules: Vec<Rule<RuleVerdict>>,
        default_action: Action,
        l2: L2Policy,
    ) -> Result<Self, BuildError> {
        Self::build_from(
            generation,
            rules,
            default_action,
            l2,
            &BuildConfig::default(),
            None,
        )
    }

    /// Compiles rules into the snapshot that will replace `previous`,
    /// reusing its classifier's plan where it still fits (see
    /// [`BuildPlan`](crate::classifier::BuildPlan)).
    pub fn build_from(
        generation: u32,
        rules: Vec<Rule<RuleVerdict>>,
        default_action: Action,
        l2: L2Policy,
        config: &BuildConfig,
        previous: Option<&PolicySnapshot>,
    ) -> Result<Self, BuildError> {
        // One slot per id up to the largest (ids are small and dense in
        // practice; beyond MAX_COUNTED_RULE_ID they are not counted), and
        // one for the default.
        let slots = rules
            .iter()
            .map(|r| (r.id as usize).min(MAX_COUNTED_RULE_ID) + 1)
            .max()
            .unwrap_or(0)
            + 1;
        Ok(Self {
            generation,
            classifier: Classifier::build_from(
                rules,
                config,
                previous.map(|p| p.classifier.plan()),
            )?,
            default_action,
            l2,
            hits: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn count_hit(&self, rule_id: u32) {
        let last = self.hits.len() - 1;
        let slot = if rule_id == DEFAULT_RULE_ID {
            last
        } else if (rule_id as usize) < last {
            rule_id as usize
        } else {
            return;
        };
        if let Some(counter) = self.hits.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (rule id, decisions) for every rule that decided at least once;
    /// the default action as `DEFAULT_RULE_ID`.
    pub fn rule_hits(&self) -> Vec<(u32, u64)> {
        let last = self.hits.len() - 1;
        self.hits
            .iter()
            .enumerate()
            .filter_map(|(slot, counter)| {
                let count = counter.load(Ordering::Relaxed);
                let id = if slot == last {
                    DEFAULT_RULE_ID
                } else {
                    slot as u32
                };
                (count > 0).then_some((id, count))
            })
            .collect()
    }

    /// Decides a flow in its original direction, and counts the hit.
    pub fn decide(&self, flow: &FlowKey) -> Decision {
        let decision = self.judge(flow);
        self.count_hit(decision.rule_id);
        decision
    }

    /// What `decide` would decide, without counting it (explain, what-if).
    pub fn judge(&self, flow: &FlowKey) -> Decision {
        let verdict = self.classifier.classify_rule(flow).map(|r| r.action);
        let (action, mode, rule_id) = match verdict {
            Some(v) => (v.action, v.mode, v.rule_id),
            None => (self.default_action, Mode::Enforce, DEFAULT_RULE_ID),
        };
        match (action, mode) {
            (Action::Allow, _) => Decision {
                pass: true,
                would_deny: false,
                rule_id,
            },
            (Action::Deny, Mode::Enforce) => Decision {
                pass: false,
                would_deny: false,
                rule_id,
            },
            (Action::Deny, Mode::Monitor) => Decision {
                pass: true,
                would_deny: true,
                rule_id,
            },
        }
    }
}
