//! Moves frames between AF_XDP ports through the pipeline: one round
//! receives a batch on every port, judges the whole batch with one call
//! to the pipeline (one policy load), stages each frame on its egress port
//! (or every other port for a flood), then flushes each port's tx batch
//! with at most one wakeup. Frames move between ports by copy: each port
//! has its own UMEM (why: docs/architecture.md).
//!
//! A `Forwarder` is the single-threaded core of a worker (`worker`); it
//! owns one queue of each port and counts per port into `WorkerCounters`.

use std::sync::Arc;

use crate::pipeline::{DropCause, Frame, FrameAction, Pipeline};
use crate::stats::WorkerCounters;
use crate::switch::Forward;
use crate::xsk::{XskError, XskPort, XskStats, BATCH};

/// Counters of a forwarder (summed over its ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub received: u64,
    pub transmitted: u64,
    pub dropped: u64,
    /// Frames an egress port could not take (no free UMEM frame).
    pub tx_failed: u64,
}

/// Ports joined by a pipeline; port ids are indexes into `ports`.
#[derive(Debug)]
pub struct Forwarder {
    ports: Vec<XskPort>,
    pipeline: Arc<Pipeline>,
    counters: Arc<WorkerCounters>,
    /// Received frames of the current round, back to back (reused: no
    /// allocation per frame once it has grown).
    arena: Vec<u8>,
    /// (ingress port, offset in `arena`, length) of each received frame.
    received: Vec<(u16, usize, usize)>,
    stats: ForwardStats,
    /// Each port's own counters at the end of the last round.
    tx_seen: Vec<XskStats>,
}

impl Forwarder {
    pub fn new(ports: Vec<XskPort>, pipeline: Arc<Pipeline>) -> Self {
        let counters = Arc::new(WorkerCounters::new(ports.len()));
        Self::with_counters(ports, pipeline, counters)
    }

    /// As `new`, counting into `counters` (which must have a slot for
    /// every port).
    pub fn with_counters(
        ports: Vec<XskPort>,
        pipeline: Arc<Pipeline>,
        counters: Arc<WorkerCounters>,
    ) -> Self {
        Self {
            arena: Vec::with_capacity(ports.len() * BATCH * 2048),
            received: Vec::with_capacity(ports.len() * BATCH),
            tx_seen: ports.iter().map(XskPort::stats).collect(),
            ports,
            pipeline,
            counters,
            stats: ForwardStats::default(),
        }
    }

    pub fn stats(&self) -> ForwardStats {
        self.stats
    }

    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    pub fn ports(&self) -> &[XskPort] {
        &self.ports
    }

    pub fn ports_mut(&mut self) -> &mut [XskPort] {
        &mut self.ports
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// One round: wait up to `timeout_ms` for frames (0: do not wait),
    /// receive a batch from every port, judge, transmit. Returns the
    /// frames received.
    pub fn poll_once(&mut self, timeout_ms: u16, now: u64) -> Result<usize, XskError> {
        if timeout_ms > 0 && !self.ports.iter_mut().any(XskPort::rx_pending) {
            crate::xsk::wait_readable(&self.ports, timeout_ms)?;
        }
        self.round(now)
    }

    /// One round without waiting (the poll loop's step).
    pub fn round(&mut self, now: u64) -> Result<usize, XskError> {
        self.arena.clear();
        self.received.clear();
        for (index, port) in self.ports.iter_mut().enumerate() {
            port.reclaim();
            let (arena, received) = (&mut self.arena, &mut self.received);
            port.receive_batch(|frame| {
                received.push((index as u16, arena.len(), frame.len()));
                arena.extend_from_slice(frame);
            });
        }
        let mut actions = [FrameAction::Drop(DropCause::Policy); BATCH];
        for chunk in self.received.chunks(BATCH) {
            let mut frames = [Frame { data: &[], port: 0 }; BATCH];
            for (frame, &(port, start, len)) in frames.iter_mut().zip(chunk) {
                *frame = Frame {
                    data: &self.arena[start..start + len],
                    port,
                };
            }
            let frames = &frames[..chunk.len()];
            self.pipeline.process(frames, now, &mut actions);
            for (frame, action) in frames.iter().zip(&actions) {
                Self::dispatch(
                    &mut self.ports,
                    &self.counters,
                    &mut self.stats,
                    frame,
                    *action,
                );
            }
        }
        for port in &mut self.ports {
            port.flush()?;
        }
        self.sync_tx_counters();
        self.stats.received += self.received.len() as u64;
        self.counters.rounds.add(1);
        if !self.received.is_empty() {
            self.counters.busy_rounds.add(1);
        }
        Ok(self.received.len())
    }

    fn dispatch(
        ports: &mut [XskPort],
        counters: &WorkerCounters,
        stats: &mut ForwardStats,
        frame: &Frame<'_>,
        action: FrameAction,
    ) {
        if let Some(ingress) = counters.port(frame.port) {
            ingress.rx.add(1);
            ingress.rx_bytes.add(frame.data.len() as u64);
            if let FrameAction::Drop(cause) = action {
                ingress.drops[cause.index()].add(1);
                stats.dropped += 1;
            }
        }
        match action {
            FrameAction::Forward(Forward::Port(egress)) => Self::stage(ports, egress, frame.data),
            FrameAction::Forward(_) => {
                for egress in 0..ports.len() as u16 {
                    if egress != frame.port {
                        Self::stage(ports, egress, frame.data);
                    }
                }
            }
            FrameAction::Drop(_) => {}
        }
    }

    fn stage(ports: &mut [XskPort], egress: u16, data: &[u8]) {
        if let Some(port) = ports.get_mut(usize::from(egress)) {
            port.stage(data);
        }
    }

    /// Moves what the ports counted this round (frames sent, frames they
    /// could not take) into the per-port counters.
    fn sync_tx_counters(&mut self) {
        for (index, port) in self.ports.iter().enumerate() {
            let now = port.stats();
            let before = std::mem::replace(&mut self.tx_seen[index], now);
            let (sent, failed) = (now.tx - before.tx, now.tx_dropped - before.tx_dropped);
            if let Some(counters) = self.counters.port(index as u16) {
                counters.tx.add(sent);
                counters.tx_bytes.add(now.tx_bytes - before.tx_bytes);
                counters.tx_failed.add(failed);
            }
            self.stats.transmitted += sent;
            self.stats.tx_failed += failed;
        }
    }
}
