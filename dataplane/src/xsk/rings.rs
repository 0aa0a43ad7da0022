//! One AF_XDP socket and its four rings (rx, tx, fill, completion), bound
//! to one queue of one interface and registered in that port's XDP
//! program. Both frame-moving designs are built on it: `XskPort` (a UMEM
//! per socket, frames copied between ports) and `PortGroup` (one UMEM
//! shared by the sockets of a worker, frames handed from one socket's rx
//! ring to another's tx ring).
//!
//! The rings move frame descriptors; which descriptors a caller may pass
//! is the ownership invariant of the module header, so the operations that
//! hand frames to the kernel are `unsafe fn`s whose contract says so.

use std::io::Write;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{rx_queues, XskError, XskStats};
use crate::bpf::SocketRegistry;

/// Most wakeups one transmit makes to drain the tx ring (each transmits up
/// to 32 frames in copy mode; a full batch needs 2, and some slack covers
/// frames left from an earlier transmit).
const MAX_WAKEUPS: usize = 4;

/// A UMEM of `frames` frames (at least 2) with the default layout, and its
/// frames' descriptors.
pub(super) fn new_umem(frames: u32) -> Result<(Umem, Vec<FrameDesc>), XskError> {
    let count = NonZeroU32::new(frames.max(2)).ok_or_else(|| XskError::Umem("no frames".into()))?;
    Umem::new(UmemConfig::default(), count, false).map_err(|e| XskError::Umem(e.to_string()))
}

/// Copies `bytes` into a frame taken off `free` and returns that frame;
/// `None` if no frame is free or `bytes` does not fit one (the frame then
/// goes back on `free`).
///
/// # Safety
/// Every frame on `free` is a frame of `umem` that we own: on no ring, with
/// no reference to its data alive. `bytes` may be another frame of ours,
/// not one on `free`.
pub(super) unsafe fn copy_into_free(
    umem: &Umem,
    free: &mut Vec<FrameDesc>,
    bytes: &[u8],
) -> Option<FrameDesc> {
    let mut desc = free.pop()?;
    // SAFETY: `desc` came off `free`: ours, on no ring, and unaliased (this
    // function's contract), so writing its data races with nothing.
    let written = unsafe { umem.data_mut(&mut desc) }
        .cursor()
        .write_all(bytes);
    if written.is_err() {
        free.push(desc);
        return None;
    }
    Some(desc)
}

/// The socket's rings, with the counters of what went through them.
pub(super) struct SocketRings {
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    comp: CompQueue,
    fill_size: u32,
    tx_size: u32,
    pub ifname: String,
    pub queue: u32,
    pub stats: XskStats,
}

impl SocketRings {
    /// Binds a socket on `umem` to `queue` of `ifname` and registers it in
    /// the port's XDP program. A UMEM already bound to other sockets is
    /// shared (each (interface, queue) gets its own fill and completion
    /// rings).
    pub fn open(
        ifname: &str,
        queue: u32,
        umem: &Umem,
        registry: &SocketRegistry,
    ) -> Result<Self, XskError> {
        if queue >= rx_queues(ifname)? {
            return Err(XskError::NoQueue {
                ifname: ifname.to_string(),
                queue,
            });
        }
        let interface = ifname
            .parse()
            .map_err(|_| XskError::BadName(ifname.to_string()))?;
        // Our own XDP program redirects to the socket: libxdp must not load
        // its default program (it would also outlive the socket).
        let config = SocketConfig::builder()
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        // SAFETY: the rings map `umem`; the socket holds a handle on the
        // UMEM (xsk-rs keeps it alive), and the owners of `SocketRings`
        // also drop the rings before their own UMEM handle (field order).
        let (tx, rx, rings) =
            unsafe { Socket::new(config, umem, &interface, queue) }.map_err(|e| {
                XskError::Socket {
                    ifname: ifname.to_string(),
                    message: e.to_string(),
                }
            })?;
        let (fill, comp) = rings.ok_or(XskError::NoRings)?;
        registry.register(queue, rx.fd().as_raw_fd())?;
        Ok(Self {
            tx,
            rx,
            fill,
            comp,
            fill_size: UmemConfig::default().fill_queue_size().get(),
            tx_size: SocketConfig::default().tx_queue_size().get(),
            ifname: ifname.to_string(),
            queue,
            stats: XskStats::default(),
        })
    }

