//! Scoring sequences with a trained model: the routing score and per-token log-probs.
//!
//! Both functions take a batch as a flat row-major slice of token ids (`rows × row_len`),
//! run on any `B: Backend` (use the inner, non-autodiff backend: no graph is built), and
//! process the rows in chunks so at most one chunk of `[rows, time, vocab]` logits exists at
//! a time ([`ScoreOptions::max_logits`]). On `flex` the head itself is fused
//! ([`Lm::head_logprobs`]): only a few hundred rows of logits exist at once.
//!
//! [`crate::ModelSet`] scores the same rows under several models with these functions, one
//! model at a time or all of them stacked ([`LmStack`]) in one pass per chunk.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::loss::token_tensor;
use crate::model::{ForwardOptions, Lm};
use crate::precision::Precision;
use crate::stack::LmStack;

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
    let mut by_length = score_prefix_lengths(model, tokens, row_len, &[prefix_len], options)?;
    Ok(by_length.remove(0))
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
    Ok(prefix_sums(model, tokens, row_len, prefix_lens, options)?.remove(0))
}

/// The prefix sums of [`score_prefix_lengths`] for every model of `models`.
pub(crate) fn prefix_sums<B: Backend>(
    models: &impl BatchLogprobs<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_lens: &[usize],
    options: &ScoreOptions,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let longest = prefix_lens.iter().copied().max().unwrap_or(0);
    let rows = check_batch(models.config(), tokens, row_len, longest)?;
    let mut scores = vec![vec![vec![0f64; rows]; prefix_lens.len()]; models.models()];
    let mut cumulative = Vec::with_capacity(longest);
    for_each_row_logprobs(
        models,
        tokens,
        row_len,
        longest,
        options,
        |m, row, logprobs| {
            cumulative.clear();
            cumulative.push(0f64);
            for &l in logprobs {
                cumulative.push(cumulative[cumulative.len() - 1] + l as f64);
            }
            for (out, &len) in scores[m].iter_mut().zip(prefix_lens) {
                out[row] = cumulative[len.saturating_sub(1).min(logprobs.len())];
            }
        },
    );
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
    Ok(all_logprobs(model, tokens, row_len, options)?.remove(0))
}

/// The per-token log-probs of [`token_logprobs`] for every model of `models`.
pub(crate) fn all_logprobs<B: Backend>(
    models: &impl BatchLogprobs<B>,
    tokens: &[u32],
    row_len: usize,
    options: &ScoreOptions,
) -> Result<Vec<Vec<f32>>> {
    let rows = check_batch(models.config(), tokens, row_len, row_len)?;
    let per_row = row_len.saturating_sub(1);
    let mut out = vec![vec![0f32; rows * per_row]; models.models()];
    for_each_row_logprobs(
        models,
        tokens,
        row_len,
        row_len,
        options,
        |m, row, logprobs| {
            out[m][row * per_row..(row + 1) * per_row].copy_from_slice(logprobs);
        },
    );
    Ok(out)
}

/// One model or a stack of them: next-token log-probs of a batch under each.
pub(crate) trait BatchLogprobs<B: Backend> {
    /// Number of models.
    fn models(&self) -> usize;
    /// The config the models share.
    fn config(&self) -> &LmConfig;
    /// The device of the weights.
    fn device(&self) -> B::Device;
    /// `log p(targets[i])` after `inputs: [rows, time]`, one `[rows·time]` tensor per model.
    fn logprobs(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 1, Int>,
        precision: Precision,
    ) -> Vec<Tensor<B, 1>>;
}

fn forward_options(precision: Precision) -> ForwardOptions {
    ForwardOptions {
        precision,
        ..ForwardOptions::default()
    }
}

impl<B: Backend> BatchLogprobs<B> for Lm<B> {
    fn models(&self) -> usize {
        1
    }
    fn config(&self) -> &LmConfig {
        Lm::config(self)
    }
    fn device(&self) -> B::Device {
        Lm::device(self)
    }
    fn logprobs(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 1, Int>,
        precision: Precision,
    ) -> Vec<Tensor<B, 1>> {
        let hidden = self.forward_hidden_with(inputs, forward_options(precision));
        vec![self.head_logprobs(hidden, targets, precision)]
    }
}

impl<B: Backend> BatchLogprobs<B> for LmStack<B> {
    fn models(&self) -> usize {
        LmStack::models(self)
    }
    fn config(&self) -> &LmConfig {
        LmStack::config(self)
    }
    fn device(&self) -> B::Device {
        LmStack::device(self)
    }
    fn logprobs(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 1, Int>,
        precision: Precision,
    ) -> Vec<Tensor<B, 1>> {
        let hidden = self.forward_hidden(inputs, forward_options(precision));
        self.head_logprobs(hidden, targets, precision)
    }
}

fn check_batch(
    config: &LmConfig,
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
    if prefix_len > config.max_seq_len + 1 {
        return Err(LmError::Data(format!(
            "prefix {prefix_len} needs {} positions, the model has max_seq_len {}",
            prefix_len - 1,
            config.max_seq_len
        )));
    }
    config.check_tokens(tokens)?;
    Ok(tokens.len() / row_len)
}

/// Calls `f(model, row, logprobs)` for every model and row with the `prefix_len − 1`
/// next-token log-probs of the row's first `prefix_len` tokens (pad targets zeroed), one
/// forward pass per chunk of rows.
fn for_each_row_logprobs<B: Backend>(
    models: &impl BatchLogprobs<B>,
    tokens: &[u32],
    row_len: usize,
    prefix_len: usize,
    options: &ScoreOptions,
    mut f: impl FnMut(usize, usize, &[f32]),
) {
    let rows = tokens.len() / row_len;
    let time = prefix_len.saturating_sub(1);
    if time == 0 || rows == 0 {
        return;
    }
    let vocab = models.config().vocab_size;
    let chunk = (options.max_logits / (time * vocab * models.models())).clamp(1, rows);
    let device = models.device();
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
        let targets_t = Tensor::from_data(TensorData::new(targets, [n * time]), &device);
        let per_model = models.logprobs(
            token_tensor::<B>(&inputs, n, time, &device),
            targets_t,
            options.precision,
        );
        for (m, logprobs) in per_model.into_iter().enumerate() {
            let logprobs = logprobs
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
                f(m, r, &lp);
            }
        }
        start += n;
    }
}
