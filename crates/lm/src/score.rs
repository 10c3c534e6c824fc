//! Scoring sequences with a trained model: the routing score and per-token log-probs.
//!
//! Both functions take a batch as a flat row-major slice of token ids (`rows × row_len`),
//! run on any `B: Backend` (use the inner, non-autodiff backend: no graph is built), and
//! process the rows in chunks so at most one chunk of `[rows, time, vocab]` logits exists at
//! a time ([`ScoreOptions::max_logits`]). On `flex` the head itself is fused
//! ([`Lm::head_logprobs`]): only a few hundred rows of logits exist at once.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::error::{LmError, Result};
use crate::loss::token_tensor;
use crate::model::{ForwardOptions, Lm};
use crate::precision::Precision;

/// Knobs for [`score_prefix`] and [`token_logprobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Largest number of logits (`rows × time × vocab`) computed at once. Default 2²⁶ (256 MiB
    /// of f32); at least one row is always processed.
    pub max_logits: usize,
    /// Targets equal to this id contribute nothing (log-prob reported as 0).
    pub pad_id: Option<u32>,
    /// Compute precision of the forward pass (log-probs are always reduced in f32).
    pub precision: Precision,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            max_logits: 1 << 26,
            pad_id: None,
            precision: Precision::Full,
        }
    }
}

/// The routing score `log p(x_1..x_M) = Σ_{s=1}^{M-1} log p(x_{s+1} | x_{1..s})` of each row
/// (the paper's routing score, "No Need to Talk", Filippova et al. 2025): the sum of the `M − 1` next-token log-probs of the first `M` tokens. The
/// first token itself is not scored. Rows are `tokens[r·row_len .. (r+1)·row_len]`; `M =
/// prefix_len ≤ row_len`. Sums are accumulated in f64 and returned one per row (`M < 2` gives
/// 0). Pad targets ([`ScoreOptions::pad_id`]) are skipped.
pub fn score_prefix<B: Backend>(
    model: &Lm<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_len: usize,
    options: &ScoreOptions,
) -> Result<Vec<f64>> {
    let rows = check_batch(model, tokens, row_len, prefix_len)?;
    let mut scores = vec![0f64; rows];
    for_each_row_logprobs(
        model,
        tokens,
        row_len,
        prefix_len,
        options,
        |row, logprobs| {
            scores[row] = logprobs.iter().map(|&l| l as f64).sum();
        },
    );
    Ok(scores)
}

/// [`score_prefix`] at several prefix lengths from one forward pass over the longest: for each
/// `M` in `prefix_lens` (each `≤ row_len`), the per-row sums of the first `M − 1` target
/// log-probs (the model is causal, so a longer prefix does not change a shorter one's
/// log-probs). Returns one `Vec` per entry of `prefix_lens`, in its order.
pub fn score_prefix_lengths<B: Backend>(
    model: &Lm<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_lens: &[usize],
    options: &ScoreOptions,
) -> Result<Vec<Vec<f64>>> {
    let longest = prefix_lens.iter().copied().max().unwrap_or(0);
    let rows = check_batch(model, tokens, row_len, longest)?;
    let mut scores = vec![vec![0f64; rows]; prefix_lens.len()];
    let mut cumulative = Vec::with_capacity(longest);
    for_each_row_logprobs(model, tokens, row_len, longest, options, |row, logprobs| {
        cumulative.clear();
        cumulative.push(0f64);
        for &l in logprobs {
            cumulative.push(cumulative[cumulative.len() - 1] + l as f64);
        }
        for (out, &m) in scores.iter_mut().zip(prefix_lens) {
            out[row] = cumulative[m.saturating_sub(1).min(logprobs.len())];
        }
    });
    Ok(scores)
}

/// Per-token log-probs of every row: `rows × (row_len − 1)` values, row-major, where entry
/// `(r, t)` is `log p(x_{t+1} | x_{0..=t})` of row `r`. Pad targets get 0 (count the non-pad
/// targets yourself for a perplexity).
pub fn token_logprobs<B: Backend>(
    model: &Lm<B>,
    tokens: &[u32],
    row_len: usize,
    options: &ScoreOptions,
) -> Result<Vec<f32>> {
    let rows = check_batch(model, tokens, row_len, row_len)?;
    let per_row = row_len.saturating_sub(1);
    let mut out = vec![0f32; rows * per_row];
    for_each_row_logprobs(model, tokens, row_len, row_len, options, |row, logprobs| {
        out[row * per_row..(row + 1) * per_row].copy_from_slice(logprobs);
    });
    Ok(out)
}

fn check_batch<B: Backend>(
    model: &Lm<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_len: usize,
) -> Result<usize> {
    if row_len == 0 || !tokens.len().is_multiple_of(row_len) {
        return Err(LmError::Data(format!(
            "{} tokens do not split into rows of {row_len}",
            tokens.len()
        )));
    }
    if prefix_len > row_len {
        return Err(LmError::Data(format!(
            "prefix {prefix_len} is longer than the rows ({row_len})"
        )));
    }
    if prefix_len > model.config().max_seq_len + 1 {
        return Err(LmError::Data(format!(
            "prefix {prefix_len} needs {} positions, the model has max_seq_len {}",
            prefix_len - 1,
            model.config().max_seq_len
        )));
    }
    model.check_tokens(tokens)?;
    Ok(tokens.len() / row_len)
}

/// Calls `f(row, logprobs)` for every row with the `prefix_len − 1` next-token log-probs of
/// its first `prefix_len` tokens (pad targets zeroed), one forward pass per chunk of rows.
fn for_each_row_logprobs<B: Backend>(
    model: &Lm<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_len: usize,
    options: &ScoreOptions,
    mut f: impl FnMut(usize, &[f32]),
) {
    let rows = tokens.len() / row_len;
    let time = prefix_len.saturating_sub(1);
    if time == 0 || rows == 0 {
        return;
    }
    let vocab = model.config().vocab_size;
    let chunk = (options.max_logits / (time * vocab)).clamp(1, rows);
    let device = model.device();
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        let mut inputs = Vec::with_capacity(n * time);
        let mut targets = Vec::with_capacity(n * time);
        for r in start..start + n {
            let row = &tokens[r * row_len..r * row_len + prefix_len];
            inputs.extend_from_slice(&row[..time]);
            targets.extend(row[1..].iter().map(|&t| t as i32));
        }
        let forward = ForwardOptions {
            precision: options.precision,
            ..ForwardOptions::default()
        };
        let hidden =
            model.forward_hidden_with(token_tensor::<B>(&inputs, n, time, &device), forward);
        let targets_t = Tensor::from_data(TensorData::new(targets, [n * time]), &device);
        let logprobs = model
            .head_logprobs(hidden, targets_t, options.precision)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32");
        for (i, r) in (start..start + n).enumerate() {
            let mut lp = logprobs[i * time..(i + 1) * time].to_vec();
            if let Some(pad) = options.pad_id {
                let row_targets = &tokens[r * row_len + 1..r * row_len + prefix_len];
                for (l, &t) in lp.iter_mut().zip(row_targets) {
                    if t == pad {
                        *l = 0.0;
                    }
                }
            }
            f(r, &lp);
        }
        start += n;
    }
}
