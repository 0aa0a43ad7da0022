//! Poll-mode workers: each a thread pinned to a core, owning one queue of
//! every switch port (worker i binds queue i), forwarding through the
//! shared pipeline in rounds (`forward::Forwarder`).
//!
//! Poll modes:
//! - `busy`: spin on the rings; lowest latency, one core always at 100%.
//! - `adaptive` (the default): spin while traffic flows; after `SPIN` of
//!   silence, sleep in poll() on all the worker's sockets until a frame
//!   arrives or `IDLE_WAIT_MS` passes. An idle appliance thus wakes a few
//!   times a second (docs/benchmarks.md has its measured CPU use).
//!
//! A spinning worker (busy mode, or adaptive before it sleeps) yields the
//! core after each empty round once it has been idle for `YIELD_AFTER`. The kernel may defer the
//! softirq work of the worker's own transmissions (veth runs the peer's
//! receive on the sending CPU) to ksoftirqd on that core, which a thread
//! that never yields starves for a scheduler slice: measured, ping p99
//! under a 100 kpps load went from 3.3 ms to 41 µs in busy mode.
//!
//! Housekeeping runs on the workers between rounds, bounded per call:
//! conntrack expiry and MAC aging, a few shards at a time. The worker owns
//! its sockets (they are opened on its thread), so no ring is ever shared.
//! It reads the clock once per round; the pipeline gets `now` from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bpf::SocketRegistry;
use crate::forward::Forwarder;
use crate::pipeline::Pipeline;
use crate::stats::WorkerCounters;
use crate::xsk::{FrameCensus, PortGroup, XskError};

/// How a worker waits for frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PollMode {
    /// Spin without ever sleeping.
    Busy,
    /// Spin while busy, sleep in poll() when idle.
    #[default]
    Adaptive,
}

/// Silence after which a spinning worker yields the core after each empty
/// round. Under overload a round is never empty for this long, so a
/// saturated worker never yields (yielding on every empty round cost ~4%
/// with a million flows).
const YIELD_AFTER: Duration = Duration::from_micros(10);
/// Silence after which an adaptive worker goes to sleep.
pub const SPIN: Duration = Duration::from_micros(200);
/// The longest an idle worker sleeps before it looks at its stop flag and
/// does housekeeping.
pub const IDLE_WAIT_MS: u16 = 100;
/// Time between two housekeeping steps.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(10);
/// Shards of the MAC table visited per housekeeping step (the conntrack
/// table paces itself: `ConntrackTable::sweep_paced`).
const HOUSEKEEPING_SHARDS: usize = 2;
/// How long a stopping worker waits for its transmissions to complete.
const DRAIN: Duration = Duration::from_millis(200);

/// Why a worker could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker {worker}: pinning to CPU {cpu}: {source}")]
    Pin {
        worker: usize,
        cpu: usize,
        source: nix::Error,
    },
    #[error("worker {worker}: {source}")]
    Port { worker: usize, source: XskError },
    #[error("worker {0}: its thread could not start or ended without a word")]
    Thread(usize),
}

/// One switch port as a worker sees it.
#[derive(Debug, Clone)]
pub struct PortBinding {
    pub ifname: String,
    /// The port's XDP socket map (the appliance attached the program).
    pub registry: Arc<SocketRegistry>,
}

/// What a worker is to do.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub id: usize,
    /// Core to pin to (None: not pinned).
    pub cpu: Option<usize>,
    /// The queue bound on every port.
    pub queue: u32,
    /// Port id = index.
    pub ports: Vec<PortBinding>,
    pub frames_per_port: u32,
    pub poll_mode: PollMode,
}

/// Where a stopped worker's frames were (the census of its UMEM, shared
/// by its ports, after its last transmissions completed): the leak check.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// The worker's ports, joined by "+".
    pub ports: String,
    pub census: FrameCensus,
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub id: usize,
    pub cpu: Option<usize>,
    counters: Arc<WorkerCounters>,
    thread: JoinHandle<Result<WorkerReport, WorkerError>>,
}

impl WorkerHandle {
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Waits for the worker to end (set the stop flag first).
    pub fn join(self) -> Result<WorkerReport, WorkerError> {
        self.thread
            .join()
            .map_err(|_| WorkerError::Thread(self.id))?
    }
}

