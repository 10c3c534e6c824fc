//! Generation speed (`smalltalk lm bench-generate`, which `cargo xtask bench generate` runs next
//! to Hugging Face `transformers` `generate` on the same weights):
//!
//! - [`prepare_generate_bench`]: a model of random weights saved as our weights file, exported as
//!   an HF `LlamaForCausalLM` folder with [`crate::hf::export_weights`] (what `smalltalk export
//!   hf` writes per model), and fixed random prompts, so both sides run the very same weights
//!   and prompts.
//! - [`bench_decode`]: one greedy [`generate_batch`] call (no stop tokens, so every sequence
//!   yields exactly `new_tokens`) with a timestamp per step taken in `on_token`: the time to the
//!   first token (the prefill) and the time of every later step (one position each, from the KV
//!   cache), so rates can be given over any range of positions.
//! - [`copy_bandwidth`]: the memory-copy bandwidth of this machine with the threads decoding uses,
//!   the roofline of batch-1 decoding (which reads every weight once per token).
//! - [`bench_routing`]: the time to route one prompt with E router models over the routing
//!   prefix against the time to generate with one expert.
//!
//! Rates: prefill tokens/s = prompt tokens × batch ÷ time to the first token; decode tokens/s =
//! (new tokens − 1) × batch ÷ the time after the first token ([`decode_rate`], [`position_rate`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::generate::{generate, generate_batch};
use crate::hf::{export_weights, SpecialIds};
use crate::model::Lm;
use crate::model_set::ModelSet;
use crate::rng::SplitMix64;
use crate::sample::SamplingOptions;
use crate::score::ScoreOptions;

/// Our weights file in a prepared folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The HF folder in a prepared folder.
pub const HF_DIR: &str = "hf";
/// The prompts (a JSON array of arrays of token ids) in a prepared folder.
pub const PROMPTS_FILE: &str = "prompts.json";

/// Greedy decoding: argmax at every step.
pub fn greedy() -> SamplingOptions {
    SamplingOptions {
        temperature: 0.0,
        ..SamplingOptions::default()
    }
}

