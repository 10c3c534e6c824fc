//! Causal self-attention with RoPE as one op: the reference computation (burn tensor ops) and
//! the dispatch to the fused kernel of [`super::attention_kernel`].
//!
//! Inputs are the projections `q`, `k`, `v: [batch·seq, heads·head_dim]` as the `Linear`s
//! produce them, and the RoPE tables `cos`, `sin: [seq, head_dim]`. The op rotates `q` and
//! `k`, attends causally with scale `1/√head_dim` and returns `[batch·seq, heads·head_dim]`,
//! ready for `o_proj`. Keeping the flat layout at the op's boundary means no permuted copies
//! in the model; the fused CPU kernel and the [`super::tiled`] op also never build a
//! `[batch, heads, seq, seq]` tensor.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Bool, Tensor, TensorData};

// `float`, `prim` and `LmBackend` are used by the dispatch arms of the compiled-in backends.
#[allow(unused_imports)]
use super::{float, on_lm_backend, prim, Kernel, LmBackend};
use crate::rope::rotate_half;

/// The geometry of one attention call (`q`, `k`, `v` are `[batch·seq, heads·head_dim]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of one head (even, for RoPE).
    pub head_dim: usize,
}

impl AttentionShape {
    /// Model width `heads · head_dim`.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Rows of the flat layout, `batch · seq`.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// The softmax scale `1/√head_dim`.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }
}

/// `(cos, sin)` RoPE tables, `[seq, head_dim]` each.
pub type RopeTables<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// `[N, d] → [batch, heads, seq, head_dim]`.
pub(crate) fn to_heads<B: Backend>(x: Tensor<B, 2>, s: AttentionShape) -> Tensor<B, 4> {
    x.reshape([s.batch, s.seq, s.heads, s.head_dim])
        .swap_dims(1, 2)
}

/// `[batch, heads, seq, head_dim] → [N, d]`.
pub(crate) fn from_heads<B: Backend>(x: Tensor<B, 4>, s: AttentionShape) -> Tensor<B, 2> {
    x.swap_dims(1, 2).reshape([s.rows(), s.width()])
}

/// Rotate `[N, d]` projections by RoPE and split them into heads.
pub(crate) fn rotated_heads<B: Backend>(
    x: Tensor<B, 2>,
    (cos, sin): RopeTables<B>,
    s: AttentionShape,
) -> Tensor<B, 4> {
    let x = x.reshape([s.batch, s.seq, s.heads, s.head_dim]);
    rotate_half(x, cos, sin).swap_dims(1, 2)
}

/// The reference op: RoPE, then `burn::tensor::module::attention` with `is_causal` (under
/// autodiff burn differentiates its decomposition). This is the model's unfused computation.
pub fn reference_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    rope: RopeTables<B>,
    shape: AttentionShape,
) -> Tensor<B, 2> {
    let q = rotated_heads(q, rope.clone(), shape);
    let k = rotated_heads(k, rope, shape);
    let v = to_heads(v, shape);
    let options = AttentionModuleOptions {
        is_causal: true,
        ..Default::default()
    };
    from_heads(attention(q, k, v, None, None, options), shape)
}

/// `[1, 1, rows, cols]`, true where key `j` lies in the future of query `first + i` (for
/// `first = 0`, `rows = cols = seq`: true above the diagonal).
pub(crate) fn future_mask<B: Backend>(
    first: usize,
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let mask: Vec<bool> = (0..rows * cols)
        .map(|ij| ij % cols > first + ij / cols)
        .collect();
    Tensor::from_data(TensorData::new(mask, [1, 1, rows, cols]), device)
}

/// The log-sum-exp of each row of masked scores `[.., rows, cols]`, as `[.., rows, 1]`.
pub(crate) fn row_logsumexp<B: Backend>(scores: Tensor<B, 4>) -> Tensor<B, 4> {
    let max = scores.clone().max_dim(3);
    max.clone() + (scores - max).exp().sum_dim(3).log()
}

/// Scaled, masked scores `q·kᵀ/√head_dim`, `[batch, heads, seq, seq]` (−∞ above the diagonal).
fn masked_scores<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, s: AttentionShape) -> Tensor<B, 4> {
    let device = q.device();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(s.scale());
    let mask = future_mask::<B>(0, s.seq, s.seq, &device).expand([s.batch, s.heads, s.seq, s.seq]);
    scores.mask_fill(mask, f64::NEG_INFINITY)
}

/// The op written out with explicit softmax statistics: `(out [N, d], lse)` where `lse` is the
/// log-sum-exp of each masked score row, `[batch·heads·seq]` in `(batch, head, position)`
/// order. Equal to [`reference_attention`] up to rounding.
pub fn reference_attention_lse<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    rope: RopeTables<B>,
    shape: AttentionShape,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let scores = masked_scores(
        rotated_heads(q, rope.clone(), shape),
        rotated_heads(k, rope, shape),
        shape,
    );
    let lse = row_logsumexp(scores.clone());
    let p = (scores - lse.clone()).exp();
    let out = from_heads(p.matmul(to_heads(v, shape)), shape);
    (out, lse.reshape([shape.batch * shape.heads * shape.seq]))
}

