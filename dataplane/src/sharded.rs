//! A hash table split into independently locked shards: conntrack's
//! per-source quotas, touched only when a connection opens or ends (the
//! connection table has its own storage, `conntrack::slots`, and so has
//! the MAC table, read on every frame: `switch::stations`).
//!
//! Workers and the control plane contend only when they touch the same
//! shard at the same instant; there is no global lock. Shards are
//! cache-padded (no false sharing between neighbouring locks), and a key's
//! shard is chosen by hash bits that hashbrown does not use itself (see
//! `shard_for`). Callers hold at most one shard lock at a time, so there is
//! no lock order to get wrong.

use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;

/// The sharded table: `T` is the stored item (usually `(key, value)`).
#[derive(Debug)]
pub struct ShardedTable<T> {
    shards: Box<[CachePadded<Mutex<HashTable<T>>>]>,
    hasher: ahash::RandomState,
}

/// The shard of a hash among `shards`, by multiply-shift (any count, no
/// division). It skips the hash's top 7 bits, which hashbrown uses to tag
/// slots: shards taken from them hold keys with nearly equal tags, and
/// every probe then compares many keys (measured: updates 150 -> 120 ns at
/// 1M entries). It also avoids the low bits hashbrown places buckets by.
fn shard_for(hash: u64, shards: usize) -> usize {
    ((u128::from(hash << 7) * shards as u128) >> 64) as usize
}

impl<T> ShardedTable<T> {
    /// `shards` shards (at least one), each pre-sized for
    /// `per_shard_capacity` items.
    pub fn new(shards: usize, per_shard_capacity: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| CachePadded::new(Mutex::new(HashTable::with_capacity(per_shard_capacity))))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// The table's hash of `value` (one hasher per table, randomly keyed).
    pub fn hash<K: Hash + ?Sized>(&self, value: &K) -> u64 {
        self.hasher.hash_one(value)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Index of the shard holding items of `hash`.
    pub fn shard_index(&self, hash: u64) -> usize {
        shard_for(hash, self.shards.len())
    }

    /// Locks the shard holding items of `hash`.
    pub fn lock_for(&self, hash: u64) -> MutexGuard<'_, HashTable<T>> {
        self.lock_shard(self.shard_index(hash))
    }

    /// Locks shard `index` (taken modulo the shard count). A thread that
    /// panicked while holding it left only plain data behind, so the lock
    /// is taken over rather than poisoned.
    pub fn lock_shard(&self, index: usize) -> MutexGuard<'_, HashTable<T>> {
        self.shards[index % self.shards.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
