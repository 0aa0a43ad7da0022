//! A deterministic pseudo-random generator for traces, derived rule sets
//! and the build's cost sampling: results must be the same on every machine
//! and every run, so no OS entropy and no external RNG crate.

/// A small, fast, seedable generator (SplitMix64): traces and derived rule
/// sets must be the same on every machine and every run.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    /// Uniform in `lo..=hi`.
    pub fn in_range(&mut self, lo: u128, hi: u128) -> u128 {
        let span = hi.wrapping_sub(lo).wrapping_add(1);
        if span == 0 {
            return self.next_u128();
        }
        lo + self.next_u128() % span
    }

    /// A point of `lo..=hi`: a corner half the time (either end equally),
    /// otherwise uniform.
    pub fn point(&mut self, lo: u128, hi: u128) -> u128 {
        match self.next_u64() % 4 {
            0 => lo,
            1 => hi,
            _ => self.in_range(lo, hi),
        }
    }
}
