//! The MAC table's storage, read without a lock: every frame asks it twice
//! (is the source known on this port? where is the destination?), and it
//! changes only when a station appears, moves, ages out or is refreshed.
//!
//! Until this module the table was `crate::sharded` (hashbrown behind a
//! mutex per shard): two lock and two unlock instructions per frame, 40 ns
//! of a frame's 1.77 µs on the AF_XDP path in a profile of the testbed.
//!
//! Design:
//! - **Open addressing** in one array allocated at the table's size: per
//!   slot three words, the station (occupied bit, VLAN, MAC), the port and
//!   the time last seen. Linear probing within a shard; a removal shifts
//!   the following entries of its run back (no tombstones).
//! - **Readers are optimistic (a sequence lock per shard)**: read the
//!   shard's sequence, probe with plain atomic loads, read the sequence
//!   again; an odd or changed sequence means a writer was there, and the
//!   read is retried, then taken under the lock after a few tries. A read
//!   writes nothing, so workers on different cores share the lines.
//! - **Writers** (a new station, a move, a refresh, aging, a port flush)
//!   take the shard's spin lock (`crate::spin`) and make the sequence odd
//!   while they change slots.
//! - Every access is an atomic with relaxed ordering plus the sequence's
//!   acquire and release, so there is no `unsafe`.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::hashing::{fold, random_seeds, shard_and_home};
use crate::spin;

/// Key word of an empty slot.
const EMPTY: u64 = 0;
/// Set in the key word of every occupied slot.
const OCCUPIED: u64 = 1 << 63;
/// Optimistic reads of a shard before a reader waits for its lock.
const OPTIMISTIC_TRIES: u32 = 4;
/// Most a shard may fill, in percent of its slots: probes stay short and
/// always meet an empty slot.
const MAX_SHARD_LOAD_PERCENT: usize = 75;

/// Word indices within a slot.
const KEY: usize = 0;
const PORT: usize = 1;
const LAST_SEEN: usize = 2;

/// A learned station as read from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Learned {
    pub port: u16,
    pub last_seen: u64,
}

