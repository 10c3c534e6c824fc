//! Continuing prompts: prefill each prompt once, then decode one position per step from the KV
//! cache ([`generate_batch`]); the whole-context recomputation per step is kept as the
//! reference ([`generate_reference`]), the oracle the cached path is tested against.
//!
//! **Context window.** A model attends to at most `max_seq_len` positions. When a sequence's
//! next token does not fit, its context restarts from a later token and is prefilled again:
//! the context of a sequence of `len` tokens starts at [`window_start`]`(len, max_seq_len)`, a
//! multiple of half the window, so after a restart the model keeps about half a window of
//! context and the next restart is half a window later (one prefill per `max_seq_len / 2`
//! tokens, instead of a whole-context forward per token). Both paths use this rule, so they
//! agree past the window too.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{LmError, Result};
use crate::kv_cache::{CachedInput, KvCache};
use crate::model::{ForwardOptions, Lm};
use crate::rng::SplitMix64;
use crate::sample::{sample_logits, SamplingOptions};

/// Where the context of a sequence of `len` tokens starts under a window of `max_len`
/// positions: 0 while it fits, then the smallest multiple of `max_len - max_len / 2` that
/// leaves at most `max_len` tokens.
pub fn window_start(len: usize, max_len: usize) -> usize {
    if len <= max_len {
        return 0;
    }
    let shift = max_len - max_len / 2;
    (len - max_len).div_ceil(shift) * shift
}

/// Refuse an empty prompt, a prompt longer than the context, or a token out of the vocabulary.
fn check_prompt<B: Backend>(model: &Lm<B>, index: usize, prompt: &[u32]) -> Result<()> {
    let max = model.config().max_seq_len;
    if prompt.is_empty() {
        return Err(LmError::Data(format!(
            "prompt {index}: cannot continue an empty prompt"
        )));
    }
    if prompt.len() > max {
        return Err(LmError::Data(format!(
            "prompt {index}: {} tokens do not fit the model's context of {max}",
            prompt.len()
        )));
    }
    model.check_tokens(prompt)
}

/// The state of one sequence being continued.
struct Sequence<B: Backend> {
    /// Prompt and generated tokens.
    ids: Vec<u32>,
    /// Tokens of `ids` before this index are in the cache.
    fed: usize,
    cache: KvCache<B>,
    rng: SplitMix64,
    generated: Vec<u32>,
    done: bool,
}

/// Continue every prompt of `prompts` (each ≥ 1 token, at most `max_seq_len`) by up to
/// `max_tokens` tokens with one KV cache per sequence, calling `on_token(prompt index, token)`
/// for each new token; a sequence stops early after a token in `stop` and leaves the batch.
/// Each step runs the sequences still going as one ragged batch ([`Lm::forward_cached`]).
/// Every sequence draws from its own generator seeded by `options.seed`, so a prompt gets the
/// same continuation alone or in a batch. Returns the generated ids of each prompt.
pub fn generate_batch<B: Backend>(
    model: &Lm<B>,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    stop: &[u32],
    options: &SamplingOptions,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>> {
    for (i, p) in prompts.iter().enumerate() {
        check_prompt(model, i, p)?;
    }
    let max = model.config().max_seq_len;
    let mut seqs: Vec<Sequence<B>> = prompts
        .iter()
        .map(|p| Sequence {
            ids: p.clone(),
            fed: 0,
            cache: model.new_cache(),
            rng: SplitMix64::for_stream(options.seed, "generate"),
            generated: Vec::with_capacity(max_tokens),
            done: max_tokens == 0,
        })
        .collect();
    loop {
        let active: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].done).collect();
        if active.is_empty() {
            break;
        }
        for &i in &active {
            let s = &mut seqs[i];
            if s.cache.len() + (s.ids.len() - s.fed) > max {
                s.cache.clear();
                s.fed = window_start(s.ids.len(), max);
            }
        }
        let mut inputs: Vec<CachedInput<'_, B>> = Vec::with_capacity(active.len());
        for s in seqs.iter_mut().filter(|s| !s.done) {
            inputs.push(CachedInput {
                cache: &mut s.cache,
                tokens: &s.ids[s.fed..],
            });
        }
        let logits = model.forward_cached(&mut inputs, ForwardOptions::default())?;
        drop(inputs);
        let vocab = model.config().vocab_size;
        let logits = logits.into_data().convert::<f32>().into_vec::<f32>();
        let logits = logits.expect("converted to f32");
        for (row, &i) in active.iter().enumerate() {
            let s = &mut seqs[i];
            s.fed = s.ids.len();
            let next = sample_logits(&logits[row * vocab..(row + 1) * vocab], options, &mut s.rng);
            s.ids.push(next);
            s.generated.push(next);
            on_token(i, next);
            s.done = stop.contains(&next) || s.generated.len() == max_tokens;
        }
    }
    Ok(seqs.into_iter().map(|s| s.generated).collect())
}

/// Continue `prompt` (≥ 1 token, at most `max_seq_len`) by up to `max_tokens` tokens, calling
/// `on_token` with each new one; stops early after a token in `stop`. KV-cached
/// ([`generate_batch`] of one prompt). Returns the generated ids.
pub fn generate<B: Backend>(
    model: &Lm<B>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    options: &SamplingOptions,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    let prompts = [prompt.to_vec()];
    let mut out = generate_batch(model, &prompts, max_tokens, stop, options, |_, t| {
        on_token(t)
    })?;
    Ok(out.pop().expect("one prompt, one continuation"))
}

/// [`generate`] without a cache: every step runs the whole context (from
/// [`window_start`]) through [`Lm::forward_hidden`] — O(n²) per sequence. The reference the
/// cached path is checked against; `on_logits` receives each step's next-token logits.
pub fn generate_reference<B: Backend>(
    model: &Lm<B>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    options: &SamplingOptions,
    mut on_logits: impl FnMut(&[f32]),
) -> Result<Vec<u32>> {
    check_prompt(model, 0, prompt)?;
    let device = model.device();
    let max = model.config().max_seq_len;
    let mut rng = SplitMix64::for_stream(options.seed, "generate");
    let mut ids = prompt.to_vec();
    let mut out = Vec::with_capacity(max_tokens);
    while out.len() < max_tokens {
        let ctx = &ids[window_start(ids.len(), max)..];
        let data: Vec<i32> = ctx.iter().map(|&t| t as i32).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(data, [1, ctx.len()]), &device);
        let hidden = model.forward_hidden(tokens).narrow(0, ctx.len() - 1, 1);
        let logits = model.head(hidden).into_data().convert::<f32>();
        let logits = logits.into_vec::<f32>().expect("converted to f32");
        on_logits(&logits);
        let next = sample_logits(&logits, options, &mut rng);
        ids.push(next);
        out.push(next);
        if stop.contains(&next) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::window_start;

    #[test]
    fn the_window_restarts_every_half_window_and_always_fits() {
        assert_eq!(window_start(8, 8), 0);
        assert_eq!(window_start(9, 8), 4);
        assert_eq!(window_start(12, 8), 4);
        assert_eq!(window_start(13, 8), 8);
        assert_eq!(window_start(10, 7), 4);
        for max in 1..20 {
            for len in 1..100 {
                let s = window_start(len, max);
                assert!(len - s <= max, "len {len} max {max}: start {s}");
                assert!(s <= window_start(len + 1, max));
            }
        }
    }
}
