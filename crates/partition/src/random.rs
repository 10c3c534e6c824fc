//! Random balanced assignment (the EM start and the random baseline), with a tiny seeded
//! generator so that results are reproducible without a `rand` dependency.

use crate::capacity::equal_capacities;
use crate::error::{PartitionError, Result};

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state, one add and a mix per output. Good
/// enough for shuffles, fully determined by its seed.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..bound` (`bound > 0`), without modulo bias (Lemire 2019).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        let mut m = u128::from(self.next_u64()) * u128::from(bound);
        if (m as u64) < bound {
            let threshold = bound.wrapping_neg() % bound;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(bound);
            }
        }
        (m >> 64) as u64
    }
}

/// A uniformly random assignment of `n` rows to `experts` experts with exactly the
/// [`equal_capacities`] (first `n % experts` experts one row more): a Fisher–Yates shuffle of
/// that multiset of expert indices, driven by SplitMix64 from `seed`.
///
/// The same `(n, experts, seed)` always gives the same assignment, on every platform.
///
/// Errors: [`PartitionError::NoExperts`] when `experts == 0`, [`PartitionError::TooLarge`] when
/// `experts` exceeds `u32::MAX`.
pub fn random_balanced_assign(n: usize, experts: usize, seed: u64) -> Result<Vec<u32>> {
    if experts == 0 {
        return Err(PartitionError::NoExperts);
    }
    if experts > u32::MAX as usize {
        return Err(PartitionError::TooLarge { rows: n, experts });
    }
    let mut assignment = Vec::with_capacity(n);
    for (e, c) in equal_capacities(n, experts).into_iter().enumerate() {
        assignment.extend(std::iter::repeat_n(e as u32, c));
    }
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        assignment.swap(i, j);
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_is_in_range_and_hits_every_value() {
        let mut r = SplitMix64::new(7);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[r.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }
}
