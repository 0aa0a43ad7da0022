//! Impact analysis: what a candidate policy would change for the traffic
//! actually seen. Every recorded flow (its first record: a connection
//! start or a verdict) is judged by the policy in force and by the
//! candidate; the flows whose verdict would change are listed, grouped by
//! endpoints and service, so an admin can tighten policy step by step
//! (monitor first, then enforce) without breaking an application.

use std::collections::BTreeMap;
use std::sync::Arc;

use microseg_dataplane::pipeline::PolicySnapshot;
use serde::Serialize;

use crate::explain::Question;
use crate::flows::{Endpoint, FlowRecord, Verdict};
use crate::policy::RuleBook;

/// Traffic whose verdict would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub service: String,
    /// Flows seen with these endpoints and service.
    pub flows: usize,
    /// The id of the latest of them (for `explain?flow=`).
    pub last_flow: u64,
    pub now: Verdict,
    pub candidate: Verdict,
    /// `policy/rule` deciding now and under the candidate (None: default).
    pub rule_now: Option<String>,
    pub rule_candidate: Option<String>,
}

/// The analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    /// Flows judged (records of other kinds are left out).
    pub flows_checked: usize,
    /// Flows whose verdict would change.
    pub flows_changed: usize,
    /// Counts by transition (`allowed -> denied`).
    pub transitions: BTreeMap<String, usize>,
    pub changes: Vec<Change>,
}

/// One side of the comparison: a compiled policy and its rule names.
#[derive(Clone, Copy, Debug)]
pub struct Judge<'a> {
    pub snapshot: &'a PolicySnapshot,
    pub book: &'a RuleBook,
}

impl Judge<'_> {
    fn judge(&self, question: &Question) -> (Verdict, Option<String>) {
        let decision = self.snapshot.judge(&question.flow());
        let rule = self
            .book
            .rule(decision.rule_id)
            .map(|r| format!("{}/{}", r.policy, r.rule));
        (Verdict::of(&decision), rule)
    }
}

/// Judges `records` by `now` and `candidate`.
pub fn analyse(records: &[Arc<FlowRecord>], now: Judge<'_>, candidate: Judge<'_>) -> Impact {
    let mut impact = Impact::default();
    let mut changes: BTreeMap<(String, String, String), Change> = BTreeMap::new();
    for record in records.iter().filter(|r| r.opens_flow()) {
        let Some(question) = Question::from_record(record) else {
            continue;
        };
        impact.flows_checked += 1;
        let (verdict_now, rule_now) = now.judge(&question);
        let (verdict_candidate, rule_candidate) = candidate.judge(&question);
        if verdict_now == verdict_candidate {
            continue;
        }
        impact.flows_changed += 1;
        *impact
            .transitions
            .entry(format!(
                "{} -> {}",
                verdict_now.name(),
                verdict_candidate.name()
            ))
            .or_default() += 1;
        let service = record.service();
        let key = (
            record.src.address.clone(),
            record.dst.address.clone(),
            service.clone(),
        );
        let change = changes.entry(key).or_insert_with(|| Change {
            src: record.src.clone(),
            dst: record.dst.clone(),
            service,
            flows: 0,
            last_flow: 0,
            now: verdict_now,
            candidate: verdict_candidate,
            rule_now,
            rule_candidate,
        });
        change.flows += 1;
        change.last_flow = change.last_flow.max(record.id);
    }
    impact.changes = changes.into_values().collect();
    impact
}
