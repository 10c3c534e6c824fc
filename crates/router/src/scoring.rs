//! Scoring rows with several routers: the `[rows, routers]` matrix of prefix log-likelihoods
//! that the E-step balances. The routers are a [`ModelSet`]: stacked into one model where that
//! pays (GPU backends), so each batch of prefixes is one forward pass for all of them.

use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{ModelSet, ScoreOptions, SequenceSource};

use crate::error::Result;

/// Row-major `[rows.len(), models.len()]` scores `log p(x_1..x_M)` (paper Eq. 9) of the first
/// `prefix_len` tokens of `rows` of `source` under each model, computed `batch` rows at a
/// time (memory stays O(batch)). `progress(done, total)` is called after every batch of every
/// model. Pad targets are skipped (the source's pad id).
pub fn score_rows<B: Backend>(
    models: &ModelSet<B>,
    source: &dyn SequenceSource,
    rows: &[usize],
    prefix_len: usize,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let experts = models.len();
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
        let s = score_prefixes(models, &tokens, prefix_len, source.pad_id())?;
        scores[start * experts..(start + chunk.len()) * experts].copy_from_slice(&s);
        done += chunk.len() * experts;
        progress(done, total);
    }
    Ok(scores)
}

/// Row-major `[n, E]` scores of `n` prefixes of `prefix_len` tokens laid out one after
/// another in `tokens` under the `E` models (targets equal to `pad` are skipped).
pub fn score_prefixes<B: Backend>(
    models: &ModelSet<B>,
    tokens: &[u32],
    prefix_len: usize,
    pad: Option<u32>,
) -> Result<Vec<f32>> {
    Ok(score_prefix_lengths_all(models, tokens, prefix_len, &[prefix_len], pad)?.remove(0))
}

/// [`score_prefixes`] at several prefix lengths of the same rows (`row_len` tokens each in
/// `tokens`, every length `≤ row_len`), the models run once over the longest: one row-major
/// `[n, E]` matrix per entry of `prefix_lens`.
pub fn score_prefix_lengths_all<B: Backend>(
    models: &ModelSet<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_lens: &[usize],
    pad: Option<u32>,
) -> Result<Vec<Vec<f32>>> {
    let experts = models.len();
    let n = tokens.len() / row_len.max(1);
    let options = ScoreOptions {
        pad_id: pad,
        ..ScoreOptions::default()
    };
    let by_model = models.score_prefix_lengths(tokens, row_len, prefix_lens, &options)?;
    let mut scores = vec![vec![0f32; n * experts]; prefix_lens.len()];
    for (e, by_length) in by_model.into_iter().enumerate() {
        for (out, s) in scores.iter_mut().zip(by_length) {
            for (i, v) in s.into_iter().enumerate() {
                out[i * experts + e] = v as f32;
            }
        }
    }
    Ok(scores)
}
