//! The XDP fast path's maps as userspace sees them: the flows installed on
//! a port (IPv4 TCP/UDP flows in the `fast4` table, `super::fast4`, where
//! it has room; the rest in the `fast` hash map), the egress ports
//! (`ports` devmap) and the generation in force (`policy`), with the byte
//! layouts of `bpf/microseg_xdp.h`'s `ms_flow`, `ms_fast` and `ms_policy`.
//! A flow is in one of the two tables, never both. `crate::offload`
//! decides what to install and when; this module only reads and writes
//! the maps.
//!
//! Reading the whole `fast` map calls libbpf's batch lookup itself (one
//! `unsafe` block): libbpf-rs 0.25's `lookup_batch` iterator takes a batch
//! shorter than asked for as the last one, but a hash map's batches stop
//! at bucket boundaries, so it ended after the first batch and synced
//! only ~4,000 of a million flows.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::fast4::{Fast4Map, Inserted, Key4, Occupied};
use super::BpfError;
use crate::packet::{AddrFamily, FlowKey};

/// Bytes of `struct ms_flow`.
pub const KEY_BYTES: usize = 40;
/// Bytes of `struct ms_fast`.
pub const VALUE_BYTES: usize = 48;
/// Where `ms_flow` keeps the protocol and the IP version (4 or 6).
pub(super) const PROTO_AT: usize = 36;
pub(super) const FAMILY_AT: usize = 37;
/// Entries read per batch when the whole map is read.
const READ_BATCH: u32 = 4096;

/// One direction of a connection as the XDP program matches it: the
/// frame's own addresses, protocol and ports as it arrives on the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FastKey([u8; KEY_BYTES]);

impl FastKey {
    /// The key of frames carrying `flow` (IPv4 stored IPv4-mapped, with
    /// its family byte telling it from IPv6 between mapped addresses).
    pub fn of(flow: &FlowKey) -> Self {
        let address = |addr: u128| match flow.family {
            AddrFamily::V4 => (0xffff_u128 << 32 | (addr & 0xffff_ffff)).to_be_bytes(),
            AddrFamily::V6 => addr.to_be_bytes(),
        };
        let mut bytes = [0; KEY_BYTES];
        bytes[..16].copy_from_slice(&address(flow.src));
        bytes[16..32].copy_from_slice(&address(flow.dst));
        bytes[32..34].copy_from_slice(&flow.src_port.to_be_bytes());
        bytes[34..36].copy_from_slice(&flow.dst_port.to_be_bytes());
        bytes[PROTO_AT] = flow.proto;
        bytes[FAMILY_AT] = match flow.family {
            AddrFamily::V4 => 4,
            AddrFamily::V6 => 6,
        };
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.get(..KEY_BYTES)?.try_into().ok()?))
    }
}

/// Where an installed flow goes and what it must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FastRoute {
    /// Egress port id (its key in the `ports` devmap).
    pub egress: u16,
    /// The policy generation that admitted the flow.
    pub generation: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

impl FastRoute {
    /// The map value: the route, counters zero.
    fn value(&self) -> [u8; VALUE_BYTES] {
        let mut bytes = [0; VALUE_BYTES];
        bytes[..4].copy_from_slice(&u32::from(self.egress).to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.generation.to_ne_bytes());
        bytes[8..14].copy_from_slice(&self.src_mac);
        bytes[14..20].copy_from_slice(&self.dst_mac);
        bytes
    }
}

/// What the program counted on an installed flow since it was installed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastCounters {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last frame (CLOCK_MONOTONIC as
    /// of the kernel's last tick, a few ms behind at most; 0: none).
    pub last_seen: u64,
}

impl FastCounters {
    fn from_value(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Self {
            packets: word(24)?,
            bytes: word(32)?,
            last_seen: word(40)?,
        })
    }
}

/// One port's fast-path maps, usable from any thread while its `XdpPort`
/// is attached. The port hands it out once (`XdpPort::fast_path`): it is
/// the only writer of the flow tables, as `fast4`'s sequence counts and
/// the book of used slots need.
#[derive(Debug)]
pub struct FastPath {
    pub(super) fast: MapHandle,
    pub(super) fast4: Fast4Map,
    pub(super) ports: MapHandle,
    /// What this side keeps of where flows are (one writer, the
    /// offloader; the lock is never contended).
    pub(super) book: Mutex<Book>,
}

/// A port's `policy` map: which generation's flows the program forwards
/// (`XdpPort::generation_switch`; as many as wanted, apart from the one
/// `FastPath`, since it writes no flow).
#[derive(Debug)]
pub struct GenerationSwitch {
    pub(super) policy: MapHandle,
}

impl GenerationSwitch {
    /// From now on only flows installed with `generation` take the fast
    /// path; the others go to userspace to be judged again.
    pub fn set_generation(&self, generation: u32) -> Result<(), BpfError> {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&generation.to_ne_bytes());
        self.policy
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(BpfError::FastPath)
    }
}

