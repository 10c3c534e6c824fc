//! `smalltalk-lm`: the decoder language model of SmallTalk, shared by routers and experts.
//!
//! SmallTalk ("No Need to Talk: Asynchronous Mixture of Language Models", Filippova et al.
//! 2025) trains tiny *router* LMs and full-size *expert* LMs with one architecture: a Llama-style
//! decoder (RoPE, pre-RMSNorm, SwiGLU, no biases, optionally tied embeddings). This crate holds
//! that model and everything needed to train and score it:
//!
//! - [`Lm`] / [`LmConfig`]: the model, named presets (`router-4.4m`, `expert-335m`, ...),
//!   TOML overrides, analytic parameter count; weight names follow HF Llama ([`model`]).
//! - [`score_prefix`] / [`token_logprobs`]: `log p(x_1..x_M)` per sequence (the routing score)
//!   and per-token log-probs (perplexity), without autodiff and in bounded memory;
//!   [`ModelSet`] scores the same rows under several models, stacked into one [`LmStack`]
//!   where that pays (GPU backends) or one by one.
//! - [`train`]: [`TrainConfig`], [`Trainer`] (AdamW, global-norm clipping, warm-up + cosine or
//!   constant LR, gradient accumulation, seekable shuffling, atomic and byte-reproducible
//!   checkpoints, bit-exact resume on CPU, stop requests, explicit budget extension), the
//!   [`SequenceSource`] data trait and observers ([`ProgressObserver`] forwarding to a
//!   `smalltalk_stage::Progress`, JSONL metrics).
//! - [`fused`]: ops fused for CPU speed behind one backend extension ([`LmBackend`]): the LM
//!   head + cross-entropy (a chunked gemm kernel that never builds `[N, vocab]` logits) and
//!   causal attention with RoPE (per-head kernels, FlashAttention-2 backward, no `[seq, seq]`
//!   tensors). Fused on `flex`; the reference burn ops elsewhere.
//! - [`precision`]: [`Precision`] — f32 compute, or bf16 compute over f32 master weights.
//! - [`generate`](mod@generate): continuations of a prompt or a batch of prompts, decoded one
//!   position per step from a [`KvCache`] ([`kv_cache`]), with temperature / top-k / top-p
//!   sampling ([`sample`]); the whole-context recomputation kept as the reference.
//! - [`backend`]: picking a compiled-in burn backend by name.
//! - [`bench`](mod@bench): training and scoring throughput of a preset on random tokens
//!   ([`bench_cases`], what `smalltalk lm bench` runs).
//!
//! Dependencies: `burn` 0.21 (generic `B: Backend`; CPU `flex` by default, `cuda` / `wgpu` as
//! features), `gemm` + `rayon` (with `flex`: the fused kernels), `safetensors` for weight
//! files, `serde`/`serde_json`/`toml` for configs,
//! `xxhash-rust` for checksums and seeding, `smalltalk-stage` for crash-safe writes, progress
//! reporting and the process-wide stop request, and `smalltalk-data`: training reads rows only
//! through [`SequenceSource`], which `smalltalk_data::SequenceReader` (a split of a dataset
//! folder) implements. Nothing here draws on the terminal.
//!
//! Numerics: parameters and optimizer state are f32. Compute is f32 by default; with
//! [`Precision::Bf16`] (for GPU backends) the matrix products and attention run in bf16 while
//! the residual stream, norms and loss stay f32 — the paper's bf16 compute over fp32 master
//! weights, as `torch.autocast` does ([`precision`]).

/// The burn version this crate is built on, re-exported so dependents use the same one.
pub use burn;

pub mod alloc_tuning;
pub mod attention;
pub mod backend;
pub mod bench;
pub mod block;
pub mod config;
pub mod embedding;
pub mod error;
pub mod fused;
pub mod generate;
pub mod hf;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod model_set;
pub mod norm;
pub mod precision;
pub mod rng;
pub mod rope;
pub mod sample;
pub mod score;
pub mod stack;
pub mod train;
pub mod weights;

pub use bench::{bench_cases, BenchCase, BenchOptions, BenchResult};
pub use config::{LmConfig, PRESET_NAMES};
pub use error::{LmError, Result};
pub use fused::{Kernel, LmBackend};
pub use generate::{generate, generate_batch, generate_reference, window_start};
pub use kv_cache::{CachedInput, KvCache};
pub use model::{ForwardOptions, Lm};
pub use model_set::{stacking_pays, ModelSet, STACK_ENV, STACK_MAX_PARAMS};
pub use precision::Precision;
pub use sample::{sample_logits, SamplingOptions};
pub use score::{score_prefix, score_prefix_lengths, token_logprobs, ScoreOptions};
pub use stack::LmStack;
pub use train::{
    Checkpoint, JsonlMetrics, NoopObserver, ProgressObserver, SequenceSource, StepMetrics,
    SubsetSource, TrainConfig, TrainObserver, Trainer, VecSource,
};
pub use weights::HostTensor;

/// The CPU inference backend (burn-flex, f32).
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Flex;
/// The CPU training backend (autodiff over burn-flex, f32).
#[cfg(feature = "flex")]
pub type CpuTrainBackend = burn::backend::Autodiff<burn::backend::Flex>;
/// CUDA with f32 tensors (bf16 compute is a [`Precision`] choice, not a backend type).
#[cfg(feature = "cuda")]
pub type CudaF32 = burn::backend::Cuda<f32, i32>;
