//! An AF_XDP port: one UMEM and one socket bound to one queue of an
//! interface, registered in the port's XDP program (`crate::bpf`) so that
//! the program redirects that queue's frames to it. A worker owns one
//! `XskPort` per switch port (its own queue on each), so no two threads
//! ever touch the same rings.
//!
//! Receiving never blocks (`receive_batch`); a worker with nothing to do
//! sleeps in `wait_readable` on all its ports at once. Transmission is
//! batched: frames are staged into UMEM frames and handed to the kernel
//! with one wakeup per port per round (`flush`); the sockets use
//! need_wakeup, so the wakeup syscall is skipped when the kernel does not
//! ask for it.
//!
//! Frame ownership is the invariant every `unsafe` block here relies on: a
//! UMEM frame descriptor is, at any moment, in exactly one place: the free
//! list (ours, for transmitting), the fill ring (lent to the kernel for
//! receiving), the rx ring (filled, back to us), or the tx ring (until the
//! completion ring returns it to the free list). Received frames go back to
//! the fill ring after the caller has seen them, so no frame leaks.
//!
//! This is one of the two modules allowed `unsafe` (xsk-rs's ring and
//! frame accessors are `unsafe`); each block says why it is sound.
#![allow(unsafe_code)]

use std::io::Write;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::bpf::{BpfError, SocketRegistry, XdpPort};

/// Why an AF_XDP port could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("interface {0}: not found")]
    NoInterface(String),
    #[error("interface {0}: bad name")]
    BadName(String),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("creating the UMEM: {0}")]
    Umem(String),
    #[error("creating the AF_XDP socket on {ifname}: {message}")]
    Socket { ifname: String, message: String },
    #[error("the socket came without fill and completion rings")]
    NoRings,
    #[error("interface {ifname} has no queue {queue}")]
    NoQueue { ifname: String, queue: u32 },
    #[error("rx/tx on {ifname}: {source}")]
    Io {
        ifname: String,
        source: std::io::Error,
    },
}

/// Counters of one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx: u64,
    pub tx: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames not sent: no free UMEM frame, or longer than a frame.
    pub tx_dropped: u64,
    /// Wakeup syscalls made for transmission.
    pub tx_wakeups: u64,
}

/// Where each of a port's UMEM frames is, read from the rings themselves
/// (not from our own bookkeeping), so a frame we lost track of shows up as
/// a difference between `total` and the sum of the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCensus {
    pub total: usize,
    /// Ours, free for transmitting (including staged, not yet flushed).
    pub free: usize,
    /// Lent to the kernel for receiving (fill ring).
    pub fill: usize,
    /// Received, not yet consumed (rx ring).
    pub rx: usize,
    /// Handed to the kernel for transmitting (tx ring).
    pub tx: usize,
    /// Transmitted, not yet reclaimed (completion ring).
    pub completed: usize,
}

impl FrameCensus {
    /// Frames in none of the places (0 unless a frame leaked; a frame the
    /// kernel is moving between two rings at this instant also shows up
    /// here, so read it when the port is quiet).
    pub fn missing(&self) -> isize {
        self.total as isize - (self.free + self.fill + self.rx + self.tx + self.completed) as isize
    }
}

/// One interface queue, receiving and transmitting through AF_XDP.
pub struct XskPort {
    // Field order is drop order: the rings go before the UMEM they map.
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    comp: CompQueue,
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
    ifname: String,
    queue: u32,
    total_frames: usize,
    ring_sizes: RingSizes,
    stats: XskStats,
}

#[derive(Clone, Copy, Debug)]
struct RingSizes {
    fill: u32,
    tx: u32,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("free_frames", &self.free.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Frames the rx and tx batches handle at once.
pub const BATCH: usize = 64;

/// Most wakeups one flush makes to drain the tx ring (each transmits up
/// to 32 frames in copy mode; a full batch needs 2, and some slack covers
/// frames left from an earlier flush).
const MAX_WAKEUPS: usize = 4;

/// The shortest frame worth sending: an Ethernet header.
const MIN_FRAME: usize = 14;

/// The interface's index, or an error naming it.
pub fn ifindex(ifname: &str) -> Result<i32, XskError> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| XskError::NoInterface(ifname.to_string()))
}

