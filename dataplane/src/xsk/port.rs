//! `XskPort`: one socket with a UMEM of its own. Received frames are seen
//! by the caller and lent straight back to the fill ring; frames to send
//! are copied into the port's free frames (`stage`) and go out with one
//! `flush`. Frames move between two ports by that copy. It is the design
//! of the bare forwarder (`benches/bin/bare_forward.rs`, the in-run
//! ceiling of the throughput benchmark) and of single-port tools; the
//! switch's workers share one UMEM between their ports (`PortGroup`).

use xsk_rs::{FrameDesc, Umem};

use super::rings::{copy_into_free, new_umem, wait_any, BusyPoll, SocketRings};
use super::{ifindex, FrameCensus, XskError, XskStats, BATCH, MIN_FRAME};
use crate::bpf::{SocketRegistry, XdpPort};

/// One interface queue, receiving and transmitting through AF_XDP.
pub struct XskPort {
    // Field order is drop order: the rings go before the UMEM they map.
    rings: SocketRings,
    /// Frames we own and may transmit from.
    free: Vec<FrameDesc>,
    /// Frames written and waiting for `flush`.
    staged: Vec<FrameDesc>,
    /// Scratch for rx and completion batches (no per-batch allocation).
    batch: Vec<FrameDesc>,
    umem: Umem,
    /// The XDP program, when this port attached it itself (`open`);
    /// workers bind to programs attached by the appliance (`bind`).
    xdp: Option<XdpPort>,
    total_frames: usize,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("ifname", &self.rings.ifname)
            .field("queue", &self.rings.queue)
            .field("free_frames", &self.free.len())
            .field("stats", &self.rings.stats)
            .finish()
    }
}

impl XskPort {
    /// Attaches the XDP program to `ifname` (this port owns it and detaches
    /// it when dropped), then binds queue 0 as `bind` does.
    pub fn open(ifname: &str, frames: u32) -> Result<Self, XskError> {
        let xdp = XdpPort::attach(ifindex(ifname)?)?;
        let registry = xdp.socket_registry()?;
        let mut port = Self::bind(ifname, 0, frames, &registry)?;
        port.xdp = Some(xdp);
        Ok(port)
    }

    /// Creates a UMEM of `frames` frames (half lent to the kernel for
    /// receiving, half kept for transmitting), binds a socket to `queue` of
    /// `ifname` and registers it in the port's XDP program.
    pub fn bind(
        ifname: &str,
        queue: u32,
        frames: u32,
        registry: &SocketRegistry,
    ) -> Result<Self, XskError> {
        let (umem, mut descs) = new_umem(frames)?;
        let mut rings = SocketRings::open(ifname, queue, &umem, registry)?;
        let total_frames = descs.len();
        let free = descs.split_off(descs.len() / 2);
        // SAFETY: `descs` are frames of this UMEM that nothing else holds;
        // lending them to the kernel through the fill ring is their purpose.
        let lent = unsafe { rings.lend(&descs) };
        let mut port = Self {
            rings,
            free,
            staged: Vec::with_capacity(BATCH),
            batch: vec![FrameDesc::default(); BATCH],
            umem,
            xdp: None,
            total_frames,
        };
        // Any the fill ring did not take stay ours, for transmitting.
        port.free.extend_from_slice(&descs[lent..]);
        Ok(port)
    }

    pub fn stats(&self) -> XskStats {
        self.rings.stats
    }

    pub fn ifname(&self) -> &str {
        &self.rings.ifname
    }

    pub fn queue(&self) -> u32 {
        self.rings.queue
    }

    /// The XDP program, if this port attached it (`open`).
    pub fn xdp(&self) -> Option<&XdpPort> {
        self.xdp.as_ref()
    }

    /// Frames currently free for transmitting.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Where every UMEM frame is now (see `FrameCensus`).
    pub fn census(&mut self) -> FrameCensus {
        let (fill, rx, tx, completed) = self.rings.on_rings();
        FrameCensus {
            total: self.total_frames,
            free: self.free.len() + self.staged.len(),
            fill,
            rx,
            tx,
            completed,
        }
    }

