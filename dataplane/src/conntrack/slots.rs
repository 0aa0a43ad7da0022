//! The connection table's storage: open addressing in arrays allocated and
//! touched once, at the table's full size, split into shards that lock
//! independently.
//!
//! Why not `hashbrown` tables behind mutexes (the previous design, and
//! still `crate::sharded` for smaller tables):
//! - **Memory.** hashbrown rounds every shard up to a power of two and
//!   fills it to at most 7/8, which cost 156 bytes per entry at 1M. Here a
//!   slot is exactly the encoded key and entry (112 bytes) plus a tag byte,
//!   and the arrays are sized for the capacity with headroom for uneven
//!   shards, not to a power of two.
//! - **Batching.** The arrays live outside the locks, so a batch of
//!   packets can prefetch every packet's tags and slot before taking any
//!   lock; the cache misses of a batch then overlap instead of queueing
//!   one after the other behind each lock's atomic instruction.
//! - **No page faults on the packet path**: the arrays are written once
//!   when the table is made.
//!
//! Layout: per slot a tag byte (0: empty; else the high bit and 7 bits of
//! the hash) and `SLOT_WORDS` words, the key then the entry, in two parts:
//! a cache line (`HotLine`) with what a hit of a protocol without a state
//! machine reads and writes when the key's addresses are IPv4-sized, and
//! the rest (`COLD_WORDS`) in a second array. So a UDP or ICMP hit on an
//! IPv4 connection reads one tag line and dirties one slot line, where a
//! 112-byte slot spans 2.5 lines on average (docs/performance-notes.md,
//! "One line per hit"); if the connection lives in its home slot (about
//! three in four at half load) it reads no tag line at all: a probe first
//! compares a packed key with its home slot's hot line, and an empty
//! slot's first word is zero, which no key's is (`holds_packed`). Which
//! words go where (`ShardGuard::entry_cells`):
//!
//! | | hot line (8 words) | cold part (6 words) |
//! |---|---|---|
//! | packed key (IPv4) | key head, both addresses, bytes ×2, entry words 0-3 | TCP windows ×2, workloads, 3 unused |
//! | whole key (IPv6) | key head, 3 address words, entry words 0-3 | TCP windows ×2, workloads, last address word, bytes ×2 |
//!
//! A key probes linearly from its home slot within its shard; a removal
//! shifts the following entries of its run back (no tombstones, so probe
//! lengths do not decay with churn). A shard never fills past
//! `MAX_SHARD_LOAD`, so every probe meets an empty slot.
//!
//! Every access is atomic with relaxed ordering, so this needs no `unsafe`:
//! the shard lock's acquire and release order them, and on x86-64 a
//! relaxed load or store is a plain move. Outside a lock only prefetch
//! hints read the arrays.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use prefetch_index::prefetch_index;

use super::entry::{
    state_of_word, with_workload, ConnEntry, ConnState, ENTRY_WORDS, LAST_SEEN_WORD, STATE_WORD,
    WORKLOADS_WORD,
};
use super::hash::KeyHasher;
use super::key::{ConnKey, KEY_WORDS};
use crate::hashing::shard_and_home;
use crate::packet::AddrFamily;
use crate::spin;

/// Words per slot: the key, then the entry.
pub(crate) const SLOT_WORDS: usize = KEY_WORDS + ENTRY_WORDS;

/// Words of a slot's first part, one cache line.
const HOT_WORDS: usize = 8;

/// Words of its second part.
const COLD_WORDS: usize = SLOT_WORDS - HOT_WORDS;

/// Where the cold part keeps a whole key's last word.
const COLD_KEY_WORD: usize = 3;

/// Set in a stored key's first word when its addresses are packed into the
/// hot line's second word. It is the top bit of the family byte, which is
/// 4 or 6, so no key's own first word has it.
const PACKED: u64 = 1 << 23;

/// Does a hot line hold `key`, if it is packed? (Whole keys are not
/// looked for this way: a part of them is in the cold part.) True only for
/// an occupied slot: an empty one's first word is zero, and a key's never
/// is (its family byte is 4 or 6).
#[inline]
fn holds_packed(hot: &[AtomicU64; HOT_WORDS], key: &StoredKey) -> bool {
    match key {
        StoredKey::Packed([head, addresses]) => {
            hot[0].load(Ordering::Relaxed) == *head && hot[1].load(Ordering::Relaxed) == *addresses
        }
        StoredKey::Whole(_) => false,
    }
}

