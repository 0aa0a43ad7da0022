//! Loads the XDP program of `bpf/microseg_xdp.bpf.c` onto a switch port,
//! updates its quarantine map and reads its per-CPU counters.
//!
//! The program counts every frame, drops frames to or from a quarantined
//! address, forwards frames of flows installed in its fast path straight
//! to their egress port (`fast`, driven by `crate::offload`), and
//! redirects the rest to the port's AF_XDP socket (dropping them while
//! none is bound: fail closed). It is attached in native
//! (driver) mode where the driver supports it (veth does) and in generic
//! mode otherwise; the mode chosen is reported. Attaching replaces any
//! program already on the interface, such as one left by a crashed run;
//! dropping an `XdpPort` detaches it.
//!
//! This is one of the two modules allowed `unsafe`, and only for the
//! generated skeleton (libbpf-cargo's code, included below); the loader
//! itself is safe code.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject, Xdp, XdpFlags};

#[allow(
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::restriction,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    missing_debug_implementations,
    rust_2018_idioms
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/microseg_xdp.skel.rs"));
}

mod fast;
mod fast4;

pub use fast::{FastCounters, FastKey, FastPath, FastRoute, GenerationSwitch};

use skel::{MicrosegXdpSkel, MicrosegXdpSkelBuilder};

/// Counter indexes, as `bpf/microseg_xdp.h` defines them.
const COUNTERS: usize = 7;

/// Most slots of a port's IPv4 fast-path table (64 bytes each).
pub use fast4::SLOTS_MAX as FAST4_SLOTS_MAX;

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (veth and most NICs): the fast path.
    Native,
    /// In the generic (skb) path: works everywhere, slower.
    Generic,
}

/// Why loading, attaching or a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loading the XDP program: {0}")]
    Load(libbpf_rs::Error),
    #[error(
        "attaching XDP to interface {ifindex}: native mode: {native}; generic mode: {generic}"
    )]
    Attach {
        ifindex: i32,
        native: libbpf_rs::Error,
        generic: libbpf_rs::Error,
    },
    #[error("quarantine map: {0}")]
    Quarantine(libbpf_rs::Error),
    #[error("registering the AF_XDP socket: {0}")]
    Socket(libbpf_rs::Error),
    #[error("reading counters: {0}")]
    Counters(libbpf_rs::Error),
    #[error("fast path map: {0}")]
    FastPath(libbpf_rs::Error),
    #[error("running the XDP program on a frame: {0}")]
    TestRun(libbpf_rs::Error),
    #[error("the fast path of interface {ifindex} has a writer already (handed out once)")]
    FastPathTaken { ifindex: i32 },
}

/// Sums of the program's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Every frame seen.
    pub rx: u64,
    /// Dropped: source or destination quarantined.
    pub quarantine_drop: u64,
    /// Handed to the port's AF_XDP socket.
    pub redirect: u64,
    /// Dropped: no AF_XDP socket bound to the queue.
    pub no_socket_drop: u64,
    /// Too short to check against the quarantine map (sent on).
    pub truncated: u64,
    /// Forwarded by the fast path, straight to the egress port.
    pub fast_forward: u64,
    /// Of a fast-path flow installed by an older policy generation: sent
    /// to userspace to be judged again.
    pub fast_stale: u64,
}

/// The XDP program attached to one interface.
pub struct XdpPort {
    skel: MicrosegXdpSkel<'static>,
    ifindex: i32,
    mode: AttachMode,
    /// The kernel's id of our program, read back after attaching.
    program_id: u32,
    /// The keys this port put in its quarantine map. The flag
    /// `quarantine_any` is cleared only when none is left; counting them
    /// here, not by reading the map, because libbpf-rs's key iterator ends
    /// on any error, which would read as an empty map and turn the
    /// quarantine off. The lock also serializes changes of the map with
    /// the flag, so that a release emptying the map cannot clear the flag
    /// of an address being added at the same time.
    quarantine_held: Mutex<HashSet<[u8; 16]>>,
    /// Set once `fast_path` has handed out the flow tables' writer.
    fast_path_taken: AtomicBool,
}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort")
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .finish()
    }
}

