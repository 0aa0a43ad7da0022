//! `PortGroup`: the sockets of one worker (one queue on each switch port)
//! on one shared UMEM, so a frame received on one port goes out of another
//! as it is: its descriptor moves from the ingress rx ring to the egress
//! tx ring, with no copy in userspace. Only a flood copies (one frame per
//! extra port); dropped frames and transmitted ones (back from any
//! completion ring) return to one free list, from which every port's fill
//! ring is topped up at the end of a round.
//!
//! A round: `receive` takes a batch from every port; the caller reads the
//! frames (`frame`) and says what becomes of each, in order (`dispose`);
//! `end_round` transmits and refills. A frame the caller never disposed
//! of is dropped at the next `end_round` or `receive`, so none is lost.

use xsk_rs::{FrameDesc, Umem};

use super::rings::{copy_into_free, new_umem, wait_any, SocketRings};
use super::{ifindex, FrameCensus, XskError, XskStats, BATCH, MIN_FRAME};
use crate::bpf::{SocketRegistry, XdpPort};

/// What becomes of a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Out of this port (of the group), without a copy.
    To(u16),
    /// Out of every port but the one it came in on.
    Flood,
    Drop,
}

/// One port of the group: its socket and the frames staged for it.
struct GroupPort {
    rings: SocketRings,
    staged: Vec<FrameDesc>,
}

impl GroupPort {
    /// Stages a frame of ours (received this round, or a free frame a
    /// flood was copied into); a full batch is transmitted at once
    /// (errors surface at `end_round`, refused frames go to `free`).
    fn stage(&mut self, desc: FrameDesc, free: &mut Vec<FrameDesc>) {
        self.staged.push(desc);
        if self.staged.len() >= BATCH {
            // SAFETY: staged frames are ours (see `end_round`).
            let _ = unsafe { self.rings.transmit(&mut self.staged, free) };
        }
    }
}

/// The sockets of a worker on one UMEM (see the module header).
pub struct PortGroup {
    // Field order is drop order: the rings go before the UMEM they map,
    // and the XDP programs (when the group attached them) after both.
    ports: Vec<GroupPort>,
    /// Frames we own: for flood copies and for lending to fill rings.
    free: Vec<FrameDesc>,
    /// This round's frames: the first `received_count` descriptors, room
    /// for a batch from every port. The rx rings write them in place:
    /// copied from scratch, each was read back as one 16-byte load over
    /// the field stores just made, a failed store-to-load forward per
    /// frame (docs/performance-notes.md, "On an Intel machine").
    received: Vec<FrameDesc>,
    /// The ingress port of each of `received`.
    received_from: Vec<u16>,
    received_count: usize,
    /// How many of `received` have been disposed of, in order.
    disposed: usize,
    /// Scratch for completion batches (`reclaim`).
    scratch: Vec<FrameDesc>,
    umem: Umem,
    xdp: Vec<XdpPort>,
    total_frames: usize,
    /// Frames each fill ring is topped up to.
    fill_target: u32,
}

impl std::fmt::Debug for PortGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortGroup")
            .field("ports", &self.names())
            .field("free_frames", &self.free.len())
            .field("total_frames", &self.total_frames)
            .finish()
    }
}

impl PortGroup {
    /// Attaches the XDP program to each of `ifnames` (the group owns them
    /// and detaches them when dropped), then binds queue 0 of each as
    /// `bind` does.
    pub fn open(ifnames: &[&str], frames_per_port: u32) -> Result<Self, XskError> {
        let xdp = ifnames
            .iter()
            .map(|ifname| XdpPort::attach(ifindex(ifname)?).map_err(XskError::from))
            .collect::<Result<Vec<_>, _>>()?;
        let registries = xdp
            .iter()
            .map(XdpPort::socket_registry)
            .collect::<Result<Vec<_>, _>>()?;
        let ports: Vec<_> = ifnames.iter().copied().zip(&registries).collect();
        let mut group = Self::bind(&ports, 0, frames_per_port)?;
        group.xdp = xdp;
        Ok(group)
    }