/// Tag of an empty slot.
const EMPTY: u8 = 0;

/// Most a shard may fill, in percent of its slots: linear probing stays
/// short below it, and a probe always finds an empty slot.
const MAX_SHARD_LOAD_PERCENT: usize = 97;

/// A slot's first part, aligned so that it is one cache line.
#[derive(Debug)]
#[repr(align(64))]
struct HotLine([AtomicU64; HOT_WORDS]);

/// A key as a slot stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoredKey {
    /// Both addresses fit 32 bits (IPv4): the first word with `PACKED`,
    /// and the two addresses in one word.
    Packed([u64; 2]),
    /// Any other key, word for word.
    Whole([u64; KEY_WORDS]),
}

impl StoredKey {
    #[inline]
    fn of(words: &[u64; KEY_WORDS]) -> Self {
        let [head, a_high, a_low, b_high, b_low] = *words;
        debug_assert_eq!(head & PACKED, 0, "a key's family byte is 4 or 6");
        if a_high == 0 && b_high == 0 && (a_low | b_low) >> 32 == 0 {
            StoredKey::Packed([head | PACKED, a_low | b_low << 32])
        } else {
            StoredKey::Whole(*words)
        }
    }

    fn is_packed(&self) -> bool {
        matches!(self, StoredKey::Packed(_))
    }
}

/// Where a hash lives: its shard, its home slot (absolute) and its tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Place {
    pub shard: usize,
    home: usize,
    tag: u8,
}

/// What a probe for a key found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key is in this slot.
    Found(usize),
    /// The key is absent; this empty slot ends its probe.
    Vacant(usize),
}

/// Words of the entry every slot keeps in its hot line, whatever its
/// key's form, and where in the line they start (`entry_cells`).
const HOT_ENTRY_WORDS: usize = 4;
const HOT_ENTRY_START: usize = HOT_WORDS - HOT_ENTRY_WORDS;

/// The part of a slot that is in its hot line whatever the key's form:
/// the key's first word (zone, family, protocol, ports; `ConnKey::encode`)
/// and the entry's first words (state, rule, last seen, packets;
/// `ConnEntry::encode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HotFields {
    key_head: u64,
    entry_head: [u64; HOT_ENTRY_WORDS],
}

impl HotFields {
    pub fn proto(&self) -> u8 {
        ConnKey::proto_of_head(self.key_head)
    }

    pub fn family(&self) -> AddrFamily {
        ConnKey::family_of_head(self.key_head)
    }

    pub fn state(&self) -> ConnState {
        state_of_word(self.entry_head[STATE_WORD])
    }

    pub fn last_seen(&self) -> u64 {
        self.entry_head[LAST_SEEN_WORD]
    }

    #[cfg(test)]
    fn rule_id(&self) -> u32 {
        self.entry_head[super::entry::RULE_WORD] as u32
    }
}

/// One shard's lock, fill and expiry bound.
#[derive(Debug, Default)]
struct Shard {
    locked: AtomicBool,
    len: AtomicUsize,
    /// No entry of the shard expires before this (ns on the table's
    /// clock): a lower bound, kept by the table's writers under the lock
    /// (`ShardGuard::note_expiry`) and made exact again by each scan of
    /// the shard. 0 (the start) means unknown: the next sweep scans.
    earliest_expiry: AtomicU64,
}

/// The slot arrays and their shard locks.
#[derive(Debug)]
pub(crate) struct SlotTable {
    tags: Box<[AtomicU8]>,
    /// Per slot its first part (`HotLine`).
    hot: Box<[HotLine]>,
    /// Per slot the rest of its words.
    cold: Box<[[AtomicU64; COLD_WORDS]]>,
    shards: Box<[CachePadded<Shard>]>,
    shard_slots: usize,
    shard_limit: usize,
    hasher: KeyHasher,
}

/// Slots for a shard expected to hold `entries` at the table's capacity:
/// four standard deviations of headroom for uneven hashing (shards of
/// 7,000 entries spread by about 1%), then the load cap.
fn slots_for(entries: usize) -> usize {
    let with_headroom = entries + 4 * entries.isqrt() + 8;
    (with_headroom * 100).div_ceil(MAX_SHARD_LOAD_PERCENT)
}

fn zeroed<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn load_all<const N: usize>(cells: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|index| cells[index].load(Ordering::Relaxed))
}

