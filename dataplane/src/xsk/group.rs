//! `PortGroup`: the sockets of one worker (one queue on each switch port)
//! on one shared UMEM. A forwarded frame is copied into a frame of the
//! group's transmit pool, and the received frame goes back to the fill
//! rings; when the pool is empty the received frame itself goes out (its
//! descriptor moves from the ingress rx ring to the egress tx ring). A
//! flood copies once per extra port, into pool frames too.
//!
//! Why copy, when one UMEM lets a frame go out as it is: in copy mode the
//! kernel copies every transmitted frame out of the UMEM, and a received
//! frame was written by the receive copy on another core (where the
//! sender's NAPI ran). Read there, its lines were a miss the kernel took
//! frame by frame (30 ns a frame of 535 on the Intel guest, 16 flows:
//! `skb_store_bits`). Pool frames are written on this core and only ever
//! transmitted, never lent to a fill ring, so the ones taken again (last
//! in, first out) are still in this core's cache when the kernel reads
//! them; the copy into them reads lines the worker has just parsed. Its
//! cost was 4 ns a frame and the kernel's copy fell to 6
//! (docs/performance-notes.md, "Copying into a transmit pool").
//!
//! Pool frames are told apart by address (the UMEM's last frames): any
//! that comes back, from a completion ring or refused by a tx ring, goes
//! back to the pool; everything else returns to one free list, from which
//! every port's fill ring is topped up at the end of a round.
//!
//! A round: `receive` takes a batch from every port; the caller reads the
//! frames (`frame`) and says what becomes of each, in order (`dispose`);
//! `end_round` transmits and refills. A frame the caller never disposed
//! of is dropped at the next `end_round` or `receive`, so none is lost.

use xsk_rs::{FrameDesc, Umem};

use super::rings::{copy_into_free, new_umem, wait_any, SocketRings};
use super::{ifindex, FrameCensus, XskError, XskStats, BATCH, MIN_FRAME};
use crate::bpf::{SocketRegistry, XdpPort};

/// Transmit pool frames per port, at most: two rounds of every port's
/// batch, which the pool needs when all traffic leaves by one port (a
/// round's copies come back on the completion rings by the next round).
/// Groups of fewer frames per port get as many as they have.
const TX_POOL_PER_PORT: u32 = 2 * BATCH as u32;

/// What becomes of a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Out of this port (of the group): a copy in a transmit pool frame,
    /// or the frame itself while the pool is empty.
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
    /// Stages a frame of ours (received this round, or a frame a copy was
    /// made into); a full batch is transmitted at once (errors surface at
    /// `end_round`, refused frames go back to `spare`).
    fn stage(&mut self, desc: FrameDesc, spare: &mut Spare) {
        self.staged.push(desc);
        if self.staged.len() >= BATCH {
            // SAFETY: staged frames are ours (see `end_round`).
            let _ = unsafe { self.transmit(spare) };
        }
    }

    /// Transmits the staged frames; refused ones go back to `spare`.
    ///
    /// # Safety
    /// Every staged frame is ours: received this round and passed on, or
    /// a copy into a frame of ours.
    unsafe fn transmit(&mut self, spare: &mut Spare) -> Result<usize, XskError> {
        // SAFETY: the caller's contract.
        spare.take_back(|free| unsafe { self.rings.transmit(&mut self.staged, free) })
    }
}

/// The frames we own and hold: the free list and the transmit pool.
struct Spare {
    /// For fill rings, and for copies while the pool is empty.
    free: Vec<FrameDesc>,
    /// Frames only copies are transmitted in (see the module header),
    /// taken last in, first out.
    tx_pool: Vec<FrameDesc>,
    /// Address of the pool's first frame: frames at or above it are the
    /// pool's.
    tx_pool_from: usize,
}

impl Spare {
    /// Splits `frames` (every frame of a new UMEM) into the free list and
    /// a pool of the `pool` frames at the highest addresses.
    fn new(mut frames: Vec<FrameDesc>, pool: usize) -> Self {
        frames.sort_unstable_by_key(FrameDesc::addr);
        let tx_pool = frames.split_off(frames.len().saturating_sub(pool));
        Self {
            tx_pool_from: tx_pool.first().map_or(usize::MAX, FrameDesc::addr),
            free: frames,
            tx_pool,
        }
    }

