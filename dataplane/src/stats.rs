//! Per-worker, per-port counters: written by one worker, read at any time
//! by the control plane (status, metrics) without a lock.
//!
//! Each counter has a single writer (the worker that owns the port's
//! queue), so an increment is a relaxed load and store: no locked
//! read-modify-write on the packet path, and no cache line shared between
//! workers. Readers see each counter's latest value, not a snapshot of all
//! counters at one instant.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pipeline::DropCause;

/// A counter with one writer and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the counter's one writer may call this: two writers
    /// would lose increments.
    #[inline]
    pub fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed).wrapping_add(n);
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one port as seen by one worker.
#[derive(Debug)]
pub struct PortCounters {
    pub rx: Counter,
    pub tx: Counter,
    pub rx_bytes: Counter,
    pub tx_bytes: Counter,
    /// Frames the egress port could not take (no free UMEM frame, tx ring
    /// full).
    pub tx_failed: Counter,
    /// Frames received here and dropped, indexed by `DropCause::index`.
    pub drops: [Counter; DropCause::COUNT],
}

impl Default for PortCounters {
    fn default() -> Self {
        Self {
            rx: Counter::default(),
            tx: Counter::default(),
            rx_bytes: Counter::default(),
            tx_bytes: Counter::default(),
            tx_failed: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        }
    }
}

/// A copy of one port's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx: u64,
    pub tx: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub tx_failed: u64,
    /// Non-zero drop counts by cause name (`parse:truncated`, ...).
    pub drops: Vec<(String, u64)>,
}

impl PortStats {
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }

    /// The count for one cause (0 if none).
    pub fn dropped_for(&self, cause: DropCause) -> u64 {
        let name = cause.name();
        self.drops
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, count)| *count)
    }

    /// Adds another worker's counters of the same port.
    pub fn merge(&mut self, other: &PortStats) {
        self.rx += other.rx;
        self.tx += other.tx;
        self.rx_bytes += other.rx_bytes;
        self.tx_bytes += other.tx_bytes;
        self.tx_failed += other.tx_failed;
        for (name, count) in &other.drops {
            match self.drops.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => *mine += count,
                None => self.drops.push((name.clone(), *count)),
            }
        }
    }
}

impl PortCounters {
    pub fn snapshot(&self) -> PortStats {
        PortStats {
            rx: self.rx.get(),
            tx: self.tx.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_bytes: self.tx_bytes.get(),
            tx_failed: self.tx_failed.get(),
            drops: DropCause::all()
                .filter_map(|cause| {
                    let count = self.drops[cause.index()].get();
                    (count > 0).then(|| (cause.name(), count))
                })
                .collect(),
        }
    }
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerCounters {
    /// Poll rounds made.
    pub rounds: Counter,
    /// Rounds that found frames.
    pub busy_rounds: Counter,
    /// Times the worker went to sleep waiting for frames (adaptive mode).
    pub sleeps: Counter,
    /// By port id.
    pub ports: Box<[PortCounters]>,
}

impl WorkerCounters {
    pub fn new(ports: usize) -> Self {
        Self {
            rounds: Counter::default(),
            busy_rounds: Counter::default(),
            sleeps: Counter::default(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
        }
    }

    /// The counters of a port (None for an unknown id).
    pub fn port(&self, port: u16) -> Option<&PortCounters> {
        self.ports.get(usize::from(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::DropReason;

    #[test]
    fn snapshots_name_causes_and_merge_across_workers() {
        let a = WorkerCounters::new(2);
        let b = WorkerCounters::new(2);
        let truncated = DropCause::Parse(DropReason::TruncatedEthernet);
        a.ports[1].rx.add(3);
        a.ports[1].drops[truncated.index()].add(2);
        b.ports[1].rx.add(4);
        b.ports[1].drops[truncated.index()].add(1);
        b.ports[1].drops[DropCause::Policy.index()].add(5);
        let mut merged = a.ports[1].snapshot();
        merged.merge(&b.ports[1].snapshot());
        assert_eq!(merged.rx, 7);
        assert_eq!(merged.dropped_for(truncated), 3);
        assert_eq!(merged.dropped_for(DropCause::Policy), 5);
        assert_eq!(merged.dropped(), 8);
        assert_eq!(a.ports[0].snapshot(), PortStats::default());
        assert!(a.port(2).is_none());
    }
}