/// Stores `words` into the first cells of `cells`.
fn store_all(cells: &[AtomicU64], words: &[u64]) {
    for (cell, word) in cells.iter().zip(words) {
        cell.store(*word, Ordering::Relaxed);
    }
}

impl SlotTable {
    /// `shards` shards, each sized for `per_shard` entries.
    pub fn new(shards: usize, per_shard: usize) -> Self {
        let shards = shards.max(1);
        let shard_slots = slots_for(per_shard);
        let slots = shards * shard_slots;
        Self {
            tags: (0..slots).map(|_| AtomicU8::new(EMPTY)).collect(),
            hot: (0..slots).map(|_| HotLine(zeroed())).collect(),
            cold: (0..slots).map(|_| zeroed()).collect(),
            shards: (0..shards).map(|_| CachePadded::default()).collect(),
            shard_slots,
            shard_limit: shard_slots * MAX_SHARD_LOAD_PERCENT / 100,
            hasher: KeyHasher::new(),
        }
    }

    /// The table's hash of a key's stored words (randomly keyed per table).
    #[inline]
    pub fn hash(&self, words: &[u64; KEY_WORDS]) -> u64 {
        self.hasher.hash(words)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Slots in all (for memory accounting in tests).
    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.tags.len()
    }

    /// Shard, home and tag of `hash`: the shard from its high bits, the
    /// home from its low 32 bits, the tag from bits 32..39, so the three
    /// are independent.
    #[inline]
    pub fn place(&self, hash: u64) -> Place {
        let (shard, home) = shard_and_home(hash, self.shards.len(), self.shard_slots);
        Place {
            shard,
            home,
            tag: 0x80 | ((hash >> 32) as u8 & 0x7f),
        }
    }

    /// Prefetch hint, first step of a batch: the home slot's hot line,
    /// which holds a packed key that lives there whole (`home_holds`).
    #[inline]
    pub fn prefetch_home(&self, place: &Place) {
        prefetch_index(&self.hot, place.home);
    }

    /// Does the home slot of `place` hold `key`, read without the lock?
    /// A hint for the batch's next steps (only keys away from home need
    /// their tags and slot prefetched); a stale read only makes it wrong.
    #[inline]
    pub fn home_holds(&self, place: &Place, key: &[u64; KEY_WORDS]) -> bool {
        holds_packed(&self.hot[place.home].0, &StoredKey::of(key))
    }

    /// Prefetch hint, first step of a batch: the tag bytes of a home.
    #[inline]
    pub fn prefetch_tags(&self, place: &Place) {
        prefetch_index(&self.tags, place.home);
    }

    /// Prefetch hint, second step: reads the (by now cached) tags without
    /// the lock and prefetches the slot a probe would stop at: its hot
    /// line, and its cold part too for an insert (the probe would stop at
    /// an empty slot), a key that is not packed, or a hit that reads the
    /// whole entry (`whole_entry`, TCP's). A stale read only makes the hint
    /// wrong, never the lookup.
    #[inline]
    pub fn prefetch_slot(&self, place: &Place, key: &[u64; KEY_WORDS], whole_entry: bool) {
        let base = place.shard * self.shard_slots;
        let end = base + self.shard_slots;
        let mut slot = place.home;
        let mut tag = EMPTY;
        for _ in 0..self.shard_slots {
            tag = self.tags[slot].load(Ordering::Relaxed);
            if tag == EMPTY || tag == place.tag {
                break;
            }
            slot = if slot + 1 == end { base } else { slot + 1 };
        }
        prefetch_index(&self.hot, slot);
        if tag == EMPTY || whole_entry || !StoredKey::of(key).is_packed() {
            self.prefetch_cold(slot);
        }
    }

    /// Prefetch hint: the cold part of `place`'s home slot, for a hit there
    /// that reads the whole entry (TCP's windows).
    #[inline]
    pub fn prefetch_home_cold(&self, place: &Place) {
        self.prefetch_cold(place.home);
    }

    /// Prefetches slot `slot`'s cold part, which spans up to two lines.
    #[inline]
    fn prefetch_cold(&self, slot: usize) {
        let words = self.cold.as_flattened();
        prefetch_index(words, slot * COLD_WORDS);
        prefetch_index(words, slot * COLD_WORDS + COLD_WORDS - 1);
    }

