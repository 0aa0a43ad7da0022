//! Learning from traffic: least-privilege policy recommendations, and
//! anomalies after the learning window.
//!
//! Both see flows as edges between label groups (`role=web` ->
//! `role=app` on `tcp/8080`): a recommendation is one allow rule per pair
//! of groups with the services seen between them, ready to apply in
//! monitor mode; after the learning window, a flow on an edge never seen
//! during it is an anomaly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::flows::{Endpoint, FlowObserver, FlowRecord, RecordKind, Verdict};
use crate::policy::{ActionName, ModeName, Policy, PolicyDocument, PolicyRule};

/// How endpoints are generalized into groups: by these label keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generalize {
    pub by: Vec<String>,
}

impl Default for Generalize {
    fn default() -> Self {
        Self {
            by: vec!["role".into()],
        }
    }
}

impl Generalize {
    /// The selector standing for an endpoint: its group's labels
    /// (`app=shop,role=web`), its workload's labels if it lacks the keys,
    /// or its address for an unknown endpoint.
    pub fn selector(&self, endpoint: &Endpoint) -> String {
        if endpoint.workload.is_none() {
            let bits = if endpoint.address.contains(':') {
                128
            } else {
                32
            };
            return format!("{}/{bits}", endpoint.address);
        }
        let picked: Vec<String> = self
            .by
            .iter()
            .filter_map(|key| endpoint.labels.get(key).map(|v| format!("{key}={v}")))
            .collect();
        if !picked.is_empty() {
            return picked.join(",");
        }
        let all: Vec<String> = endpoint
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if all.is_empty() {
            // A workload with no labels: its addresses are all we have.
            let bits = if endpoint.address.contains(':') {
                128
            } else {
                32
            };
            format!("{}/{bits}", endpoint.address)
        } else {
            all.join(",")
        }
    }

    /// (from, to, service) of a flow.
    pub fn edge(&self, record: &FlowRecord) -> (String, String, String) {
        (
            self.selector(&record.src),
            self.selector(&record.dst),
            record.service(),
        )
    }
}

/// Does a record report a flow that was let through (a learning input)?
fn let_through(record: &FlowRecord) -> bool {
    record.kind == RecordKind::Start
        && matches!(record.verdict, Verdict::Allowed | Verdict::WouldDeny)
}

/// A recommendation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// Flows the rules were drawn from.
    pub flows_used: usize,
    /// The workloads in force and one monitor-mode policy of allow rules;
    /// default deny.
    pub policy: PolicyDocument,
}

/// Recommends allow rules covering every let-through flow of `records`
/// (and denied ones too with `include_denied`).
pub fn recommend(
    records: &[Arc<FlowRecord>],
    generalize: &Generalize,
    workloads: &PolicyDocument,
    include_denied: bool,
) -> Recommendation {
    let mut pairs: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut flows_used = 0;
    for record in records.iter().filter(|r| {
        let_through(r)
            || (include_denied && r.kind == RecordKind::Verdict && r.verdict == Verdict::Denied)
    }) {
        let (from, to, service) = generalize.edge(record);
        pairs.entry((from, to)).or_default().insert(service);
        flows_used += 1;
    }
    let name_of = |selector: &str| {
        selector
            .split(',')
            .map(|term| term.rsplit_once('=').map_or(term, |(_, value)| value))
            .collect::<Vec<_>>()
            .join("-")
    };
    let mut names = BTreeSet::new();
    let rules = pairs
        .into_iter()
        .map(|((from, to), services)| {
            let name = unique_name(
                &format!("{}-to-{}", name_of(&from), name_of(&to)),
                &mut names,
            );
            PolicyRule {
                name: Some(name),
                from,
                to,
                services: services.into_iter().collect(),
                action: ActionName::Allow,
                mode: None,
            }
        })
        .collect();
    Recommendation {
        flows_used,
        policy: PolicyDocument {
            workloads: workloads.workloads.clone(),
            ip_lists: workloads.ip_lists.clone(),
            policies: vec![Policy {
                name: "recommended".into(),
                mode: ModeName::Monitor,
                priority: 100,
                rules,
            }],
            default_action: ActionName::Deny,
        },
    }
}

/// A rule name from `wanted` as names must be (1-63 letters, digits, `-`,
/// `_`, `.`), made unique among `taken`.
fn unique_name(wanted: &str, taken: &mut BTreeSet<String>) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(56)
        .collect();
    let mut name = clean.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{clean}-{n}");
        n += 1;
    }
    name
}

/// A flow on an edge never seen during the learning window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub from: String,
    pub to: String,
    pub service: String,
    pub flow: u64,
    pub time_ms: u64,
    pub verdict: Verdict,
}

/// Hears of each anomaly and the record that showed it (alerts).
pub type AnomalyListener = Box<dyn Fn(&Anomaly, &FlowRecord) + Send + Sync>;

/// Anomalies kept for the API.
const ANOMALIES_KEPT: usize = 1000;

#[derive(Debug, Default)]
struct Learned {
    edges: BTreeSet<(String, String, String)>,
    anomalies: VecDeque<Anomaly>,
    /// Anomalies seen (also those no longer kept).
    total: u64,
}

/// Learns the edges of the first `window_ms` of traffic, then reports new
/// ones. It watches every record as the collector makes it.
pub struct AnomalyDetector {
    generalize: Generalize,
    learning_until_ms: u64,
    learned: Mutex<Learned>,
    on_anomaly: Option<AnomalyListener>,
}

impl std::fmt::Debug for AnomalyDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnomalyDetector")
            .field("learning_until_ms", &self.learning_until_ms)
            .finish_non_exhaustive()
    }
}

/// The state of learning, for the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LearningStatus {
    pub learning_until_ms: u64,
    pub edges_learned: usize,
    pub anomalies_total: u64,
    pub anomalies: Vec<Anomaly>,
}

impl AnomalyDetector {
    /// Learns until `learning_until_ms` (Unix milliseconds); `on_anomaly`
    /// hears of each anomaly (alerts).
    pub fn new(
        generalize: Generalize,
        learning_until_ms: u64,
        on_anomaly: Option<AnomalyListener>,
    ) -> Self {
        Self {
            generalize,
            learning_until_ms,
            learned: Mutex::new(Learned::default()),
            on_anomaly,
        }
    }

    pub fn status(&self) -> LearningStatus {
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        LearningStatus {
            learning_until_ms: self.learning_until_ms,
            edges_learned: learned.edges.len(),
            anomalies_total: learned.total,
            anomalies: learned.anomalies.iter().cloned().collect(),
        }
    }
}

impl FlowObserver for AnomalyDetector {
    fn observe(&self, record: &FlowRecord) {
        if !record.opens_flow() {
            return;
        }
        let edge = self.generalize.edge(record);
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        if record.time_ms < self.learning_until_ms {
            if let_through(record) {
                learned.edges.insert(edge);
            }
            return;
        }
        if learned.edges.contains(&edge) {
            return;
        }
        let anomaly = Anomaly {
            from: edge.0.clone(),
            to: edge.1.clone(),
            service: edge.2.clone(),
            flow: record.id,
            time_ms: record.time_ms,
            verdict: record.verdict,
        };
        // Report an edge once: it is known from now on.
        learned.edges.insert(edge);
        learned.total += 1;
        if learned.anomalies.len() == ANOMALIES_KEPT {
            learned.anomalies.pop_front();
        }
        learned.anomalies.push_back(anomaly.clone());
        drop(learned);
        if let Some(on_anomaly) = &self.on_anomaly {
            on_anomaly(&anomaly, record);
        }
    }
}

#[cfg(test)]
mod tests;
