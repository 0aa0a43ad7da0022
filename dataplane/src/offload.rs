//! The XDP fast path's userspace half. On veth, frames that go through
//! AF_XDP copy mode cost ~1.3 µs each in the kernel, while XDP_REDIRECT
//! between ports costs a third of that (TESTBED-NOTES); so once userspace
//! has admitted a flow, its frames can stay in XDP.
//!
//! An `Offloader` thread:
//! - installs the directions the pipeline offers (`OffloadRequest`) into
//!   the ingress port's `fast` map, batched per port, skipping what is
//!   installed already;
//! - removes a connection's directions when the pipeline revokes it (a
//!   FIN or RST reached userspace, or a policy change cut it);
//! - every `SYNC_EVERY`, reads what the XDP program counted and adds it to
//!   the conntrack entries (so expiry, flow records and byte counters stay
//!   right), refreshes the MAC table, and removes directions whose
//!   connection has ended or whose destination moved to another port.
//!
//! The generation check is not here: the appliance makes every port's
//! `policy` map follow the `PolicyCell` (a watcher), so an entry admitted
//! by an older generation goes to userspace from the moment a new policy
//! is stored, to be judged again and offered anew or cut.
//!
//! The maps are behind `FastMaps`, so the logic is tested without root.

use std::collections::{HashMap, HashSet};

use ahash::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bpf::{BpfError, FastCounters, FastKey, FastPath, FastRoute};
use crate::conntrack::ConnKey;
use crate::packet::FlowKey;
use crate::pipeline::{OffloadOffer, OffloadQueue, OffloadRequest, Pipeline};
use crate::switch::Forward;

/// How often, at most, the program's counters are copied into conntrack.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Flows a sync may visit per second of its period: with more flows
/// installed, syncs come less often (a visit costs a conntrack update,
/// ~0.3-0.5 µs with a cold cache; measured in docs/performance-notes.md),
/// so bookkeeping stays near a tenth of a core however many flows run in
/// XDP, down to `max_sync_period`.
const SYNC_FLOWS_PER_SECOND: usize = 250_000;
/// Every how many syncs a direction that forwarded nothing is checked for
/// its connection still being tracked.
const IDLE_CHECK_EVERY: u64 = 8;
/// Most requests taken off the queue per step.
const REQUESTS_PER_STEP: usize = 4096;
/// Sleep of an idle offloader between steps.
const IDLE_SLEEP: Duration = Duration::from_millis(2);

/// One port's fast-path maps (`bpf::FastPath`; a fake in tests).
pub trait FastMaps: Send {
    fn install(&self, flows: &[(FastKey, FastRoute)]) -> Result<(), BpfError>;
    fn remove(&self, key: &FastKey) -> Result<(), BpfError>;
    fn read(&self, key: &FastKey) -> Result<Option<FastCounters>, BpfError>;
    fn read_all(&self, out: &mut Vec<(FastKey, FastCounters)>) -> Result<(), BpfError>;
}

impl FastMaps for FastPath {
    fn install(&self, flows: &[(FastKey, FastRoute)]) -> Result<(), BpfError> {
        FastPath::install(self, flows)
    }

    fn remove(&self, key: &FastKey) -> Result<(), BpfError> {
        FastPath::remove(self, key)
    }

    fn read(&self, key: &FastKey) -> Result<Option<FastCounters>, BpfError> {
        FastPath::read(self, key)
    }

    fn read_all(&self, out: &mut Vec<(FastKey, FastCounters)>) -> Result<(), BpfError> {
        FastPath::read_all(self, out)
    }
}

/// The offloader's counters (relaxed atomics, read by `status`).
#[derive(Debug, Default)]
pub struct OffloadStats {
    /// Directions installed now.
    pub installed: AtomicU64,
    pub installs: AtomicU64,
    pub removals: AtomicU64,
    /// Map operations that failed (the flows stay in userspace).
    pub errors: AtomicU64,
    /// Frames the fast path forwarded, as copied into conntrack.
    pub synced_packets: AtomicU64,
    pub syncs: AtomicU64,
}

