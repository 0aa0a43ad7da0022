//! The running appliance of `microseg run`: XDP programs attached to every
//! port, the shared pipeline (policy snapshot, conntrack, MAC table), and
//! the poll-mode workers; the rules file compiled and published, and
//! republished on `reload` (SIGHUP). `status` reads every counter without
//! stopping anything; `stop` ends the workers, checks their UMEM frames
//! and detaches the XDP programs.
//!
//! With `fast_path: true` the XDP programs also forward the frames of
//! admitted flows themselves: an offloader thread installs them and copies
//! their counts back into conntrack (`dataplane::offload`), and every
//! port's program follows the policy generation in force.
//!
//! A reload that fails (bad file, compile error) changes nothing: the
//! running policy stays in force and the error says why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use microseg_dataplane::bpf::{AttachMode, BpfError, GenerationSwitch, XdpPort};
use microseg_dataplane::conntrack::ConntrackTable;
use microseg_dataplane::offload::{self, OffloadStats, Offloader};
use microseg_dataplane::pipeline::{OffloadQueue, Pipeline, PolicyCell, PolicySnapshot, WatchId};
use microseg_dataplane::stats::PortStats;
use microseg_dataplane::switch::{MacTable, SwitchConfig};
use microseg_dataplane::worker::{
    self, PortBinding, WorkerError, WorkerHandle, WorkerReport, WorkerSpec,
};
use microseg_dataplane::xsk::XskError;
use serde::Serialize;

use crate::config::Config;
use crate::rules::{RuleSet, RulesError};

/// Why the appliance could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("port {port}: {source}")]
    Port { port: String, source: XskError },
    #[error("port {port}: {source}")]
    Xdp { port: String, source: BpfError },
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("the policy is managed through the API (`policy` mode), not a rules file")]
    NoRulesFile,
    #[error("fast path: starting its thread: {0}")]
    FastPathThread(std::io::Error),
    #[error("restoring the quarantine of {address} in XDP: {problem}")]
    Quarantine {
        address: std::net::IpAddr,
        problem: String,
    },
}

/// Where the appliance's policy comes from.
#[derive(Debug)]
pub enum PolicyFeed {
    /// A rules file, compiled here and reloaded by `reload` (SIGHUP).
    RulesFile(std::path::PathBuf),
    /// A cell the policy engine publishes into (it compiled the first
    /// snapshot already).
    Engine(Arc<PolicyCell>),
}

/// Capacity of the pipeline's verdict event queue.
const EVENT_CAPACITY: usize = 1 << 14;
/// Capacity of the fast path's request queue (about 16 ms of offers at
/// 1 Mpps of new flows; a full queue only delays an install).
const OFFLOAD_CAPACITY: usize = 1 << 14;

/// The fast path's running parts.
#[derive(Debug)]
struct FastPathRun {
    stats: Arc<OffloadStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The watcher that keeps every port's program on the generation in
    /// force.
    watch: WatchId,
}

/// A port: its name and XDP program.
#[derive(Debug)]
struct Port {
    name: String,
    xdp: XdpPort,
}

/// The appliance.
#[derive(Debug)]
pub struct Appliance {
    config: Config,
    ports: Vec<Port>,
    pipeline: Arc<Pipeline>,
    policy: Arc<PolicyCell>,
    /// The rules file and its last good contents (rules-file mode only).
    rules: Option<(std::path::PathBuf, ArcSwap<RuleSet>)>,
    /// Serializes reloads (control plane only; workers never take it).
    reloading: Mutex<()>,
    workers: Mutex<Vec<WorkerHandle>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    fast_path: Option<FastPathRun>,
}

