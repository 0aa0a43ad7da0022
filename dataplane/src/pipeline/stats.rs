//! Why the pipeline dropped a frame, and the counters of every outcome.
//!
//! Each cause has a dense index into one counter array and a stable name
//! (`parse:bad_ipv4_checksum`, `conntrack:out_of_window`, ...) for metrics.
//! Relaxed atomics shared by the workers for now; per-worker counters come
//! with the workers (issue 5).

use std::sync::atomic::{AtomicU64, Ordering};

use super::FrameAction;
use crate::conntrack::{InvalidReason, RefuseReason};
use crate::packet::DropReason;
use crate::switch::{Forward, SwitchDrop};

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// Malformed: the parser's reason.
    Parse(DropReason),
    /// A new flow the policy denies.
    Policy,
    /// An established connection the current policy no longer allows.
    PolicyCut,
    /// Out of state for conntrack.
    Conntrack(InvalidReason),
    /// Allowed, but the connection table refused it.
    Refused(RefuseReason),
    Switch(SwitchDrop),
    /// A later IP fragment (no ports to judge).
    LaterFragment,
    /// An ethertype the L2 policy does not switch.
    Ethertype,
    /// ARP, when the L2 policy does not switch it.
    ArpBlocked,
}

const SWITCH_DROPS: [SwitchDrop; 2] = [SwitchDrop::InvalidSourceMac, SwitchDrop::SamePort];
const PARSE: usize = 0;
const CONNTRACK: usize = PARSE + DropReason::COUNT;
const REFUSED: usize = CONNTRACK + InvalidReason::ALL.len();
const SWITCH: usize = REFUSED + RefuseReason::ALL.len();
const SINGLES: usize = SWITCH + SWITCH_DROPS.len();
/// Policy, PolicyCut, LaterFragment, Ethertype, ArpBlocked.
const CAUSES: usize = SINGLES + 5;

impl DropCause {
    /// Number of distinct causes (the size of a counter array).
    pub const COUNT: usize = CAUSES;

    /// Dense index of the cause.
    pub fn index(self) -> usize {
        match self {
            DropCause::Parse(r) => PARSE + r as usize,
            DropCause::Conntrack(r) => CONNTRACK + r as usize,
            DropCause::Refused(r) => REFUSED + r as usize,
            DropCause::Switch(r) => SWITCH + SWITCH_DROPS.iter().position(|s| *s == r).unwrap_or(0),
            DropCause::Policy => SINGLES,
            DropCause::PolicyCut => SINGLES + 1,
            DropCause::LaterFragment => SINGLES + 2,
            DropCause::Ethertype => SINGLES + 3,
            DropCause::ArpBlocked => SINGLES + 4,
        }
    }

    /// Every cause, in index order.
    pub fn all() -> impl Iterator<Item = DropCause> {
        DropReason::ALL
            .iter()
            .map(|r| DropCause::Parse(*r))
            .chain(InvalidReason::ALL.map(DropCause::Conntrack))
            .chain(RefuseReason::ALL.map(DropCause::Refused))
            .chain(SWITCH_DROPS.map(DropCause::Switch))
            .chain([
                DropCause::Policy,
                DropCause::PolicyCut,
                DropCause::LaterFragment,
                DropCause::Ethertype,
                DropCause::ArpBlocked,
            ])
    }

    /// Stable name: `layer:reason`.
    pub fn name(self) -> String {
        match self {
            DropCause::Parse(r) => format!("parse:{}", r.name()),
            DropCause::Conntrack(r) => format!("conntrack:{}", r.name()),
            DropCause::Refused(r) => format!("refused:{}", r.name()),
            DropCause::Switch(r) => format!("switch:{}", r.name()),
            DropCause::Policy => "policy:denied".into(),
            DropCause::PolicyCut => "policy:cut".into(),
            DropCause::LaterFragment => "ip:later_fragment".into(),
            DropCause::Ethertype => "l2:ethertype".into(),
            DropCause::ArpBlocked => "l2:arp_blocked".into(),
        }
    }
}

/// The live counters.
#[derive(Debug)]
pub struct PipelineStats {
    forwarded: AtomicU64,
    flooded: AtomicU64,
    events_dropped: AtomicU64,
    drops: [AtomicU64; CAUSES],
}

impl Default for PipelineStats {
    fn default() -> Self {
        Self {
            forwarded: AtomicU64::new(0),
            flooded: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames sent out of one port.
    pub forwarded: u64,
    /// Frames flooded.
    pub flooded: u64,
    pub events_dropped: u64,
    /// Indexed by `DropCause::index`.
    pub drops: [u64; CAUSES],
}

impl StatsSnapshot {
    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.drops[cause.index()]
    }

    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// One batch's counts, kept on the worker's stack and added to the shared
/// `PipelineStats` once per batch.
#[derive(Debug)]
pub(crate) struct BatchTally {
    forwarded: u64,
    flooded: u64,
    drops: [u64; CAUSES],
}

impl BatchTally {
    pub fn new() -> Self {
        Self {
            forwarded: 0,
            flooded: 0,
            drops: [0; CAUSES],
        }
    }

    #[inline]
    pub fn count(&mut self, action: &FrameAction) {
        let counter = match action {
            FrameAction::Forward(Forward::Port(_)) => &mut self.forwarded,
            FrameAction::Forward(_) => &mut self.flooded,
            FrameAction::Drop(cause) => &mut self.drops[cause.index()],
        };
        *counter += 1;
    }
}

impl PipelineStats {
    /// Adds a batch's counts: one locked add per counter the batch
    /// touched, where counting each frame took one per frame (workers
    /// share these counters).
    pub(crate) fn add(&self, tally: &BatchTally) {
        let add = |counter: &AtomicU64, n: u64| {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.forwarded, tally.forwarded);
        add(&self.flooded, tally.flooded);
        for (counter, &n) in self.drops.iter().zip(&tally.drops) {
            add(counter, n);
        }
    }

    pub(crate) fn count_event_dropped(&self) {
        self.events_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            forwarded: load(&self.forwarded),
            flooded: load(&self.flooded),
            events_dropped: load(&self.events_dropped),
            drops: self.drops.each_ref().map(load),
        }
    }
}