/// A copy of `OffloadStats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadSnapshot {
    pub installed: u64,
    pub installs: u64,
    pub removals: u64,
    pub errors: u64,
    pub synced_packets: u64,
    pub syncs: u64,
}

impl OffloadStats {
    pub fn snapshot(&self) -> OffloadSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OffloadSnapshot {
            installed: load(&self.installed),
            installs: load(&self.installs),
            removals: load(&self.removals),
            errors: load(&self.errors),
            synced_packets: load(&self.synced_packets),
            syncs: load(&self.syncs),
        }
    }
}

/// An installed direction.
#[derive(Clone, Copy, Debug)]
struct Installed {
    flow: FlowKey,
    ingress: u16,
    route: FastRoute,
    /// The program's counters at the last sync (zero when installed).
    counted: FastCounters,
}

/// A direction's place: ingress port and key.
type At = (u16, FastKey);

/// The fast path's userspace half (see the module header).
#[derive(Debug)]
pub struct Offloader<M> {
    /// By port id.
    ports: Vec<M>,
    pipeline: Arc<Pipeline>,
    queue: Arc<OffloadQueue>,
    installed: HashMap<At, Installed, RandomState>,
    /// Each connection's installed directions, for revocation.
    by_connection: HashMap<ConnKey, Vec<At>, RandomState>,
    /// Routes found still valid in the current sync: the MAC table is
    /// asked once per (ingress, MACs, egress), not once per flow.
    routes_checked: HashSet<(u16, FastRoute), RandomState>,
    /// CLOCK_MONOTONIC (the program's clock) at the workers' time zero.
    clock_offset: u64,
    /// Longest time between syncs: a third of the shortest timeout an
    /// offloaded flow can have, so none expires while its frames flow.
    max_sync_period: Duration,
    syncs: u64,
    stats: Arc<OffloadStats>,
    /// Per port, the installs of the current step (reused).
    pending: Vec<Vec<(FastKey, FastRoute)>>,
    scratch: Vec<(FastKey, FastCounters)>,
}

impl<M: FastMaps> Offloader<M> {
    /// `ports[i]` is port `i`'s maps; `queue` is the pipeline's request
    /// queue; `clock_offset` the program's clock at the workers' time 0.
    pub fn new(
        ports: Vec<M>,
        pipeline: Arc<Pipeline>,
        queue: Arc<OffloadQueue>,
        clock_offset: u64,
    ) -> Self {
        Self {
            pending: ports.iter().map(|_| Vec::new()).collect(),
            ports,
            pipeline,
            queue,
            installed: HashMap::default(),
            by_connection: HashMap::default(),
            routes_checked: HashSet::default(),
            clock_offset,
            max_sync_period: SYNC_EVERY,
            syncs: 0,
            stats: Arc::new(OffloadStats::default()),
            scratch: Vec::new(),
        }
    }

    /// Lets syncs come as rarely as `period` when many flows are installed
    /// (at least `SYNC_EVERY`). Pass a third of the shortest timeout of
    /// UDP and established TCP.
    pub fn with_max_sync_period(mut self, period: Duration) -> Self {
        self.max_sync_period = period.max(SYNC_EVERY);
        self
    }

    /// Time until the next sync: `SYNC_EVERY`, longer with many flows.
    pub fn sync_period(&self) -> Duration {
        let by_flows =
            Duration::from_secs_f64(self.installed.len() as f64 / SYNC_FLOWS_PER_SECOND as f64);
        by_flows.clamp(SYNC_EVERY, self.max_sync_period)
    }

    pub fn stats(&self) -> &Arc<OffloadStats> {
        &self.stats
    }

