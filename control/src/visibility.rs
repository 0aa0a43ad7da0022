//! The visibility side of a running appliance: the flow collector and its
//! store, started beside the dataplane and stopped before it, and the
//! count of events lost anywhere on the way from a worker to a client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use microseg_dataplane::pipeline::Pipeline;
use serde::Serialize;

use crate::appliance::Appliance;
use crate::engine::PolicyEngine;
use crate::flows::{
    Clock, Collector, CollectorConfig, FlowObserver, FlowStore, Names, RulesInForce,
};
use crate::learn::{AnomalyDetector, Generalize};
use crate::quarantine::Quarantines;

/// Default number of flow records kept.
pub const DEFAULT_FLOW_CAPACITY: usize = 100_000;

/// Tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisibilityConfig {
    pub flow_capacity: usize,
    pub collector: CollectorConfig,
    /// Edges seen this long after the start are learned; later new ones
    /// are anomalies.
    pub learning: std::time::Duration,
}

/// Default learning window.
pub const DEFAULT_LEARNING: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for VisibilityConfig {
    fn default() -> Self {
        Self {
            flow_capacity: DEFAULT_FLOW_CAPACITY,
            collector: CollectorConfig::default(),
            learning: DEFAULT_LEARNING,
        }
    }
}

/// Events lost, by where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventsLost {
    /// The dataplane's verdict queue was full.
    pub verdict_queue: u64,
    /// The dataplane's connection event queue was full.
    pub flow_queue: u64,
    /// Records evicted from the store by newer ones.
    pub store_evicted: u64,
    /// Records live subscribers missed.
    pub stream: u64,
}

/// The running visibility services.
#[derive(Debug)]
pub struct Visibility {
    flows: Arc<FlowStore>,
    pipeline: Arc<Pipeline>,
    clock: Clock,
    quarantines: Option<Arc<Quarantines>>,
    anomalies: Arc<AnomalyDetector>,
    stop: Arc<AtomicBool>,
    /// The flow collector and the housekeeping (quarantine TTLs) threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Visibility {
    /// Starts collecting from `appliance`'s pipeline; names come from
    /// `engine` when the policy engine runs, else from the rules file.
    pub fn for_appliance(
        appliance: &Arc<Appliance>,
        engine: Option<Arc<PolicyEngine>>,
        quarantines: Option<Arc<Quarantines>>,
        config: VisibilityConfig,
    ) -> std::io::Result<Self> {
        let names = match engine {
            Some(engine) => Names::Engine(engine),
            None => {
                let appliance = Arc::clone(appliance);
                let rules: RulesInForce =
                    Arc::new(move || appliance.rules().map(|r| (appliance.generation(), r)));
                Names::RulesFile(rules)
            }
        };
        Self::start(
            Arc::clone(appliance.pipeline()),
            Clock::new(appliance.started()),
            names,
            quarantines,
            config,
        )
    }

    /// Starts collecting from `pipeline`, whose timestamps count from
    /// `clock`'s start.
    pub fn start(
        pipeline: Arc<Pipeline>,
        clock: Clock,
        names: Names,
        quarantines: Option<Arc<Quarantines>>,
        config: VisibilityConfig,
    ) -> std::io::Result<Self> {
        let flows = Arc::new(FlowStore::new(config.flow_capacity));
        let stop = Arc::new(AtomicBool::new(false));
        let learning_until = clock.unix_ms(clock.now_nanos()) + config.learning.as_millis() as u64;
        let anomalies = Arc::new(AnomalyDetector::new(
            Generalize::default(),
            learning_until,
            None,
        ));
        let mut collector = Collector::new(
            Arc::clone(&pipeline),
            clock,
            names,
            Arc::clone(&flows),
            config.collector,
        );
        collector.observe_with(Arc::clone(&anomalies) as Arc<dyn FlowObserver>);
        let collector = collector.spawn(Arc::clone(&stop))?;
        let mut threads = vec![collector];
        if let Some(quarantines) = &quarantines {
            threads.push(spawn_quarantine_timer(
                Arc::clone(quarantines),
                Arc::clone(&stop),
            )?);
        }
        Ok(Self {
            flows,
            pipeline,
            clock,
            quarantines,
            anomalies,
            stop,
            threads: Mutex::new(threads),
        })
    }

    pub fn flows(&self) -> &Arc<FlowStore> {
        &self.flows
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The dataplane's clock (its timestamps as Unix time).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn lost(&self) -> EventsLost {
        let store = self.flows.stats();
        EventsLost {
            verdict_queue: self.pipeline.stats().events_dropped,
            flow_queue: self.pipeline.conntrack().stats().events_dropped,
            store_evicted: store.evicted,
            stream: store.stream_lost,
        }
    }

    /// The anomaly detector (learning window, anomalies seen).
    pub fn anomalies(&self) -> &Arc<AnomalyDetector> {
        &self.anomalies
    }

    /// Quarantine, when set up.
    pub fn quarantines(&self) -> Option<&Arc<Quarantines>> {
        self.quarantines.as_ref()
    }

    /// Stops the collector (after a last drain) and the quarantine timer,
    /// ends live streams, and lets go of the dataplane: its references to
    /// the appliance go with it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in threads {
            let _ = handle.join();
        }
        self.flows.close();
        if let Some(quarantines) = &self.quarantines {
            quarantines.detach();
        }
    }
}

/// How often quarantine TTLs are checked.
const QUARANTINE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// A thread lifting quarantines whose TTL ran out, until `stop`.
fn spawn_quarantine_timer(
    quarantines: Arc<Quarantines>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("microseg-quarantine".into())
        .spawn(move || {
            let step = std::time::Duration::from_millis(100);
            let mut waited = std::time::Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                if waited >= QUARANTINE_TICK {
                    waited = std::time::Duration::ZERO;
                    quarantines.expire(crate::store::unix_now());
                }
            }
        })
}

impl Drop for Visibility {
    fn drop(&mut self) {
        self.stop();
    }
}