/// The quarantine map's key: IPv4 as IPv4-mapped IPv6.
fn quarantine_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl XdpPort {
    /// Loads a fresh copy of the program and attaches it to `ifindex`,
    /// natively if the driver allows, else in generic mode.
    /// The fast path is off: the program looks no flow up.
    pub fn attach(ifindex: i32) -> Result<Self, BpfError> {
        Self::attach_sized(ifindex, 0)
    }

    /// As `attach`, with the fast path on and room for `fast_flows` flows
    /// (0: off). The IPv4 table gets that many slots rounded up to a power
    /// of two, at most `FAST4_SLOTS_MAX`; what finds no room there goes to
    /// the hash map, which holds up to `fast_flows`.
    pub fn attach_sized(ifindex: i32, fast_flows: u32) -> Result<Self, BpfError> {
        Self::attach_fast(ifindex, fast_flows, fast_flows)
    }

    /// As `attach_sized`, with the IPv4 table's slots given (rounded up to
    /// a power of two, at most `FAST4_SLOTS_MAX`); tests use a small table
    /// to send flows to the hash map.
    pub fn attach_fast(ifindex: i32, fast_flows: u32, fast4_slots: u32) -> Result<Self, BpfError> {
        let fast4_slots = fast4::slots_for(fast4_slots);
        // The skeleton borrows its object storage for its whole life; one
        // small allocation per attached port is kept for the process's life.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = MicrosegXdpSkelBuilder::default()
            .open(storage)
            .map_err(BpfError::Load)?;
        open.maps
            .fast
            .set_max_entries(fast_flows.max(1))
            .map_err(BpfError::Load)?;
        // Off, the table is one unused slot.
        let fast4_slots = if fast_flows == 0 { 1 } else { fast4_slots };
        open.maps
            .fast4
            .set_max_entries(fast4_slots)
            .map_err(BpfError::Load)?;
        let constants = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
            BpfError::Load(libbpf_rs::Error::from(std::io::Error::other(
                "the program's read-only data (fast-path settings) is not mapped",
            )))
        })?;
        constants.fast_path_on = u8::from(fast_flows > 0);
        constants.fast4_mask = fast4_slots - 1;
        let skel = open.load().map_err(BpfError::Load)?;
        let xdp = Xdp::new(skel.progs.microseg_port.as_fd());
        let mode = match xdp.attach(ifindex, XdpFlags::DRV_MODE) {
            Ok(()) => AttachMode::Native,
            Err(native) => match xdp.attach(ifindex, XdpFlags::SKB_MODE) {
                Ok(()) => AttachMode::Generic,
                Err(generic) => {
                    return Err(BpfError::Attach {
                        ifindex,
                        native,
                        generic,
                    })
                }
            },
        };
        let mut port = Self {
            skel,
            ifindex,
            mode,
            program_id: 0,
            quarantine_held: Mutex::new(HashSet::new()),
            fast_path_taken: AtomicBool::new(false),
        };
        port.program_id = port.attached_program_id();
        Ok(port)
    }

    /// The kernel's id of this port's program.
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    fn flags(&self) -> XdpFlags {
        match self.mode {
            AttachMode::Native => XdpFlags::DRV_MODE,
            AttachMode::Generic => XdpFlags::SKB_MODE,
        }
    }

    /// The id of the program attached to the interface now (0: none).
    pub fn attached_program_id(&self) -> u32 {
        Xdp::new(self.skel.progs.microseg_port.as_fd())
            .query_id(self.ifindex, self.flags())
            .unwrap_or(0)
    }

    /// Drops, from now on, every frame to or from `ip`.
    pub fn quarantine(&self, ip: IpAddr) -> Result<(), BpfError> {
        let mut held = self.lock_quarantine();
        // The flag first: were it set after the address, a frame in
        // between would skip the lookup that finds it.
        self.set_quarantine_in_use(true)?;
        let key = quarantine_key(ip);
        self.skel
            .maps
            .quarantine
            .update(&key, &[1], MapFlags::ANY)
            .map_err(BpfError::Quarantine)?;
        held.insert(key);
        Ok(())
    }

    /// Registers an AF_XDP socket as the receiver of queue `queue`: from
    /// now on the program redirects that queue's frames to it.
    pub fn register_socket(&self, queue: u32, socket_fd: i32) -> Result<(), BpfError> {
        register(&self.skel.maps.xsks, queue, socket_fd)
    }

    /// A handle on this port's socket map that another thread may use to
    /// register its sockets (workers bind their own queues).
    pub fn socket_registry(&self) -> Result<SocketRegistry, BpfError> {
        Ok(SocketRegistry {
            xsks: MapHandle::try_from(&self.skel.maps.xsks).map_err(BpfError::Socket)?,
            ifindex: self.ifindex,
        })
    }

    /// Handles on this port's fast-path maps, usable from another thread;
    /// given once (`BpfError::FastPathTaken` after): two writers would
    /// each keep their own book of the flows and race on `fast4`'s slots.
    pub fn fast_path(&self) -> Result<FastPath, BpfError> {
        if self.fast_path_taken.swap(true, Ordering::AcqRel) {
            return Err(BpfError::FastPathTaken {
                ifindex: self.ifindex,
            });
        }
        let maps = &self.skel.maps;
        let handle = |map| MapHandle::try_from(map).map_err(BpfError::FastPath);
        let made = handle(&maps.fast4).and_then(|map| {
            let fast4 = fast4::Fast4Map::new(map)?;
            let fast_path = FastPath {
                fast: handle(&maps.fast)?,
                book: std::sync::Mutex::new(fast::Book::new(fast4.slots())),
                fast4,
                ports: handle(&maps.ports)?,
            };
            fast_path.check()?;
            Ok(fast_path)
        });
        if made.is_err() {
            // Nothing was handed out: a later call may try again.
            self.fast_path_taken.store(false, Ordering::Release);
        }
        made
    }

    /// A handle that switches the generation this port's program forwards
    /// in XDP; any number of them may exist beside the `FastPath`.
    pub fn generation_switch(&self) -> Result<GenerationSwitch, BpfError> {
        Ok(GenerationSwitch {
            policy: MapHandle::try_from(&self.skel.maps.policy).map_err(BpfError::FastPath)?,
        })
    }

    /// Lifts the quarantine of `ip` (no error if it was not quarantined).
    pub fn release(&self, ip: IpAddr) -> Result<(), BpfError> {
        let mut held = self.lock_quarantine();
        let key = quarantine_key(ip);
        delete_if_present(&self.skel.maps.quarantine, &key).map_err(BpfError::Quarantine)?;
        held.remove(&key);
        // After a panic under the lock the set may lack a key the map has:
        // the flag then stays on (lookups cost time, never a drop).
        if held.is_empty() && !self.quarantine_held.is_poisoned() {
            self.set_quarantine_in_use(false)?;
        }
        Ok(())
    }

    /// Whether the program looks frames' addresses up in the quarantine
    /// map (it skips the lookups while the map is empty).
    pub fn quarantine_in_use(&self) -> Result<bool, BpfError> {
        let value = self
            .skel
            .maps
            .quarantine_any
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(BpfError::Quarantine)?;
        Ok(value.is_some_and(|bytes| bytes.iter().any(|byte| *byte != 0)))
    }

    fn set_quarantine_in_use(&self, in_use: bool) -> Result<(), BpfError> {
        self.skel
            .maps
            .quarantine_any
            .update(
                &0u32.to_ne_bytes(),
                &u32::from(in_use).to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(BpfError::Quarantine)
    }

    fn lock_quarantine(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 16]>> {
        // A poisoned set may lack a key; `release` then keeps the flag on.
        self.quarantine_held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the program once on `frame` in the kernel, with the maps as
    /// they are, and sends nothing (`BPF_PROG_TEST_RUN`); returns its XDP
    /// action (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_REDIRECT` 4: to a port or
    /// to the AF_XDP socket). Counters and fast-path entries count the
    /// frame as if it had arrived. For tests and diagnosis.
    pub fn run_once(&self, frame: &[u8]) -> Result<u32, BpfError> {
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            ..Default::default()
        };
        let output = self
            .skel
            .progs
            .microseg_port
            .test_run(input)
            .map_err(BpfError::TestRun)?;
        Ok(output.return_value)
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, BpfError> {
        let mut sums = [0u64; COUNTERS];
        for (index, sum) in sums.iter_mut().enumerate() {
            let key = (index as u32).to_ne_bytes();
            let per_cpu = self
                .skel
                .maps
                .counters
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(BpfError::Counters)?
                .unwrap_or_default();
            *sum = per_cpu
                .iter()
                .filter_map(|bytes| bytes.get(..8)?.try_into().ok())
                .map(u64::from_ne_bytes)
                .sum();
        }
        let [rx, quarantine_drop, redirect, no_socket_drop, truncated, fast_forward, fast_stale] =
            sums;
        Ok(XdpCounters {
            rx,
            quarantine_drop,
            redirect,
            no_socket_drop,
            truncated,
            fast_forward,
            fast_stale,
        })
    }
}

fn register(xsks: &impl MapCore, queue: u32, socket_fd: i32) -> Result<(), BpfError> {
    xsks.update(
        &queue.to_ne_bytes(),
        &socket_fd.to_ne_bytes(),
        MapFlags::ANY,
    )
    .map_err(BpfError::Socket)
}

/// Deletes `key` from `map`; a key that is not there is no error.
fn delete_if_present(map: &impl MapCore, key: &[u8]) -> Result<(), libbpf_rs::Error> {
    match map.delete(key) {
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

/// The socket map of one port's XDP program, usable from any thread; it
/// stays valid while the `XdpPort` that made it is attached.
#[derive(Debug)]
pub struct SocketRegistry {
    xsks: MapHandle,
    ifindex: i32,
}

impl SocketRegistry {
    /// As `XdpPort::register_socket`.
    pub fn register(&self, queue: u32, socket_fd: i32) -> Result<(), BpfError> {
        register(&self.xsks, queue, socket_fd)
    }

    /// Stops redirecting `queue` (its frames are dropped: fail closed).
    pub fn unregister(&self, queue: u32) {
        let _ = self.xsks.delete(&queue.to_ne_bytes());
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        // Only detach our own program: another may have replaced it since.
        if self.program_id != 0 && self.attached_program_id() == self.program_id {
            let _ =
                Xdp::new(self.skel.progs.microseg_port.as_fd()).detach(self.ifindex, self.flags());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::fast::{self, KEY_BYTES, VALUE_BYTES};
    use super::skel::types::{ms_fast, ms_flow, ms_policy};

    /// `fast.rs` writes the maps' keys and values by hand: they must match
    /// the C structs as compiled (the skeleton's types come from BTF).
    #[test]
    fn hand_written_layouts_match_the_compiled_structs() {
        assert_eq!(size_of::<ms_flow>(), KEY_BYTES);
        assert_eq!(offset_of!(ms_flow, dst), 16);
        assert_eq!(offset_of!(ms_flow, src_port), 32);
        assert_eq!(offset_of!(ms_flow, dst_port), 34);
        assert_eq!(offset_of!(ms_flow, proto), fast::PROTO_AT);
        assert_eq!(offset_of!(ms_flow, family), fast::FAMILY_AT);
        assert_eq!(size_of::<ms_fast>(), VALUE_BYTES);
        assert_eq!(offset_of!(ms_fast, generation), 4);
        assert_eq!(offset_of!(ms_fast, src_mac), 8);
        assert_eq!(offset_of!(ms_fast, dst_mac), 14);
        assert_eq!(offset_of!(ms_fast, packets), 24);
        assert_eq!(offset_of!(ms_fast, bytes), 32);
        assert_eq!(offset_of!(ms_fast, last_seen), 40);
        assert_eq!(size_of::<ms_policy>(), 8);
    }

    /// `fast4.rs`'s `Slot` is `struct ms_slot4` as compiled, field by field.
    #[test]
    fn the_fast4_slot_matches_ms_slot4() {
        use super::fast4::{Slot, SLOT_BYTES};
        use super::skel::types::ms_slot4;
        assert_eq!(size_of::<ms_slot4>(), SLOT_BYTES);
        assert_eq!(size_of::<Slot>(), SLOT_BYTES);
        let pairs = [
            (offset_of!(ms_slot4, seq), offset_of!(Slot, seq)),
            (offset_of!(ms_slot4, src), offset_of!(Slot, src)),
            (offset_of!(ms_slot4, dst), offset_of!(Slot, dst)),
            (offset_of!(ms_slot4, src_port), offset_of!(Slot, src_port)),
            (offset_of!(ms_slot4, dst_port), offset_of!(Slot, dst_port)),
            (offset_of!(ms_slot4, proto), offset_of!(Slot, proto)),
            (offset_of!(ms_slot4, egress), offset_of!(Slot, egress)),
            (
                offset_of!(ms_slot4, generation),
                offset_of!(Slot, generation),
            ),
            (offset_of!(ms_slot4, src_mac), offset_of!(Slot, src_mac)),
            (offset_of!(ms_slot4, dst_mac), offset_of!(Slot, dst_mac)),
            (offset_of!(ms_slot4, packets), offset_of!(Slot, packets)),
            (offset_of!(ms_slot4, bytes), offset_of!(Slot, bytes)),
            (offset_of!(ms_slot4, last_seen), offset_of!(Slot, last_seen)),
        ];
        for (compiled, written) in pairs {
            assert_eq!(compiled, written);
        }
    }
}