    /// Directions installed now.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// Carries out up to `REQUESTS_PER_STEP` queued requests; returns how
    /// many it took.
    pub fn step(&mut self) -> usize {
        let mut taken = 0;
        while taken < REQUESTS_PER_STEP {
            let Some(request) = self.queue.pop() else {
                break;
            };
            taken += 1;
            match request {
                OffloadRequest::Install(offer) => self.stage(&offer),
                OffloadRequest::Revoke { flow } => {
                    // What was staged before it goes in first, so that the
                    // revocation takes it out again: installed after it, a
                    // flow would run in XDP unknown to the offloader.
                    self.install_pending();
                    self.revoke(&flow);
                }
            }
        }
        self.install_pending();
        taken
    }

    /// Stages an offer, unless it is installed already as offered.
    fn stage(&mut self, offer: &OffloadOffer) {
        if usize::from(offer.ingress) >= self.pending.len() {
            return;
        }
        let key = FastKey::of(&offer.flow);
        let at = (offer.ingress, key);
        let route = FastRoute {
            egress: offer.egress,
            generation: offer.generation,
            src_mac: offer.src_mac,
            dst_mac: offer.dst_mac,
        };
        let pending = match self.installed.get(&at) {
            None => &mut self.pending[usize::from(offer.ingress)],
            Some(installed) if installed.route == route => return,
            Some(_) => {
                // Replacing it zeroes the program's counters: count them
                // first, unless it is staged in this step already (then
                // they were counted when it was staged, and the map still
                // holds them).
                let pending = &mut self.pending[usize::from(offer.ingress)];
                let staged_before = pending.len();
                pending.retain(|(staged, _)| *staged != key);
                if pending.len() == staged_before {
                    self.account_one(at);
                }
                &mut self.pending[usize::from(offer.ingress)]
            }
        };
        pending.push((key, route));
        self.installed.insert(
            at,
            Installed {
                flow: offer.flow,
                ingress: offer.ingress,
                route,
                counted: FastCounters::default(),
            },
        );
        let connection = ConnKey::from_flow(&offer.flow, 0).0;
        let directions = self.by_connection.entry(connection).or_default();
        if !directions.contains(&at) {
            directions.push(at);
        }
    }

