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
//! the hash) and `SLOT_WORDS` words, the key then the entry. A key probes
//! linearly from its home slot within its shard; a removal shifts the
//! following entries of its run back (no tombstones, so probe lengths do
//! not decay with churn). A shard never fills past `MAX_SHARD_LOAD`, so
//! every probe meets an empty slot.
//!
//! Every access is atomic with relaxed ordering, so this needs no `unsafe`:
//! the shard lock's acquire and release order them, and on x86-64 a
//! relaxed load or store is a plain move. Outside a lock only prefetch
//! hints read the arrays.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use prefetch_index::prefetch_index;

use super::entry::{ConnEntry, ENTRY_WORDS};
use super::hash::KeyHasher;
use super::key::{ConnKey, KEY_WORDS};
use crate::hashing::shard_and_home;
use crate::spin;

/// Words per slot: the key, then the entry.
pub(crate) const SLOT_WORDS: usize = KEY_WORDS + ENTRY_WORDS;

/// Tag of an empty slot.
const EMPTY: u8 = 0;

/// Most a shard may fill, in percent of its slots: linear probing stays
/// short below it, and a probe always finds an empty slot.
const MAX_SHARD_LOAD_PERCENT: usize = 97;

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

/// One shard's lock and fill.
#[derive(Debug, Default)]
struct Shard {
    locked: AtomicBool,
    len: AtomicUsize,
}

/// The slot arrays and their shard locks.
#[derive(Debug)]
pub(crate) struct SlotTable {
    tags: Box<[AtomicU8]>,
    /// Per slot its words, the key then the entry.
    slots: Box<[[AtomicU64; SLOT_WORDS]]>,
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

impl SlotTable {
    /// `shards` shards, each sized for `per_shard` entries.
    pub fn new(shards: usize, per_shard: usize) -> Self {
        let shards = shards.max(1);
        let shard_slots = slots_for(per_shard);
        let slots = shards * shard_slots;
        Self {
            tags: (0..slots).map(|_| AtomicU8::new(EMPTY)).collect(),
            slots: (0..slots)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
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

    /// Prefetch hint, first step of a batch: the tag bytes of a home.
    #[inline]
    pub fn prefetch_tags(&self, place: &Place) {
        prefetch_index(&self.tags, place.home);
    }

    /// Prefetch hint, second step: reads the (by now cached) tags without
    /// the lock and prefetches the slot a probe would stop at. A stale read
    /// only makes the hint wrong, never the lookup.
    #[inline]
    pub fn prefetch_slot(&self, place: &Place) {
        let base = place.shard * self.shard_slots;
        let end = base + self.shard_slots;
        let mut slot = place.home;
        for _ in 0..self.shard_slots {
            let tag = self.tags[slot].load(Ordering::Relaxed);
            if tag == EMPTY || tag == place.tag {
                break;
            }
            slot = if slot + 1 == end { base } else { slot + 1 };
        }
        let words = self.slots.as_flattened();
        let first = slot * SLOT_WORDS;
        // A 112-byte slot spans up to three cache lines.
        prefetch_index(words, first);
        prefetch_index(words, first + 8);
        prefetch_index(words, first + SLOT_WORDS - 1);
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
    fn word(&self, slot: usize, index: usize) -> u64 {
        self.table.slots[slot][index].load(Ordering::Relaxed)
    }

    #[inline]
    fn set_word(&self, slot: usize, index: usize, value: u64) {
        self.table.slots[slot][index].store(value, Ordering::Relaxed);
    }

    #[inline]
    fn key_matches(&self, slot: usize, key: &[u64; KEY_WORDS]) -> bool {
        key.iter()
            .enumerate()
            .all(|(index, word)| self.word(slot, index) == *word)
    }

    /// Finds `key` (as words) placed at `place`, which must be this
    /// shard's.
    #[inline]
    pub fn probe(&self, key: &[u64; KEY_WORDS], place: &Place) -> Probe {
        let mut slot = place.home;
        // The load cap guarantees an empty slot; the bound only makes a
        // broken invariant end rather than spin.
        for _ in 0..self.table.shard_slots {
            let tag = self.tag(slot);
            if tag == EMPTY {
                return Probe::Vacant(slot);
            }
            if tag == place.tag && self.key_matches(slot, key) {
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

    /// The stored words of the key in `slot`.
    #[inline]
    fn key_words(&self, slot: usize) -> [u64; KEY_WORDS] {
        std::array::from_fn(|index| self.word(slot, index))
    }

    #[inline]
    pub fn entry(&self, slot: usize) -> ConnEntry {
        ConnEntry::decode(&self.entry_words(slot))
    }

    #[inline]
    pub fn set_entry(&self, slot: usize, entry: &ConnEntry) {
        self.set_entry_words(slot, &entry.encode());
    }

    /// The stored entry of `slot` as words (`ConnEntry::encode`).
    #[inline]
    pub fn entry_words(&self, slot: usize) -> [u64; ENTRY_WORDS] {
        let words = &self.table.slots[slot][KEY_WORDS..];
        std::array::from_fn(|index| words[index].load(Ordering::Relaxed))
    }

    #[inline]
    pub fn set_entry_words(&self, slot: usize, entry: &[u64; ENTRY_WORDS]) {
        let words = &self.table.slots[slot][KEY_WORDS..];
        for (stored, word) in words.iter().zip(entry) {
            stored.store(*word, Ordering::Relaxed);
        }
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
        for (index, word) in key.iter().enumerate() {
            self.set_word(slot, index, *word);
        }
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
        self.table.shards[self.shard]
            .len
            .fetch_sub(1, Ordering::Relaxed);
        removed
    }

    fn move_slot(&self, from: usize, to: usize) {
        for index in 0..SLOT_WORDS {
            self.set_word(to, index, self.word(from, index));
        }
        self.table.tags[to].store(self.tag(from), Ordering::Relaxed);
    }

    /// The occupied slots, in order. Do not remove while iterating; use
    /// `retain`.
    pub fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        (self.base..self.base + self.table.shard_slots).filter(|&slot| self.tag(slot) != EMPTY)
    }

    /// Removes every entry `keep` refuses, appending them to `removed`.
    /// A removal can pull a later entry into the current slot, so the scan
    /// looks at a slot again after removing from it; an entry moved from
    /// the run's wrapped start may be looked at twice, which `keep` must
    /// tolerate (it is asked the same question).
    pub fn retain(
        &self,
        mut keep: impl FnMut(&ConnKey, &ConnEntry) -> bool,
        removed: &mut Vec<(ConnKey, ConnEntry)>,
    ) {
        let end = self.base + self.table.shard_slots;
        let mut slot = self.base;
        while slot < end {
            if self.tag(slot) != EMPTY && !keep(&self.key(slot), &self.entry(slot)) {
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
    use crate::packet::{proto, AddrFamily, FlowKey};

    fn key(n: u32) -> ConnKey {
        let flow = FlowKey {
            family: AddrFamily::V4,
            src: u128::from(0x0a00_0000 | n),
            dst: 0x0a80_0001,
            proto: proto::UDP,
            src_port: (n % 50_000) as u16 + 1024,
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
                .retain(|_, e| u64::from(e.rule_id) % doomed != 0, &mut removed);
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