    /// Creates one UMEM of `frames_per_port` frames per port, binds a
    /// socket on it to `queue` of each port and registers it in the port's
    /// XDP program; each fill ring gets half a port's frames.
    pub fn bind(
        ports: &[(&str, &SocketRegistry)],
        queue: u32,
        frames_per_port: u32,
    ) -> Result<Self, XskError> {
        if ports.is_empty() || ports.len() > usize::from(u16::MAX) {
            return Err(XskError::Umem(format!(
                "a port group needs 1 to {} ports, not {}",
                u16::MAX,
                ports.len()
            )));
        }
        let frames_per_port = frames_per_port.max(2);
        let total = frames_per_port
            .checked_mul(ports.len() as u32)
            .ok_or_else(|| XskError::Umem("too many frames".into()))?;
        let (umem, free) = new_umem(total)?;
        let ports = ports
            .iter()
            .map(|(ifname, registry)| {
                Ok(GroupPort {
                    rings: SocketRings::open(ifname, queue, &umem, registry)?,
                    staged: Vec::with_capacity(BATCH),
                })
            })
            .collect::<Result<Vec<_>, XskError>>()?;
        let fill_target = (frames_per_port / 2).min(ports[0].rings.fill_size());
        let mut group = Self {
            received: vec![FrameDesc::default(); ports.len() * BATCH],
            received_from: vec![0; ports.len() * BATCH],
            received_count: 0,
            ports,
            total_frames: free.len(),
            free,
            disposed: 0,
            scratch: vec![FrameDesc::default(); BATCH],
            umem,
            xdp: Vec::new(),
            fill_target,
        };
        group.refill();
        Ok(group)
    }

    /// The ports' names, joined by "+" (for reports).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.ports.iter().map(|p| p.rings.ifname.as_str()).collect();
        names.join("+")
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Counters of port `index`.
    pub fn stats(&self, index: usize) -> Option<XskStats> {
        self.ports.get(index).map(|port| port.rings.stats)
    }

    /// Frames currently free (for flood copies and fill rings).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Where every frame of the shared UMEM is now (see `FrameCensus`).
    pub fn census(&mut self) -> FrameCensus {
        let mut census = FrameCensus {
            total: self.total_frames,
            free: self.free.len() + self.received_count - self.disposed,
            ..FrameCensus::default()
        };
        for port in &mut self.ports {
            let (fill, rx, tx, completed) = port.rings.on_rings();
            census.free += port.staged.len();
            census.fill += fill;
            census.rx += rx;
            census.tx += tx;
            census.completed += completed;
        }
        census
    }

    /// Returns every port's transmitted frames to the free list.
    pub fn reclaim(&mut self) -> usize {
        let (scratch, free) = (&mut self.scratch, &mut self.free);
        self.ports
            .iter_mut()
            .map(|port| port.rings.reclaim(scratch, free))
            .sum()
    }

    /// Starts a round: drops what the last round left undisposed, reclaims
    /// transmitted frames and takes up to one batch from every port.
    /// Returns the frames received.
    pub fn receive(&mut self) -> usize {
        self.drop_undisposed();
        self.received_count = 0;
        self.disposed = 0;
        self.reclaim();
        for (index, port) in self.ports.iter_mut().enumerate() {
            let start = self.received_count;
            let received = port.rings.receive(&mut self.received[start..start + BATCH]);
            self.received_from[start..start + received].fill(index as u16);
            self.received_count += received;
        }
        self.received_count
    }

    /// Frame `index` of this round, (ingress port, bytes), if it has not
    /// been disposed of yet.
    pub fn frame(&self, index: usize) -> Option<(u16, &[u8])> {
        if index < self.disposed || index >= self.received_count {
            return None;
        }
        let (port, desc) = (self.received_from[index], &self.received[index]);
        // SAFETY: the frame came off an rx ring this round and has not been
        // disposed of, so it is ours and on no ring; nothing writes it
        // while this shared borrow of the group lives (disposing needs
        // `&mut self`).
        Some((port, unsafe { self.umem.data(desc) }.contents()))
    }