impl Appliance {
    /// Takes the policy from `feed`, attaches XDP to every port and starts
    /// the workers, which judge by that policy from their first frame. On
    /// any failure, whatever was started is stopped again.
    /// `quarantined`: addresses dropped in XDP from the first frame (the
    /// quarantines restored from the state directory; `Quarantines::attach`
    /// takes them over once the appliance runs). One that cannot be put in
    /// a port's map stops the start: a quarantined host is never forwarded.
    pub fn start(
        config: Config,
        feed: PolicyFeed,
        quarantined: &[std::net::IpAddr],
    ) -> Result<Self, ApplianceError> {
        let (policy, rules) = match feed {
            PolicyFeed::RulesFile(path) => {
                let rules = RuleSet::load(&path)?;
                let cell = Arc::new(PolicyCell::from_pointee(rules.compile(1)?));
                (cell, Some((path, ArcSwap::from_pointee(rules))))
            }
            PolicyFeed::Engine(cell) => (cell, None),
        };
        let offload_queue = config
            .fast_path
            .then(|| Arc::new(OffloadQueue::new(OFFLOAD_CAPACITY)));
        let mut pipeline = Pipeline::new(
            Arc::clone(&policy),
            Arc::new(ConntrackTable::new(config.conntrack)),
            Arc::new(MacTable::new(SwitchConfig::default())),
            EVENT_CAPACITY,
        );
        if let Some(queue) = &offload_queue {
            pipeline = pipeline.with_offload(Arc::clone(queue));
        }
        let pipeline = Arc::new(pipeline);
        // The fast path's tables are sized like conntrack; off, they are
        // not made (the IPv4 table would be allocated whole).
        let fast_flows = if config.fast_path {
            u32::try_from(config.conntrack.max_entries).unwrap_or(u32::MAX)
        } else {
            0
        };
        let mut ports = Vec::new();
        for name in &config.ports {
            let ifindex =
                microseg_dataplane::xsk::ifindex(name).map_err(|source| ApplianceError::Port {
                    port: name.clone(),
                    source,
                })?;
            let xdp = XdpPort::attach_sized(ifindex, fast_flows).map_err(|source| {
                ApplianceError::Xdp {
                    port: name.clone(),
                    source,
                }
            })?;
            ports.push(Port {
                name: name.clone(),
                xdp,
            });
        }
        // Before any worker binds a socket: until then the programs drop
        // every frame (no socket), after it they forward.
        for &address in quarantined {
            on_every_port(&ports, |xdp| xdp.quarantine(address))
                .map_err(|problem| ApplianceError::Quarantine { address, problem })?;
        }
        let bindings = ports
            .iter()
            .map(|port| {
                Ok(PortBinding {
                    ifname: port.name.clone(),
                    registry: Arc::new(port.xdp.socket_registry().map_err(|source| {
                        ApplianceError::Xdp {
                            port: port.name.clone(),
                            source,
                        }
                    })?),
                })
            })
            .collect::<Result<Vec<_>, ApplianceError>>()?;
        let mut appliance = Self {
            ports,
            pipeline,
            policy,
            rules,
            reloading: Mutex::new(()),
            workers: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            config,
            fast_path: None,
        };
        if let Some(queue) = offload_queue {
            // On error `appliance` drops: XDP detaches.
            appliance.fast_path = Some(appliance.start_fast_path(queue)?);
        }
        for id in 0..appliance.config.workers {
            let spec = WorkerSpec {
                id,
                cpu: appliance.config.cpus.get(id).copied().flatten(),
                queue: id as u32,
                ports: bindings.clone(),
                frames_per_port: appliance.config.frames_per_port,
                poll_mode: appliance.config.poll_mode,
            };
            // On error `appliance` drops: its workers stop, XDP detaches.
            let handle = worker::spawn(
                spec,
                Arc::clone(&appliance.pipeline),
                appliance.started,
                Arc::clone(&appliance.stop),
            )?;
            appliance.lock_workers().push(handle);
        }
        Ok(appliance)
    }

