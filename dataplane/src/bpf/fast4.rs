//! The IPv4 fast path's table, `fast4` (bpf/microseg_xdp.h, `ms_slot4`):
//! open addressing in an mmapable array of 64-byte slots, which the XDP
//! program reads and the offloader writes through a shared mapping.
//!
//! Why not only the `fast` hash map: a lookup there walks a bucket and
//! then an element spread over two or three cache lines, each a dependent
//! miss once a million flows are installed (30% of the core in the
//! kernel's `lookup_nulls_elem_raw`; docs/performance-notes.md). Here a
//! flow's key, route and counters are one cache line at an address the
//! program computes from the frame.
//!
//! - **Probing**: a flow lives in one of the `PROBES` slots from its hash
//!   on. A lookup stops at the first slot never used (`EMPTY`); a removed
//!   flow leaves `REMOVED`, which lookups pass over and inserts reuse, so
//!   a slot never becomes empty again and no flow is ever moved (its
//!   counters stay where the program adds to them). A flow that finds no
//!   room goes to `fast` instead (`Inserted::NoRoom`). The writer keeps a
//!   bitmap of the slots in use (`Occupied`), so a sync reads those, not
//!   the whole table (128 MiB at 2M slots; its bitmap is 256 KiB).
//! - **Concurrency**: the offloader is the only writer. It makes a slot's
//!   sequence count odd, writes, and makes it even again; the program
//!   takes a slot only if it read the same even count before and after
//!   (a seqlock), so it never forwards on half of one flow's key and half
//!   of another's route. Every access on this side is atomic.
//! - **Counters**: the program adds to `packets` and `bytes` of a slot
//!   after it validated it; an addition racing with a removal or a
//!   rewrite of that slot can be lost or land on the slot's next flow (one
//!   frame, as with the hash map's deletion).
//!
//! The mapping itself (`Fast4Map`) is the module's one `unsafe` part.
#![allow(unsafe_code)]

use std::net::Ipv6Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use libbpf_rs::{MapCore, MapHandle};

use super::fast::{FastCounters, FastKey, FastRoute, FAMILY_AT, PROTO_AT};
use super::BpfError;
use crate::packet::{proto, AddrFamily, FlowKey};

/// Slots a flow may be placed in from its hash on (`MS_FAST4_PROBES`).
pub const PROBES: usize = 8;
/// Most slots of a table (`MS_FAST4_SLOTS_MAX`): 256 MiB.
pub const SLOTS_MAX: u32 = 1 << 22;
/// `proto` of a slot never used since the table was made.
const EMPTY: u8 = 0;
/// `proto` of a slot whose flow was removed.
const REMOVED: u8 = 255;

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K3: u64 = 0x1656_67b1_9e37_79f9;
const K4: u64 = 0xff51_afd7_ed55_8ccd;

/// One slot, laid out as `struct ms_slot4`.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Slot {
    pub(super) seq: AtomicU32,
    pub(super) src: AtomicU32,
    pub(super) dst: AtomicU32,
    pub(super) src_port: AtomicU16,
    pub(super) dst_port: AtomicU16,
    pub(super) proto: AtomicU8,
    pub(super) pad0: AtomicU8,
    pub(super) egress: AtomicU16,
    pub(super) generation: AtomicU32,
    pub(super) src_mac: [AtomicU8; 6],
    pub(super) dst_mac: [AtomicU8; 6],
    pub(super) pad1: AtomicU32,
    pub(super) packets: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) last_seen: AtomicU64,
}

/// Bytes of a slot (the map's value size).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// An IPv4 TCP or UDP flow as the program matches it: addresses and ports
/// as they lie in the frame (network byte order read as native words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key4 {
    src: u32,
    dst: u32,
    src_port: u16,
    dst_port: u16,
    proto: u8,
}

impl Key4 {
    /// The `fast4` key of an IPv4 TCP or UDP `FastKey`; None for others
    /// (IPv6, other protocols), which stay in `fast`.
    pub fn of(key: &FastKey) -> Option<Self> {
        let bytes = key.bytes();
        let ipv4 = |at: usize| {
            let address: [u8; 16] = bytes[at..at + 16].try_into().ok()?;
            Ipv6Addr::from(address)
                .to_ipv4_mapped()
                .map(|v4| u32::from_ne_bytes(v4.octets()))
        };
        let half = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
        let proto = bytes[PROTO_AT];
        if bytes[FAMILY_AT] != 4 || (proto != proto::TCP && proto != proto::UDP) {
            return None;
        }
        Some(Self {
            src: ipv4(0)?,
            dst: ipv4(16)?,
            src_port: half(32),
            dst_port: half(34),
            proto,
        })
    }

    /// The `FastKey` this key came from (`FastKey::of` lays it out).
    fn fast_key(&self) -> FastKey {
        let address = |word: u32| u128::from(u32::from_be_bytes(word.to_ne_bytes()));
        let port = |half: u16| u16::from_be_bytes(half.to_ne_bytes());
        FastKey::of(&FlowKey {
            family: AddrFamily::V4,
            src: address(self.src),
            dst: address(self.dst),
            proto: self.proto,
            src_port: port(self.src_port),
            dst_port: port(self.dst_port),
            ..FlowKey::default()
        })
    }