/// Where a port's installed flows are, as far as the maps do not say it
/// cheaply.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// The IPv4 flows in `fast` (they found no room in `fast4`): an IPv4
    /// flow not named here is in `fast4` or nowhere, so installs, reads
    /// and removals of IPv4 flows make no system call on `fast`.
    v4_in_fast: HashSet<FastKey>,
    /// The `fast4` slots in use: a sync reads only these.
    occupied: Occupied,
}

impl Book {
    pub(super) fn new(fast4_slots: usize) -> Self {
        Self {
            v4_in_fast: HashSet::new(),
            occupied: Occupied::new(fast4_slots),
        }
    }
}

impl FastPath {
    /// Lets the program redirect to port `port` (devmap key) = `ifindex`.
    pub fn set_port(&self, port: u16, ifindex: i32) -> Result<(), BpfError> {
        self.ports
            .update(
                &u32::from(port).to_ne_bytes(),
                &ifindex.to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(BpfError::FastPath)
    }

    /// Installs (or replaces) flows, counters from zero.
    pub fn install(&self, flows: &[(FastKey, FastRoute)]) -> Result<(), BpfError> {
        let table = self.fast4.table();
        let mut book = self.book();
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for (key, route) in flows {
            let placed = Key4::of(key).map(|key4| table.insert(&key4, route));
            match placed {
                Some(placed @ (Inserted::New(_) | Inserted::Replaced(_))) => {
                    if let Inserted::New(index) = placed {
                        book.occupied.set(index);
                    }
                    // One table only: an older copy in `fast` (installed
                    // when there was no room here, or left by a delete
                    // that failed when it moved here) goes.
                    self.remove_v4_from_map(&mut book, key)?;
                }
                Some(Inserted::NoRoom) | None => {
                    if placed.is_some() {
                        book.v4_in_fast.insert(*key);
                    }
                    keys.extend_from_slice(key.bytes());
                    values.extend_from_slice(&route.value());
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        self.fast
            .update_batch(
                &keys,
                &values,
                (keys.len() / KEY_BYTES) as u32,
                MapFlags::ANY,
                MapFlags::ANY,
            )
            .map_err(BpfError::FastPath)
    }

    /// Removes a flow (no error if it is not installed).
    pub fn remove(&self, key: &FastKey) -> Result<(), BpfError> {
        let Some(key4) = Key4::of(key) else {
            return self.remove_from_map(key);
        };
        let mut book = self.book();
        if let Some(index) = self.fast4.table().remove(&key4) {
            book.occupied.clear(index);
        }
        // In `fast` as well if deleting it there failed when it moved into
        // `fast4`.
        self.remove_v4_from_map(&mut book, key)
    }

    /// Deletes an IPv4 flow from `fast` if the book has it there; the book
    /// forgets it only once it is deleted, so a delete that failed is
    /// tried again by the next removal instead of leaving a copy nobody
    /// knows of.
    fn remove_v4_from_map(&self, book: &mut Book, key: &FastKey) -> Result<(), BpfError> {
        if book.v4_in_fast.contains(key) {
            self.remove_from_map(key)?;
            book.v4_in_fast.remove(key);
        }
        Ok(())
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while it was held leaves at worst a key or slot too
        // many, which costs a system call or a read that finds nothing.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove_from_map(&self, key: &FastKey) -> Result<(), BpfError> {
        super::delete_if_present(&self.fast, key.bytes()).map_err(BpfError::FastPath)
    }

    /// The counters of one installed flow (None: not installed).
    pub fn read(&self, key: &FastKey) -> Result<Option<FastCounters>, BpfError> {
        if let Some(key4) = Key4::of(key) {
            let table = self.fast4.table();
            if let Some(index) = table.find(&key4) {
                return Ok(Some(table.counters(index)));
            }
            if !self.book().v4_in_fast.contains(key) {
                return Ok(None);
            }
        }
        let value = self
            .fast
            .lookup(key.bytes(), MapFlags::ANY)
            .map_err(BpfError::FastPath)?;
        Ok(value.as_deref().and_then(FastCounters::from_value))
    }

    /// Every installed flow with its counters: the `fast4` table's, then
    /// the `fast` map's, read in batches.
    pub fn read_all(&self, out: &mut Vec<(FastKey, FastCounters)>) -> Result<(), BpfError> {
        out.clear();
        let table = self.fast4.table();
        out.extend(
            self.book()
                .occupied
                .iter()
                .filter_map(|index| table.read_slot(index)),
        );
        self.read_map(out)
    }

    fn read_map(&self, out: &mut Vec<(FastKey, FastCounters)>) -> Result<(), BpfError> {
        let batch = READ_BATCH as usize;
        let mut keys = vec![0u8; batch * KEY_BYTES];
        let mut values = vec![0u8; batch * VALUE_BYTES];
        // The batch cursor: for hash maps a bucket index, in a key-sized
        // buffer.
        let mut cursor = [0u8; KEY_BYTES];
        let mut next = [0u8; KEY_BYTES];
        let options = libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        let fd = self.fast.as_fd().as_raw_fd();
        let mut first = true;
        loop {
            let mut count = READ_BATCH;
            let in_batch = if first {
                std::ptr::null_mut()
            } else {
                cursor.as_mut_ptr().cast()
            };
            // SAFETY: `keys` and `values` have room for `count` entries of
            // the map's key and value sizes (`FastPath::check` verified
            // them against KEY_BYTES and VALUE_BYTES when the handles were
            // made); `in_batch` is null or the key-sized cursor and `next` a key-sized
            // buffer, as the kernel's hash map batch cursor needs; `count`
            // and `options` outlive the call; `fd` is the map's, open as
            // long as `self`.
            let status = unsafe {
                libbpf_sys::bpf_map_lookup_batch(
                    fd,
                    in_batch,
                    next.as_mut_ptr().cast(),
                    keys.as_mut_ptr().cast(),
                    values.as_mut_ptr().cast(),
                    &mut count,
                    &options,
                )
            };
            let read = (count as usize).min(batch);
            for (key, value) in keys
                .chunks_exact(KEY_BYTES)
                .zip(values.chunks_exact(VALUE_BYTES))
                .take(read)
            {
                if let (Some(key), Some(counters)) =
                    (FastKey::from_bytes(key), FastCounters::from_value(value))
                {
                    out.push((key, counters));
                }
            }
            match status {
                0 => {}
                // The end of the map: `count` entries were the last.
                error if error == -libc_enoent() => return Ok(()),
                error => {
                    return Err(BpfError::FastPath(libbpf_rs::Error::from(
                        std::io::Error::from_raw_os_error(-error),
                    )))
                }
            }
            cursor = next;
            first = false;
        }
    }

    /// Refuses maps whose key or value size differs from the layouts
    /// written here (a program built from another header).
    pub(super) fn check(&self) -> Result<(), BpfError> {
        let sizes = (
            self.fast.key_size() as usize,
            self.fast.value_size() as usize,
        );
        if sizes == (KEY_BYTES, VALUE_BYTES) {
            return Ok(());
        }
        Err(BpfError::FastPath(libbpf_rs::Error::from(
            std::io::Error::other(format!(
                "the fast map has {}-byte keys and {}-byte values, not {KEY_BYTES} and {VALUE_BYTES}",
                sizes.0, sizes.1
            )),
        )))
    }

    /// Flows installed now.
    pub fn len(&self) -> usize {
        self.book().occupied.count() + self.fast.keys().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// ENOENT: what a batch lookup returns once it has read the last entries.
fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::proto;

    #[test]
    fn keys_lay_out_as_ms_flow() {
        let flow = FlowKey {
            family: AddrFamily::V4,
            src: 0x0a00_0001,
            dst: 0x0a00_0002,
            proto: proto::UDP,
            src_port: 0x1234,
            dst_port: 53,
            ..FlowKey::default()
        };
        let key = FastKey::of(&flow);
        let mut expected = [0u8; KEY_BYTES];
        expected[10..16].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        expected[26..32].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 2]);
        expected[32..38].copy_from_slice(&[0x12, 0x34, 0, 53, proto::UDP, 4]);
        assert_eq!(key.bytes(), &expected);

        let v6 = FlowKey {
            family: AddrFamily::V6,
            src: 0xfd00 << 112 | 1,
            ..flow
        };
        assert_eq!(FastKey::of(&v6).bytes()[..2], [0xfd, 0x00]);
        assert_eq!(FastKey::of(&v6).bytes()[15], 1);
        assert_eq!(FastKey::of(&v6).bytes()[FAMILY_AT], 6);
        // IPv6 between the IPv4-mapped forms of the same addresses: not
        // the IPv4 flow's key.
        let mapped = FlowKey {
            family: AddrFamily::V6,
            src: 0xffff_0a00_0001,
            dst: 0xffff_0a00_0002,
            ..flow
        };
        assert_eq!(
            FastKey::of(&mapped).bytes()[..FAMILY_AT],
            key.bytes()[..FAMILY_AT]
        );
        assert_ne!(FastKey::of(&mapped), key);
    }

    #[test]
    fn values_lay_out_as_ms_fast() {
        let route = FastRoute {
            egress: 3,
            generation: 0x0102_0304,
            src_mac: [1, 2, 3, 4, 5, 6],
            dst_mac: [7, 8, 9, 10, 11, 12],
        };
        let value = route.value();
        assert_eq!(value[..4], 3u32.to_ne_bytes());
        assert_eq!(value[4..8], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(value[8..20], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert!(value[20..].iter().all(|&b| b == 0));

        let mut counted = value;
        counted[24..32].copy_from_slice(&5u64.to_ne_bytes());
        counted[32..40].copy_from_slice(&640u64.to_ne_bytes());
        counted[40..48].copy_from_slice(&99u64.to_ne_bytes());
        assert_eq!(
            FastCounters::from_value(&counted),
            Some(FastCounters {
                packets: 5,
                bytes: 640,
                last_seen: 99
            })
        );
        assert_eq!(FastCounters::from_value(&counted[..47]), None);
    }
}