    /// Receives up to one batch, waiting up to `timeout_ms` for it (see
    /// `receive_batch`).
    pub fn receive(
        &mut self,
        timeout_ms: i32,
        visit: impl FnMut(&[u8]),
    ) -> Result<usize, XskError> {
        if !self.rings.rx_pending() && timeout_ms != 0 {
            self.rings.poll(timeout_ms)?;
        }
        Ok(self.receive_batch(visit))
    }

    /// Receives up to one batch without waiting; calls `visit` with each
    /// frame's bytes, then lends the frames back to the kernel.
    pub fn receive_batch(&mut self, mut visit: impl FnMut(&[u8])) -> usize {
        let received = self.rings.receive(&mut self.batch);
        if received == 0 {
            return 0;
        }
        for desc in &self.batch[..received] {
            // SAFETY: the frame came off our rx ring, so it is ours until we
            // lend it back below; nothing writes it meanwhile.
            visit(unsafe { self.umem.data(desc) }.contents());
        }
        // SAFETY: the frames were ours (just received) and are no longer
        // borrowed: lend them back to the kernel.
        let lent = unsafe { self.rings.lend(&self.batch[..received]) };
        // The fill ring has room for every frame we own, so this is empty;
        // were it not, the frames stay ours (for tx) rather than leak.
        self.free.extend_from_slice(&self.batch[lent..received]);
        received
    }

    /// Copies a frame into a free UMEM frame and stages it for the next
    /// `flush`; false (and counted) if it is shorter than an Ethernet
    /// header, no frame is free, or it does not fit a UMEM frame.
    pub fn stage(&mut self, frame: &[u8]) -> bool {
        if frame.len() < MIN_FRAME {
            self.rings.stats.tx_dropped += 1;
            return false;
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        // SAFETY: our free list holds only frames of our UMEM that no ring
        // holds and nothing references; `frame` is the caller's bytes.
        let Some(desc) = (unsafe { copy_into_free(&self.umem, &mut self.free, frame) }) else {
            self.rings.stats.tx_dropped += 1;
            return false;
        };
        self.staged.push(desc);
        if self.staged.len() >= BATCH {
            // A full batch goes at once; errors surface on the next flush.
            let _ = self.flush();
        }
        true
    }

    /// Hands the staged frames to the kernel, waking it if it asks to be;
    /// frames the tx ring cannot take (it is full) are dropped, counted,
    /// and returned to the free list. Returns the frames sent.
    pub fn flush(&mut self) -> Result<usize, XskError> {
        // SAFETY: staged frames are ours (taken off the free list) and
        // written by `stage`.
        unsafe { self.rings.transmit(&mut self.staged, &mut self.free) }
    }

    /// Transmits one frame at once (`stage` and `flush`).
    pub fn send(&mut self, frame: &[u8]) -> Result<bool, XskError> {
        if !self.stage(frame) {
            return Ok(false);
        }
        Ok(self.flush()? > 0)
    }

    /// Returns transmitted frames from the completion ring to the free
    /// list; how many came back.
    pub fn reclaim(&mut self) -> usize {
        self.rings.reclaim(&mut self.batch, &mut self.free)
    }

    /// Frames waiting on the rx ring (without consuming them).
    pub fn rx_pending(&mut self) -> bool {
        self.rings.rx_pending()
    }

    /// Turns on socket busy polling (see `BusyPoll`).
    pub fn set_busy_poll(&self, busy_poll: BusyPoll) -> Result<(), XskError> {
        self.rings.set_busy_poll(busy_poll)
    }

    /// A non-blocking receive call, which runs the device's NAPI when busy
    /// polling is on.
    pub fn kick_rx(&self) {
        self.rings.kick_rx();
    }
}

/// Sleeps until a frame waits on any of `ports`' rx rings or `timeout_ms`
/// passes (an interrupting signal ends the wait early). Returns whether a
/// port is readable.
pub fn wait_readable(ports: &[XskPort], timeout_ms: u16) -> Result<bool, XskError> {
    wait_any(ports.iter().map(|port| &port.rings), timeout_ms)
}
