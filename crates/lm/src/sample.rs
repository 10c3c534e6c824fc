//! Drawing the next token: temperature, top-k and nucleus (top-p) sampling from the next-token
//! distribution, with a seeded RNG so a generation is reproducible (the decoding loop is
//! `crate::generate`).

use crate::rng::SplitMix64;

/// How the next token is drawn; with the `clap` feature, also command-line flags (defaults as
/// in [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct SamplingOptions {
    /// Softmax temperature: > 0, or 0 for greedy decoding (argmax).
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = 0.8, allow_negative_numbers = true)
    )]
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0: all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 50))]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches
    /// `top_p`, in (0, 1] (1: all).
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = 0.95, allow_negative_numbers = true)
    )]
    pub top_p: f64,
    /// Seed of the draws.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            seed: 0,
        }
    }
}

/// Draw a token from `logits` (one row, `[vocab]`) under `options` with `rng`.
pub fn sample_logits(logits: &[f32], options: &SamplingOptions, rng: &mut SplitMix64) -> u32 {
    // Most likely first; equal logits in id order (a total order, so a partial selection
    // followed by a sort gives the prefix of the full sort).
    let before = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if options.temperature <= 0.0 {
        let best = (0..logits.len())
            .min_by(before)
            .expect("a non-empty row of logits");
        return best as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    if options.top_k > 0 && options.top_k < order.len() {
        order.select_nth_unstable_by(options.top_k - 1, before);
        order.truncate(options.top_k);
    }
    order.sort_by(before);
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / options.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut kept = 0;
    let mut mass = 0.0;
    while kept < probs.len() && (kept == 0 || mass < options.top_p) {
        mass += probs[kept];
        kept += 1;
    }
    let mut u = rng.next_f64() * mass;
    for (i, &p) in probs[..kept].iter().enumerate() {
        if u < p {
            return order[i] as u32;
        }
        u -= p;
    }
    order[kept - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_top_p_keep_the_right_tokens() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        let mut rng = SplitMix64::new(1);
        let greedy = SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(sample_logits(&logits, &greedy, &mut rng), 1);
        let top2 = SamplingOptions {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 0,
        };
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample_logits(&logits, &top2, &mut rng) as usize] += 1;
        }
        assert_eq!(
            (seen[0], seen[2]),
            (0, 0),
            "only the two best survive top-k 2: {seen:?}"
        );
        assert!(seen[1] > 900 && seen[3] > 800, "{seen:?}");
        // p(1) ≈ 0.49 of all four: a top-p of 0.3 keeps token 1 alone.
        let nucleus = SamplingOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            seed: 0,
        };
        assert!((0..200).all(|_| sample_logits(&logits, &nucleus, &mut rng) == 1));
    }
}
