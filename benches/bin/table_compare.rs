//! The data-structure choice behind conntrack, measured: dashmap (the
//! issue's starting choice) against the sharded hashbrown design the table
//! uses (cache-padded `Mutex<HashTable>` shards chosen by the key's hash),
//! on raw operations only: insert N entries, then update random existing
//! entries (what a hit does), one and two threads. Same key and value
//! types, same hasher (ahash), same shard count.

use std::sync::Mutex;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use hashbrown::HashTable;
use microseg_benches::conntrack_traffic::request;
use microseg_benches::median_ns;
use microseg_dataplane::classifier::classbench::SplitMix64;
use microseg_dataplane::conntrack::{ConnEntry, ConnKey};

const ENTRIES: u32 = 1_000_000;
const SHARDS: usize = 256;
const UPDATES: usize = 1_000_000;

fn key(i: u32) -> ConnKey {
    ConnKey::from_flow(&request(i).flow, 0).0
}

trait Table: Sync {
    fn insert(&self, key: ConnKey, entry: ConnEntry);
    fn touch(&self, key: &ConnKey) -> bool;
}

impl Table for DashMap<ConnKey, ConnEntry, ahash::RandomState> {
    fn insert(&self, key: ConnKey, entry: ConnEntry) {
        DashMap::insert(self, key, entry);
    }

    fn touch(&self, key: &ConnKey) -> bool {
        match self.get_mut(key) {
            Some(mut entry) => {
                entry.packets[0] += 1;
                entry.last_seen += 1;
                true
            }
            None => false,
        }
    }
}

/// The table's shards behind lock `L`.
struct Sharded<L> {
    shards: Vec<CachePadded<L>>,
    hasher: ahash::RandomState,
}

type Shard = HashTable<(ConnKey, ConnEntry)>;

/// A lock over one shard.
trait ShardLock: Sync {
    fn new(shard: Shard) -> Self;
    fn with<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R;
}

impl ShardLock for Mutex<Shard> {
    fn new(shard: Shard) -> Self {
        Mutex::new(shard)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        f(&mut self.lock().expect("not poisoned"))
    }
}

impl ShardLock for parking_lot::Mutex<Shard> {
    fn new(shard: Shard) -> Self {
        parking_lot::Mutex::new(shard)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        f(&mut self.lock())
    }
}

impl<L: ShardLock> Sharded<L> {
    fn new(per_shard: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(L::new(HashTable::with_capacity(per_shard))))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    fn shard(&self, hash: u64) -> &L {
        // Skip the top 7 bits: hashbrown tags slots with them.
        &self.shards[((u128::from(hash << 7) * SHARDS as u128) >> 64) as usize]
    }
}

impl<L: ShardLock> Table for Sharded<L> {
    fn insert(&self, key: ConnKey, entry: ConnEntry) {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).with(|shard| {
            shard.insert_unique(hash, (key, entry), |(k, _)| self.hasher.hash_one(k));
        });
    }

    fn touch(&self, key: &ConnKey) -> bool {
        let hash = self.hasher.hash_one(key);
        self.shard(hash)
            .with(|shard| match shard.find_mut(hash, |(k, _)| k == key) {
                Some((_, entry)) => {
                    entry.packets[0] += 1;
                    entry.last_seen += 1;
                    true
                }
                None => false,
            })
    }
}

/// (inserts per second, ns per update) for `threads`.
fn measure(table: &dyn Table, threads: usize) -> (f64, f64) {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in (t as u32..ENTRIES).step_by(threads) {
                    table.insert(key(i), ConnEntry::default());
                }
            });
        }
    });
    let inserts = f64::from(ENTRIES) / start.elapsed().as_secs_f64();
    let mut rng = SplitMix64::new(5);
    let keys: Vec<ConnKey> = (0..UPDATES)
        .map(|_| key((rng.next_u64() % u64::from(ENTRIES)) as u32))
        .collect();
    let update_ns = median_ns(5, || {
        std::thread::scope(|scope| {
            for part in keys.chunks(UPDATES / threads) {
                scope.spawn(move || {
                    for k in part {
                        assert!(table.touch(std::hint::black_box(k)));
                    }
                });
            }
        });
    }) / UPDATES as f64;
    (inserts, update_ns)
}

fn main() {
    let csv_path = microseg_benches::csv_path_arg("table-compare");
    let mut rows: Vec<(&str, usize, f64, f64)> = Vec::new();
    for threads in [1, 2] {
        let per_shard = (ENTRIES as usize).div_ceil(SHARDS) * 21 / 20;
        let dashmap: DashMap<ConnKey, ConnEntry, ahash::RandomState> =
            DashMap::with_capacity_and_hasher_and_shard_amount(
                ENTRIES as usize * 21 / 20,
                ahash::RandomState::new(),
                SHARDS,
            );
        let (ins, upd) = measure(&dashmap, threads);
        rows.push(("dashmap 6", threads, ins, upd));
        drop(dashmap);
        let std_mutex = Sharded::<Mutex<Shard>>::new(per_shard);
        let (ins, upd) = measure(&std_mutex, threads);
        rows.push(("sharded hashbrown, std Mutex", threads, ins, upd));
        drop(std_mutex);
        let pl_mutex = Sharded::<parking_lot::Mutex<Shard>>::new(per_shard);
        let (ins, upd) = measure(&pl_mutex, threads);
        rows.push(("sharded hashbrown, parking_lot Mutex", threads, ins, upd));
    }
    println!("| structure | threads | inserts/s | update existing (ns) |\n|---|---|---|---|");
    let mut csv = String::from("structure,threads,inserts_per_s,update_ns\n");
    for (structure, threads, inserts, update_ns) in rows {
        println!(
            "| {structure} | {threads} | {:.2} M | {update_ns:.0} |",
            inserts / 1e6
        );
        csv.push_str(&format!(
            "\"{structure}\",{threads},{inserts:.0},{update_ns:.1}\n"
        ));
    }
    if let Some(path) = csv_path {
        std::fs::write(&path, csv).unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("wrote {path}");
    }
}
