//! Moves frames between AF_XDP ports through the pipeline: receive a batch
//! on every port, judge each frame, and transmit it where the pipeline
//! says (one port, or every other port for a flood). Frames move between
//! ports by copy: each port has its own UMEM.
//!
//! This is the single-threaded core of a worker; pinning, adaptive
//! polling and several workers build on it (issue 5).

use std::sync::Arc;

use crate::pipeline::{Frame, FrameAction, Pipeline};
use crate::switch::Forward;
use crate::xsk::{XskError, XskPort};

/// Counters of a forwarder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub received: u64,
    pub transmitted: u64,
    pub dropped: u64,
    /// Frames the egress port could not take (no free UMEM frame).
    pub tx_failed: u64,
}

/// Ports joined by a pipeline; port ids are indexes into `ports`.
#[derive(Debug)]
pub struct Forwarder {
    ports: Vec<XskPort>,
    pipeline: Arc<Pipeline>,
    /// Received frames of the current round, back to back (reused: no
    /// allocation per frame once it has grown).
    arena: Vec<u8>,
    /// (ingress port, offset in `arena`, length) of each received frame.
    received: Vec<(u16, usize, usize)>,
    stats: ForwardStats,
}

impl Forwarder {
    pub fn new(ports: Vec<XskPort>, pipeline: Arc<Pipeline>) -> Self {
        Self {
            ports,
            pipeline,
            arena: Vec::new(),
            received: Vec::new(),
            stats: ForwardStats::default(),
        }
    }

    pub fn stats(&self) -> ForwardStats {
        self.stats
    }

    pub fn ports(&self) -> &[XskPort] {
        &self.ports
    }

    /// One round: receive from every port (waiting up to `timeout_ms` on
    /// each), judge, transmit. Returns the frames received.
    pub fn poll_once(&mut self, timeout_ms: i32, now: u64) -> Result<usize, XskError> {
        self.arena.clear();
        self.received.clear();
        for (index, port) in self.ports.iter_mut().enumerate() {
            let (arena, received) = (&mut self.arena, &mut self.received);
            port.receive(timeout_ms, |frame| {
                received.push((index as u16, arena.len(), frame.len()));
                arena.extend_from_slice(frame);
            })?;
        }
        for i in 0..self.received.len() {
            let (ingress, start, len) = self.received[i];
            let data = &self.arena[start..start + len];
            let mut action = [FrameAction::Drop(crate::pipeline::DropCause::Policy)];
            self.pipeline.process(
                &[Frame {
                    data,
                    port: ingress,
                }],
                now,
                &mut action,
            );
            match action[0] {
                FrameAction::Forward(Forward::Port(egress)) => {
                    Self::transmit(&mut self.ports, &mut self.stats, egress, data)?
                }
                FrameAction::Forward(_) => {
                    for egress in 0..self.ports.len() as u16 {
                        if egress != ingress {
                            Self::transmit(&mut self.ports, &mut self.stats, egress, data)?;
                        }
                    }
                }
                FrameAction::Drop(_) => self.stats.dropped += 1,
            }
        }
        self.stats.received += self.received.len() as u64;
        Ok(self.received.len())
    }

    fn transmit(
        ports: &mut [XskPort],
        stats: &mut ForwardStats,
        egress: u16,
        frame: &[u8],
    ) -> Result<(), XskError> {
        let sent = match ports.get_mut(usize::from(egress)) {
            Some(port) => port.send(frame)?,
            None => false,
        };
        if sent {
            stats.transmitted += 1;
        } else {
            stats.tx_failed += 1;
        }
        Ok(())
    }
}