    /// Disposes of the next `dispositions.len()` frames of this round, in
    /// order. A frame staged for a port goes out by the end of the round
    /// (at once when a batch is full); a frame to an unknown port, or
    /// shorter than an Ethernet header, is dropped.
    pub fn dispose(&mut self, dispositions: &[Disposition]) {
        for disposition in dispositions {
            if self.disposed >= self.received_count {
                return;
            }
            let (ingress, desc) = (
                self.received_from[self.disposed],
                self.received[self.disposed],
            );
            self.disposed += 1;
            match *disposition {
                Disposition::To(egress) => self.pass(desc, egress),
                Disposition::Flood => {
                    for egress in 0..self.ports.len() as u16 {
                        if egress != ingress {
                            self.copy(&desc, egress);
                        }
                    }
                    self.free.push(desc);
                }
                Disposition::Drop => self.free.push(desc),
            }
        }
    }

    /// Ends a round: drops undisposed frames, transmits every port's staged
    /// frames and tops up every fill ring.
    pub fn end_round(&mut self) -> Result<(), XskError> {
        self.drop_undisposed();
        let mut result = Ok(());
        for port in &mut self.ports {
            // SAFETY: staged frames are ours: received this round and
            // passed on (`pass`) or copied into free frames (`copy`).
            let sent = unsafe { port.rings.transmit(&mut port.staged, &mut self.free) };
            if let Err(error) = sent {
                // The other ports still transmit; the first error is kept.
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        self.refill();
        result
    }

    /// Frames waiting on any rx ring (without consuming them).
    pub fn rx_pending(&mut self) -> bool {
        self.ports.iter_mut().any(|port| port.rings.rx_pending())
    }

    /// Sleeps until a frame waits on any port or `timeout_ms` passes.
    pub fn wait_readable(&self, timeout_ms: u16) -> Result<bool, XskError> {
        wait_any(self.ports.iter().map(|port| &port.rings), timeout_ms)
    }

    /// Stages a received frame on `egress`, as it is.
    fn pass(&mut self, desc: FrameDesc, egress: u16) {
        let Some(port) = self.ports.get_mut(usize::from(egress)) else {
            self.free.push(desc);
            return;
        };
        if desc.lengths().data() < MIN_FRAME {
            port.rings.stats.tx_dropped += 1;
            self.free.push(desc);
            return;
        }
        port.stage(desc, &mut self.free);
    }

    /// Copies a received frame into a free frame staged on `egress`
    /// (counted as dropped there if no frame is free or it is too short).
    fn copy(&mut self, source: &FrameDesc, egress: u16) {
        let Some(port) = self.ports.get_mut(usize::from(egress)) else {
            return;
        };
        if source.lengths().data() < MIN_FRAME {
            port.rings.stats.tx_dropped += 1;
            return;
        }
        // SAFETY: `source` is a frame of this round, ours and on no ring;
        // nothing writes it while this borrow lives.
        let frame = unsafe { self.umem.data(source) };
        // SAFETY: the free list holds only our frames, on no ring and
        // unreferenced; `source` is not on it (a flooded frame is freed
        // after its copies).
        let copied = unsafe { copy_into_free(&self.umem, &mut self.free, frame.contents()) };
        let Some(desc) = copied else {
            port.rings.stats.tx_dropped += 1;
            return;
        };
        port.stage(desc, &mut self.free);
    }

    /// Returns the round's undisposed frames to the free list.
    fn drop_undisposed(&mut self) {
        if self.disposed < self.received_count {
            self.free
                .extend_from_slice(&self.received[self.disposed..self.received_count]);
            self.disposed = self.received_count;
        }
    }

    /// Tops up every port's fill ring to `fill_target` from the free list.
    fn refill(&mut self) {
        for port in &mut self.ports {
            let wanted = self.fill_target.saturating_sub(port.rings.fill_in_ring()) as usize;
            let wanted = wanted.min(self.free.len());
            if wanted == 0 {
                continue;
            }
            let from = self.free.len() - wanted;
            // SAFETY: the frames come off our free list: no ring holds them
            // and no reference to their data is alive.
            let lent = unsafe { port.rings.lend(&self.free[from..]) };
            // The ring took the first `lent`; any it refused stay ours.
            self.free.drain(from..from + lent);
        }
    }
}
