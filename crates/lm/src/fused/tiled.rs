//! The fused ops written once from burn tensor ops, tiled so that no tensor grows with the
//! vocabulary or with `seq²`: [`super::LmBackend`]'s default bodies, and what the CubeCL
//! kernels (`super::cube`) fall back to for inputs that are not f32 (bf16 training on `cuda`,
//! `wgpu`). Same statistics and backward formulas as the reference
//! ops ([`super::reference_nll_grads`], [`super::reference_attention_grads`]), computed tile by
//! tile:
//!
//! - LM head + loss over vocabulary chunks of [`VOCAB_CHUNK`] rows of `e`: an online
//!   log-sum-exp (running max and rescaled sum) in the forward pass; the backward pass
//!   recomputes each chunk's logits, so the largest tensor is `[N, VOCAB_CHUNK]`, never
//!   `[N, vocab]`.
//! - Causal attention with RoPE over blocks of [`QUERY_BLOCK`] queries against the keys they
//!   may see: scores `[batch, heads, QUERY_BLOCK, seq]` at most, never `[.., seq, seq]`; the
//!   forward pass saves each row's log-sum-exp, the backward pass recomputes the block's
//!   probabilities from it (FlashAttention-2, Dao 2023, Algorithm 2, blocked over queries).

use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor};

use super::attention::{
    from_heads, future_mask, rotated_heads, row_logsumexp, to_heads, unrotate, AttentionShape,
    GradInputs, RopeTables,
};
use crate::precision::{cast_like, upcast_half};

/// Rows of the output embedding per chunk of the LM head (`[N, 4096]` f32 logits at a time).
pub const VOCAB_CHUNK: usize = 4096;
/// Queries per block of the attention.
pub const QUERY_BLOCK: usize = 64;

/// `[start, end)` ranges of `len` items in steps of `step`.
pub(crate) fn tiles(len: usize, step: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len)
        .step_by(step.max(1))
        .map(move |s| (s, (s + step).min(len)))
}

/// The logits of vocabulary rows `[a, b)`, `[N, b − a]`, in f32 (bf16 inputs are upcast).
pub(crate) fn chunk_logits<B: Backend>(
    h: &Tensor<B, 2>,
    e: &Tensor<B, 2>,
    (a, b): (usize, usize),
) -> Tensor<B, 2> {
    let [_, d] = e.dims();
    upcast_half(h.clone().matmul(e.clone().slice([a..b, 0..d]).transpose()))
}

/// `logsumexp_v (h·eᵀ)[i, v]` for every row, `[N, 1]`, over chunks of `chunk` rows of `e`
/// (a running max and a sum rescaled whenever the max grows).
pub fn chunked_lse<B: Backend>(h: &Tensor<B, 2>, e: &Tensor<B, 2>, chunk: usize) -> Tensor<B, 2> {
    let [v, _] = e.dims();
    let mut running: Option<(Tensor<B, 2>, Tensor<B, 2>)> = None;
    for range in tiles(v, chunk) {
        let x = chunk_logits(h, e, range);
        let m_chunk = x.clone().max_dim(1);
        running = Some(match running {
            None => {
                let s = (x - m_chunk.clone()).exp().sum_dim(1);
                (m_chunk, s)
            }
            Some((m, s)) => {
                let m_new = m.clone().max_pair(m_chunk);
                let s = s * (m - m_new.clone()).exp() + (x - m_new.clone()).exp().sum_dim(1);
                (m_new, s)
            }
        });
    }
    let (m, s) = running.expect("a vocabulary of at least one token");
    m + s.log()
}

/// The logit of each row's target, `h_i · e_{t_i}`, `[N, 1]` in f32, from the target rows
/// `e_t = e[targets]`.
fn target_logits<B: Backend>(h: &Tensor<B, 2>, e_t: Tensor<B, 2>) -> Tensor<B, 2> {
    upcast_half(h.clone() * e_t).sum_dim(1)
}

/// `Σ w·(lse − x_t)` with `w` already divided by the denominator (one-element tensor).
fn weighted_nll<B: Backend>(
    lse: Tensor<B, 2>,
    h: &Tensor<B, 2>,
    e_t: Tensor<B, 2>,
    w: Tensor<B, 2>,
) -> Tensor<B, 1> {
    ((lse - target_logits(h, e_t)) * w).sum()
}

/// `log p(t_i | row i)` of `logits = h·eᵀ`, `[N]`, over vocabulary chunks.
pub fn chunked_logprobs<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    chunk: usize,
) -> Tensor<B, 1> {
    let [n, _] = h.dims();
    let e_t = e.clone().select(0, targets);
    (target_logits(&h, e_t) - chunked_lse(&h, &e, chunk)).reshape([n])
}

