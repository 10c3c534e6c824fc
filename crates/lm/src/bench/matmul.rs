//! Matrix-product throughput at a model's own shapes (`smalltalk lm bench --cases matmul`):
//! the roofline of training and scoring. Outside the fused kernels a decoder step is a handful
//! of products — the attention projections, the SwiGLU's up and down products, the LM head, and
//! the weight gradients of each — so the rate the backend reaches at those shapes bounds every
//! tokens/s figure from above. Each product runs as the model's layers run it,
//! [`crate::fused::linear`] (`x · wᵀ` with `w: [n, k]`); `cargo xtask bench matmul` times the
//! same shapes with `torch.nn.functional.linear` in the same run.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;
use smalltalk_stage::stats::min_median;
use smalltalk_stage::Progress;

use super::{BenchModel, BenchOptions};
use crate::config::LmConfig;
use crate::error::{LmError, Result};

/// Rows of the LM head product timed (a whole training batch's `[tokens, vocab]` logits can
/// exceed a gigabyte; the fused head works on row chunks of about this size anyway).
pub const HEAD_ROWS: usize = 1024;

/// One product `[m, k] × [k, n]`, named after the layer it stands for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatmulShape {
    /// What it is in the model (`proj`, `mlp-up`, `mlp-down`, `head`, `square`).
    pub name: &'static str,
    /// Rows of the left operand.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of the right operand.
    pub n: usize,
}

impl MatmulShape {
    /// Floating-point operations of one product (`2·m·k·n`).
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// The forward products of one training step of `cfg` at `tokens = batch·seq` rows, plus a
/// square 1024³ product as the machine's reference: `proj` `[tokens, d] × [d, d]` (q, k, v, o),
/// `mlp-up` `[tokens, d] × [d, d_ff]` (gate, up), `mlp-down` `[tokens, d_ff] × [d_ff, d]`,
/// `head` `[HEAD_ROWS, d] × [d, vocab]`. The input gradients have the same shapes with `k` and
/// `n` swapped; the weight gradients (inner dimension `tokens`) are not timed here.
pub fn matmul_shapes(cfg: &LmConfig, tokens: usize) -> Vec<MatmulShape> {
    let (d, ff, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
    let shape = |name, m, k, n| MatmulShape { name, m, k, n };
    vec![
        shape("proj", tokens, d, d),
        shape("mlp-up", tokens, d, ff),
        shape("mlp-down", tokens, ff, d),
        shape("head", HEAD_ROWS.min(tokens), d, v),
        shape("square", 1024, 1024, 1024),
    ]
}

/// The timings of one shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatmulTiming {
    /// The shape.
    #[serde(flatten)]
    pub shape: MatmulShape,
    /// Wall time of each timed product.
    pub seconds: Vec<f64>,
    /// GFLOP/s of the fastest product.
    pub gflops_best: f64,
    /// GFLOP/s of the median product.
    pub gflops_median: f64,
}

/// Matrix-product throughput at a model's shapes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatmulBench {
    /// The model.
    #[serde(flatten)]
    pub model: BenchModel,
    /// Rows of the training batch the shapes stand for (`batch·seq`).
    pub tokens: usize,
    /// One entry per shape of [`matmul_shapes`].
    pub shapes: Vec<MatmulTiming>,
}

impl MatmulBench {
    /// One line per shape for people.
    pub fn describe(&self, backend: &str) -> String {
        let mut out = format!(
            "matmul at the shapes of {} on {backend} ({} rows):",
            self.model.preset, self.tokens
        );
        for t in &self.shapes {
            let s = &t.shape;
            out.push_str(&format!(
                "\n  {:<9} {:>6} x {:>6} x {:>6}: {:.1} GFLOP/s best, {:.1} median",
                s.name, s.m, s.k, s.n, t.gflops_best, t.gflops_median
            ));
        }
        out
    }
}

/// Time [`crate::fused::linear`] (`[m, k] · [n, k]ᵀ`) on `B` at every shape of
/// [`matmul_shapes`] for `opts.batch · opts.seq` rows: one warm-up and `opts.steps` timed
/// products each, on random normal operands, the device synchronised after each. `progress`
/// gets the phase `matmul`.
pub fn bench_matmul<B: Backend>(
    opts: &BenchOptions,
    cfg: &LmConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<MatmulBench> {
    if opts.steps == 0 || opts.batch == 0 || opts.seq == 0 {
        return Err(LmError::InvalidConfig(
            "--steps, --batch and --seq must be positive".into(),
        ));
    }
    let tokens = opts.batch * opts.seq;
    let shapes = matmul_shapes(cfg, tokens);
    progress.start("matmul", 0, shapes.len() as u64);
    let mut timings = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.into_iter().enumerate() {
        let normal = Distribution::Normal(0.0, 1.0);
        let a = Tensor::<B, 2>::random([shape.m, shape.k], normal, device);
        let w = Tensor::<B, 2>::random([shape.n, shape.k], normal, device);
        let sync = || B::sync(device).map_err(|e| LmError::Data(format!("device sync: {e:?}")));
        sync()?;
        let mut seconds = Vec::with_capacity(opts.steps);
        for rep in 0..=opts.steps {
            let t = Instant::now();
            let c = crate::fused::linear(a.clone(), w.clone());
            sync()?;
            if rep > 0 {
                seconds.push(t.elapsed().as_secs_f64());
            }
            drop(c);
        }
        let (best, median) = min_median(&seconds);
        timings.push(MatmulTiming {
            gflops_best: shape.flops() / best / 1e9,
            gflops_median: shape.flops() / median / 1e9,
            shape,
            seconds,
        });
        progress.update(i as u64 + 1, timings[i].shape.name);
    }
    progress.finish();
    Ok(MatmulBench {
        model: BenchModel::new(opts, cfg),
        tokens,
        shapes: timings,
    })
}