/// Gradients `(∂q, ∂k, ∂v)` of the op for the upstream gradient `dout`, by the
/// FlashAttention-2 formulas with full tensors: `P = exp(S − lse)`, `∂V = Pᵀ·∂O`,
/// `∂P = ∂O·Vᵀ`, `∂S = P∘(∂P − rowsum(∂O∘O))`, `∂Q = ∂S·K/√h`, `∂K = ∂Sᵀ·Q/√h`, and the
/// rotations undone (RoPE is orthogonal: its transpose is the rotation by `−angle`).
pub fn reference_attention_grads<B: Backend>(
    qkv: [Tensor<B, 2>; 3],
    rope: RopeTables<B>,
    out: Tensor<B, 2>,
    lse: Tensor<B, 1>,
    dout: Tensor<B, 2>,
    shape: AttentionShape,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let s = shape;
    let g = GradInputs::new(qkv, rope.clone(), out, lse, dout, s);
    let p = (masked_scores(g.q.clone(), g.k.clone(), s) - g.lse).exp();
    let dv = p.clone().swap_dims(2, 3).matmul(g.dout.clone());
    let dp = g.dout.matmul(g.v.swap_dims(2, 3));
    let ds = p * (dp - g.rowsum);
    let dq = ds.clone().matmul(g.k).mul_scalar(s.scale());
    let dk = ds.swap_dims(2, 3).matmul(g.q).mul_scalar(s.scale());
    (
        unrotate(dq, rope.clone(), s),
        unrotate(dk, rope, s),
        from_heads(dv, s),
    )
}

/// What the attention backward needs, in the `[batch, heads, seq, ·]` layout: the rotated `q`
/// and `k`, `v`, each row's log-sum-exp `[.., 1]`, the upstream gradient and
/// `rowsum(∂O∘O)` `[.., 1]`.
pub(crate) struct GradInputs<B: Backend> {
    /// Rotated queries.
    pub q: Tensor<B, 4>,
    /// Rotated keys.
    pub k: Tensor<B, 4>,
    /// Values.
    pub v: Tensor<B, 4>,
    /// Log-sum-exp of each score row, `[batch, heads, seq, 1]`.
    pub lse: Tensor<B, 4>,
    /// Upstream gradient of the output.
    pub dout: Tensor<B, 4>,
    /// `rowsum(∂O∘O)`, `[batch, heads, seq, 1]`.
    pub rowsum: Tensor<B, 4>,
}

impl<B: Backend> GradInputs<B> {
    /// From the op's flat inputs, output, log-sum-exp and upstream gradient.
    pub fn new(
        [q, k, v]: [Tensor<B, 2>; 3],
        rope: RopeTables<B>,
        out: Tensor<B, 2>,
        lse: Tensor<B, 1>,
        dout: Tensor<B, 2>,
        s: AttentionShape,
    ) -> Self {
        let dout = to_heads(dout, s);
        GradInputs {
            q: rotated_heads(q, rope.clone(), s),
            k: rotated_heads(k, rope, s),
            v: to_heads(v, s),
            lse: lse.reshape([s.batch, s.heads, s.seq, 1]),
            rowsum: (dout.clone() * to_heads(out, s)).sum_dim(3),
            dout,
        }
    }
}

/// The gradient of [`rotated_heads`]: `[batch, heads, seq, head_dim]` back to `[N, d]`, rotated
/// by `−angle` (RoPE is orthogonal: its transpose is the inverse rotation).
pub(crate) fn unrotate<B: Backend>(
    g: Tensor<B, 4>,
    (cos, sin): RopeTables<B>,
    s: AttentionShape,
) -> Tensor<B, 2> {
    rotate_half(g.swap_dims(1, 2), cos, sin.neg()).reshape([s.rows(), s.width()])
}

/// `(q, k, v, cos, sin)`.
#[allow(dead_code)] // without a backend feature there is nothing to dispatch to
type Args<B> = (
    Tensor<B, 2>,
    Tensor<B, 2>,
    Tensor<B, 2>,
    Tensor<B, 2>,
    Tensor<B, 2>,
);

/// Causal self-attention with RoPE (see the module docs), through the backend's
/// [`LmBackend`] op where [`Kernel::Auto`] finds one, else [`reference_attention`].
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    rope: RopeTables<B>,
    shape: AttentionShape,
    kernel: Kernel,
) -> Tensor<B, 2> {
    if kernel == Kernel::Reference {
        return reference_attention(q, k, v, rope, shape);
    }
    let args = on_lm_backend!(B, (q, k, v, rope.0, rope.1), Args, |a: L| {
        let (q, k, v, c, s) = a;
        float::<L, 2>(L::causal_attention(
            prim(q),
            prim(k),
            prim(v),
            prim(c),
            prim(s),
            shape,
        ))
    });
    let (q, k, v, c, s) = args;
    reference_attention(q, k, v, (c, s), shape)
}