    fn len(&self) -> usize {
        self.free.len() + self.tx_pool.len()
    }

    /// Makes the pool's frames free frames like any other (zero-copy
    /// sockets: there a frame goes out as it is, copied by nobody).
    fn dissolve_pool(&mut self) {
        self.free.append(&mut self.tx_pool);
        self.tx_pool_from = usize::MAX;
    }

    /// Lets `give_back` append frames coming back to us (completed, or
    /// refused by a tx ring) to the free list, then moves the pool's among
    /// them back to the pool.
    fn take_back<T>(&mut self, give_back: impl FnOnce(&mut Vec<FrameDesc>) -> T) -> T {
        let mut index = self.free.len();
        let result = give_back(&mut self.free);
        while index < self.free.len() {
            if self.free[index].addr() >= self.tx_pool_from {
                let desc = self.free.swap_remove(index);
                self.tx_pool.push(desc);
            } else {
                index += 1;
            }
        }
        result
    }

    /// A pool frame holding a copy of `bytes`; `None` if the pool is
    /// empty (or `bytes` does not fit a frame).
    fn pool_copy_of(&mut self, umem: &Umem, bytes: &[u8]) -> Option<FrameDesc> {
        // SAFETY: the pool holds only frames of `umem` that we own, on no
        // ring and unreferenced (they enter it from `Spare::new`, a
        // completion ring or a refusing tx ring); `bytes` is not one of
        // them (the caller's frame of the round).
        unsafe { copy_into_free(umem, &mut self.tx_pool, bytes) }
    }

    /// A frame holding a copy of `bytes`: from the pool, else from the
    /// free list; `None` if neither has one.
    fn copy_of(&mut self, umem: &Umem, bytes: &[u8]) -> Option<FrameDesc> {
        self.pool_copy_of(umem, bytes).or_else(|| {
            // SAFETY: as for the pool: the free list holds frames of ours,
            // on no ring and unreferenced (a disposed frame of the round
            // enters it only once its round is done with it).
            unsafe { copy_into_free(umem, &mut self.free, bytes) }
        })
    }
}

