//! Groups a batch's packets by connection, so that a run of one flow costs
//! one conntrack lookup instead of one per packet.
//!
//! Bulk traffic reaches a worker in runs: a batch of 64 frames carrying
//! 16 flows holds each about four times. For a protocol without a state
//! machine (UDP, ICMP, others), every packet after the batch's first of the
//! same connection and sender would find the same live entry (one `now`
//! per batch) and change it only by a packet, its bytes and that same time.
//! So the first packet's hit counts its followers too, in the same write
//! (`conntrack::Followers`), and each follower is then switched as a
//! packet of that connection without locking, probing and writing the entry
//! again. Groups are found by the parsed keys themselves (addresses,
//! protocol, ports, zone) through a small table with a cheap hash, so a
//! follower skips conntrack's key encoding and hash as well. The
//! followers' own verdicts are unchanged; only the entry's state as
//! reported to them is the one the first packet found (a reply between
//! them marks a UDP connection answered a few frames earlier than they
//! learn it, which nothing in their forwarding reads).
//!
//! Not grouped: TCP (each segment is checked against the window its
//! predecessors moved), ICMP errors (judged by the packet they quote),
//! later fragments and neighbour discovery (never looked up). A follower
//! whose first packet did not count it, because the first missed (a new
//! connection), was cut or readmitted by a new policy, or ended, is judged
//! on its own as before.

use crate::conntrack::{ConnState, Followers, BATCH};
use crate::packet::{DropReason, FlowKey, FrameKind, ParsedFrame};

/// Slots of the table that finds each packet's group: twice the batch, so
/// that different connections seldom meet in one (a packet whose slot
/// holds another connection is not grouped, only judged on its own).
const SLOTS: usize = 2 * BATCH;

const _: () = assert!(SLOTS.is_power_of_two(), "slot_of takes the hash's top bits");

/// No packet: an empty slot, or a packet that follows none.
const NONE: u8 = u8::MAX;

const _: () = assert!(BATCH < NONE as usize, "batch indexes fit a byte");

/// The groups of one batch, in the batch's own indexes.
pub(super) struct BatchGroups {
    /// By `slot_of`: the first groupable packet seen there.
    firsts: [u8; SLOTS],
    /// Per packet: the first packet of its group, if it follows one.
    first_of: [u8; BATCH],
    /// Per first packet: how many packets follow it, and their bytes.
    packets: [u32; BATCH],
    bytes: [u64; BATCH],
    /// Per first packet: the state its hit found, once it counted its
    /// followers.
    counted: [Option<ConnState>; BATCH],
    /// The policy generation the batch is judged by: followers are counted
    /// only on an entry it admitted.
    generation: u32,
}

impl BatchGroups {
    pub fn new(generation: u32) -> Self {
        Self {
            firsts: [NONE; SLOTS],
            first_of: [NONE; BATCH],
            packets: [0; BATCH],
            bytes: [0; BATCH],
            counted: [None; BATCH],
            generation,
        }
    }

    /// Files packet `index` (below `BATCH`), a groupable one of `bytes`
    /// whose key is `key` in `zone`; `earlier` holds the batch's packets
    /// before it, parsed. True if it follows an earlier packet of the same
    /// connection and sender: it needs no lookup of its own then.
    pub fn join(
        &mut self,
        index: usize,
        key: &FlowKey,
        zone: u16,
        bytes: u32,
        earlier: &[Result<ParsedFrame, DropReason>],
    ) -> bool {
        let slot = &mut self.firsts[slot_of(key, zone)];
        if *slot == NONE {
            // `index` is below BATCH, which fits a byte (asserted above).
            *slot = index as u8;
            return false;
        }
        let first = usize::from(*slot);
        let same = match earlier.get(first) {
            Some(Ok(parsed)) => match &parsed.kind {
                FrameKind::Ip(first_key) => {
                    parsed.vlan.inner == zone && same_connection_and_sender(first_key, key)
                }
                _ => false,
            },
            _ => false,
        };
        if !same {
            return false;
        }
        self.first_of[index] = *slot;
        self.packets[first] = self.packets[first].saturating_add(1);
        self.bytes[first] = self.bytes[first].saturating_add(u64::from(bytes));
        true
    }

    /// What follows packet `index` (no packets if nothing does).
    pub fn followers_of(&self, index: usize) -> Followers {
        Followers {
            packets: self.packets[index],
            bytes: self.bytes[index],
            generation: self.generation,
        }
    }

    /// Packet `index`'s hit counted its followers; the entry was in `state`.
    pub fn set_counted(&mut self, index: usize, state: ConnState) {
        self.counted[index] = Some(state);
    }

    /// If packet `index` follows one whose hit counted it: the state that
    /// hit found.
    pub fn counted_for(&self, index: usize) -> Option<ConnState> {
        let first = self.first_of[index];
        if first == NONE {
            return None;
        }
        self.counted[usize::from(first)]
    }
}

/// Do two keys of one zone name the same connection, sent by the same end?
/// Equal addresses, protocol and ports (ICMP's identifier and type) make
/// equal conntrack keys and senders (`ConnKey::from_flow`).
fn same_connection_and_sender(a: &FlowKey, b: &FlowKey) -> bool {
    a.src == b.src
        && a.dst == b.dst
        && a.src_port == b.src_port
        && a.dst_port == b.dst_port
        && a.proto == b.proto
        && a.family == b.family
}

/// The slot of the groups' table for a key in `zone`: a multiplicative
/// hash of what `same_connection_and_sender` compares, cheaper than
/// conntrack's (a collision only leaves a packet ungrouped).
fn slot_of(key: &FlowKey, zone: u16) -> usize {
    let fold = |addr: u128| (addr as u64) ^ ((addr >> 64) as u64).rotate_left(29);
    let ports = u64::from(key.src_port) << 16 | u64::from(key.dst_port);
    let rest = ports << 32 | u64::from(zone) << 8 | u64::from(key.proto);
    let mixed = fold(key.src) ^ fold(key.dst).rotate_left(17) ^ rest;
    let bits = SLOTS.trailing_zeros();
    (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}
