//! The policy engine: the document in force, its durable versions, and
//! publication into the dataplane.
//!
//! Every change (apply, rollback, workload put or delete) goes the same
//! way, one at a time: validate → compile (off the packet path) → store
//! durably → publish the snapshot (one atomic pointer swap) → audit. A
//! change that fails at any step before publication changes nothing.
//! Storing before publishing means a restart never brings back an older
//! policy than the one that was in force.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use microseg_dataplane::classifier::BuildConfig;
use microseg_dataplane::pipeline::{PolicyCell, PolicySnapshot};
use serde::Serialize;

use crate::policy::{
    compile_from, CompiledPolicy, Policy, PolicyDocument, PolicyError, Report, RuleBook, RuleRef,
    Workload,
};
use crate::store::{unix_now, AuditEntry, PolicyVersion, Store, StoreError, VersionInfo};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the policy changed: version {current} is in force, not {expected}")]
    Conflict { expected: u64, current: u64 },
    #[error("no workload named `{0}`")]
    NoWorkload(String),
    #[error("the workload's name in the body (`{body}`) differs from the path's (`{path}`)")]
    NameMismatch { path: String, body: String },
}

/// What a change produced.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    pub version: u64,
    pub generation: u32,
    pub classifier_rules: usize,
    pub warnings: Vec<crate::policy::Problem>,
    /// From accepted request to the new snapshot in force.
    pub swap_seconds: f64,
}

/// The state behind the lock.
#[derive(Debug)]
struct Current {
    version: u64,
    document: PolicyDocument,
    /// Policies evaluated before the document (quarantine).
    overlay: Vec<Policy>,
}

/// Where swap durations and generations are reported (metrics).
pub trait SwapObserver: Send + Sync + std::fmt::Debug {
    fn swapped(&self, generation: u32, seconds: f64, classifier_rules: usize);
}

/// The engine.
#[derive(Debug)]
pub struct PolicyEngine {
    store: Store,
    cell: Arc<PolicyCell>,
    current: Mutex<Current>,
    /// Rule references of the snapshot in force (for explain, names).
    rules: ArcSwap<RuleBook>,
    observer: Option<Arc<dyn SwapObserver>>,
    /// How classifiers are built: on every core the machine has (a build
    /// is short, and the sooner the new policy is in force the better).
    build_config: BuildConfig,
}

/// The snapshot to start the dataplane with, and the engine to manage it.
#[derive(Debug)]
pub struct Restored {
    pub engine: PolicyEngine,
    pub version: u64,
    /// True if the policy came from the store (a restart), false if from
    /// the initial document (first start).
    pub from_store: bool,
}

