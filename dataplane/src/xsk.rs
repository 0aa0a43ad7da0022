//! An AF_XDP port: one UMEM and one socket bound to queue 0 of an
//! interface, registered in the port's XDP program (`crate::bpf`) so that
//! the program redirects the interface's frames to it.
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
use std::os::fd::AsRawFd;

use xsk_rs::config::{LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::bpf::{BpfError, XdpPort};

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
    /// Frames not sent: no free UMEM frame, or longer than a frame.
    pub tx_dropped: u64,
}

/// One interface, receiving and transmitting through AF_XDP.
pub struct XskPort {
    // Field order is drop order: the rings go before the UMEM they map.
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    comp: CompQueue,
    /// Frames we own and may transmit from.
    free: Vec<FrameDesc>,
    /// Scratch for rx and completion batches (no per-batch allocation).
    batch: Vec<FrameDesc>,
    umem: Umem,
    xdp: XdpPort,
    ifname: String,
    stats: XskStats,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("ifname", &self.ifname)
            .field("free_frames", &self.free.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Frames the rx batch handles at once.
pub const BATCH: usize = 64;

/// The shortest frame worth sending: an Ethernet header.
const MIN_FRAME: usize = 14;

impl XskPort {
    /// Attaches the XDP program to `ifname`, creates a UMEM of `frames`
    /// frames (half lent to the kernel for receiving, half kept for
    /// transmitting) and binds a socket to queue 0.
    pub fn open(ifname: &str, frames: u32) -> Result<Self, XskError> {
        let ifindex = std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| XskError::NoInterface(ifname.to_string()))?;
        let xdp = XdpPort::attach(ifindex)?;
        let count =
            NonZeroU32::new(frames.max(2)).ok_or_else(|| XskError::Umem("no frames".into()))?;
        let (umem, mut descs) = Umem::new(UmemConfig::default(), count, false)
            .map_err(|e| XskError::Umem(e.to_string()))?;
        let interface = ifname
            .parse()
            .map_err(|_| XskError::BadName(ifname.to_string()))?;
        // Our own XDP program redirects to the socket: libxdp must not load
        // its default program (it would also outlive the socket).
        let config = SocketConfig::builder()
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .build();
        // SAFETY: the socket's rings map `umem`, which `XskPort` owns and
        // drops after the rings (field order), so the mapping outlives them.
        let (tx, rx, rings) =
            unsafe { Socket::new(config, &umem, &interface, 0) }.map_err(|e| XskError::Socket {
                ifname: ifname.to_string(),
                message: e.to_string(),
            })?;
        let (mut fill, comp) = rings.ok_or(XskError::NoRings)?;
        xdp.register_socket(0, rx.fd().as_raw_fd())?;
        let free = descs.split_off(descs.len() / 2);
        // SAFETY: `descs` are frames of this UMEM that nothing else holds;
        // lending them to the kernel through the fill ring is their purpose.
        let lent = unsafe { fill.produce(&descs) };
        descs.truncate(lent); // any not accepted are simply never used
        Ok(Self {
            tx,
            rx,
            fill,
            comp,
            free,
            batch: vec![FrameDesc::default(); BATCH],
            umem,
            xdp,
            ifname: ifname.to_string(),
            stats: XskStats::default(),
        })
    }

    pub fn stats(&self) -> XskStats {
        self.stats
    }

    /// The XDP program on this port (counters, quarantine).
    pub fn xdp(&self) -> &XdpPort {
        &self.xdp
    }

    /// Frames currently free for transmitting.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Receives up to one batch, waiting up to `timeout_ms`; calls `visit`
    /// with each frame's bytes, then lends the frames back to the kernel.
    pub fn receive(
        &mut self,
        timeout_ms: i32,
        mut visit: impl FnMut(&[u8]),
    ) -> Result<usize, XskError> {
        // SAFETY: `batch` is scratch: consuming writes descriptors of frames
        // the kernel filled and hands them to us.
        let received =
            unsafe { self.rx.poll_and_consume(&mut self.batch, timeout_ms) }.map_err(|e| {
                XskError::Io {
                    ifname: self.ifname.clone(),
                    source: e,
                }
            })?;
        for desc in &self.batch[..received] {
            // SAFETY: the frame came off our rx ring, so it is ours until we
            // lend it back below; nothing writes it meanwhile.
            let data = unsafe { self.umem.data(desc) };
            visit(data.contents());
        }
        // SAFETY: the frames were ours (just received) and are no longer
        // borrowed: lend them back to the kernel.
        let lent = unsafe { self.fill.produce(&self.batch[..received]) };
        // The fill ring has room for every frame we own, so this is empty;
        // were it not, the frames stay ours (for tx) rather than leak.
        self.free.extend_from_slice(&self.batch[lent..received]);
        self.stats.rx += received as u64;
        Ok(received)
    }

    /// Transmits one frame; false (and counted) if it is shorter than an
    /// Ethernet header, no frame is free, or it does not fit a UMEM frame.
    pub fn send(&mut self, frame: &[u8]) -> Result<bool, XskError> {
        self.reclaim();
        if frame.len() < MIN_FRAME {
            self.stats.tx_dropped += 1;
            return Ok(false);
        }
        let Some(mut desc) = self.free.pop() else {
            self.stats.tx_dropped += 1;
            return Ok(false);
        };
        // SAFETY: `desc` came off our free list: no ring holds it and no
        // other reference to its data exists.
        let written = unsafe { self.umem.data_mut(&mut desc) }
            .cursor()
            .write_all(frame);
        if written.is_err() {
            self.free.push(desc);
            self.stats.tx_dropped += 1;
            return Ok(false);
        }
        // SAFETY: the frame is ours and written; the tx ring takes it until
        // the completion ring returns it (`reclaim_completed`).
        let sent =
            unsafe { self.tx.produce_and_wakeup(std::slice::from_ref(&desc)) }.map_err(|e| {
                XskError::Io {
                    ifname: self.ifname.clone(),
                    source: e,
                }
            })?;
        if sent == 0 {
            self.free.push(desc);
            self.stats.tx_dropped += 1;
            return Ok(false);
        }
        self.stats.tx += 1;
        Ok(true)
    }

    /// Returns transmitted frames from the completion ring to the free
    /// list; how many came back.
    pub fn reclaim(&mut self) -> usize {
        // SAFETY: completed descriptors are frames the kernel has finished
        // transmitting; they are ours again.
        let done = unsafe { self.comp.consume(&mut self.batch) };
        self.free.extend_from_slice(&self.batch[..done]);
        done
    }
}