/// The sockets of a worker on one UMEM (see the module header).
pub struct PortGroup {
    // Field order is drop order: the rings go before the UMEM they map,
    // and the XDP programs (when the group attached them) after both.
    ports: Vec<GroupPort>,
    /// Frames we own: the transmit pool and the free list (for lending to
    /// fill rings).
    spare: Spare,
    /// A socket of the group is bound in zero-copy mode: no transmit pool.
    zero_copy: bool,
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
            .field("free_frames", &self.spare.free.len())
            .field("tx_pool_frames", &self.spare.tx_pool.len())
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
        let pool = frames_per_port.min(TX_POOL_PER_PORT) * ports.len() as u32;
        let total = frames_per_port
            .checked_mul(ports.len() as u32)
            .and_then(|received| received.checked_add(pool))
            .ok_or_else(|| XskError::Umem("too many frames".into()))?;
        let (umem, frames) = new_umem(total)?;
        let ports = ports
            .iter()
            .map(|(ifname, registry)| {
                Ok(GroupPort {
                    rings: SocketRings::open(ifname, queue, &umem, registry)?,
                    staged: Vec::with_capacity(BATCH),
                })
            })
            .collect::<Result<Vec<_>, XskError>>()?;
        let zero_copy = ports
            .iter()
            .map(|port| port.rings.is_zero_copy())
            .collect::<Result<Vec<_>, _>>()?
            .contains(&true);
        let mut spare = Spare::new(frames, pool as usize);
        if zero_copy {
            spare.dissolve_pool();
        }
        let fill_target = (frames_per_port / 2).min(ports[0].rings.fill_size());
        let mut group = Self {
            received: vec![FrameDesc::default(); ports.len() * BATCH],
            received_from: vec![0; ports.len() * BATCH],
            received_count: 0,
            ports,
            total_frames: spare.len(),
            spare,
            zero_copy,
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

    /// Frames currently ours and unused: free (for fill rings) or in the
    /// transmit pool.
    pub fn free_frames(&self) -> usize {
        self.spare.len()
    }

    /// Whether a socket of the group was bound in zero-copy mode (then
    /// forwarded frames go out as they are, and there is no pool).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Frames in the transmit pool now (all of them when nothing is being
    /// transmitted).
    pub fn tx_pool_frames(&self) -> usize {
        self.spare.tx_pool.len()
    }

    /// Where every frame of the shared UMEM is now (see `FrameCensus`).
    pub fn census(&mut self) -> FrameCensus {
        let mut census = FrameCensus {
            total: self.total_frames,
            free: self.spare.len() + self.received_count - self.disposed,
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

    /// Returns every port's transmitted frames to the pool or the free
    /// list.
    pub fn reclaim(&mut self) -> usize {
        let (ports, scratch) = (&mut self.ports, &mut self.scratch);
        self.spare.take_back(|free| {
            ports
                .iter_mut()
                .map(|port| port.rings.reclaim(scratch, free))
                .sum()
        })
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
                    self.spare.free.push(desc);
                }
                Disposition::Drop => self.spare.free.push(desc),
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
            // passed on (`pass`), or copies into frames of ours (`pass`,
            // `copy`).
            let sent = unsafe { port.transmit(&mut self.spare) };
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

    /// Stages a received frame on `egress`: a copy in a transmit pool
    /// frame (the received one goes back to the free list), or the frame
    /// itself while the pool is empty.
    fn pass(&mut self, desc: FrameDesc, egress: u16) {
        let Some(port) = self.ports.get_mut(usize::from(egress)) else {
            self.spare.free.push(desc);
            return;
        };
        if desc.lengths().data() < MIN_FRAME {
            port.rings.stats.tx_dropped += 1;
            self.spare.free.push(desc);
            return;
        }
        // SAFETY: `desc` is a frame of this round, ours and on no ring;
        // nothing writes it while this borrow lives.
        let frame = unsafe { self.umem.data(&desc) };
        let staged = match self.spare.pool_copy_of(&self.umem, frame.contents()) {
            Some(copy) => {
                self.spare.free.push(desc);
                copy
            }
            None => desc,
        };
        port.stage(staged, &mut self.spare);
    }

    /// Copies a received frame into a frame of ours (the pool's, else a
    /// free one) staged on `egress` (counted as dropped there if no frame
    /// is free or it is too short).
    fn copy(&mut self, source: &FrameDesc, egress: u16) {
        let Some(port) = self.ports.get_mut(usize::from(egress)) else {
            return;
        };
        if source.lengths().data() < MIN_FRAME {
            port.rings.stats.tx_dropped += 1;
            return;
        }
        // SAFETY: `source` is a frame of this round, ours and on no ring;
        // nothing writes it while this borrow lives; it is on neither of
        // `spare`'s lists (a flooded frame is freed after its copies).
        let frame = unsafe { self.umem.data(source) };
        let Some(desc) = self.spare.copy_of(&self.umem, frame.contents()) else {
            port.rings.stats.tx_dropped += 1;
            return;
        };
        port.stage(desc, &mut self.spare);
    }

    /// Returns the round's undisposed frames to the free list.
    fn drop_undisposed(&mut self) {
        if self.disposed < self.received_count {
            self.spare
                .free
                .extend_from_slice(&self.received[self.disposed..self.received_count]);
            self.disposed = self.received_count;
        }
    }

    /// Tops up every port's fill ring to `fill_target` from the free list.
    fn refill(&mut self) {
        for port in &mut self.ports {
            let wanted = self.fill_target.saturating_sub(port.rings.fill_in_ring()) as usize;
            let free = &mut self.spare.free;
            let wanted = wanted.min(free.len());
            if wanted == 0 {
                continue;
            }
            let from = free.len() - wanted;
            // SAFETY: the frames come off our free list: no ring holds them
            // and no reference to their data is alive.
            let lent = unsafe { port.rings.lend(&free[from..]) };
            // The ring took the first `lent`; any it refused stay ours.
            free.drain(from..from + lent);
        }
    }
}
