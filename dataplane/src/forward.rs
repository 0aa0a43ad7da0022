//! Moves frames between AF_XDP ports through the pipeline: one round
//! receives a batch on every port, judges it 64 frames at a time with one
//! call to the pipeline each (one policy load), passes each frame to its
//! egress port (or every other port for a flood), then transmits each
//! port's frames with at most a few wakeups. The ports share one UMEM
//! (`PortGroup`); in copy mode a forwarded frame is copied into a frame of
//! its transmit pool, which the kernel then reads from this core's cache;
//! why and what it bought: docs/architecture.md and
//! docs/performance-notes.md.
//!
//! A `Forwarder` is the single-threaded core of a worker (`worker`); it
//! owns one queue of each port and counts per port into `WorkerCounters`.

use std::sync::Arc;

use crate::pipeline::{DropCause, Frame, FrameAction, Pipeline};
use crate::stats::WorkerCounters;
use crate::switch::Forward;
use crate::xsk::{Disposition, PortGroup, XskError, XskStats, BATCH};

/// Counters of a forwarder (summed over its ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub received: u64,
    pub transmitted: u64,
    pub dropped: u64,
    /// Frames an egress port could not take (no free UMEM frame).
    pub tx_failed: u64,
}

/// Ports joined by a pipeline; port ids are indexes into the group.
#[derive(Debug)]
pub struct Forwarder {
    ports: PortGroup,
    pipeline: Arc<Pipeline>,
    counters: Arc<WorkerCounters>,
    stats: ForwardStats,
    /// Each port's own counters at the end of the last round.
    tx_seen: Vec<XskStats>,
}

impl Forwarder {
    pub fn new(ports: PortGroup, pipeline: Arc<Pipeline>) -> Self {
        let counters = Arc::new(WorkerCounters::new(ports.len()));
        Self::with_counters(ports, pipeline, counters)
    }

    /// As `new`, counting into `counters` (which must have a slot for
    /// every port).
    pub fn with_counters(
        ports: PortGroup,
        pipeline: Arc<Pipeline>,
        counters: Arc<WorkerCounters>,
    ) -> Self {
        Self {
            tx_seen: (0..ports.len())
                .map(|index| ports.stats(index).unwrap_or_default())
                .collect(),
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

    pub fn ports(&self) -> &PortGroup {
        &self.ports
    }

    pub fn ports_mut(&mut self) -> &mut PortGroup {
        &mut self.ports
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// One round: wait up to `timeout_ms` for frames (0: do not wait),
    /// receive a batch from every port, judge, transmit. Returns the
    /// frames received.
    pub fn poll_once(&mut self, timeout_ms: u16, now: u64) -> Result<usize, XskError> {
        if timeout_ms > 0 && !self.ports.rx_pending() {
            self.ports.wait_readable(timeout_ms)?;
        }
        self.round(now)
    }

    /// One round without waiting (the poll loop's step).
    pub fn round(&mut self, now: u64) -> Result<usize, XskError> {
        let received = self.ports.receive();
        self.touch_frames(received);
        let mut actions = [FrameAction::Drop(DropCause::Policy); BATCH];
        let mut dispositions = [Disposition::Drop; BATCH];
        for start in (0..received).step_by(BATCH) {
            let count = BATCH.min(received - start);
            let mut frames = [Frame { data: &[], port: 0 }; BATCH];
            for (frame, index) in frames.iter_mut().zip(start..start + count) {
                if let Some((port, data)) = self.ports.frame(index) {
                    *frame = Frame { data, port };
                }
            }
            let frames = &frames[..count];
            self.pipeline.process(frames, now, &mut actions);
            for ((frame, action), disposition) in
                frames.iter().zip(&actions).zip(dispositions.iter_mut())
            {
                *disposition = Self::account(&self.counters, &mut self.stats, frame, *action);
            }
            self.ports.dispose(&dispositions[..count]);
        }
        self.ports.end_round()?;
        self.sync_tx_counters();
        self.stats.received += received as u64;
        self.counters.rounds.add(1);
        if received > 0 {
            self.counters.busy_rounds.add(1);
        }
        Ok(received)
    }

    /// Reads the first byte of each of the round's `received` frames before
    /// any is parsed. The frames were written by the receive copy on
    /// another core, into pages the UMEM's rotation has not touched for
    /// thousands of frames: each first read is a cache miss, likely a TLB
    /// miss too. Independent loads in a tight loop overlap those misses,
    /// as a copy loop does; the parser, left to itself, takes them one
    /// frame at a time. Prefetch hints were measured slower than these
    /// loads (docs/performance-notes.md, "Touching each frame").
    fn touch_frames(&self, received: usize) {
        let mut folded = 0u8;
        for index in 0..received {
            if let Some((_, data)) = self.ports.frame(index) {
                folded ^= data.first().copied().unwrap_or_default();
            }
        }
        // The loads matter, not their value: keep the compiler from
        // dropping them.
        std::hint::black_box(folded);
    }

    /// Counts a judged frame on its ingress port and says where it goes.
    fn account(
        counters: &WorkerCounters,
        stats: &mut ForwardStats,
        frame: &Frame<'_>,
        action: FrameAction,
    ) -> Disposition {
        if let Some(ingress) = counters.port(frame.port) {
            ingress.rx.add(1);
            ingress.rx_bytes.add(frame.data.len() as u64);
            if let FrameAction::Drop(cause) = action {
                ingress.drops[cause.index()].add(1);
            }
        }
        match action {
            FrameAction::Forward(Forward::Port(egress)) => Disposition::To(egress),
            FrameAction::Forward(_) => Disposition::Flood,
            FrameAction::Drop(_) => {
                stats.dropped += 1;
                Disposition::Drop
            }
        }
    }

    /// Moves what the ports counted this round (frames sent, frames they
    /// could not take) into the per-port counters.
    fn sync_tx_counters(&mut self) {
        for index in 0..self.ports.len() {
            let Some(now) = self.ports.stats(index) else {
                continue;
            };
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