/// How many receive queues the interface has (1 if sysfs does not say).
pub fn rx_queues(ifname: &str) -> Result<u32, XskError> {
    ifindex(ifname)?;
    let count = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1);
    Ok(count.max(1) as u32)
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
        if queue >= rx_queues(ifname)? {
            return Err(XskError::NoQueue {
                ifname: ifname.to_string(),
                queue,
            });
        }
        let count =
            NonZeroU32::new(frames.max(2)).ok_or_else(|| XskError::Umem("no frames".into()))?;
        let umem_config = UmemConfig::default();
        let ring_sizes = RingSizes {
            fill: umem_config.fill_queue_size().get(),
            tx: SocketConfig::default().tx_queue_size().get(),
        };
        let (umem, mut descs) =
            Umem::new(umem_config, count, false).map_err(|e| XskError::Umem(e.to_string()))?;
        let interface = ifname
            .parse()
            .map_err(|_| XskError::BadName(ifname.to_string()))?;
        // Our own XDP program redirects to the socket: libxdp must not load
        // its default program (it would also outlive the socket).
        let config = SocketConfig::builder()
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        // SAFETY: the socket's rings map `umem`, which `XskPort` owns and
        // drops after the rings (field order), so the mapping outlives them.
        let (tx, rx, rings) =
            unsafe { Socket::new(config, &umem, &interface, queue) }.map_err(|e| {
                XskError::Socket {
                    ifname: ifname.to_string(),
                    message: e.to_string(),
                }
            })?;
        let (mut fill, comp) = rings.ok_or(XskError::NoRings)?;
        registry.register(queue, rx.fd().as_raw_fd())?;
        let total_frames = descs.len();
        let free = descs.split_off(descs.len() / 2);
        // SAFETY: `descs` are frames of this UMEM that nothing else holds;
        // lending them to the kernel through the fill ring is their purpose.
        let lent = unsafe { fill.produce(&descs) };
        let mut port = Self {
            tx,
            rx,
            fill,
            comp,
            free,
            staged: Vec::with_capacity(BATCH),
            batch: vec![FrameDesc::default(); BATCH],
            umem,
            xdp: None,
            ifname: ifname.to_string(),
            queue,
            total_frames,
            ring_sizes,
            stats: XskStats::default(),
        };
        // Any the fill ring did not take stay ours, for transmitting.
        port.free.extend_from_slice(&descs[lent..]);
        Ok(port)
    }

    pub fn stats(&self) -> XskStats {
        self.stats
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn queue(&self) -> u32 {
        self.queue
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
        FrameCensus {
            total: self.total_frames,
            free: self.free.len() + self.staged.len(),
            fill: (self.ring_sizes.fill - self.fill.nb_free_exact()) as usize,
            rx: self.rx.nb_avail_exact() as usize,
            tx: (self.ring_sizes.tx - self.tx.nb_free_exact()) as usize,
            completed: self.comp.nb_avail_exact() as usize,
        }
    }

    /// Receives up to one batch, waiting up to `timeout_ms` for it (see
    /// `receive_batch`).
    pub fn receive(
        &mut self,
        timeout_ms: i32,
        visit: impl FnMut(&[u8]),
    ) -> Result<usize, XskError> {
        if self.rx.nb_avail(1) == 0 && timeout_ms != 0 {
            self.rx.poll(timeout_ms).map_err(|source| XskError::Io {
                ifname: self.ifname.clone(),
                source,
            })?;
        }
        Ok(self.receive_batch(visit))
    }

    /// Receives up to one batch without waiting; calls `visit` with each
    /// frame's bytes, then lends the frames back to the kernel.
    pub fn receive_batch(&mut self, mut visit: impl FnMut(&[u8])) -> usize {
        // SAFETY: `batch` is scratch: consuming writes descriptors of frames
        // the kernel filled and hands them to us.
        let received = unsafe { self.rx.consume(&mut self.batch) };
        if received == 0 {
            return 0;
        }
        for desc in &self.batch[..received] {
            // SAFETY: the frame came off our rx ring, so it is ours until we
            // lend it back below; nothing writes it meanwhile.
            let data = unsafe { self.umem.data(desc) };
            self.stats.rx_bytes += data.contents().len() as u64;
            visit(data.contents());
        }
        // SAFETY: the frames were ours (just received) and are no longer
        // borrowed: lend them back to the kernel.
        let lent = unsafe { self.fill.produce(&self.batch[..received]) };
        // The fill ring has room for every frame we own, so this is empty;
        // were it not, the frames stay ours (for tx) rather than leak.
        self.free.extend_from_slice(&self.batch[lent..received]);
        if self.fill.needs_wakeup() {
            // Best effort: a failed wakeup is retried on the next batch.
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
        self.stats.rx += received as u64;
        received
    }

    /// Copies a frame into a free UMEM frame and stages it for the next
    /// `flush`; false (and counted) if it is shorter than an Ethernet
    /// header, no frame is free, or it does not fit a UMEM frame.
    pub fn stage(&mut self, frame: &[u8]) -> bool {
        if frame.len() < MIN_FRAME {
            self.stats.tx_dropped += 1;
            return false;
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.free.pop() else {
            self.stats.tx_dropped += 1;
            return false;
        };
        // SAFETY: `desc` came off our free list: no ring holds it and no
        // other reference to its data exists.
        let written = unsafe { self.umem.data_mut(&mut desc) }
            .cursor()
            .write_all(frame);
        if written.is_err() {
            self.free.push(desc);
            self.stats.tx_dropped += 1;
            return false;
        }
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
        if self.staged.is_empty() {
            return Ok(0);
        }
        // SAFETY: staged frames are ours and written; the tx ring takes
        // them until the completion ring returns them (`reclaim`).
        let sent = unsafe { self.tx.produce(&self.staged) };
        let unsent = self.staged.len() - sent;
        self.stats.tx_bytes += self.staged[..sent]
            .iter()
            .map(|desc| desc.lengths().data() as u64)
            .sum::<u64>();
        self.free.extend_from_slice(&self.staged[sent..]);
        self.staged.clear();
        self.stats.tx += sent as u64;
        self.stats.tx_dropped += unsent as u64;
        // In copy mode one wakeup transmits at most 32 frames (the
        // kernel's TX_BATCH_SIZE), so wake it until the ring is drained:
        // otherwise the ring, then the free list, fills up and frames are
        // refused (measured: half of them, under overload).
        for _ in 0..MAX_WAKEUPS {
            if self.tx_in_ring() == 0 || !self.tx.needs_wakeup() {
                break;
            }
            self.stats.tx_wakeups += 1;
            self.tx.wakeup().map_err(|source| XskError::Io {
                ifname: self.ifname.clone(),
                source,
            })?;
        }
        Ok(sent)
    }

    /// Frames handed to the kernel that it has not taken off the tx ring.
    fn tx_in_ring(&mut self) -> u32 {
        self.ring_sizes.tx - self.tx.nb_free_exact()
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
        let mut total = 0;
        loop {
            // SAFETY: completed descriptors are frames the kernel has
            // finished transmitting; they are ours again.
            let done = unsafe { self.comp.consume(&mut self.batch) };
            self.free.extend_from_slice(&self.batch[..done]);
            total += done;
            if done < self.batch.len() {
                return total;
            }
        }
    }

    /// Frames waiting on the rx ring (without consuming them).
    pub fn rx_pending(&mut self) -> bool {
        self.rx.nb_avail(1) > 0
    }
}

/// Sleeps until a frame waits on any of `ports`' rx rings or `timeout_ms`
/// passes (an interrupting signal ends the wait early). Returns whether a
/// port is readable.
pub fn wait_readable(ports: &[XskPort], timeout_ms: u16) -> Result<bool, XskError> {
    // Allocates: this is the idle path, taken only when there is no traffic.
    let mut fds: Vec<PollFd<'_>> = ports
        .iter()
        .map(|port| {
            // SAFETY: the descriptor belongs to the port's socket, which
            // lives as long as the borrow of `ports` this fd is tied to.
            let fd = unsafe { BorrowedFd::borrow_raw(port.rx.fd().as_raw_fd()) };
            PollFd::new(fd, PollFlags::POLLIN)
        })
        .collect();
    match nix::poll::poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(ready) => Ok(ready > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(errno) => Err(XskError::Io {
            ifname: ports.first().map(|p| p.ifname.clone()).unwrap_or_default(),
            source: errno.into(),
        }),
    }
}