    /// `ms_hash4` of bpf/microseg_xdp.bpf.c.
    fn hash(&self) -> u64 {
        let ports = u64::from(self.src_port) | u64::from(self.dst_port) << 16;
        let mut h = (u64::from(self.src).wrapping_mul(K1))
            ^ (u64::from(self.dst).wrapping_mul(K2))
            ^ ports.wrapping_mul(K3)
            ^ u64::from(self.proto);
        h ^= h >> 29;
        h = h.wrapping_mul(K4);
        h ^ (h >> 32)
    }

    fn held_by(&self, slot: &Slot) -> bool {
        let load = Ordering::Relaxed;
        slot.proto.load(load) == self.proto
            && slot.src.load(load) == self.src
            && slot.dst.load(load) == self.dst
            && slot.src_port.load(load) == self.src_port
            && slot.dst_port.load(load) == self.dst_port
    }

    fn read(slot: &Slot) -> Self {
        let load = Ordering::Relaxed;
        Self {
            src: slot.src.load(load),
            dst: slot.dst.load(load),
            src_port: slot.src_port.load(load),
            dst_port: slot.dst_port.load(load),
            proto: slot.proto.load(load),
        }
    }
}

/// What an insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The flow was not in the table and now is, in this slot.
    New(usize),
    /// The flow was in this slot; its route was replaced.
    Replaced(usize),
    /// No free slot among the flow's `PROBES`: not inserted.
    NoRoom,
}

/// The table's logic over its slots (a mapping of the map, or plain
/// memory in tests). Slot count: a power of two.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    slots: &'a [Slot],
}

impl<'a> Table<'a> {
    /// None unless `slots` holds a power of two of slots (plain memory in
    /// tests; `Fast4Map::table` checks the mapping's count when mapping).
    #[cfg(test)]
    pub fn new(slots: &'a [Slot]) -> Option<Self> {
        slots.len().is_power_of_two().then_some(Self { slots })
    }

    /// The slots a key may be in, in probe order.
    fn probe(&self, key: &Key4) -> impl Iterator<Item = (usize, &'a Slot)> + 'a {
        let mask = self.slots.len() - 1;
        let home = key.hash() as usize;
        let slots = self.slots;
        (0..PROBES.min(slots.len())).map(move |step| {
            let index = home.wrapping_add(step) & mask;
            (index, &slots[index])
        })
    }

    /// The slot holding `key`, as the program looks for it.
    pub fn find(&self, key: &Key4) -> Option<usize> {
        for (index, slot) in self.probe(key) {
            let held = slot.proto.load(Ordering::Relaxed);
            if held == EMPTY {
                return None;
            }
            if key.held_by(slot) {
                return Some(index);
            }
        }
        None
    }

    /// Installs `key` with `route`, counters from zero; replaces the route
    /// if the key is in the table already.
    pub fn insert(&self, key: &Key4, route: &FastRoute) -> Inserted {
        if let Some(index) = self.find(key) {
            write_flow(&self.slots[index], key, route);
            return Inserted::Replaced(index);
        }
        let free = self
            .probe(key)
            .find(|(_, slot)| matches!(slot.proto.load(Ordering::Relaxed), EMPTY | REMOVED));
        match free {
            Some((index, slot)) => {
                write_flow(slot, key, route);
                Inserted::New(index)
            }
            None => Inserted::NoRoom,
        }
    }

    /// Removes `key`; the slot it was in, None if it was not in the table.
    pub fn remove(&self, key: &Key4) -> Option<usize> {
        let index = self.find(key)?;
        write_slot(&self.slots[index], |slot| {
            store_key(
                slot,
                &Key4 {
                    src: 0,
                    dst: 0,
                    src_port: 0,
                    dst_port: 0,
                    proto: REMOVED,
                },
            );
            store_route(slot, None);
        });
        Some(index)
    }

    /// What the program counted on the flow in slot `index`.
    pub fn counters(&self, index: usize) -> FastCounters {
        let slot = &self.slots[index];
        FastCounters {
            packets: slot.packets.load(Ordering::Relaxed),
            bytes: slot.bytes.load(Ordering::Relaxed),
            last_seen: slot.last_seen.load(Ordering::Relaxed),
        }
    }

    /// The flow in slot `index` with its counters (None: no flow there).
    pub fn read_slot(&self, index: usize) -> Option<(FastKey, FastCounters)> {
        let slot = self.slots.get(index)?;
        if matches!(slot.proto.load(Ordering::Relaxed), EMPTY | REMOVED) {
            return None;
        }
        Some((Key4::read(slot).fast_key(), self.counters(index)))
    }

    /// Every flow in the table, by a scan of every slot (what `Occupied`
    /// spares a sync; the tests' reference).
    #[cfg(test)]
    pub fn scan(&self) -> Vec<(FastKey, FastCounters)> {
        (0..self.slots.len())
            .filter_map(|index| self.read_slot(index))
            .collect()
    }
}

/// Which slots of a table hold a flow, one bit each, kept by the writer
/// as it inserts and removes.
#[derive(Debug, Default)]
pub struct Occupied {
    words: Vec<u64>,
}

impl Occupied {
    pub fn new(slots: usize) -> Self {
        Self {
            words: vec![0; slots.div_ceil(64)],
        }
    }