/// The default number of workers: one per core, less one for the control
/// plane, at least one.
pub fn default_worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// Starts a worker; returns once its sockets are bound (or the error that
/// prevented it). It runs until `stop` is set.
pub fn spawn(
    spec: WorkerSpec,
    pipeline: Arc<Pipeline>,
    clock: Instant,
    stop: Arc<AtomicBool>,
) -> Result<WorkerHandle, WorkerError> {
    let counters = Arc::new(WorkerCounters::new(spec.ports.len()));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), WorkerError>>();
    let (id, cpu) = (spec.id, spec.cpu);
    let thread_counters = Arc::clone(&counters);
    let thread = std::thread::Builder::new()
        .name(format!("microseg-w{id}"))
        .spawn(move || {
            let forwarder = match start(&spec, pipeline, thread_counters) {
                Ok(forwarder) => {
                    let _ = ready_tx.send(Ok(()));
                    forwarder
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return Ok(WorkerReport::default());
                }
            };
            run(forwarder, spec, clock, &stop)
        })
        .map_err(|_| WorkerError::Thread(id))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(WorkerHandle {
            id,
            cpu,
            counters,
            thread,
        }),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => Err(WorkerError::Thread(id)),
    }
}

/// On the worker's thread: pin, bind a socket on every port.
fn start(
    spec: &WorkerSpec,
    pipeline: Arc<Pipeline>,
    counters: Arc<WorkerCounters>,
) -> Result<Forwarder, WorkerError> {
    if let Some(cpu) = spec.cpu {
        pin(cpu).map_err(|source| WorkerError::Pin {
            worker: spec.id,
            cpu,
            source,
        })?;
    }
    let bindings: Vec<(&str, &SocketRegistry)> = spec
        .ports
        .iter()
        .map(|port| (port.ifname.as_str(), &*port.registry))
        .collect();
    let ports = PortGroup::bind(&bindings, spec.queue, spec.frames_per_port).map_err(|source| {
        WorkerError::Port {
            worker: spec.id,
            source,
        }
    })?;
    Ok(Forwarder::with_counters(ports, pipeline, counters))
}

fn pin(cpu: usize) -> Result<(), nix::Error> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// The poll loop.
fn run(
    mut forwarder: Forwarder,
    spec: WorkerSpec,
    clock: Instant,
    stop: &AtomicBool,
) -> Result<WorkerReport, WorkerError> {
    let port_error = |source| WorkerError::Port {
        worker: spec.id,
        source,
    };
    let mut idle_since: Option<Instant> = None;
    let mut next_housekeeping = Instant::now();
    let mut mac_cursor = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let received = forwarder
            .round(now.duration_since(clock).as_nanos() as u64)
            .map_err(port_error)?;
        if now >= next_housekeeping {
            let pipeline = forwarder.pipeline();
            let nanos = now.duration_since(clock).as_nanos() as u64;
            pipeline.conntrack().sweep_paced(nanos);
            pipeline
                .mac_table()
                .age(nanos, &mut mac_cursor, HOUSEKEEPING_SHARDS);
            next_housekeeping = now + HOUSEKEEPING_EVERY;
        }
        if received > 0 {
            idle_since = None;
            continue;
        }
        let idle_for = now.duration_since(*idle_since.get_or_insert(now));
        if spec.poll_mode == PollMode::Adaptive && idle_for >= SPIN {
            forwarder.counters().sleeps.add(1);
            forwarder
                .ports()
                .wait_readable(IDLE_WAIT_MS)
                .map_err(port_error)?;
            idle_since = None;
        } else if idle_for >= YIELD_AFTER {
            // Lend the core to whatever else is runnable on it (ksoftirqd;
            // see the module header), then spin on.
            std::thread::yield_now();
        }
    }
    Ok(drain(forwarder))
}

/// Lets the last transmissions complete, then takes the UMEM's census.
fn drain(mut forwarder: Forwarder) -> WorkerReport {
    let deadline = Instant::now() + DRAIN;
    loop {
        let ports = forwarder.ports_mut();
        ports.reclaim();
        let census = ports.census();
        if census.tx + census.completed == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ports = forwarder.ports_mut();
    WorkerReport {
        ports: ports.names(),
        census: ports.census(),
    }
}
