//! Keyed hashing for the packet path's tables (conntrack's connections,
//! the MAC table's stations): keys there are a few 64-bit words, and the
//! hash is computed for every packet.
//!
//! The building block is the folded multiply: the 128-bit product of two
//! words, its halves XORed, so that every output bit depends on every bit
//! of either factor. Seeds are random per table (from `ahash`'s
//! per-process random source), so an outsider cannot aim keys at one
//! shard or one probe run.

/// The 128-bit product's halves XORed.
#[inline]
pub(crate) fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Where `hash` lives in a table of `shards` shards of `shard_slots` slots
/// each: its shard from the hash's high bits (multiply-shift, any shard
/// count), its home slot (absolute) from the low 32 bits, so the two are
/// independent. Bits 32..63 are left for a tag.
#[inline]
pub(crate) fn shard_and_home(hash: u64, shards: usize, shard_slots: usize) -> (usize, usize) {
    let shard = ((u128::from(hash) * shards as u128) >> 64) as usize;
    let offset = ((hash & 0xffff_ffff) * shard_slots as u64) >> 32;
    (shard, shard * shard_slots + offset as usize)
}

/// `N` fresh random seeds.
pub(crate) fn random_seeds<const N: usize>() -> [u64; N] {
    let random = ahash::RandomState::new();
    std::array::from_fn(|index| random.hash_one(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_mixes_both_halves_of_the_product() {
        // 2^32 * 2^32 = 2^64: the whole product is in the high half.
        assert_eq!(fold(1 << 32, 1 << 32), 1);
        assert_eq!(fold(3, 5), 15);
        assert_eq!(fold(u64::MAX, 2), (u64::MAX - 1) ^ 1);
    }

    #[test]
    fn shards_come_from_the_high_bits_and_homes_from_the_low_ones() {
        assert_eq!(shard_and_home(0, 4, 10), (0, 0));
        assert_eq!(shard_and_home(u64::MAX, 4, 10), (3, 39));
        // Only the high bits choose the shard; only the low 32 the offset.
        assert_eq!(shard_and_home(1 << 63, 4, 10), (2, 20));
        assert_eq!(shard_and_home(1 << 31, 4, 10), (0, 5));
    }

    #[test]
    fn seeds_differ_within_and_between_calls() {
        let [a, b] = random_seeds::<2>();
        assert_ne!(a, b);
        assert_ne!(random_seeds::<1>(), random_seeds::<1>());
    }
}
