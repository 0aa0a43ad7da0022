//! The collector: drains the dataplane's event queues off the packet path
//! and turns events into named flow records.
//!
//! One thread, waking every `interval`: refresh names (the policy in
//! force may have changed), drain verdict and connection events (bounded
//! per tick, so a flood never starves the rest), and every `update_every`
//! report long-running connections with their counters so far. Each record
//! goes to the store and to the observers (alerts, anomaly detection).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use microseg_dataplane::conntrack::FlowEvent;
use microseg_dataplane::pipeline::Pipeline;

use super::record::{FlowRecord, RecordKind};
use super::resolve::Resolver;
use super::store::FlowStore;
use crate::engine::PolicyEngine;
use crate::rules::RuleSet;

/// The dataplane's clock: it counts nanoseconds from an `Instant`; this
/// maps them to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    /// The clock whose zero is `start` (the appliance's start).
    pub fn new(start: Instant) -> Self {
        let now_unix_ms = crate::alerts::time::now_unix_ms();
        let since_start = start.elapsed().as_millis() as u64;
        Self {
            start,
            start_unix_ms: now_unix_ms.saturating_sub(since_start),
        }
    }

    /// Dataplane nanoseconds as Unix milliseconds.
    pub fn unix_ms(&self, nanos: u64) -> u64 {
        self.start_unix_ms + nanos / 1_000_000
    }

    /// Now, in dataplane nanoseconds.
    pub fn now_nanos(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectorConfig {
    /// How often the queues are drained.
    pub interval: Duration,
    /// How often long connections are reported (and how old a
    /// connection must be to count as long).
    pub update_every: Duration,
    /// Most events taken from each queue per tick.
    pub max_events_per_tick: usize,
    /// Most update records per report.
    pub max_updates: usize,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            update_every: Duration::from_secs(60),
            max_events_per_tick: 1 << 16,
            max_updates: 10_000,
        }
    }
}

/// The generation in force and its rules file (rules-file mode).
pub type RulesInForce = Arc<dyn Fn() -> Option<(u32, Arc<RuleSet>)> + Send + Sync>;

/// Where names come from.
#[derive(Clone)]
pub enum Names {
    /// The policy engine: workloads and rules of the document in force.
    Engine(Arc<PolicyEngine>),
    /// A rules file (no workloads): rule names by generation.
    RulesFile(RulesInForce),
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Names::Engine(_) => "Names::Engine",
            Names::RulesFile(_) => "Names::RulesFile",
        })
    }
}

/// Sees every record as it is made (alerts, anomaly detection).
pub trait FlowObserver: Send + Sync {
    fn observe(&self, record: &FlowRecord);
}

/// The collector's state.
pub struct Collector {
    pipeline: Arc<Pipeline>,
    clock: Clock,
    names: Names,
    store: Arc<FlowStore>,
    observers: Vec<Arc<dyn FlowObserver>>,
    config: CollectorConfig,
    resolver: Resolver,
    /// The engine version the workloads were read from.
    workloads_version: Option<u64>,
    next_update: u64,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("names", &self.names)
            .field("observers", &self.observers.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Collector {
    pub fn new(
        pipeline: Arc<Pipeline>,
        clock: Clock,
        names: Names,
        store: Arc<FlowStore>,
        config: CollectorConfig,
    ) -> Self {
        let next_update = config.update_every.as_nanos() as u64;
        Self {
            pipeline,
            clock,
            names,
            store,
            observers: Vec::new(),
            config,
            resolver: Resolver::default(),
            workloads_version: None,
            next_update,
        }
    }

    pub fn observe_with(&mut self, observer: Arc<dyn FlowObserver>) {
        self.observers.push(observer);
    }

    /// The names in use (explain and the map name things the same way).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    fn refresh_names(&mut self) {
        match &self.names {
            Names::Engine(engine) => {
                let version = engine.version();
                if self.workloads_version != Some(version) {
                    let (version, document) = engine.current();
                    self.resolver.set_workloads(&document);
                    self.workloads_version = Some(version);
                }
                self.resolver.add_generation(engine.rules());
            }
            Names::RulesFile(in_force) => {
                let Some((generation, rules)) = in_force() else {
                    return;
                };
                if !self.resolver.knows(generation) {
                    self.resolver
                        .add_generation(Arc::new(Resolver::rules_file_book(generation, &rules)));
                }
            }
        }
    }

    fn emit(&self, record: FlowRecord) {
        let record = self.store.push(record);
        for observer in &self.observers {
            observer.observe(&record);
        }
    }

    /// One round: names, then events, then (when due) long connections.
    /// `now` is dataplane nanoseconds. Returns the records made.
    pub fn tick(&mut self, now: u64) -> usize {
        self.refresh_names();
        let mut made = 0;
        for _ in 0..self.config.max_events_per_tick {
            let Some(event) = self.pipeline.events().pop() else {
                break;
            };
            let at = self.clock.unix_ms(event.time);
            self.emit(FlowRecord::from_verdict(&event, &self.resolver, at));
            made += 1;
        }
        let to_ms = |nanos| self.clock.unix_ms(nanos);
        for _ in 0..self.config.max_events_per_tick {
            let Some(event) = self.pipeline.conntrack().events().pop() else {
                break;
            };
            let record = match event {
                FlowEvent::Created { key, entry } => FlowRecord::from_connection(
                    RecordKind::Start,
                    &key,
                    &entry,
                    None,
                    &self.resolver,
                    to_ms,
                ),
                FlowEvent::Ended { key, entry, reason } => FlowRecord::from_connection(
                    RecordKind::End,
                    &key,
                    &entry,
                    Some(reason),
                    &self.resolver,
                    to_ms,
                ),
            };
            self.emit(record);
            made += 1;
        }
        if now >= self.next_update {
            made += self.report_long_connections(now);
            self.next_update = now + self.config.update_every.as_nanos() as u64;
        }
        made
    }

    /// Update records for connections older than `update_every`.
    fn report_long_connections(&self, now: u64) -> usize {
        let min_age = self.config.update_every.as_nanos() as u64;
        let mut long = Vec::new();
        self.pipeline.conntrack().for_each(|key, entry| {
            if long.len() < self.config.max_updates
                && now.saturating_sub(entry.first_seen) >= min_age
            {
                long.push((*key, *entry));
            }
        });
        let to_ms = |nanos| self.clock.unix_ms(nanos);
        for (key, entry) in &long {
            self.emit(FlowRecord::from_connection(
                RecordKind::Update,
                key,
                entry,
                None,
                &self.resolver,
                to_ms,
            ));
        }
        long.len()
    }

    /// Runs `tick` every `interval` on a thread of its own until `stop`;
    /// a last tick drains what is left.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("microseg-flows".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    self.tick(self.clock.now_nanos());
                    std::thread::sleep(self.config.interval.saturating_sub(started.elapsed()));
                }
                self.tick(self.clock.now_nanos());
            })
    }
}
