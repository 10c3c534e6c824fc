//! Scoring rows with several routers: the `[rows, routers]` matrix of prefix log-likelihoods
//! that the E-step and the partition balance, and routing decisions.

use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{score_prefix, Lm, ScoreOptions, SequenceSource};

use crate::error::Result;

/// Row-major `[rows.len(), models.len()]` scores `log p(x_1..x_M)` (SPEC Eq 9) of the first
/// `prefix_len` tokens of `rows` of `source` under each model, computed `batch` rows at a
/// time (memory stays O(batch)). `progress(done, total)` is called after every batch of every
/// model. Pad targets are skipped (the source's pad id).
pub fn score_rows<B: Backend>(
    models: &[&Lm<B>],
    source: &dyn SequenceSource,
    rows: &[usize],
    prefix_len: usize,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let experts = models.len();
    let options = ScoreOptions {
        pad_id: source.pad_id(),
        ..ScoreOptions::default()
    };
    let mut scores = vec![0f32; rows.len() * experts];
    let mut row = vec![0u32; source.row_len()];
    let total = rows.len() * experts;
    let mut done = 0;
    for (start, chunk) in rows
        .chunks(batch.max(1))
        .enumerate()
        .map(|(i, c)| (i * batch.max(1), c))
    {
        let mut tokens = Vec::with_capacity(chunk.len() * prefix_len);
        for &r in chunk {
            source.read_sequence(r, &mut row);
            tokens.extend_from_slice(&row[..prefix_len]);
        }
        for (e, model) in models.iter().enumerate() {
            let s = score_prefix(*model, &tokens, prefix_len, prefix_len, &options)?;
            for (i, v) in s.into_iter().enumerate() {
                scores[(start + i) * experts + e] = v as f32;
            }
            done += chunk.len();
            progress(done, total);
        }
    }
    Ok(scores)
}