/// The stored key of (VLAN, MAC): occupied bit, 15 bits of VLAN (VIDs are
/// 12 bits), 48 bits of MAC. Never `EMPTY`.
pub(super) fn station_key(vlan: u16, mac: [u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = mac;
    OCCUPIED | u64::from(vlan & 0x7fff) << 48 | u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

#[derive(Debug, Default)]
struct Shard {
    /// Even: no writer; odd: a writer is changing the shard's slots.
    sequence: AtomicU64,
    locked: AtomicBool,
    len: AtomicUsize,
}

/// What a write under the lock did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// A new station.
    Inserted,
    /// A known station, now on another port.
    Moved,
    /// A known station on the same port, its time refreshed.
    Refreshed,
    /// A new station in a full shard: not stored.
    ShardFull,
}

/// The station slots and their shards.
#[derive(Debug)]
pub(super) struct Stations {
    slots: Box<[[AtomicU64; 3]]>,
    shards: Box<[CachePadded<Shard>]>,
    shard_slots: usize,
    shard_limit: usize,
    seeds: [u64; 2],
}

impl Stations {
    /// `shards` shards with room for about `entries` stations in all,
    /// unevenly spread (each shard holds twice its share before it is full).
    pub fn new(shards: usize, entries: usize) -> Self {
        let shards = shards.max(1);
        let shard_slots = (2 * entries.div_ceil(shards) + 8) * 100 / MAX_SHARD_LOAD_PERCENT;
        Self {
            slots: (0..shards * shard_slots)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(EMPTY)))
                .collect(),
            shards: (0..shards).map(|_| CachePadded::default()).collect(),
            shard_slots,
            shard_limit: shard_slots * MAX_SHARD_LOAD_PERCENT / 100,
            seeds: random_seeds(),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Shard and home slot (absolute) of a key.
    #[inline]
    fn place(&self, key: u64) -> (usize, usize) {
        let hash = fold(key ^ self.seeds[0], self.seeds[1]);
        shard_and_home(hash, self.shards.len(), self.shard_slots)
    }

    #[inline]
    fn word(&self, slot: usize, index: usize) -> u64 {
        self.slots[slot][index].load(Ordering::Relaxed)
    }

    /// What `slot` holds besides its key.
    #[inline]
    fn learned(&self, slot: usize) -> Learned {
        Learned {
            port: self.word(slot, PORT) as u16,
            last_seen: self.word(slot, LAST_SEEN),
        }
    }

    #[inline]
    fn set_word(&self, slot: usize, index: usize, value: u64) {
        self.slots[slot][index].store(value, Ordering::Relaxed);
    }

    #[inline]
    fn next(&self, shard: usize, slot: usize) -> usize {
        let base = shard * self.shard_slots;
        if slot + 1 == base + self.shard_slots {
            base
        } else {
            slot + 1
        }
    }

    /// The slot holding `key`, or `Err` with the empty slot ending its
    /// probe. Bounded, so a probe over a shard being rewritten (an
    /// optimistic reader's view) ends too.
    #[inline]
    fn probe(&self, shard: usize, home: usize, key: u64) -> Result<usize, Option<usize>> {
        let mut slot = home;
        for _ in 0..self.shard_slots {
            match self.word(slot, KEY) {
                EMPTY => return Err(Some(slot)),
                stored if stored == key => return Ok(slot),
                _ => slot = self.next(shard, slot),
            }
        }
        Err(None)
    }

    /// The station of `key`, if stored. Takes no lock unless writers keep
    /// changing its shard.
    #[inline]
    pub fn get(&self, key: u64) -> Option<Learned> {
        let (shard, home) = self.place(key);
        let sequence = &self.shards[shard].sequence;
        for _ in 0..OPTIMISTIC_TRIES {
            let before = sequence.load(Ordering::Acquire);
            if before & 1 == 0 {
                let found = self
                    .probe(shard, home, key)
                    .ok()
                    .map(|slot| self.learned(slot));
                // Orders the probe's loads before the second read of the
                // sequence: if it is unchanged, no writer overlapped them.
                fence(Ordering::Acquire);
                if sequence.load(Ordering::Relaxed) == before {
                    return found;
                }
            }
            std::hint::spin_loop();
        }
        let _locked = self.lock(shard);
        self.probe(shard, home, key)
            .ok()
            .map(|slot| self.learned(slot))
    }

    /// Stores `key` on `port` seen at `now`, under its shard's lock.
    /// `may_insert` is asked only for a new station (the table's overall
    /// limit).
    pub fn store(
        &self,
        key: u64,
        port: u16,
        now: u64,
        may_insert: impl FnOnce() -> bool,
    ) -> Stored {
        let (shard, home) = self.place(key);
        let locked = self.lock(shard);
        match self.probe(shard, home, key) {
            Ok(slot) => {
                let moved = self.word(slot, PORT) as u16 != port;
                locked.write(|| {
                    self.set_word(slot, PORT, u64::from(port));
                    self.set_word(slot, LAST_SEEN, now);
                });
                if moved {
                    Stored::Moved
                } else {
                    Stored::Refreshed
                }
            }
            Err(Some(empty)) if locked.len() < self.shard_limit && may_insert() => {
                locked.write(|| {
                    self.set_word(empty, PORT, u64::from(port));
                    self.set_word(empty, LAST_SEEN, now);
                    self.set_word(empty, KEY, key);
                });
                self.shards[shard].len.fetch_add(1, Ordering::Relaxed);
                Stored::Inserted
            }
            Err(_) => Stored::ShardFull,
        }
    }

    /// Removes from shard `shard` every station `keep` rejects (given its
    /// key and what was learned); returns how many.
    pub fn retain(&self, shard: usize, keep: impl Fn(u64, &Learned) -> bool) -> usize {
        let locked = self.lock(shard);
        let base = shard * self.shard_slots;
        let mut removed = 0;
        let mut slot = base;
        while slot < base + self.shard_slots {
            let key = self.word(slot, KEY);
            if key != EMPTY && !keep(key, &self.learned(slot)) {
                locked.write(|| self.remove(shard, slot));
                removed += 1;
                // The run's next entry may have moved into `slot`.
                continue;
            }
            slot += 1;
        }
        self.shards[shard].len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Empties `slot` and moves the following entries of its run back
    /// where their probe still finds them (Knuth's algorithm R). Under the
    /// shard's lock, inside a write.
    fn remove(&self, shard: usize, slot: usize) {
        let size = self.shard_slots;
        let mut hole = slot;
        let mut next = slot;
        loop {
            next = self.next(shard, next);
            let key = self.word(next, KEY);
            if key == EMPTY {
                break;
            }
            let (_, home) = self.place(key);
            // `next` may fill the hole unless its home lies cyclically in
            // (hole, next].
            if (next + size - home) % size >= (next + size - hole) % size {
                for index in [KEY, PORT, LAST_SEEN] {
                    self.set_word(hole, index, self.word(next, index));
                }
                hole = next;
            }
        }
        self.set_word(hole, KEY, EMPTY);
    }

    fn lock(&self, shard: usize) -> Locked<'_> {
        spin::acquire(&self.shards[shard].locked);
        Locked {
            shard: &self.shards[shard],
        }
    }
}

/// A locked shard.
struct Locked<'a> {
    shard: &'a Shard,
}

