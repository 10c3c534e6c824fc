//! The `random` routing method (the paper's random-partition ablation, §3.4): every prefix gets
//! a pseudo-random score per expert from a seeded hash of its tokens. Balanced on these scores
//! the partition is a random equal split; at inference the argmax is a random expert that is
//! the same for the same prefix, so evaluation routes at random too.

use crate::scorer::{PrefixScorer, ScorerError};

/// A scorer that ignores what the text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomScorer {
    /// Number of experts, E.
    pub experts: usize,
    /// Seed of the hash.
    pub seed: u64,
    /// The prefix length recorded as the training prefix (the partition stage's default).
    pub prefix_len: usize,
    /// The tokenizer whose ids it receives.
    pub tokenizer_hash: String,
}

impl PrefixScorer for RandomScorer {
    fn experts(&self) -> usize {
        self.experts
    }

    fn trained_prefix(&self) -> usize {
        self.prefix_len
    }

    fn fingerprint(&self) -> String {
        format!("random:{}:{}", self.experts, self.seed)
    }

    fn tokenizer_hash(&self) -> String {
        self.tokenizer_hash.clone()
    }

    fn score(
        &self,
        prefixes: &[u32],
        prefix_len: usize,
        _pad: Option<u32>,
    ) -> Result<Vec<f32>, ScorerError> {
        let mut out = Vec::with_capacity(prefixes.len() / prefix_len.max(1) * self.experts);
        for prefix in prefixes.chunks(prefix_len.max(1)) {
            let bytes: Vec<u8> = prefix.iter().flat_map(|t| t.to_le_bytes()).collect();
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, self.seed);
            for e in 0..self.experts as u64 {
                let x = xxhash_rust::xxh3::xxh3_64_with_seed(&h.to_le_bytes(), e);
                out.push((x >> 40) as f32 / (1u64 << 24) as f32);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::route;

    #[test]
    fn random_routing_is_spread_and_repeatable() {
        let s = RandomScorer {
            experts: 4,
            seed: 1,
            prefix_len: 4,
            tokenizer_hash: String::new(),
        };
        let mut load = [0usize; 4];
        for i in 0..4000u32 {
            let r = route(&s, &[i, i * 7, i + 3, 9], 4).unwrap();
            assert_eq!(route(&s, &[i, i * 7, i + 3, 9], 4).unwrap(), r);
            load[r.expert] += 1;
        }
        assert!(load.iter().all(|&l| (850..1150).contains(&l)), "{load:?}");
    }
}