    /// Takes up to `into.len()` received frames off the rx ring; they are
    /// the caller's until it lends them back or transmits them.
    pub fn receive(&mut self, into: &mut [FrameDesc]) -> usize {
        // SAFETY: `into` is scratch: consuming writes descriptors of frames
        // the kernel filled and hands them to us.
        let received = unsafe { self.rx.consume(into) };
        self.stats.rx += received as u64;
        self.stats.rx_bytes += into[..received]
            .iter()
            .map(|desc| desc.lengths().data() as u64)
            .sum::<u64>();
        received
    }

    /// Lends frames to the kernel for receiving, waking it if it asks to
    /// be; returns how many the fill ring took (the rest stay the
    /// caller's).
    ///
    /// # Safety
    ///
    /// `descs` are frames of this socket's UMEM that the caller owns (on
    /// no ring, no reference to their data alive).
    pub unsafe fn lend(&mut self, descs: &[FrameDesc]) -> usize {
        // SAFETY: the caller owns the frames (this function's contract).
        let lent = unsafe { self.fill.produce(descs) };
        if self.fill.needs_wakeup() {
            // Best effort: a failed wakeup is retried on the next lend.
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
        lent
    }

    /// Hands `staged` to the kernel for transmitting and empties it; frames
    /// the tx ring cannot take (it is full) go to `free`, counted as
    /// dropped. Returns the frames sent.
    ///
    /// # Safety
    ///
    /// `staged` are written frames of this socket's UMEM that the caller
    /// owns (as for `lend`).
    pub unsafe fn transmit(
        &mut self,
        staged: &mut Vec<FrameDesc>,
        free: &mut Vec<FrameDesc>,
    ) -> Result<usize, XskError> {
        if staged.is_empty() {
            return Ok(0);
        }
        // SAFETY: the caller owns the written frames (this function's
        // contract); the tx ring takes them until the completion ring
        // returns them (`reclaim`).
        let sent = unsafe { self.tx.produce(staged) };
        self.stats.tx_bytes += staged[..sent]
            .iter()
            .map(|desc| desc.lengths().data() as u64)
            .sum::<u64>();
        self.stats.tx += sent as u64;
        self.stats.tx_dropped += (staged.len() - sent) as u64;
        free.extend_from_slice(&staged[sent..]);
        staged.clear();
        // In copy mode one wakeup transmits at most 32 frames (the
        // kernel's TX_BATCH_SIZE), so wake it until the ring is drained:
        // otherwise the ring, then the free frames, fill up and frames are
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

    /// Moves transmitted frames from the completion ring to `free`, using
    /// `scratch` as the batch; how many came back.
    pub fn reclaim(&mut self, scratch: &mut [FrameDesc], free: &mut Vec<FrameDesc>) -> usize {
        let mut total = 0;
        loop {
            // SAFETY: completed descriptors are frames the kernel has
            // finished transmitting; they are the caller's again.
            let done = unsafe { self.comp.consume(scratch) };
            free.extend_from_slice(&scratch[..done]);
            total += done;
            if done < scratch.len() {
                return total;
            }
        }
    }

    /// Frames handed to the kernel that it has not taken off the tx ring.
    pub fn tx_in_ring(&mut self) -> u32 {
        self.tx_size - self.tx.nb_free_exact()
    }

    /// Frames lent to the kernel for receiving (on the fill ring).
    pub fn fill_in_ring(&mut self) -> u32 {
        self.fill_size - self.fill.nb_free_exact()
    }

    /// Places of frames on the rings, for a census: (fill, rx, tx,
    /// completed).
    pub fn on_rings(&mut self) -> (usize, usize, usize, usize) {
        (
            self.fill_in_ring() as usize,
            self.rx.nb_avail_exact() as usize,
            self.tx_in_ring() as usize,
            self.comp.nb_avail_exact() as usize,
        )
    }

    /// The fill ring's capacity.
    pub fn fill_size(&self) -> u32 {
        self.fill_size
    }

    /// Frames waiting on the rx ring (without consuming them).
    pub fn rx_pending(&mut self) -> bool {
        self.rx.nb_avail(1) > 0
    }

    /// Waits up to `timeout_ms` for a frame on this socket.
    pub fn poll(&mut self, timeout_ms: i32) -> Result<(), XskError> {
        self.rx
            .poll(timeout_ms)
            .map(|_| ())
            .map_err(|source| XskError::Io {
                ifname: self.ifname.clone(),
                source,
            })
    }
}

/// Socket busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`,
/// `SO_BUSY_POLL_BUDGET`): the application's receive and send calls run
/// the device's NAPI themselves, up to `budget` frames, spinning up to
/// `usecs` for them, and the kernel prefers that to its own softirq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyPoll {
    pub usecs: u32,
    pub budget: u16,
}

impl SocketRings {
    /// Turns on busy polling for this socket.
    pub fn set_busy_poll(&self, busy_poll: BusyPoll) -> Result<(), XskError> {
        let fd = self.rx.fd().as_raw_fd();
        let options = [
            (libc::SO_PREFER_BUSY_POLL, 1),
            (libc::SO_BUSY_POLL, busy_poll.usecs as libc::c_int),
            (
                libc::SO_BUSY_POLL_BUDGET,
                libc::c_int::from(busy_poll.budget),
            ),
        ];
        for (option, value) in options {
            // SAFETY: `fd` is this socket's open descriptor; the value is a
            // live c_int and the length given is its size.
            let result = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    std::ptr::from_ref(&value).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if result != 0 {
                return Err(XskError::Io {
                    ifname: self.ifname.clone(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }

    /// Whether the kernel bound this socket in zero-copy mode (the driver
    /// reads and writes the UMEM itself) rather than copy mode (veth, and
    /// drivers without AF_XDP support: the kernel copies every frame in
    /// and out).
    pub fn is_zero_copy(&self) -> Result<bool, XskError> {
        let mut options = libc::xdp_options { flags: 0 };
        let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: `options` and `len` are live locals of the sizes given;
        // the kernel writes at most `len` bytes into `options`.
        let result = unsafe {
            libc::getsockopt(
                self.rx.fd().as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                std::ptr::addr_of_mut!(options).cast(),
                &mut len,
            )
        };
        if result != 0 {
            return Err(XskError::Io {
                ifname: self.ifname.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// A non-blocking receive call: with busy polling on, it runs the
    /// device's NAPI (what fills the rx ring) from this thread.
    pub fn kick_rx(&self) {
        let fd = self.rx.fd().as_raw_fd();
        // SAFETY: a zero-length receive into a null buffer on this socket's
        // open descriptor: nothing is written to memory. Its result (0 or
        // EAGAIN) does not matter, only the NAPI run it triggers.
        let _ = unsafe {
            libc::recvfrom(
                fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

/// Sleeps until a frame waits on any of `sockets`' rx rings or
/// `timeout_ms` passes (an interrupting signal ends the wait early).
/// Returns whether a socket is readable.
pub(super) fn wait_any<'a>(
    sockets: impl Iterator<Item = &'a SocketRings>,
    timeout_ms: u16,
) -> Result<bool, XskError> {
    let mut first_ifname = String::new();
    // Allocates: this is the idle path, taken only when there is no traffic.
    let mut fds: Vec<PollFd<'_>> = sockets
        .map(|socket| {
            if first_ifname.is_empty() {
                first_ifname.clone_from(&socket.ifname);
            }
            // SAFETY: the descriptor belongs to the socket, which lives as
            // long as the borrow of `sockets` this fd is tied to.
            let fd = unsafe { BorrowedFd::borrow_raw(socket.rx.fd().as_raw_fd()) };
            PollFd::new(fd, PollFlags::POLLIN)
        })
        .collect();
    match nix::poll::poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(ready) => Ok(ready > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(errno) => Err(XskError::Io {
            ifname: first_ifname,
            source: errno.into(),
        }),
    }
}