    fn install_pending(&mut self) {
        for (port, pending) in self.pending.iter_mut().enumerate() {
            if pending.is_empty() {
                continue;
            }
            let maps = &self.ports[port];
            if maps.install(pending).is_ok() {
                let count = pending.len() as u64;
                self.stats.installs.fetch_add(count, Ordering::Relaxed);
                pending.clear();
                continue;
            }
            // The batch failed, maybe for one flow (a full map): each is
            // tried alone, so that one cannot keep the others out.
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            for flow @ &(key, _) in pending.iter() {
                if maps.install(std::slice::from_ref(flow)).is_ok() {
                    self.stats.installs.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Not installed: forgotten, so the next offer retries, and
                // taken out in case the failed call left it in (a batch
                // can fail part way), so that no flow runs in XDP without
                // the offloader knowing it.
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if maps.remove(&key).is_err() {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                let at = (port as u16, key);
                if let Some(gone) = self.installed.remove(&at) {
                    forget_direction(&mut self.by_connection, &gone.flow, at);
                }
            }
            pending.clear();
        }
        self.stats
            .installed
            .store(self.installed.len() as u64, Ordering::Relaxed);
    }

    /// Gives a connection back to userspace: every direction of it goes.
    fn revoke(&mut self, flow: &FlowKey) {
        let connection = ConnKey::from_flow(flow, 0).0;
        for at in self.by_connection.remove(&connection).unwrap_or_default() {
            // What it forwarded since the last sync still counts (if the
            // connection is still tracked: a RST removed it already).
            self.account_one(at);
            self.remove_direction(at);
        }
    }

    /// Counts what the program forwarded of one direction since the last
    /// sync.
    fn account_one(&mut self, at: At) {
        match self.ports[usize::from(at.0)].read(&at.1) {
            Ok(Some(counters)) => {
                self.account(at, counters);
            }
            Ok(None) => {}
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds what the program counted on `at` since the last sync to its
    /// connection, and refreshes its source in the MAC table. False if the
    /// direction must go: its connection ended, or its destination is no
    /// longer behind its egress port.
    fn account(&mut self, at: At, counters: FastCounters) -> bool {
        let Some(installed) = self.installed.get_mut(&at) else {
            return false;
        };
        let packets = counters.packets.saturating_sub(installed.counted.packets);
        let bytes = counters.bytes.saturating_sub(installed.counted.bytes);
        installed.counted = counters;
        let installed = *installed;
        let conntrack = self.pipeline.conntrack();
        if packets == 0 {
            if self.syncs % IDLE_CHECK_EVERY != 0 {
                return true;
            }
            let (key, _) = ConnKey::from_flow(&installed.flow, 0);
            return conntrack.get(&key).is_some();
        }
        self.stats
            .synced_packets
            .fetch_add(packets, Ordering::Relaxed);
        let last_seen = counters.last_seen.saturating_sub(self.clock_offset);
        let alive = conntrack.refresh_offloaded(&installed.flow, 0, packets, bytes, last_seen);
        // Learns the source again (its frames no longer reach the switch)
        // and checks the destination is still behind the egress port.
        let route = installed.route;
        let checked = (installed.ingress, route);
        if self.routes_checked.contains(&checked) {
            return alive;
        }
        let still_there = self.pipeline.mac_table().switch(
            installed.ingress,
            0,
            route.src_mac,
            route.dst_mac,
            last_seen,
        ) == Forward::Port(route.egress);
        if still_there {
            self.routes_checked.insert(checked);
        }
        alive && still_there
    }

    fn remove_direction(&mut self, at: At) {
        if self.installed.remove(&at).is_none() {
            return;
        }
        if self.ports[usize::from(at.0)].remove(&at.1).is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.removals.fetch_add(1, Ordering::Relaxed);
        self.stats
            .installed
            .store(self.installed.len() as u64, Ordering::Relaxed);
    }

    /// Copies every port's counters into conntrack and removes the
    /// directions that must go (see `account`).
    pub fn sync(&mut self) {
        self.routes_checked.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        for port in 0..self.ports.len() {
            if self.ports[port].read_all(&mut scratch).is_err() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            for &(key, counters) in &scratch {
                let at = (port as u16, key);
                if !self.account(at, counters) {
                    if let Some(gone) = self.installed.get(&at).map(|i| i.flow) {
                        forget_direction(&mut self.by_connection, &gone, at);
                        self.remove_direction(at);
                    } else if self.ports[port].remove(&key).is_err() {
                        // In the map but not ours (cannot happen unless
                        // the map was written by someone else): removed.
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.scratch = scratch;
        self.syncs += 1;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs steps and syncs until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut next_sync = Instant::now() + SYNC_EVERY;
        while !stop.load(Ordering::Relaxed) {
            let taken = self.step();
            if Instant::now() >= next_sync {
                self.sync();
                next_sync = Instant::now() + self.sync_period();
            }
            if taken == 0 {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }
}

/// Drops `at` from its connection's list of directions.
fn forget_direction(
    by_connection: &mut HashMap<ConnKey, Vec<At>, RandomState>,
    flow: &FlowKey,
    at: At,
) {
    let connection = ConnKey::from_flow(flow, 0).0;
    if let Some(directions) = by_connection.get_mut(&connection) {
        directions.retain(|other| *other != at);
        if directions.is_empty() {
            by_connection.remove(&connection);
        }
    }
}

/// CLOCK_MONOTONIC (the base of the XDP program's `bpf_ktime_get_coarse_ns`) at `clock`, the
/// workers' time zero.
pub fn clock_offset(clock: Instant) -> u64 {
    let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|now| now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64)
        .unwrap_or(0);
    monotonic.saturating_sub(clock.elapsed().as_nanos() as u64)
}

/// Starts an offloader on its own thread; it runs until `stop` is set.
pub fn spawn(
    offloader: Offloader<FastPath>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("microseg-offload".into())
        .spawn(move || offloader.run(&stop))
}

#[cfg(test)]
mod tests;
