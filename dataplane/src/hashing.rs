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
    fn seeds_differ_within_and_between_calls() {
        let [a, b] = random_seeds::<2>();
        assert_ne!(a, b);
        assert_ne!(random_seeds::<1>(), random_seeds::<1>());
    }
}