/// Threads the CPU backend computes with (rayon's pool on `flex`; the machine's logical cores
/// otherwise): the thread count the reference side and [`copy_bandwidth`] are given.
pub fn compute_threads() -> usize {
    #[cfg(feature = "flex")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "flex"))]
    {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// What [`prepare_generate_bench`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreparedModel {
    /// The folder.
    pub dir: PathBuf,
    /// The model's config.
    pub config: LmConfig,
    /// Parameter count.
    pub params: usize,
    /// Bytes of all parameters in f32 (what batch-1 decoding reads per token).
    pub weight_bytes: usize,
    /// Number of prompts.
    pub prompts: usize,
    /// Tokens per prompt.
    pub prompt_len: usize,
}

/// Write `dir/{model.safetensors, hf/, prompts.json}`: a model of `config` with random weights
/// from `seed`, its HF export, and `prompts` random prompts of `prompt_len` tokens.
pub fn prepare_generate_bench<B: Backend>(
    config: &LmConfig,
    seed: u64,
    prompts: usize,
    prompt_len: usize,
    dir: &Path,
    device: &B::Device,
) -> Result<PreparedModel> {
    if prompts == 0 || prompt_len == 0 || prompt_len > config.max_seq_len {
        return Err(LmError::InvalidConfig(format!(
            "need at least one prompt of 1..={} tokens, got {prompts} of {prompt_len}",
            config.max_seq_len
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
    let model = Lm::<B>::new(config, seed, device)?;
    let weights = dir.join(WEIGHTS_FILE);
    model.save_safetensors(&weights)?;
    drop(model);
    // The ids HF's configs require; every sequence runs to its length (no stop token).
    let ids = SpecialIds {
        bos: 0,
        eos: 0,
        pad: 0,
    };
    export_weights(&weights, &dir.join(HF_DIR), ids)?;
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    let rows: Vec<Vec<u32>> = (0..prompts)
        .map(|_| {
            (0..prompt_len)
                .map(|_| rng.below(config.vocab_size as u64) as u32)
                .collect()
        })
        .collect();
    let path = dir.join(PROMPTS_FILE);
    let text = serde_json::to_string(&rows).expect("ids serialize");
    std::fs::write(&path, text).map_err(|e| LmError::io(&path, e))?;
    Ok(PreparedModel {
        dir: dir.to_path_buf(),
        config: config.clone(),
        params: config.num_params(),
        weight_bytes: 4 * config.num_params(),
        prompts,
        prompt_len,
    })
}

/// The model and prompts of a folder written by [`prepare_generate_bench`].
pub fn load_prepared<B: Backend>(dir: &Path, device: &B::Device) -> Result<(Lm<B>, Vec<Vec<u32>>)> {
    let weights = dir.join(WEIGHTS_FILE);
    let config = Lm::<B>::config_of_file(&weights)?;
    let model = Lm::from_safetensors(&config, &weights, device)?;
    let path = dir.join(PROMPTS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| LmError::io(&path, e))?;
    let prompts: Vec<Vec<u32>> = serde_json::from_str(&text).map_err(|e| LmError::Json {
        path: path.clone(),
        source: e,
    })?;
    Ok((model, prompts))
}

/// Prefill tokens/s: `prompt_len · batch` tokens in `first_token_s` seconds.
pub fn prefill_rate(prompt_len: usize, batch: usize, first_token_s: f64) -> f64 {
    (prompt_len * batch) as f64 / first_token_s
}

/// Decode tokens/s: each of `step_s` (the steps after the first token) yields `batch` tokens.
pub fn decode_rate(step_s: &[f64], batch: usize) -> f64 {
    (step_s.len() * batch) as f64 / step_s.iter().sum::<f64>()
}

/// Decode tokens/s over the steps that feed positions `from..to` (0-based, the prompt at
/// `0..prompt_len`): `step_s[j]` feeds the token at position `prompt_len + j` (the first
/// generated token sits at `prompt_len` and comes from the prefill). `None` when no step feeds
/// that range.
pub fn position_rate(
    step_s: &[f64],
    batch: usize,
    prompt_len: usize,
    from: usize,
    to: usize,
) -> Option<f64> {
    let lo = from.saturating_sub(prompt_len).min(step_s.len());
    let hi = to.saturating_sub(prompt_len).min(step_s.len());
    (hi > lo).then(|| decode_rate(&step_s[lo..hi], batch))
}

/// One timed [`generate_batch`] call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeTiming {
    /// Sequences decoded together.
    pub batch: usize,
    /// Tokens per prompt.
    pub prompt_len: usize,
    /// Tokens generated per sequence.
    pub new_tokens: usize,
    /// Seconds from the call to the first token of every sequence (the prefill).
    pub first_token_s: f64,
    /// Seconds of each later step (one more token for every sequence), in order.
    pub step_s: Vec<f64>,
    /// Seconds of the whole call.
    pub total_s: f64,
    /// Tokens generated for the first prompt (to compare with the reference side).
    pub tokens: Vec<u32>,
}

impl DecodeTiming {
    /// Prefill tokens/s.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        prefill_rate(self.prompt_len, self.batch, self.first_token_s)
    }

    /// Decode tokens/s after the first token.
    pub fn decode_tokens_per_s(&self) -> f64 {
        decode_rate(&self.step_s, self.batch)
    }

    /// Decode tokens/s over positions `from..to` ([`position_rate`]).
    pub fn position_tokens_per_s(&self, from: usize, to: usize) -> Option<f64> {
        position_rate(&self.step_s, self.batch, self.prompt_len, from, to)
    }
}

/// Greedily continue the first `batch` of `prompts` by `new_tokens` tokens each (no stop
/// token), after an untimed warm-up of `warmup_tokens` tokens on the same prompts; one
/// timestamp per step.
pub fn bench_decode<B: Backend>(
    model: &Lm<B>,
    prompts: &[Vec<u32>],
    batch: usize,
    new_tokens: usize,
    warmup_tokens: usize,
) -> Result<DecodeTiming> {
    if batch == 0 || batch > prompts.len() || new_tokens < 2 {
        return Err(LmError::InvalidConfig(format!(
            "batch {batch} must be in 1..={} and new tokens ({new_tokens}) at least 2",
            prompts.len()
        )));
    }
    let prompts = &prompts[..batch];
    let prompt_len = prompts[0].len();
    if prompts.iter().any(|p| p.len() != prompt_len) {
        return Err(LmError::InvalidConfig(
            "the prompts of a decode benchmark must have one length".into(),
        ));
    }
    if warmup_tokens > 0 {
        generate_batch(model, prompts, warmup_tokens, &[], &greedy(), |_, _| {})?;
    }
    let mut stamps: Vec<Instant> = Vec::with_capacity(new_tokens);
    let mut calls = 0usize;
    let start = Instant::now();
    let out = generate_batch(model, prompts, new_tokens, &[], &greedy(), |_, _| {
        calls += 1;
        if calls.is_multiple_of(batch) {
            stamps.push(Instant::now());
        }
    })?;
    let total_s = start.elapsed().as_secs_f64();
    if stamps.len() != new_tokens || out.iter().any(|o| o.len() != new_tokens) {
        return Err(LmError::Data(format!(
            "expected {new_tokens} steps of {batch} tokens, got {} calls",
            calls
        )));
    }
    let step_s = stamps
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    Ok(DecodeTiming {
        batch,
        prompt_len,
        new_tokens,
        first_token_s: (stamps[0] - start).as_secs_f64(),
        step_s,
        total_s,
        tokens: out[0].clone(),
    })
}

/// Memory-copy bandwidth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandwidthTiming {
    /// Bytes of the buffer copied.
    pub bytes: usize,
    /// Threads copying (disjoint slices).
    pub threads: usize,
    /// Seconds of each timed copy.
    pub seconds: Vec<f64>,
    /// Bytes read + bytes written per second of the fastest copy (STREAM's convention for
    /// "copy": 2 × buffer ÷ time), in GB/s (10⁹ bytes).
    pub gb_per_s_best: f64,
}

/// Copy a `bytes` buffer into another with `threads` threads (each a contiguous slice), once
/// untimed (page faults) and `reps` times timed; the best rate counts read + written bytes.
pub fn copy_bandwidth(bytes: usize, reps: usize, threads: usize) -> BandwidthTiming {
    let threads = threads.max(1);
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(threads).max(1);
    let copy = |dst: &mut [u8]| {
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
    };
    copy(&mut dst);
    let seconds: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            copy(&mut dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    std::hint::black_box(&dst);
    let best = seconds.iter().cloned().fold(f64::INFINITY, f64::min);
    BandwidthTiming {
        bytes,
        threads,
        gb_per_s_best: 2.0 * bytes as f64 / best / 1e9,
        seconds,
    }
}

/// FLOPs of a forward pass over `tokens` positions of a model of `params` parameters, counting
/// only the weight products (`2 · params · tokens`).
pub fn forward_flops(params: usize, tokens: usize) -> f64 {
    2.0 * params as f64 * tokens as f64
}

/// Share of routing in the FLOPs of routing one prompt with `routers` models of `router_params`
/// over `prefix` tokens and then running one expert of `expert_params` over `prompt_len +
/// new_tokens` positions.
pub fn routing_flop_share(
    routers: usize,
    router_params: usize,
    prefix: usize,
    expert_params: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> f64 {
    let route = routers as f64 * forward_flops(router_params, prefix);
    let expert = forward_flops(expert_params, prompt_len + new_tokens);
    route / (route + expert)
}

/// Routing time against generation time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingTiming {
    /// Router models (E).
    pub routers: usize,
    /// Routing prefix M̂ (tokens scored by every router).
    pub prefix: usize,
    /// Tokens the expert generates after the prompt.
    pub new_tokens: usize,
    /// Parameters of one router.
    pub router_params: usize,
    /// Parameters of the expert.
    pub expert_params: usize,
    /// Whether the routers ran stacked ([`ModelSet::Stacked`]).
    pub stacked: bool,
    /// Seconds to route the prompt (score it under every router, take the best), per rep.
    pub route_s: Vec<f64>,
    /// Seconds to generate `new_tokens` with the expert from the prompt, per rep.
    pub generate_s: Vec<f64>,
    /// Routing FLOPs ÷ (routing + generation FLOPs), from parameter counts
    /// ([`routing_flop_share`]).
    pub flop_share: f64,
}

/// Route the first `prefix` tokens of `prompt` with `routers` fresh models of `router_config`
/// (random weights; a [`ModelSet`], stacked where that pays), then generate `new_tokens`
/// greedily with `expert` from the same prompt: `reps` timed reps after one warm-up.
pub fn bench_routing<B: Backend>(
    expert: &Lm<B>,
    router_config: &LmConfig,
    routers: usize,
    prompt: &[u32],
    prefix: usize,
    new_tokens: usize,
    reps: usize,
) -> Result<RoutingTiming> {
    if routers == 0 || reps == 0 || prefix < 2 || prefix > prompt.len() {
        return Err(LmError::InvalidConfig(format!(
            "need routers and reps > 0 and a prefix in 2..={}, got {routers}, {reps}, {prefix}",
            prompt.len()
        )));
    }
    let device = expert.device();
    let models = (0..routers)
        .map(|i| Lm::<B>::new(router_config, 100 + i as u64, &device))
        .collect::<Result<Vec<_>>>()?;
    let set = ModelSet::new(models);
    let stacked = matches!(set, ModelSet::Stacked(_));
    let row = &prompt[..prefix];
    let route = || -> Result<usize> {
        let scores = set.score_prefix_lengths(row, prefix, &[prefix], &ScoreOptions::default())?;
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a][0][0].total_cmp(&scores[b][0][0]))
            .expect("at least one router");
        Ok(best)
    };
    let (mut route_s, mut generate_s) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let t = Instant::now();
        std::hint::black_box(route()?);
        let routed = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = generate(expert, prompt, new_tokens, &[], &greedy(), |_| {})?;
        let generated = t.elapsed().as_secs_f64();
        std::hint::black_box(out);
        if rep > 0 {
            route_s.push(routed);
            generate_s.push(generated);
        }
    }
    let router_params = router_config.num_params();
    let expert_params = expert.config().num_params();
    Ok(RoutingTiming {
        routers,
        prefix,
        new_tokens,
        router_params,
        expert_params,
        stacked,
        route_s,
        generate_s,
        flop_share: routing_flop_share(
            routers,
            router_params,
            prefix,
            expert_params,
            prompt.len(),
            new_tokens,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_tokens_of_every_sequence() {
        assert_eq!(prefill_rate(32, 8, 0.5), 512.0);
        assert_eq!(decode_rate(&[0.5, 0.25, 0.25], 2), 6.0);
    }

    #[test]
    fn position_buckets_start_after_the_prompt() {
        // prompt 4: step j feeds position 4 + j.
        let steps = [1.0, 1.0, 0.5, 0.5, 0.25];
        assert_eq!(position_rate(&steps, 1, 4, 4, 6), Some(1.0));
        assert_eq!(position_rate(&steps, 1, 4, 6, 8), Some(2.0));
        // Clipped to the steps there are; the prompt's positions have none.
        assert_eq!(position_rate(&steps, 2, 4, 8, 100), Some(8.0));
        assert_eq!(position_rate(&steps, 1, 4, 0, 4), None);
        assert_eq!(position_rate(&steps, 1, 4, 9, 12), None);
    }

    #[test]
    fn routing_share_compares_flops_of_both_parts() {
        // 4 routers of 10 params over 8 tokens vs an expert of 20 params over 16 positions.
        let share = routing_flop_share(4, 10, 8, 20, 8, 8);
        assert!((share - 320.0 / (320.0 + 320.0)).abs() < 1e-12);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn a_prepared_tiny_model_decodes_with_a_timestamp_per_step() {
        type B = burn::backend::Flex;
        let dir = tempfile::tempdir().unwrap();
        let cfg = LmConfig::preset("tiny").unwrap();
        let device = Default::default();
        let prepared = prepare_generate_bench::<B>(&cfg, 0, 2, 5, dir.path(), &device).unwrap();
        assert_eq!(prepared.weight_bytes, 4 * cfg.num_params());
        assert!(dir.path().join(HF_DIR).join("config.json").exists());
        let (model, prompts) = load_prepared::<B>(dir.path(), &device).unwrap();
        assert_eq!(prompts.len(), 2);
        let t = bench_decode(&model, &prompts, 2, 6, 1).unwrap();
        assert_eq!((t.step_s.len(), t.tokens.len()), (5, 6));
        assert!(t.decode_tokens_per_s() > 0.0 && t.prefill_tokens_per_s() > 0.0);
        let r = bench_routing(&model, &cfg, 2, &prompts[0], 5, 3, 1).unwrap();
        assert_eq!((r.route_s.len(), r.generate_s.len()), (1, 1));
        let bw = copy_bandwidth(1 << 16, 2, 2);
        assert!(bw.gb_per_s_best > 0.0 && bw.seconds.len() == 2);
    }
}