impl PolicyEngine {
    /// Restores the version in force from `store`, or, on a first start,
    /// commits `initial` (or an empty default-deny document) as version 1.
    /// The returned engine's cell holds the compiled snapshot: hand it to
    /// the dataplane before it forwards anything.
    pub fn restore(
        store: Store,
        initial: Option<PolicyDocument>,
        observer: Option<Arc<dyn SwapObserver>>,
    ) -> Result<Restored, EngineError> {
        let (stored, from_store) = match store.current()? {
            Some(stored) => (stored, true),
            None => {
                let document = initial.unwrap_or_default();
                let report = document.check();
                if !report.is_valid() {
                    return Err(PolicyError::Invalid(report).into());
                }
                let stored = store.commit(&document, "startup", "initial policy")?;
                store.audit(&AuditEntry {
                    time: unix_now(),
                    who: "startup".into(),
                    action: "initial policy".into(),
                    version: Some(stored.version),
                    detail: summary_of(&PolicyDocument::default(), &stored.document),
                })?;
                (stored, false)
            }
        };
        let build_config = BuildConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ..BuildConfig::default()
        };
        let compiled = compile_from(&stored.document, &[], 1, &build_config, None)?;
        let rules = Arc::new(RuleBook {
            generation: 1,
            rules: compiled.rules,
        });
        let engine = PolicyEngine {
            store,
            cell: Arc::new(PolicyCell::from_pointee(compiled.snapshot)),
            current: Mutex::new(Current {
                version: stored.version,
                document: stored.document,
                overlay: Vec::new(),
            }),
            rules: ArcSwap::new(rules),
            observer,
            build_config,
        };
        Ok(Restored {
            engine,
            version: stored.version,
            from_store,
        })
    }

    /// The cell the dataplane reads its policy from.
    pub fn cell(&self) -> &Arc<PolicyCell> {
        &self.cell
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The document in force and its version.
    pub fn current(&self) -> (u64, PolicyDocument) {
        let current = self.lock();
        (current.version, current.document.clone())
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// The generation in force.
    pub fn generation(&self) -> u32 {
        self.cell.load().generation
    }

    /// Rule references of the policy in force (rule id n is index n - 1).
    pub fn rules(&self) -> Arc<RuleBook> {
        self.rules.load_full()
    }

    /// A dry run: the validation report, nothing changed.
    pub fn validate(&self, document: &PolicyDocument) -> Report {
        document.validate()
    }

    /// Applies a whole document. `expected` is the version the caller last
    /// saw (If-Match); a different version in force is a conflict.
    pub fn apply(
        &self,
        document: PolicyDocument,
        expected: Option<u64>,
        who: &str,
        started: Instant,
    ) -> Result<Applied, EngineError> {
        let mut current = self.lock();
        if let Some(expected) = expected {
            if expected != current.version {
                return Err(EngineError::Conflict {
                    expected,
                    current: current.version,
                });
            }
        }
        self.change(&mut current, document, who, "apply".into(), started)
    }

    /// Re-applies an earlier version as a new one.
    pub fn rollback(
        &self,
        version: u64,
        who: &str,
        started: Instant,
    ) -> Result<Applied, EngineError> {
        let old: PolicyVersion = self.store.load(version)?;
        let mut current = self.lock();
        self.change(
            &mut current,
            old.document,
            who,
            format!("rollback to version {version}"),
            started,
        )
    }

    /// Adds or replaces one workload.
    pub fn put_workload(
        &self,
        workload: Workload,
        who: &str,
        started: Instant,
    ) -> Result<Applied, EngineError> {
        let mut current = self.lock();
        let mut document = current.document.clone();
        let name = workload.name.clone();
        match document.workloads.iter_mut().find(|w| w.name == name) {
            Some(slot) => *slot = workload,
            None => document.workloads.push(workload),
        }
        self.change(
            &mut current,
            document,
            who,
            format!("workload {name} put"),
            started,
        )
    }

    /// Removes one workload.
    pub fn delete_workload(
        &self,
        name: &str,
        who: &str,
        started: Instant,
    ) -> Result<Applied, EngineError> {
        let mut current = self.lock();
        let mut document = current.document.clone();
        let before = document.workloads.len();
        document.workloads.retain(|w| w.name != name);
        if document.workloads.len() == before {
            return Err(EngineError::NoWorkload(name.to_string()));
        }
        self.change(
            &mut current,
            document,
            who,
            format!("workload {name} deleted"),
            started,
        )
    }

    /// Every stored version.
    pub fn history(&self) -> Result<Vec<VersionInfo>, EngineError> {
        Ok(self.store.history()?)
    }

    /// Validate, compile, store, publish, audit (the caller holds the lock).
    fn change(
        &self,
        current: &mut Current,
        document: PolicyDocument,
        who: &str,
        action: String,
        started: Instant,
    ) -> Result<Applied, EngineError> {
        // Check, then compile once: the compilation also finds shadowed
        // rules (validating in full would compile twice).
        let mut report = document.check();
        if !report.is_valid() {
            return Err(PolicyError::Invalid(report).into());
        }
        // The version is written and fsynced while the document compiles
        // (I/O against CPU); it enters the history only if both succeed.
        let (compiled, staged) = std::thread::scope(|scope| {
            let staging = scope.spawn(|| self.store.stage(&document, who, &action));
            let compiled = self.compile(&document, &current.overlay);
            let staged = staging
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (compiled, staged)
        });
        let (generation, compiled) = compiled?;
        let staged = staged?;
        report.warnings.extend(compiled.shadowed);
        let detail = summary_of(&current.document, &document);
        let stored = self.store.commit_staged(staged)?;
        let swap_seconds = self.publish(generation, compiled.snapshot, compiled.rules, started);
        let classifier_rules = compiled.classifier_rules;
        current.version = stored.version;
        current.document = document;
        self.after_swap(
            generation,
            swap_seconds,
            classifier_rules,
            who,
            action,
            stored.version,
            detail,
        )?;
        Ok(Applied {
            version: stored.version,
            generation,
            classifier_rules,
            warnings: report.warnings,
            swap_seconds,
        })
    }

    /// Replaces the overlay: policies evaluated before the whole document
    /// (quarantine), and publishes the result as a new generation. The
    /// stored document and its version do not change; the audit trail
    /// records `action`. A failure changes nothing.
    pub fn set_overlay(
        &self,
        overlay: Vec<Policy>,
        who: &str,
        action: String,
        started: Instant,
    ) -> Result<Applied, EngineError> {
        let mut current = self.lock();
        let (generation, compiled) = self.compile(&current.document, &overlay)?;
        let swap_seconds = self.publish(generation, compiled.snapshot, compiled.rules, started);
        current.overlay = overlay;
        let version = current.version;
        self.after_swap(
            generation,
            swap_seconds,
            compiled.classifier_rules,
            who,
            action.clone(),
            version,
            action,
        )?;
        Ok(Applied {
            version,
            generation,
            classifier_rules: compiled.classifier_rules,
            warnings: Vec::new(),
            swap_seconds,
        })
    }

    /// The overlay in force.
    pub fn overlay(&self) -> Vec<Policy> {
        self.lock().overlay.clone()
    }

    /// Compiles `document` under `overlay` as the next generation.
    fn compile(
        &self,
        document: &PolicyDocument,
        overlay: &[Policy],
    ) -> Result<(u32, CompiledPolicy), EngineError> {
        let generation = self.generation().wrapping_add(1).max(1);
        let compiled = compile_from(
            document,
            overlay,
            generation,
            &self.build_config,
            Some(&self.cell.load_full()),
        )?;
        Ok((generation, compiled))
    }

    /// Puts a snapshot in force; returns the seconds since `started`.
    fn publish(
        &self,
        generation: u32,
        snapshot: PolicySnapshot,
        rules: Vec<RuleRef>,
        started: Instant,
    ) -> f64 {
        self.cell.store(Arc::new(snapshot));
        self.rules.store(Arc::new(RuleBook { generation, rules }));
        started.elapsed().as_secs_f64()
    }

    /// Reports a swap to the observer and records it in the audit trail.
    /// The change is in force by now; an audit failure is reported, not
    /// undone.
    #[allow(clippy::too_many_arguments)]
    fn after_swap(
        &self,
        generation: u32,
        swap_seconds: f64,
        classifier_rules: usize,
        who: &str,
        action: String,
        version: u64,
        detail: String,
    ) -> Result<(), EngineError> {
        if let Some(observer) = &self.observer {
            observer.swapped(generation, swap_seconds, classifier_rules);
        }
        self.store.audit(&AuditEntry {
            time: unix_now(),
            who: who.to_string(),
            action,
            version: Some(version),
            detail,
        })?;
        Ok(())
    }
}

/// A diff summary: counts of workloads, ip_lists, policies and rules
/// added, removed and changed (`workloads +1 ~1, rules -2`).
pub fn summary_of(before: &PolicyDocument, after: &PolicyDocument) -> String {
    fn count<T: PartialEq>(
        before: &[T],
        after: &[T],
        key: impl Fn(&T) -> &str,
    ) -> (usize, usize, usize) {
        let added = after
            .iter()
            .filter(|a| !before.iter().any(|b| key(b) == key(a)))
            .count();
        let removed = before
            .iter()
            .filter(|b| !after.iter().any(|a| key(a) == key(b)))
            .count();
        let changed = after
            .iter()
            .filter(|a| before.iter().any(|b| key(b) == key(a) && b != *a))
            .count();
        (added, removed, changed)
    }
    let rules = |d: &PolicyDocument| d.policies.iter().map(|p| p.rules.len()).sum::<usize>();
    let mut parts = Vec::new();
    for (what, (added, removed, changed)) in [
        (
            "workloads",
            count(&before.workloads, &after.workloads, |w| &w.name),
        ),
        (
            "ip_lists",
            count(&before.ip_lists, &after.ip_lists, |l| &l.name),
        ),
        (
            "policies",
            count(&before.policies, &after.policies, |p| &p.name),
        ),
    ] {
        let mut part = String::new();
        for (sign, n) in [('+', added), ('-', removed), ('~', changed)] {
            if n > 0 {
                part.push_str(&format!(" {sign}{n}"));
            }
        }
        if !part.is_empty() {
            parts.push(format!("{what}{part}"));
        }
    }
    let (rb, ra) = (rules(before), rules(after));
    if rb != ra {
        parts.push(format!("rules {rb} -> {ra}"));
    }
    if before.default_action != after.default_action {
        parts.push(format!(
            "default_action {:?} -> {:?}",
            before.default_action, after.default_action
        ));
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join(", ")
    }
}
