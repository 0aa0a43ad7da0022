//! The visibility side of a running appliance: the flow collector and its
//! store, started beside the dataplane and stopped before it, and the
//! count of events lost anywhere on the way from a worker to a client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use microseg_dataplane::pipeline::Pipeline;
use serde::Serialize;

use crate::alerts::AlertHub;
use crate::appliance::Appliance;
use crate::engine::PolicyEngine;
use crate::flows::{
    Clock, Collector, CollectorConfig, FlowObserver, FlowRecord, FlowStore, Names, RulesInForce,
};
use crate::learn::{Anomaly, AnomalyDetector, AnomalyListener, Generalize};
use crate::notify;
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

/// What visibility works with besides the dataplane.
#[derive(Clone, Debug, Default)]
pub struct Attached {
    pub quarantines: Option<Arc<Quarantines>>,
    pub alerts: Option<Arc<AlertHub>>,
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
    alerts: Option<Arc<AlertHub>>,
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
        attached: Attached,
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
            attached,
            config,
        )
    }

    /// Starts collecting from `pipeline`, whose timestamps count from
    /// `clock`'s start.
    pub fn start(
        pipeline: Arc<Pipeline>,
        clock: Clock,
        names: Names,
        attached: Attached,
        config: VisibilityConfig,
    ) -> std::io::Result<Self> {
        let Attached {
            quarantines,
            alerts,
        } = attached;
        let flows = Arc::new(FlowStore::new(config.flow_capacity));
        let stop = Arc::new(AtomicBool::new(false));
        let learning_until = clock.unix_ms(clock.now_nanos()) + config.learning.as_millis() as u64;
        let on_anomaly: Option<AnomalyListener> = alerts.clone().map(|hub| {
            Box::new(move |anomaly: &Anomaly, record: &FlowRecord| {
                hub.submit(notify::for_anomaly(anomaly, record))
            }) as AnomalyListener
        });
        let anomalies = Arc::new(AnomalyDetector::new(
            Generalize::default(),
            learning_until,
            on_anomaly,
        ));
        let mut collector = Collector::new(
            Arc::clone(&pipeline),
            clock,
            names,
            Arc::clone(&flows),
            config.collector,
        );
        collector.observe_with(Arc::clone(&anomalies) as Arc<dyn FlowObserver>);
        if let Some(hub) = &alerts {
            collector.observe_with(Arc::new(notify::FlowAlerts(Arc::clone(hub))));
            if let Some(quarantines) = &quarantines {
                let hub = Arc::clone(hub);
                quarantines.listen(Arc::new(move |action, put| {
                    hub.submit(notify::for_quarantine(action, put))
                }));
            }
        }
        let collector = collector.spawn(Arc::clone(&stop))?;
        let threads = vec![
            collector,
            spawn_housekeeping(
                quarantines.clone(),
                alerts.clone(),
                Arc::clone(&pipeline),
                Arc::clone(&stop),
            )?,
        ];
        Ok(Self {
            flows,
            pipeline,
            clock,
            quarantines,
            alerts,
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

    /// The alert hub, when alerts are configured.
    pub fn alerts(&self) -> Option<&Arc<AlertHub>> {
        self.alerts.as_ref()
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

/// How often quarantine TTLs and the connection table's fill are checked.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A thread that, every second until `stop`, lifts quarantines whose TTL
/// ran out and raises an alert when the connection table is nearly full.
fn spawn_housekeeping(
    quarantines: Option<Arc<Quarantines>>,
    alerts: Option<Arc<AlertHub>>,
    pipeline: Arc<Pipeline>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("microseg-housekeeping".into())
        .spawn(move || {
            let step = std::time::Duration::from_millis(100);
            let mut waited = std::time::Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                if waited < HOUSEKEEPING_EVERY {
                    continue;
                }
                waited = std::time::Duration::ZERO;
                if let Some(quarantines) = &quarantines {
                    quarantines.expire(crate::store::unix_now());
                }
                if let Some(hub) = &alerts {
                    let table = pipeline.conntrack();
                    if let Some(alert) =
                        notify::for_pressure(table.len(), table.config().max_entries)
                    {
                        hub.submit(alert);
                    }
                }
            }
        })
}

impl Drop for Visibility {
    fn drop(&mut self) {
        self.stop();
    }
}