    /// Locks shard `shard` (below `shard_count`; `crate::spin`).
    #[inline]
    pub fn lock(&self, shard: usize) -> ShardGuard<'_> {
        spin::acquire(&self.shards[shard].locked);
        ShardGuard {
            table: self,
            shard,
            base: shard * self.shard_slots,
        }
    }
}

/// A locked shard. Slot indices are absolute and valid only while the
/// guard lives (a removal moves entries).
#[derive(Debug)]
pub(crate) struct ShardGuard<'a> {
    table: &'a SlotTable,
    shard: usize,
    base: usize,
}

impl Drop for ShardGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        spin::release(&self.table.shards[self.shard].locked);
    }
}

impl ShardGuard<'_> {
    #[inline]
    fn next(&self, slot: usize) -> usize {
        if slot + 1 == self.base + self.table.shard_slots {
            self.base
        } else {
            slot + 1
        }
    }

    #[inline]
    fn tag(&self, slot: usize) -> u8 {
        self.table.tags[slot].load(Ordering::Relaxed)
    }

    #[inline]
    fn hot(&self, slot: usize) -> &[AtomicU64; HOT_WORDS] {
        &self.table.hot[slot].0
    }

    #[inline]
    fn cold(&self, slot: usize) -> &[AtomicU64; COLD_WORDS] {
        &self.table.cold[slot]
    }

    /// The key in `slot` is packed (`StoredKey::Packed`).
    #[inline]
    fn is_packed(&self, slot: usize) -> bool {
        self.hot(slot)[0].load(Ordering::Relaxed) & PACKED != 0
    }

    #[inline]
    fn key_matches(&self, slot: usize, key: &StoredKey) -> bool {
        let equal = |cells: &[AtomicU64], words: &[u64]| {
            cells
                .iter()
                .zip(words)
                .all(|(cell, word)| cell.load(Ordering::Relaxed) == *word)
        };
        match key {
            StoredKey::Packed(_) => holds_packed(self.hot(slot), key),
            StoredKey::Whole(words) => {
                equal(self.hot(slot), &words[..KEY_WORDS - 1])
                    && self.cold(slot)[COLD_KEY_WORD].load(Ordering::Relaxed)
                        == words[KEY_WORDS - 1]
            }
        }
    }

    /// Finds `key` (as words) placed at `place`, which must be this
    /// shard's.
    #[inline]
    pub fn probe(&self, key: &[u64; KEY_WORDS], place: &Place) -> Probe {
        let key = StoredKey::of(key);
        // A packed key at home is found in the hot line alone, without the
        // tag line: an empty slot's first word is zero (`remove`), which
        // no key's is.
        if holds_packed(self.hot(place.home), &key) {
            return Probe::Found(place.home);
        }
        let mut slot = place.home;
        // The load cap guarantees an empty slot; the bound only makes a
        // broken invariant end rather than spin.
        for _ in 0..self.table.shard_slots {
            let tag = self.tag(slot);
            if tag == EMPTY {
                return Probe::Vacant(slot);
            }
            if tag == place.tag && self.key_matches(slot, &key) {
                return Probe::Found(slot);
            }
            slot = self.next(slot);
        }
        Probe::Vacant(slot)
    }

    #[inline]
    pub fn key(&self, slot: usize) -> ConnKey {
        ConnKey::decode(&self.key_words(slot))
    }

    /// The words of the key in `slot` (`ConnKey::encode`).
    #[inline]
    fn key_words(&self, slot: usize) -> [u64; KEY_WORDS] {
        let hot = |index: usize| self.hot(slot)[index].load(Ordering::Relaxed);
        if self.is_packed(slot) {
            let addrs = hot(1);
            [hot(0) & !PACKED, 0, addrs & 0xffff_ffff, 0, addrs >> 32]
        } else {
            [
                hot(0),
                hot(1),
                hot(2),
                hot(3),
                self.cold(slot)[COLD_KEY_WORD].load(Ordering::Relaxed),
            ]
        }
    }

    fn set_key(&self, slot: usize, key: &StoredKey) {
        let head = match key {
            StoredKey::Packed(words) => &words[..],
            StoredKey::Whole(words) => {
                self.cold(slot)[COLD_KEY_WORD].store(words[KEY_WORDS - 1], Ordering::Relaxed);
                &words[..KEY_WORDS - 1]
            }
        };
        store_all(self.hot(slot), head);
    }

    #[inline]
    pub fn entry(&self, slot: usize) -> ConnEntry {
        ConnEntry::decode(&self.entry_words(slot))
    }

    #[inline]
    pub fn set_entry(&self, slot: usize, entry: &ConnEntry) {
        self.set_entry_words(slot, &entry.encode());
    }

    /// Where the entry words of `slot` live. The first
    /// `entry::COUNTED_WORDS` are what a hit of a protocol without a state
    /// machine changes; with a packed key they are all in the hot line.
    #[inline]
    fn entry_cells(&self, slot: usize) -> [&AtomicU64; ENTRY_WORDS] {
        let (hot, cold) = (self.hot(slot), self.cold(slot));
        let [bytes_a, bytes_b] = if self.is_packed(slot) {
            [&hot[2], &hot[3]]
        } else {
            [&cold[4], &cold[5]]
        };
        let head = &hot[HOT_ENTRY_START..];
        [
            &head[0], &head[1], &head[2], &head[3], bytes_a, bytes_b, &cold[0], &cold[1], &cold[2],
        ]
    }

    /// The first `N` words of the stored entry of `slot` (`ConnEntry::
    /// encode`): all of them, or the `entry::COUNTED_WORDS` a hit of a
    /// protocol without a state machine needs.
    #[inline]
    pub fn entry_words<const N: usize>(&self, slot: usize) -> [u64; N] {
        const { assert!(N <= ENTRY_WORDS) };
        let cells = self.entry_cells(slot);
        std::array::from_fn(|index| cells[index].load(Ordering::Relaxed))
    }

    /// Stores the first `N` words of the entry of `slot`.
    #[inline]
    pub fn set_entry_words<const N: usize>(&self, slot: usize, entry: &[u64; N]) {
        const { assert!(N <= ENTRY_WORDS) };
        for (cell, word) in self.entry_cells(slot).iter().zip(entry) {
            cell.store(*word, Ordering::Relaxed);
        }
    }

    /// Records `workload` (0: unknown, which changes nothing) as endpoint
    /// `sender`'s in the entry of `slot`: the one word outside the counted
    /// ones that a counted hit may change, in the cold part.
    #[inline]
    pub fn note_workload(&self, slot: usize, sender: u8, workload: u32) {
        let cell = self.entry_cells(slot)[WORKLOADS_WORD];
        cell.store(
            with_workload(cell.load(Ordering::Relaxed), sender, workload),
            Ordering::Relaxed,
        );
    }

    /// No entry of this shard expires before this (`Shard::
    /// earliest_expiry`).
    #[inline]
    pub fn expiry_bound(&self) -> u64 {
        self.table.shards[self.shard]
            .earliest_expiry
            .load(Ordering::Relaxed)
    }

    /// Lowers the shard's expiry bound to `at` if it is later: every write
    /// of an entry calls this with the entry's new expiry.
    #[inline]
    pub fn note_expiry(&self, at: u64) {
        let bound = &self.table.shards[self.shard].earliest_expiry;
        if at < bound.load(Ordering::Relaxed) {
            bound.store(at, Ordering::Relaxed);
        }
    }

    /// Sets the shard's expiry bound after a scan found the earliest
    /// expiry of its entries to be `at` (`u64::MAX`: no entry).
    #[inline]
    pub fn set_expiry_bound(&self, at: u64) {
        self.table.shards[self.shard]
            .earliest_expiry
            .store(at, Ordering::Relaxed);
    }

    /// Entries in this shard.
    #[inline]
    pub fn len(&self) -> usize {
        self.table.shards[self.shard].len.load(Ordering::Relaxed)
    }

    /// The shard holds as many entries as its load cap allows.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len() >= self.table.shard_limit
    }

    /// Stores a new entry in `slot`, the vacant slot a probe for `key` at
    /// `place` returned. The caller checked `is_full`.
    #[inline]
    pub fn insert(&self, slot: usize, place: &Place, key: &[u64; KEY_WORDS], entry: &ConnEntry) {
        self.set_key(slot, &StoredKey::of(key));
        self.set_entry(slot, entry);
        self.table.tags[slot].store(place.tag, Ordering::Relaxed);
        self.table.shards[self.shard]
            .len
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the entry in `slot` and returns it. The entries after it in
    /// its run move back where their probe still finds them (Knuth's
    /// algorithm R), so no tombstone is left.
    pub fn remove(&self, slot: usize) -> (ConnKey, ConnEntry) {
        let removed = (self.key(slot), self.entry(slot));
        let size = self.table.shard_slots;
        let mut hole = slot;
        let mut next = slot;
        loop {
            next = self.next(next);
            if self.tag(next) == EMPTY {
                break;
            }
            let home = self
                .table
                .place(self.table.hash(&self.key_words(next)))
                .home;
            // `next` may fill the hole unless its home lies cyclically in
            // (hole, next].
            let from_home = (next + size - home) % size;
            let from_hole = (next + size - hole) % size;
            if from_home >= from_hole {
                self.move_slot(next, hole);
                hole = next;
            }
        }
        self.table.tags[hole].store(EMPTY, Ordering::Relaxed);
        // An empty slot's stale key must not match (`probe`'s home check).
        self.hot(hole)[0].store(0, Ordering::Relaxed);
        self.table.shards[self.shard]
            .len
            .fetch_sub(1, Ordering::Relaxed);
        removed
    }

    fn move_slot(&self, from: usize, to: usize) {
        store_all(self.hot(to), &load_all(self.hot(from)));
        store_all(self.cold(to), &load_all(self.cold(from)));
        self.table.tags[to].store(self.tag(from), Ordering::Relaxed);
    }

    /// The occupied slots, in order. Do not remove while iterating; use
    /// `retain`.
    pub fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        (self.base..self.base + self.table.shard_slots).filter(|&slot| self.tag(slot) != EMPTY)
    }

    /// What the hot line of `slot` holds of its key and entry, whatever
    /// the key's form: enough to decide its expiry, or whether it is an
    /// early-drop candidate, without touching the cold part.
    #[inline]
    pub fn hot_fields(&self, slot: usize) -> HotFields {
        let hot = self.hot(slot);
        HotFields {
            key_head: hot[0].load(Ordering::Relaxed) & !PACKED,
            entry_head: std::array::from_fn(|index| {
                hot[HOT_ENTRY_START + index].load(Ordering::Relaxed)
            }),
        }
    }

    /// Removes every entry `keep` refuses, appending them to `removed`.
    /// `keep` sees only the slot's hot line (`HotFields`): a sweep over a
    /// shard of live entries reads one line per entry. A removal can pull
    /// a later entry into the current slot, so the scan looks at a slot
    /// again after removing from it; an entry moved from the run's
    /// wrapped start may be looked at twice, which `keep` must tolerate
    /// (it is asked the same question).
    pub fn retain(
        &self,
        mut keep: impl FnMut(&HotFields) -> bool,
        removed: &mut Vec<(ConnKey, ConnEntry)>,
    ) {
        let end = self.base + self.table.shard_slots;
        let mut slot = self.base;
        while slot < end {
            if self.tag(slot) != EMPTY && !keep(&self.hot_fields(slot)) {
                removed.push(self.remove(slot));
                continue;
            }
            slot += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::classifier::classbench::SplitMix64;
    use crate::conntrack::entry::ConnState;
    use crate::packet::{proto, AddrFamily, FlowKey};

    /// Keys of every stored form: IPv4 (packed), IPv6 (whole), IPv6 with
    /// addresses under 2^32 (packed, told apart by the family) and IPv4
    /// with a wide address (whole; no parser makes one, the table must
    /// still hold it). The IPv6 keys share their ports, so they differ in
    /// the word a whole key keeps in the cold part only.
    fn key(n: u32) -> ConnKey {
        let small = u128::from(0x0a00_0000 | n);
        let (family, src) = match n % 4 {
            0 => (AddrFamily::V4, small),
            1 => (AddrFamily::V6, 0xfd00 << 112 | small),
            2 => (AddrFamily::V6, small),
            _ => (AddrFamily::V4, small | 1 << 40),
        };
        let flow = FlowKey {
            family,
            src,
            dst: 0x0a80_0001,
            proto: proto::UDP,
            src_port: if n % 4 == 1 {
                1024
            } else {
                (n % 50_000) as u16 + 1024
            },
            dst_port: 53,
            ..FlowKey::default()
        };
        ConnKey::from_flow(&flow, 0).0
    }

    fn entry(n: u32) -> ConnEntry {
        ConnEntry {
            rule_id: n,
            packets: [n, n / 2],
            last_seen: u64::from(n) * 1_000_000,
            first_seen: u64::from(n) * 1_000_000,
            ..ConnEntry::default()
        }
    }

    fn find(table: &SlotTable, key: &ConnKey) -> Option<ConnEntry> {
        let place = table.place(table.hash(&key.encode()));
        let shard = table.lock(place.shard);
        match shard.probe(&key.encode(), &place) {
            Probe::Found(slot) => Some(shard.entry(slot)),
            Probe::Vacant(_) => None,
        }
    }

    /// Inserts unless present or the shard is full; true if inserted.
    fn insert(table: &SlotTable, key: &ConnKey, value: &ConnEntry) -> bool {
        let place = table.place(table.hash(&key.encode()));
        let shard = table.lock(place.shard);
        match shard.probe(&key.encode(), &place) {
            Probe::Vacant(slot) if !shard.is_full() => {
                shard.insert(slot, &place, &key.encode(), value);
                true
            }
            _ => false,
        }
    }

    fn remove(table: &SlotTable, key: &ConnKey) -> Option<ConnEntry> {
        let place = table.place(table.hash(&key.encode()));
        let shard = table.lock(place.shard);
        match shard.probe(&key.encode(), &place) {
            Probe::Found(slot) => Some(shard.remove(slot).1),
            Probe::Vacant(_) => None,
        }
    }

    fn assert_matches_model(table: &SlotTable, model: &HashMap<u32, ConnEntry>, keys: u32) {
        for n in 0..keys {
            assert_eq!(find(table, &key(n)), model.get(&n).copied(), "key {n}");
        }
        let stored: usize = (0..table.shard_count())
            .map(|index| table.lock(index).len())
            .sum();
        assert_eq!(stored, model.len());
    }

    /// Random inserts and removals in small, nearly full shards (long
    /// runs that wrap around the shard's end) agree with a map after every
    /// step: backward-shift removal never loses or hides an entry.
    #[test]
    fn inserts_and_removals_agree_with_a_map() {
        for seed in 0..8 {
            let table = SlotTable::new(2, 12);
            let mut model = HashMap::new();
            let mut rng = SplitMix64::new(seed);
            let keys = 60;
            for _ in 0..600 {
                let n = (rng.next_u64() % u64::from(keys)) as u32;
                if rng.next_u64() % 3 == 0 {
                    assert_eq!(remove(&table, &key(n)), model.remove(&n));
                } else if insert(&table, &key(n), &entry(n)) {
                    assert!(model.insert(n, entry(n)).is_none());
                }
                assert_matches_model(&table, &model, keys);
            }
        }
    }

    /// Every word of key and entry comes back from a slot of each key
    /// form, also after the slot moved; the counted words of a packed key
    /// sit in the hot line; a single word's store lands where the whole
    /// entry's read finds it.
    #[test]
    fn keys_and_entries_of_every_form_round_trip_through_their_slots() {
        use crate::conntrack::entry::{TcpDirection, COUNTED_WORDS};
        let full = |n: u32| ConnEntry {
            state: ConnState::TcpEstablished,
            originator: 1,
            closer: 1,
            flags_seen: [n as u8, (n >> 8) as u8],
            generation: n ^ 0xdead_beef,
            rule_id: n,
            packets: [n, !n],
            bytes: [u64::from(n) << 33, u64::MAX - u64::from(n)],
            first_seen: u64::from(n) * 1_000_000,
            last_seen: u64::from(n) * 1_000_000 + 5_000_000,
            tcp: [
                TcpDirection {
                    max_end: n,
                    max_window: 7,
                    scale: 3,
                    seen: true,
                },
                TcpDirection {
                    max_end: !n,
                    max_window: 9,
                    scale: 14,
                    seen: true,
                },
            ],
            workloads: [n + 1, n + 2],
        };
        let table = SlotTable::new(1, 64);
        for n in 0..40 {
            assert!(insert(&table, &key(n), &full(n)));
        }
        let shard = table.lock(0);
        let slots: Vec<usize> = shard.occupied().collect();
        assert_eq!(slots.len(), 40);
        for slot in slots {
            let n = shard.entry(slot).rule_id;
            assert_eq!(shard.key(slot), key(n), "slot {slot}");
            let hot_line = shard.hot(slot).as_ptr_range();
            let in_hot_line = shard.entry_cells(slot)[..COUNTED_WORDS]
                .iter()
                .all(|cell| hot_line.contains(&std::ptr::from_ref(*cell)));
            assert_eq!(in_hot_line, n % 4 == 0 || n % 4 == 2, "key {n}");
            assert_eq!(shard.entry(slot), full(n));
            let words = full(n).encode();
            assert_eq!(
                shard.entry_words::<COUNTED_WORDS>(slot)[..],
                words[..COUNTED_WORDS]
            );
            shard.note_workload(slot, 0, 77);
            assert_eq!(shard.entry(slot).workloads, [77, n + 2]);
            assert_eq!(
                shard.entry_words::<ENTRY_WORDS>(slot)[..WORKLOADS_WORD],
                words[..WORKLOADS_WORD]
            );
        }
        drop(shard);
        // Removals shift runs back: what moved still reads back whole.
        for n in (0..40).step_by(3) {
            assert!(remove(&table, &key(n)).is_some());
        }
        for n in 0..40 {
            let found = find(&table, &key(n));
            if n % 3 == 0 {
                assert_eq!(found, None);
            } else {
                assert_eq!(found.map(|entry| entry.rule_id), Some(n));
                assert_eq!(found.map(|entry| entry.bytes), Some(full(n).bytes));
            }
        }
    }

    #[test]
    fn a_shard_refuses_past_its_load_cap_and_probes_still_end() {
        let table = SlotTable::new(1, 20);
        let mut inserted = 0;
        for n in 0..1_000 {
            if insert(&table, &key(n), &entry(n)) {
                inserted += 1;
            }
        }
        assert_eq!(inserted, table.shard_limit);
        assert!(table.shard_limit < table.shard_slots);
        assert!(table.lock(0).is_full());
        // Absent keys end at the empty slots the cap keeps.
        for n in 1_000..1_100 {
            assert_eq!(find(&table, &key(n)), None);
        }
    }

    #[test]
    fn retain_removes_exactly_the_refused_entries() {
        for seed in 0..8 {
            let table = SlotTable::new(1, 40);
            let mut rng = SplitMix64::new(seed);
            let mut model = HashMap::new();
            for n in 0..200 {
                if insert(&table, &key(n), &entry(n)) {
                    model.insert(n, entry(n));
                }
            }
            let doomed = rng.next_u64() % 5 + 2;
            let mut removed = Vec::new();
            table
                .lock(0)
                .retain(|hot| u64::from(hot.rule_id()) % doomed != 0, &mut removed);
            let mut removed_ids: Vec<u32> = removed.iter().map(|(_, e)| e.rule_id).collect();
            removed_ids.sort_unstable();
            let mut expected: Vec<u32> = model
                .keys()
                .copied()
                .filter(|n| u64::from(*n) % doomed == 0)
                .collect();
            expected.sort_unstable();
            assert_eq!(removed_ids, expected);
            model.retain(|n, _| u64::from(*n) % doomed != 0);
            assert_matches_model(&table, &model, 200);
        }
    }

    #[test]
    fn occupied_lists_every_entry_once() {
        let table = SlotTable::new(3, 50);
        for n in 0..100 {
            assert!(insert(&table, &key(n), &entry(n)));
        }
        let mut seen: Vec<u32> = (0..table.shard_count())
            .flat_map(|index| {
                let shard = table.lock(index);
                shard
                    .occupied()
                    .map(|slot| shard.entry(slot).rule_id)
                    .collect::<Vec<_>>()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    /// The memory target of issue 4: at 1M entries, the arrays cost at
    /// most 128 bytes per entry (the bench measures every allocation).
    #[test]
    fn a_million_entry_table_needs_under_128_bytes_per_entry() {
        let shards = 140;
        let table = SlotTable::new(shards, 1_000_000usize.div_ceil(shards));
        let bytes = table.slot_count() * (SLOT_WORDS * 8 + 1);
        assert!(
            bytes <= 128 * 1_000_000,
            "{} bytes per entry",
            bytes / 1_000_000
        );
        assert_eq!(SLOT_WORDS * 8, 112);
    }

    #[test]
    fn a_busy_lock_is_waited_for() {
        let table = std::sync::Arc::new(SlotTable::new(1, 10));
        let counter = std::sync::Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (table, counter) = (table.clone(), counter.clone());
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        let _guard = table.lock(0);
                        // A non-atomic increment: lost updates if two
                        // threads ever held the lock at once.
                        let value = counter.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        counter.store(value + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 40_000);
    }
}