/// The loss `Σ w·(lse − x_t) / denom` over vocabulary chunks (one-element tensor).
pub fn chunked_nll<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
    chunk: usize,
) -> Tensor<B, 1> {
    let [n, _] = h.dims();
    let e_t = e.clone().select(0, targets);
    let w = weights.reshape([n, 1]).div_scalar(denom);
    weighted_nll(chunked_lse(&h, &e, chunk), &h, e_t, w)
}

/// The loss and its gradients `(loss, ∂/∂h, ∂/∂e)` over vocabulary chunks: with
/// `G = w·(softmax − onehot)/denom`, `∂h = G·E` and `∂e = Gᵀ·h`, each chunk's softmax part
/// from its recomputed logits and the saved log-sum-exp, the one-hot part added once.
pub fn chunked_nll_grads<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
    chunk: usize,
) -> (Tensor<B, 1>, Tensor<B, 2>, Tensor<B, 2>) {
    let [n, d] = h.dims();
    let [v, _] = e.dims();
    let lse = chunked_lse(&h, &e, chunk);
    let w = weights.reshape([n, 1]).div_scalar(denom);
    let e_t = e.clone().select(0, targets.clone());
    let loss = weighted_nll(lse.clone(), &h, e_t.clone(), w.clone());
    let mut dh = Tensor::<B, 2>::zeros([n, d], &h.device());
    let mut de_chunks = Vec::new();
    for range in tiles(v, chunk) {
        let (a, b) = range;
        let g = cast_like(
            (chunk_logits(&h, &e, range) - lse.clone()).exp() * w.clone(),
            &h,
        );
        dh = dh + g.clone().matmul(e.clone().slice([a..b, 0..d]));
        de_chunks.push(g.transpose().matmul(h.clone()));
    }
    let w = cast_like(w, &h);
    let dh = dh - e_t * w.clone();
    let de = Tensor::cat(de_chunks, 0).select_assign(0, targets, -(h * w), IndexingUpdateOp::Add);
    (loss, dh, de)
}

/// Rows `[a, b)` of dimension 2 of a `[batch, heads, seq, head_dim]` tensor.
fn rows<B: Backend>(x: &Tensor<B, 4>, (a, b): (usize, usize)) -> Tensor<B, 4> {
    let [bs, h, _, d] = x.dims();
    x.clone().slice([0..bs, 0..h, a..b, 0..d])
}

/// Scaled, masked scores of queries `[a, b)` against keys `[0, b)`, `[batch, heads, b − a, b]`.
fn block_scores<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    (a, b): (usize, usize),
    s: AttentionShape,
) -> Tensor<B, 4> {
    let scores = rows(q, (a, b))
        .matmul(rows(k, (0, b)).swap_dims(2, 3))
        .mul_scalar(s.scale());
    let mask = future_mask::<B>(a, b - a, b, &q.device()).expand([s.batch, s.heads, b - a, b]);
    scores.mask_fill(mask, f64::NEG_INFINITY)
}

/// Causal attention with RoPE over query blocks: `(out [N, d], lse)`, `lse` as in
/// [`super::reference_attention_lse`] (`[batch·heads·seq]`).
pub fn blocked_attention_lse<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    rope: RopeTables<B>,
    shape: AttentionShape,
    block: usize,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let s = shape;
    let (q, k) = (rotated_heads(q, rope.clone(), s), rotated_heads(k, rope, s));
    let v = to_heads(v, s);
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for range in tiles(s.seq, block) {
        let scores = block_scores(&q, &k, range, s);
        let lse = row_logsumexp(scores.clone());
        outs.push((scores - lse.clone()).exp().matmul(rows(&v, (0, range.1))));
        lses.push(lse);
    }
    let lse = Tensor::cat(lses, 2).reshape([s.batch * s.heads * s.seq]);
    (from_heads(Tensor::cat(outs, 2), s), lse)
}