    /// Fills every port's devmap with the ports, makes the programs follow
    /// the policy generation, and starts the offloader.
    fn start_fast_path(&self, queue: Arc<OffloadQueue>) -> Result<FastPathRun, ApplianceError> {
        let in_port = |port: &Port| {
            let name = port.name.clone();
            move |source| ApplianceError::Xdp { port: name, source }
        };
        let mut for_offloader = Vec::new();
        let mut for_watcher = Vec::new();
        for port in &self.ports {
            let maps = port.xdp.fast_path().map_err(in_port(port))?;
            for (index, egress) in self.ports.iter().enumerate() {
                maps.set_port(index as u16, egress.xdp.ifindex())
                    .map_err(in_port(port))?;
            }
            for_offloader.push(maps);
            let switch = port.xdp.generation_switch().map_err(in_port(port))?;
            for_watcher.push((port.name.clone(), switch));
        }
        let watch = self
            .policy
            .watch(move |generation| follow_generation(&for_watcher, generation));
        // Syncs at least three times per shortest timeout of an offloaded
        // flow (UDP, established TCP), so none expires while it flows.
        let timeouts = &self.config.conntrack.timeouts;
        let shortest = timeouts
            .udp_unreplied
            .min(timeouts.udp_replied)
            .min(timeouts.tcp_established);
        let offloader = Offloader::new(
            for_offloader,
            Arc::clone(&self.pipeline),
            queue,
            offload::clock_offset(self.started),
        )
        .with_max_sync_period(std::time::Duration::from_nanos(shortest / 3));
        let stats = Arc::clone(offloader.stats());
        let thread = offload::spawn(offloader, Arc::clone(&self.stop)).map_err(|error| {
            self.policy.unwatch(watch);
            ApplianceError::FastPathThread(error)
        })?;
        Ok(FastPathRun {
            stats,
            thread: Mutex::new(Some(thread)),
            watch,
        })
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<WorkerHandle>> {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When the workers' clock started (their nanosecond timestamps count
    /// from here).
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Decisions per rule of the policy in force: (rule id, count); the
    /// default action as `DEFAULT_RULE_ID`.
    pub fn rule_hits(&self) -> Vec<(u32, u64)> {
        self.policy.load().rule_hits()
    }

    /// Are the workers running (not stopped)?
    pub fn is_running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && !self.lock_workers().is_empty()
    }

    /// The policy snapshot in force.
    pub fn policy(&self) -> Arc<PolicySnapshot> {
        self.policy.load_full()
    }

    /// The policy generation in force.
    pub fn generation(&self) -> u32 {
        self.policy.load().generation
    }

    /// The rules file in force (rules-file mode only).
    pub fn rules(&self) -> Option<Arc<RuleSet>> {
        self.rules.as_ref().map(|(_, rules)| rules.load_full())
    }

    /// Re-reads the rules file and publishes it as the next generation;
    /// on any error the running policy stays. Returns the new generation.
    pub fn reload(&self) -> Result<u32, ApplianceError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (path, in_force) = self.rules.as_ref().ok_or(ApplianceError::NoRulesFile)?;
        let rules = RuleSet::load(path)?;
        // The reload lock makes this read-then-publish the only writer.
        let generation = self.generation().wrapping_add(1);
        let snapshot = rules.compile(generation)?;
        in_force.store(Arc::new(rules));
        self.policy.store(Arc::new(snapshot));
        Ok(generation)
    }

    /// Every counter, read without stopping anything.
    pub fn status(&self) -> Status {
        let workers = self.lock_workers();
        let pipeline = self.pipeline.stats();
        let conntrack = self.pipeline.conntrack();
        let ports = self
            .ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let mut stats = PortStats::default();
                for worker in workers.iter() {
                    if let Some(counters) = worker.counters().port(index as u16) {
                        stats.merge(&counters.snapshot());
                    }
                }
                let xdp = port.xdp.counters().unwrap_or_default();
                PortStatus {
                    name: port.name.clone(),
                    xdp_mode: match port.xdp.mode() {
                        AttachMode::Native => "native",
                        AttachMode::Generic => "generic",
                    },
                    rx: stats.rx,
                    tx: stats.tx,
                    rx_bytes: stats.rx_bytes,
                    tx_bytes: stats.tx_bytes,
                    tx_failed: stats.tx_failed,
                    drops: stats.drops.into_iter().collect(),
                    xdp_rx: xdp.rx,
                    xdp_redirected: xdp.redirect,
                    xdp_quarantine_drops: xdp.quarantine_drop,
                    xdp_no_socket_drops: xdp.no_socket_drop,
                    xdp_fast_forwarded: xdp.fast_forward,
                    xdp_fast_stale: xdp.fast_stale,
                }
            })
            .collect();
        Status {
            generation: self.generation(),
            rules: self.policy.load().classifier.stats().rules,
            uptime_seconds: self.started.elapsed().as_secs(),
            forwarded: pipeline.forwarded,
            flooded: pipeline.flooded,
            events_dropped: pipeline.events_dropped,
            drops: microseg_dataplane::pipeline::DropCause::all()
                .filter(|cause| pipeline.dropped(*cause) > 0)
                .map(|cause| (cause.name(), pipeline.dropped(cause)))
                .collect(),
            conntrack_entries: conntrack.len(),
            ports,
            workers: workers
                .iter()
                .map(|worker| {
                    let counters = worker.counters();
                    WorkerStatus {
                        id: worker.id,
                        cpu: worker.cpu,
                        rounds: counters.rounds.get(),
                        busy_rounds: counters.busy_rounds.get(),
                        sleeps: counters.sleeps.get(),
                    }
                })
                .collect(),
            fast_path: self.fast_path.as_ref().map(|run| {
                let stats = run.stats.snapshot();
                FastPathStatus {
                    installed: stats.installed,
                    installs: stats.installs,
                    removals: stats.removals,
                    errors: stats.errors,
                    synced_frames: stats.synced_packets,
                    requests_dropped: self.pipeline.offload().map_or(0, |queue| queue.dropped()),
                }
            }),
        }
    }

    /// Stops the workers (their last transmissions complete) and returns
    /// their reports; the XDP programs detach when the appliance drops.
    pub fn stop(&self) -> Result<Vec<WorkerReport>, ApplianceError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(fast_path) = &self.fast_path {
            let thread = fast_path
                .thread
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        let handles = std::mem::take(&mut *self.lock_workers());
        let mut reports = Vec::new();
        for handle in handles {
            reports.push(handle.join()?);
        }
        Ok(reports)
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        // Workers first: their sockets go before the programs they are
        // registered in.
        let _ = self.stop();
        if let Some(fast_path) = &self.fast_path {
            self.policy.unwatch(fast_path.watch);
        }
    }
}

