//! AF_XDP ports: sockets bound to one queue of an interface, registered in
//! the port's XDP program (`crate::bpf`) so that the program redirects
//! that queue's frames to them. A worker owns one socket per switch port
//! (its own queue on each), so no two threads ever touch the same rings.
//!
//! Two ways to move frames between ports are built on one socket type
//! (`rings`):
//! - `PortGroup` (`group`), the switch's: the sockets of a worker share one
//!   UMEM. In copy mode a forwarded frame is copied into a frame of the
//!   group's transmit pool, written and sent on the worker's core (the
//!   kernel's own copy out of it then hits the cache); a frame goes to
//!   another port's tx ring as it is when the pool is empty or the
//!   sockets are zero-copy. Floods copy, one frame per extra port.
//! - `XskPort` (`port`): a UMEM per socket; frames are copied from the
//!   receiving port's UMEM into the sending port's. The bare forwarder of
//!   the throughput benchmark uses it, as the in-run ceiling of the copy
//!   design (docs/performance-notes.md compares the two).
//!
//! Receiving never blocks; a worker with nothing to do sleeps in poll() on
//! all its sockets at once. Transmission is batched, with one wakeup per
//! port per round; the sockets use need_wakeup, so the wakeup syscall is
//! skipped when the kernel does not ask for it.
//!
//! Frame ownership is the invariant every `unsafe` block here relies on: a
//! UMEM frame descriptor is, at any moment, in exactly one place: a free
//! list or transmit pool (ours, for transmitting or lending), the fill
//! ring (lent to the kernel for receiving), the rx ring (filled, back to
//! us), the frames of the current round (received, not yet passed on), a
//! staging list, or a tx ring (until the completion ring returns it to
//! the pool or a free list). A census (`FrameCensus`) counts every place
//! from the rings themselves, so a leak shows up.
//!
//! This is one of the two modules allowed `unsafe` (xsk-rs's ring and
//! frame accessors are `unsafe`); each block says why it is sound.
#![allow(unsafe_code)]

mod group;
mod port;
mod rings;

pub use group::{Disposition, PortGroup};
pub use port::{wait_readable, XskPort};
pub use rings::BusyPoll;

use crate::bpf::BpfError;

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

/// Frames the rx and tx batches handle at once.
pub const BATCH: usize = 64;

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
