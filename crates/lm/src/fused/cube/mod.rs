//! The fused ops as CubeCL kernels, written once for every CubeCL backend (wgpu, cuda):
//!
//! - [`attention`]: causal attention, FlashAttention-style (online softmax, the log-sum-exp
//!   saved, the backward pass recomputing probabilities from it): nothing of size `seq²`.
//! - [`head`]: the LM head + cross-entropy over vocabulary chunks: nothing of size
//!   `[N, vocab]`, only one chunk of logits at a time.
//!
//! [`LmBackend`] for `CubeBackend` runs them on f32 tensors (other dtypes take the [`tiled`]
//! ops); for `Fusion<B>` ([`fusion`]) each op is one custom operation of the stream. The
//! attention kernels apply RoPE themselves; the head's chunk matmuls are burn's (CubeCL) matmul.

pub mod attention;
mod fusion;
pub mod head;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{ComputeClient, CubeCount, CubeDim};

use super::{float, prim, tiled, AttentionShape, LmBackend};

/// Units per cube of the one-unit-per-row kernels.
const UNITS: u32 = 64;

/// A sentinel below every score and logit (WGSL has no `-inf` literal); `exp(SENTINEL − x)`
/// is 0.
const SENTINEL: f32 = -1.0e30;

/// An uninitialised contiguous tensor of `shape` with `like`'s device and dtype.
fn empty_like<R: CubeRuntime>(like: &CubeTensor<R>, shape: &[usize]) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        like.dtype,
    )
}

/// One unit per row: the cube count and size for `rows` rows.
fn launch_size<R: CubeRuntime>(client: &ComputeClient<R>, rows: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(UNITS);
    (
        cubecl::calculate_cube_count_elemwise(client, rows, dim),
        dim,
    )
}

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
        let (out, lse) = attention::forward([q, k, v], [cos, sin], shape);
        (out, lse)
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
        // rowsum(∂O∘O) per (batch, position, head).
        let rows = shape.rows() * shape.heads;
        let rowsum = (float::<Self, 2>(dout.clone()) * float::<Self, 2>(out))
            .reshape([rows, shape.head_dim])
            .sum_dim(1);
        let [dq, dk, dv] =
            attention::backward([q, k, v], [cos, sin], [lse, dout, prim(rowsum)], shape);
        (dq, dk, dv)
    }
}