    pub fn set(&mut self, index: usize) {
        if let Some(word) = self.words.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    pub fn clear(&mut self, index: usize) {
        if let Some(word) = self.words.get_mut(index / 64) {
            *word &= !(1 << (index % 64));
        }
    }

    /// The slots in use, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(at, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    at * 64 + bit
                })
            })
        })
    }

    pub fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }
}

/// Writes a slot under its sequence count (the offloader is the only
/// writer, so the count it reads is the current one).
fn write_slot(slot: &Slot, write: impl FnOnce(&Slot)) {
    let seq = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    // The odd count is seen before any of the writes below.
    fence(Ordering::Release);
    write(slot);
    slot.seq.store(seq.wrapping_add(2), Ordering::Release);
}

fn write_flow(slot: &Slot, key: &Key4, route: &FastRoute) {
    write_slot(slot, |slot| {
        store_route(slot, Some(route));
        store_key(slot, key);
    });
}

fn store_key(slot: &Slot, key: &Key4) {
    let store = Ordering::Relaxed;
    slot.src.store(key.src, store);
    slot.dst.store(key.dst, store);
    slot.src_port.store(key.src_port, store);
    slot.dst_port.store(key.dst_port, store);
    slot.proto.store(key.proto, store);
}

/// The route (none: zeroes), counters from zero.
fn store_route(slot: &Slot, route: Option<&FastRoute>) {
    let store = Ordering::Relaxed;
    let route = route.copied().unwrap_or(FastRoute {
        egress: 0,
        generation: 0,
        src_mac: [0; 6],
        dst_mac: [0; 6],
    });
    slot.egress.store(route.egress, store);
    slot.generation.store(route.generation, store);
    for (cell, byte) in slot.src_mac.iter().zip(route.src_mac) {
        cell.store(byte, store);
    }
    for (cell, byte) in slot.dst_mac.iter().zip(route.dst_mac) {
        cell.store(byte, store);
    }
    slot.packets.store(0, store);
    slot.bytes.store(0, store);
    slot.last_seen.store(0, store);
}

/// The slot count for a fast path sized for `flows` flows: the power of
/// two at or above it, at most `SLOTS_MAX`; 1 with the fast path off.
pub fn slots_for(flows: u32) -> u32 {
    flows
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(SLOTS_MAX)
        .min(SLOTS_MAX)
}

/// The `fast4` map mapped into this process.
#[derive(Debug)]
pub struct Fast4Map {
    base: NonNull<Slot>,
    slots: usize,
    bytes: usize,
    /// Keeps the map's file open as long as the mapping (the mapping
    /// holds the map too; this documents the pairing).
    _map: MapHandle,
}

// SAFETY: the mapping is owned by this value and every access to its
// memory goes through the atomics of `Slot`, from any thread.
unsafe impl Send for Fast4Map {}
// SAFETY: as for Send: shared access is only atomic loads and stores.
unsafe impl Sync for Fast4Map {}

impl Fast4Map {
    /// Maps `map` (an mmapable array of `SLOT_BYTES` values, a power of
    /// two of them) read-write.
    pub fn new(map: MapHandle) -> Result<Self, BpfError> {
        let refuse =
            |why: String| BpfError::FastPath(libbpf_rs::Error::from(std::io::Error::other(why)));
        if map.value_size() as usize != SLOT_BYTES {
            return Err(refuse(format!(
                "the fast4 map has {}-byte values, not {SLOT_BYTES}",
                map.value_size()
            )));
        }
        let slots = map.max_entries() as usize;
        if !slots.is_power_of_two() {
            return Err(refuse(format!(
                "the fast4 map has {slots} slots, not a power of two"
            )));
        }
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| usize::try_from(size).ok())
            .filter(|size| size.is_power_of_two())
            .unwrap_or(4096);
        let bytes = (slots * SLOT_BYTES).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's file descriptor, of
        // the size the kernel gives an mmapable array of `slots` values;
        // no existing memory is touched. The result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(BpfError::FastPath(libbpf_rs::Error::from(
                std::io::Error::last_os_error(),
            )));
        }
        let base = NonNull::new(base.cast::<Slot>())
            .ok_or_else(|| refuse("mmap of the fast4 map returned null".into()))?;
        Ok(Self {
            base,
            slots,
            bytes,
            _map: map,
        })
    }

    /// Slots of the table.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The table over the mapping.
    pub fn table(&self) -> Table<'_> {
        // SAFETY: the mapping is page-aligned (so 64-byte aligned), holds
        // `slots` slots of `SLOT_BYTES` laid out as `Slot`, and stays
        // mapped while `self` lives; every access through the slice is
        // atomic, as are the program's, so sharing it is sound.
        let slots = unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.slots) };
        // `new` checked the count is a power of two.
        Table { slots }
    }
}

impl Drop for Fast4Map {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no `Table`
        // borrowing it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

#[cfg(test)]
mod tests;
