//! The connection table's hash of a stored key: every packet hashes its
//! key once, so the hash is a large share of a hit's cost.
//!
//! `ahash` (without the AES instructions, which a portable build does not
//! enable) feeds the key's five words through one chain of five folded
//! multiplications, each waiting for the one before: about 35 cycles of
//! latency, a third of a hit in a profile of the hit path. Here the words
//! are folded in independent pairs, then once more: the same folded
//! multiply (`a * b`, the 128-bit product's halves XORed), keyed the same
//! way by random per-table seeds, with two multiplications' latency in
//! sequence instead of five.
//!
//! Keyed (`crate::hashing`) so that an outsider cannot aim packets at one
//! shard or one probe run.

use super::key::KEY_WORDS;
use crate::hashing::{fold, random_seeds};

/// A per-table keyed hash of a key's stored words.
#[derive(Clone, Debug)]
pub(crate) struct KeyHasher {
    seeds: [u64; 7],
}

impl KeyHasher {
    /// A hasher with fresh random seeds.
    pub fn new() -> Self {
        Self {
            seeds: random_seeds(),
        }
    }

    /// The hash of a key's stored words (`ConnKey::encode`).
    #[inline]
    pub fn hash(&self, words: &[u64; KEY_WORDS]) -> u64 {
        let [k0, k1, k2, k3, k4, k5, k6] = self.seeds;
        let first = fold(words[0] ^ k0, words[1] ^ k1);
        let second = fold(words[2] ^ k2, words[3] ^ k3);
        let third = fold(words[4] ^ k4, k5);
        fold(first ^ third, second ^ k6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_words_hash_alike_and_every_word_matters() {
        let hasher = KeyHasher::new();
        let words = [0x0011_0004_0035_0400, 0, 0x0a00_0001, 0, 0x0a80_0001];
        assert_eq!(hasher.hash(&words), hasher.hash(&words));
        for index in 0..KEY_WORDS {
            for bit in [0, 17, 63] {
                let mut changed = words;
                changed[index] ^= 1 << bit;
                assert_ne!(
                    hasher.hash(&words),
                    hasher.hash(&changed),
                    "word {index} bit {bit} left the hash unchanged"
                );
            }
        }
    }

    #[test]
    fn tables_are_seeded_apart() {
        let words = [1, 2, 3, 4, 5];
        assert_ne!(KeyHasher::new().hash(&words), KeyHasher::new().hash(&words));
    }

    /// Keys differing only in a port or the low address bits (the common
    /// case: many clients of one server) spread over the bits `place` uses
    /// for the shard (high), the home (low 32) and the tag (32..39).
    #[test]
    fn sequential_keys_spread_over_shards_homes_and_tags() {
        let hasher = KeyHasher::new();
        let keys = 1u64 << 16;
        let mut shards = vec![0u32; 64];
        let mut homes = vec![0u32; 1024];
        let mut tags = [0u32; 128];
        for n in 0..keys {
            let hash = hasher.hash(&[
                0x0011_0004_0035_0000 | (n & 0xffff),
                0,
                0x0a00_0000 | (n >> 16),
                0,
                0x0a80_0001,
            ]);
            shards[(hash >> 58) as usize] += 1;
            homes[((hash & 0xffff_ffff) >> 22) as usize] += 1;
            tags[((hash >> 32) & 0x7f) as usize] += 1;
        }
        let within = |counts: &[u32], name: &str| {
            let expected = keys as f64 / counts.len() as f64;
            for (bucket, &count) in counts.iter().enumerate() {
                let deviation = (f64::from(count) - expected).abs() / expected.sqrt();
                assert!(
                    deviation < 6.0,
                    "{name} {bucket}: {count} keys, expected about {expected}"
                );
            }
        };
        within(&shards, "shard");
        within(&homes, "home bucket");
        within(&tags, "tag");
    }
}