/// Makes every port's program forward only flows admitted by
/// `generation` (a `PolicyCell` watcher, run by whoever stores a policy).
/// A port that cannot be told is reported: its old-generation flows would
/// keep their fast path until their connections end.
fn follow_generation(ports: &[(String, GenerationSwitch)], generation: u32) {
    for (name, maps) in ports {
        if let Err(error) = maps.set_generation(generation) {
            eprintln!(
                "microseg: port {name}: fast path not moved to generation {generation}: {error}"
            );
        }
    }
}

/// The appliance's counters (`GET /v1/status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub generation: u32,
    pub rules: usize,
    pub uptime_seconds: u64,
    /// Frames sent out of one port / flooded.
    pub forwarded: u64,
    pub flooded: u64,
    pub events_dropped: u64,
    /// Drops by cause, over all ports.
    pub drops: BTreeMap<String, u64>,
    pub conntrack_entries: usize,
    pub ports: Vec<PortStatus>,
    pub workers: Vec<WorkerStatus>,
    /// The XDP fast path's offloader, when it is on.
    pub fast_path: Option<FastPathStatus>,
}

/// What the fast path's offloader did.
#[derive(Debug, Clone, Serialize)]
pub struct FastPathStatus {
    /// Flow directions forwarded in XDP now.
    pub installed: u64,
    pub installs: u64,
    pub removals: u64,
    /// Map operations that failed (their flows stay in userspace).
    pub errors: u64,
    /// Frames forwarded in XDP, as counted into conntrack.
    pub synced_frames: u64,
    /// Requests lost to a full queue (the flows are offered again).
    pub requests_dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortStatus {
    pub name: String,
    pub xdp_mode: &'static str,
    pub rx: u64,
    pub tx: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub tx_failed: u64,
    pub drops: BTreeMap<String, u64>,
    pub xdp_rx: u64,
    pub xdp_redirected: u64,
    pub xdp_quarantine_drops: u64,
    pub xdp_no_socket_drops: u64,
    /// Forwarded by the fast path, in XDP.
    pub xdp_fast_forwarded: u64,
    /// Fast-path flows of an older policy, sent to userspace to be judged.
    pub xdp_fast_stale: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub id: usize,
    pub cpu: Option<usize>,
    pub rounds: u64,
    pub busy_rounds: u64,
    pub sleeps: u64,
}

/// Does `change` on every port's XDP program, also past a port where it
/// fails (stopping there would leave the later ports as they were: not
/// blocking an address, or blocking one that was lifted); the failures,
/// by port, in one error.
fn on_every_port(
    ports: &[Port],
    change: impl Fn(&XdpPort) -> Result<(), BpfError>,
) -> Result<(), String> {
    let failed: Vec<String> = ports
        .iter()
        .filter_map(|port| {
            change(&port.xdp)
                .err()
                .map(|e| format!("port {}: {e}", port.name))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The appliance enforces quarantine in XDP on every port.
impl crate::quarantine::Enforcer for Appliance {
    fn block(&self, address: std::net::IpAddr) -> Result<(), String> {
        on_every_port(&self.ports, |xdp| xdp.quarantine(address))
    }

    fn release(&self, address: std::net::IpAddr) -> Result<(), String> {
        on_every_port(&self.ports, |xdp| xdp.release(address))
    }

    fn conntrack(&self) -> &ConntrackTable {
        self.pipeline.conntrack()
    }
}