/// Gradients `(∂q, ∂k, ∂v)` over query blocks, by the formulas of
/// [`super::reference_attention_grads`] with each block's probabilities recomputed from the
/// saved log-sum-exp; `∂k` and `∂v` accumulate over the blocks that see each key.
#[allow(clippy::too_many_arguments)]
pub fn blocked_attention_grads<B: Backend>(
    qkv: [Tensor<B, 2>; 3],
    rope: RopeTables<B>,
    out: Tensor<B, 2>,
    lse: Tensor<B, 1>,
    dout: Tensor<B, 2>,
    shape: AttentionShape,
    block: usize,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let s = shape;
    let GradInputs {
        q,
        k,
        v,
        lse,
        dout,
        rowsum,
    } = GradInputs::new(qkv, rope.clone(), out, lse, dout, s);
    let mut dk = Tensor::<B, 4>::zeros(k.dims(), &k.device());
    let mut dv = Tensor::<B, 4>::zeros(v.dims(), &v.device());
    let mut dqs = Vec::new();
    for range in tiles(s.seq, block) {
        let b = range.1;
        let [bs, h, _, hd] = q.dims();
        let p = (block_scores(&q, &k, range, s) - rows(&lse, range)).exp();
        let do_b = rows(&dout, range);
        let dp = do_b.clone().matmul(rows(&v, (0, b)).swap_dims(2, 3));
        let ds = p.clone() * (dp - rows(&rowsum, range));
        dqs.push(ds.clone().matmul(rows(&k, (0, b))).mul_scalar(s.scale()));
        let keys = [0..bs, 0..h, 0..b, 0..hd];
        let dk_b = ds
            .swap_dims(2, 3)
            .matmul(rows(&q, range))
            .mul_scalar(s.scale());
        dk = dk
            .clone()
            .slice_assign(keys.clone(), rows(&dk, (0, b)) + dk_b);
        dv = dv
            .clone()
            .slice_assign(keys, rows(&dv, (0, b)) + p.swap_dims(2, 3).matmul(do_b));
    }
    let dq = Tensor::cat(dqs, 2);
    (
        unrotate(dq, rope.clone(), s),
        unrotate(dk, rope, s),
        from_heads(dv, s),
    )
}

/// The tiled ops on backend primitives: [`super::LmBackend`]'s default bodies, and the
/// fallback of the CubeCL kernels for inputs they do not take.
pub mod ops {
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::{FloatTensor, IntTensor};

    use super::{QUERY_BLOCK, VOCAB_CHUNK};
    use crate::fused::{float, int, prim, AttentionShape};

    /// [`super::chunked_nll`] at [`VOCAB_CHUNK`].
    pub fn lm_head_nll<B: Backend>(
        h: FloatTensor<B>,
        e: FloatTensor<B>,
        targets: IntTensor<B>,
        weights: FloatTensor<B>,
        denom: f64,
    ) -> FloatTensor<B> {
        let (h, e, t, w) = (float(h), float(e), int(targets), float(weights));
        prim(super::chunked_nll::<B>(h, e, t, w, denom, VOCAB_CHUNK))
    }

    /// [`super::chunked_nll_grads`] at [`VOCAB_CHUNK`].
    pub fn lm_head_nll_grads<B: Backend>(
        h: FloatTensor<B>,
        e: FloatTensor<B>,
        targets: IntTensor<B>,
        weights: FloatTensor<B>,
        denom: f64,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let (h, e, t, w) = (float(h), float(e), int(targets), float(weights));
        let (loss, dh, de) = super::chunked_nll_grads::<B>(h, e, t, w, denom, VOCAB_CHUNK);
        (prim(loss), prim(dh), prim(de))
    }

    /// [`super::chunked_logprobs`] at [`VOCAB_CHUNK`].
    pub fn lm_head_logprobs<B: Backend>(
        h: FloatTensor<B>,
        e: FloatTensor<B>,
        targets: IntTensor<B>,
    ) -> FloatTensor<B> {
        let (h, e, t) = (float(h), float(e), int(targets));
        prim(super::chunked_logprobs::<B>(h, e, t, VOCAB_CHUNK))
    }

    /// [`super::blocked_attention_lse`] at [`QUERY_BLOCK`]: `(out, lse)`.
    pub fn causal_attention_lse<B: Backend>(
        [q, k, v]: [FloatTensor<B>; 3],
        [cos, sin]: [FloatTensor<B>; 2],
        shape: AttentionShape,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let (q, k, v, rope) = (float(q), float(k), float(v), (float(cos), float(sin)));
        let (out, lse) = super::blocked_attention_lse::<B>(q, k, v, rope, shape, QUERY_BLOCK);
        (prim(out), prim(lse))
    }

    /// [`super::blocked_attention_grads`] at [`QUERY_BLOCK`]: `(∂q, ∂k, ∂v)` from the inputs,
    /// the RoPE tables and `[out, lse, dout]`.
    pub fn causal_attention_grads<B: Backend>(
        [q, k, v]: [FloatTensor<B>; 3],
        [cos, sin]: [FloatTensor<B>; 2],
        [out, lse, dout]: [FloatTensor<B>; 3],
        shape: AttentionShape,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let (dq, dk, dv) = super::blocked_attention_grads::<B>(
            [float(q), float(k), float(v)],
            (float(cos), float(sin)),
            float(out),
            float(lse),
            float(dout),
            shape,
            QUERY_BLOCK,
        );
        (prim(dq), prim(dk), prim(dv))
    }
}
