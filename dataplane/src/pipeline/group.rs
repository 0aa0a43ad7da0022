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
//! again. The followers' own verdicts are unchanged; only the entry's
//! state as reported to them is the one the first packet found (a reply
//! between them marks a UDP connection answered a few frames earlier than
//! they learn it, which nothing in their forwarding reads).
//!
//! Not grouped: TCP (each segment is checked against the window its
//! predecessors moved), ICMP errors (judged by the packet they quote),
//! later fragments and neighbour discovery (never looked up). A follower
//! whose first packet did not count it, because the first missed (a new
//! connection), was cut or readmitted by a new policy, or ended, is judged
//! on its own as before.

use crate::conntrack::{ConnState, Followers, Prepared, BATCH};

/// Slots of the table that finds each packet's group: twice the batch, so
/// that different connections seldom meet in one (a packet whose slot
/// holds another connection is not grouped, only judged on its own).
const SLOTS: usize = 2 * BATCH;

/// No packet: an empty slot, or a packet that follows none.
const NONE: u8 = u8::MAX;

const _: () = assert!(BATCH < NONE as usize, "batch indexes fit a byte");

/// The groups of one batch, in the batch's own indexes.
pub(super) struct BatchGroups {
    /// By `Prepared::group_hint`: the first groupable packet seen there.
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
    /// whose lookup is `lookup`; `earlier` holds the lookups of the
    /// batch's packets before it. True if it follows an earlier packet of
    /// the same connection and sender: its lookup is then the first's.
    pub fn join(
        &mut self,
        index: usize,
        lookup: &Prepared,
        bytes: u32,
        earlier: &[Option<Prepared>],
    ) -> bool {
        let slot = &mut self.firsts[lookup.group_hint() % SLOTS];
        if *slot == NONE {
            // `index` is below BATCH, which fits a byte (asserted above).
            *slot = index as u8;
            return false;
        }
        let first = usize::from(*slot);
        let same = earlier
            .get(first)
            .and_then(Option::as_ref)
            .is_some_and(|first| first.same_sender_and_connection(lookup));
        if !same {
            return false;
        }
        self.first_of[index] = *slot;
        self.packets[first] = self.packets[first].saturating_add(1);
        self.bytes[first] = self.bytes[first].saturating_add(u64::from(bytes));
        true
    }

    /// Does packet `index` follow another of its group?
    pub fn follows(&self, index: usize) -> bool {
        self.first_of[index] != NONE
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