impl Locked<'_> {
    fn len(&self) -> usize {
        self.shard.len.load(Ordering::Relaxed)
    }

    /// Runs `change` with the shard's sequence odd, so that optimistic
    /// readers overlapping it retry.
    fn write(&self, change: impl FnOnce()) {
        let sequence = &self.shard.sequence;
        let before = sequence.load(Ordering::Relaxed);
        sequence.store(before.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before the slot stores.
        fence(Ordering::Release);
        change();
        sequence.store(before.wrapping_add(2), Ordering::Release);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        spin::release(&self.shard.locked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mac(n: u32) -> [u8; 6] {
        let [a, b, c, d] = n.to_be_bytes();
        [0x02, 0, a, b, c, d]
    }

    #[test]
    fn keys_keep_vlan_and_mac_apart_and_are_never_empty() {
        assert_ne!(station_key(1, mac(5)), station_key(2, mac(5)));
        assert_ne!(station_key(1, mac(5)), station_key(1, mac(6)));
        assert_ne!(station_key(0, [0; 6]), EMPTY);
    }

    /// Inserts, moves and removals in one small shard, checked against a
    /// model after every step: removal's back-shifting keeps every other
    /// station findable.
    #[test]
    fn a_crowded_shard_matches_a_model_through_inserts_moves_and_removals() {
        let stations = Stations::new(1, 40);
        let mut model: HashMap<u64, u16> = HashMap::new();
        for round in 0..400u32 {
            let n = round.wrapping_mul(2_654_435_761) % 60;
            let key = station_key(7, mac(n));
            let port = (round % 3) as u16;
            let stored = stations.store(key, port, u64::from(round), || true);
            match model.get(&key) {
                None if stored == Stored::ShardFull => {}
                None => assert_eq!(stored, Stored::Inserted),
                Some(&old) if old == port => assert_eq!(stored, Stored::Refreshed),
                Some(_) => assert_eq!(stored, Stored::Moved),
            }
            if stored != Stored::ShardFull {
                model.insert(key, port);
            }
            if round % 7 == 0 {
                // Forget every station on port `round % 3`.
                let gone = (round % 3) as u16;
                let removed = stations.retain(0, |_, learned| learned.port != gone);
                let before = model.len();
                model.retain(|_, port| *port != gone);
                assert_eq!(removed, before - model.len());
            }
            for n in 0..60 {
                let key = station_key(7, mac(n));
                assert_eq!(
                    stations.get(key).map(|learned| learned.port),
                    model.get(&key).copied(),
                    "round {round}, station {n}"
                );
            }
        }
        assert_eq!(stations.shards[0].len.load(Ordering::Relaxed), model.len());
    }

    #[test]
    fn a_full_shard_refuses_new_stations_but_refreshes_known_ones() {
        let stations = Stations::new(1, 2);
        let limit = stations.shard_limit;
        for n in 0..limit as u32 {
            assert_eq!(
                stations.store(station_key(0, mac(n)), 1, 0, || true),
                Stored::Inserted
            );
        }
        let newcomer = station_key(0, mac(limit as u32));
        assert_eq!(stations.store(newcomer, 1, 0, || true), Stored::ShardFull);
        assert_eq!(stations.get(newcomer), None);
        let known = station_key(0, mac(0));
        assert_eq!(stations.store(known, 1, 5, || true), Stored::Refreshed);
        assert_eq!(
            stations.get(known),
            Some(Learned {
                port: 1,
                last_seen: 5
            })
        );
    }

    #[test]
    fn the_overall_limit_is_asked_only_for_new_stations() {
        let stations = Stations::new(4, 16);
        let key = station_key(0, mac(1));
        assert_eq!(stations.store(key, 1, 0, || false), Stored::ShardFull);
        assert_eq!(stations.store(key, 1, 0, || true), Stored::Inserted);
        assert_eq!(
            stations.store(key, 2, 1, || panic!("asked for a known station")),
            Stored::Moved
        );
    }

    /// A read overlapping a write does not return what the write has
    /// half done: with the shard locked and its sequence odd, a slot is
    /// left torn (station 1's key, station 2's port); the reader retries,
    /// waits for the lock, and returns the finished write.
    #[test]
    fn a_read_overlapping_a_write_waits_for_it() {
        let stations = Stations::new(1, 8);
        let (one, two) = (station_key(0, mac(1)), station_key(0, mac(2)));
        stations.store(one, 1, 0, || true);
        stations.store(two, 2, 0, || true);
        let (_, home) = stations.place(one);
        let slot = stations.probe(0, home, one).expect("stored");
        let locked = stations.lock(0);
        let sequence = &stations.shards[0].sequence;
        let before = sequence.load(Ordering::Relaxed);
        sequence.store(before + 1, Ordering::Release);
        stations.set_word(slot, PORT, 2);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| stations.get(one).map(|learned| learned.port));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!reader.is_finished(), "the read did not wait for the write");
            stations.set_word(slot, PORT, 3);
            sequence.store(before + 2, Ordering::Release);
            drop(locked);
            assert_eq!(reader.join().expect("reader"), Some(3));
        });
    }

    /// Readers while a writer moves stations between two ports and
    /// removes and re-inserts others, in one crowded shard (removals shift
    /// entries between slots): a reader always finds each moving station,
    /// on one of its own ports, and a churned one on its port or absent.
    #[test]
    fn readers_find_every_station_through_moves_and_shifts() {
        const MOVING: u32 = 24;
        const CHURNED: u32 = 24;
        let stations = Stations::new(1, 24);
        assert!(MOVING + CHURNED <= stations.shard_limit as u32);
        let own_ports = |n: u32| [100 + 2 * n as u16, 101 + 2 * n as u16];
        for n in 0..MOVING + CHURNED {
            let port = if n < MOVING { own_ports(n)[0] } else { 500 };
            stations.store(station_key(0, mac(n)), port, 0, || true);
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 0..100_000u32 {
                    let n = round % MOVING;
                    let port = own_ports(n)[(round / MOVING % 2) as usize];
                    stations.store(station_key(0, mac(n)), port, 0, || true);
                    let churned = station_key(0, mac(MOVING + round % CHURNED));
                    stations.retain(0, |key, _| key != churned);
                    stations.store(churned, 500, 0, || true);
                }
                done.store(true, Ordering::Relaxed);
            });
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let n = (reads % u64::from(MOVING + CHURNED)) as u32;
                let seen = stations
                    .get(station_key(0, mac(n)))
                    .map(|learned| learned.port);
                if n < MOVING {
                    let port = seen.expect("a moving station is never absent");
                    assert!(
                        own_ports(n).contains(&port),
                        "station {n} read on port {port}"
                    );
                } else {
                    assert!(matches!(seen, None | Some(500)), "station {n}: {seen:?}");
                }
                reads += 1;
            }
        });
    }
}
