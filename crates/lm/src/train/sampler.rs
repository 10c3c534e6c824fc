//! Deterministic, seekable shuffling of row indices.
//!
//! Epoch `e` visits every row once in the order of a Fisher–Yates permutation drawn from the
//! stream `(seed, "epoch-e")`. Batches are consecutive slices of that order and run on into the
//! next epoch, so the position `(epoch, index)` alone (saved in checkpoints) fixes every
//! future batch.

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// Where the sampler is: the next row is `permutation(epoch)[index]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerPosition {
    /// Epoch number, from 0.
    pub epoch: u64,
    /// Rows of this epoch already handed out.
    pub index: u64,
}

/// Hands out row indices in shuffled, epoch-wise order.
#[derive(Debug, Clone)]
pub struct Sampler {
    seed: u64,
    num_rows: usize,
    position: SamplerPosition,
    order: Vec<usize>,
}

impl Sampler {
    /// A sampler over `num_rows` rows (> 0) starting at `position`.
    pub fn new(seed: u64, num_rows: usize, position: SamplerPosition) -> Self {
        assert!(num_rows > 0, "cannot sample from zero rows");
        let order = permutation(seed, position.epoch, num_rows);
        Sampler {
            seed,
            num_rows,
            position,
            order,
        }
    }

    /// Current position.
    pub fn position(&self) -> SamplerPosition {
        self.position
    }

    /// The next `count` row indices (crossing into the next epoch when needed).
    pub fn next_batch(&mut self, count: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            if self.position.index as usize == self.num_rows {
                self.position = SamplerPosition {
                    epoch: self.position.epoch + 1,
                    index: 0,
                };
                self.order = permutation(self.seed, self.position.epoch, self.num_rows);
            }
            out.push(self.order[self.position.index as usize]);
            self.position.index += 1;
        }
        out
    }
}

/// The shuffled order of `0..n` for one epoch.
pub fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64::for_stream(seed, &format!("epoch-{epoch}"));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_seekable() {
        let mut s = Sampler::new(5, 10, SamplerPosition::default());
        let first: Vec<usize> = s.next_batch(7);
        let mid = s.position();
        let rest = s.next_batch(13);
        let mut epoch0: Vec<usize> = first.iter().chain(&rest[..3]).copied().collect();
        epoch0.sort();
        assert_eq!(epoch0, (0..10).collect::<Vec<_>>());
        assert_eq!(
            s.position(),
            SamplerPosition {
                epoch: 1,
                index: 10
            }
        ); // wraps lazily
        let mut resumed = Sampler::new(5, 10, mid);
        assert_eq!(resumed.next_batch(13), rest);
        assert_ne!(permutation(5, 0, 10), permutation(5, 1, 10));
    }
}
