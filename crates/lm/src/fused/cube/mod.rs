//! The fused ops as CubeCL kernels, written once for every CubeCL backend (wgpu, cuda):
//!
//! - [`attention`]: causal attention, FlashAttention-style (online softmax, the log-sum-exp
//!   saved, the backward pass recomputing probabilities from it): nothing of size `seq²`.
//! - [`head`]: the LM head + cross-entropy over vocabulary chunks: nothing of size
//!   `[N, vocab]`, only one chunk of logits at a time.
//!
//! [`LmBackend`] for `CubeBackend` runs them on f32 tensors (other dtypes take the [`tiled`]
//! ops); for `Fusion<B>` ([`fusion`]) each op is one custom operation of the stream. RoPE, the
//! head layout changes and the chunk matmuls are burn tensor ops around the kernels.

pub mod attention;
mod fusion;
pub mod head;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::attention::{from_heads, rotated_heads, to_heads, unrotate, GradInputs};
use super::{float, prim, tiled, AttentionShape, LmBackend};

/// Whether every tensor is f32 (the dtype the kernels take).
fn all_f32<T: TensorMetadata>(tensors: &[&T]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

impl<R, F, I, BT> LmBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn lm_head_nll(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&h, &e, &weights]) {
            return tiled::ops::lm_head_nll::<Self>(h, e, targets, weights, denom);
        }
        let (h, e) = (float::<Self, 2>(h), float::<Self, 2>(e));
        let (lse, target) = head::lse_and_target(&h, &e, targets);
        let w = float::<Self, 1>(weights).div_scalar(denom);
        prim(((lse - target) * w).sum())
    }

    fn lm_head_nll_grads(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&h, &e, &weights]) {
            return tiled::ops::lm_head_nll_grads::<Self>(h, e, targets, weights, denom);
        }
        let (h, e) = (float::<Self, 2>(h), float::<Self, 2>(e));
        let (lse, target) = head::lse_and_target(&h, &e, targets.clone());
        let w = float::<Self, 1>(weights).div_scalar(denom);
        let loss = ((lse.clone() - target) * w.clone()).sum();
        let (dh, de) = head::grads(&h, &e, targets, lse, w);
        (prim(loss), prim(dh), prim(de))
    }

    fn lm_head_logprobs(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&h, &e]) {
            return tiled::ops::lm_head_logprobs::<Self>(h, e, targets);
        }
        let (lse, target) = head::lse_and_target::<R, Self>(&float(h), &float(e), targets);
        prim(target - lse)
    }

    fn causal_attention_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&q, &k, &v, &cos, &sin]) {
            return tiled::ops::causal_attention_lse::<Self>([q, k, v], [cos, sin], shape);
        }
        let rope = (float(cos), float(sin));
        let q = rotated_heads::<Self>(float(q), rope.clone(), shape);
        let k = rotated_heads::<Self>(float(k), rope, shape);
        let v = to_heads::<Self>(float(v), shape);
        let (out, lse) = attention::forward([prim(q), prim(k), prim(v)], shape.scale());
        (prim(from_heads::<Self>(float(out), shape)), lse)
    }

    fn causal_attention_grads(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&q, &k, &v, &cos, &sin, &out, &lse, &dout]) {
            let (qkv, rope) = ([q, k, v], [cos, sin]);
            return tiled::ops::causal_attention_grads::<Self>(qkv, rope, [out, lse, dout], shape);
        }
        let rope = (float(cos), float(sin));
        let qkv = [float(q), float(k), float(v)];
        let g = GradInputs::<Self>::new(
            qkv,
            rope.clone(),
            float(out),
            float(lse),
            float(dout),
            shape,
        );
        let [dq, dk, dv] = attention::backward(
            [prim(g.q), prim(g.k), prim(g.v)],
            [prim(g.lse), prim(g.dout), prim(g.rowsum)],
            shape.scale(),
        );
        (
            prim(unrotate::<Self>(float(dq), rope.clone(), shape)),
            prim(unrotate::<Self>(float(dk), rope, shape)),
            prim(from_heads::<Self>(float(dv), shape)),
        )
    }
}
