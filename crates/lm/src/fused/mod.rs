//! Fused ops for the hot spots of training and scoring: the LM head + cross-entropy without an
//! `[N, vocab]` tensor, and causal self-attention with RoPE without `[batch, heads, seq, seq]`
//! tensors.
//!
//! - [`LmBackend`]: a backend extension with one method per op. The default bodies are the
//!   [`tiled`] ops (burn tensor ops over vocabulary chunks and query blocks). `Flex` overrides
//!   them with raw f32 kernels ([`head_kernel`], [`attention_kernel`]); every CubeCL backend
//!   (`Wgpu`, cuda, with or without fusion) with the CubeCL kernels of `cube`, written once
//!   (f32; other dtypes take the tiled ops); `Autodiff<B>` wraps `B`'s forward and backward
//!   ops in custom backward steps.
//! - [`head_nll`] / [`head_logprobs`] / [`causal_attention`]: the entry points the model uses,
//!   generic over any `B: Backend` so no caller needs an extra bound. With [`Kernel::Auto`]
//!   they route the backends with an [`LmBackend`] impl (`Flex`, `Wgpu`, cuda, with or without
//!   autodiff; checked by `TypeId`, see `on_lm_backend`) to its ops, and every other backend,
//!   or [`Kernel::Reference`], to the reference ops: exactly the unfused computation.

pub mod attention;
#[cfg(feature = "flex")]
mod attention_block;
#[cfg(feature = "flex")]
pub mod attention_kernel;
mod autodiff;
#[cfg(feature = "flex")]
mod block_rows;
pub mod cached_attention;
#[cfg(feature = "cube")]
pub mod cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod flex_ops;
#[cfg(feature = "flex")]
pub mod gemm;
mod head;
#[cfg(feature = "flex")]
pub mod head_kernel;
pub mod isa;
mod layer_ops;
pub mod rows;
pub mod tiled;

use std::any::Any;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{backend::Backend, Int, Tensor, TensorPrimitive};

pub use attention::{
    causal_attention, reference_attention, reference_attention_grads, reference_attention_lse,
    AttentionShape,
};
pub use cached_attention::{
    cache_write, cached_attention, reference_cache_write, reference_cached_attention,
};
pub use head::{head_logprobs, head_nll, reference_nll, reference_nll_grads};
pub use layer_ops::{
    grouped_linear, linear, reference_grouped_linear, reference_linear, reference_linear_grads,
    reference_rms_norm, reference_rms_norm_grads, reference_rms_norm_grouped,
    reference_rms_norm_prim, reference_silu_mul, reference_silu_mul_grads, rms_norm,
    rms_norm_grouped, silu_mul,
};

/// Which implementation computes the fused ops (LM head + loss, attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// The backend's [`LmBackend`] ops where it has them (`flex`: CPU kernels; `wgpu`, cuda:
    /// CubeCL kernels; with or without autodiff), else the reference ops.
    #[default]
    Auto,
    /// Always the reference burn ops (full logits; attention through `burn::tensor::module`).
    Reference,
}

/// Backend extension for the fused ops.
///
/// Head methods take `h: [N, D]`, `e: [V, D]` (the tied embedding or the untied
/// `lm_head.weight`) and `targets: [N]` (ids `< V`). Attention methods take `q`, `k`, `v` as
/// projections `[batch·seq, heads·head_dim]` (head `j` in columns `j·head_dim..`), the RoPE
/// tables `cos`, `sin: [seq, head_dim]`, and return outputs in the same layout.
pub trait LmBackend: Backend {
    /// `Σ_i w_i·(logsumexp_i − x_i[t_i]) / denom` as a one-element tensor (`weights: [N]`,
    /// 0 for ignored targets).
    fn lm_head_nll(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> FloatTensor<Self> {
        tiled::ops::lm_head_nll::<Self>(h, e, targets, weights, denom)
    }

    /// The loss of [`LmBackend::lm_head_nll`] with its gradients `(loss, ∂/∂h, ∂/∂e)` for an
    /// upstream gradient of 1.
    fn lm_head_nll_grads(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tiled::ops::lm_head_nll_grads::<Self>(h, e, targets, weights, denom)
    }

    /// `log p(t_i | row i)`, `[N]`.
    fn lm_head_logprobs(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        tiled::ops::lm_head_logprobs::<Self>(h, e, targets)
    }

    /// A bias-free linear layer `x · wᵀ` (`x: [N, in]`, `w: [out, in]`, the PyTorch layout).
    fn lm_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        reference_linear::<Self>(x, w)
    }

    /// `groups` bias-free linear layers side by side (inference only, no gradient op): rows
    /// `g·N..(g+1)·N` of `x: [groups·N, in]` times `w_gᵀ`, where `w: [groups·out, in]` stacks the
    /// groups' weights; `[groups·N, out]`.
    fn lm_grouped_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        groups: usize,
    ) -> FloatTensor<Self> {
        reference_grouped_linear::<Self>(x, w, groups)
    }

    /// Gradients `(∂/∂x = dy·w, ∂/∂w = dyᵀ·x)` of [`LmBackend::lm_linear`] for `dy: [N, out]`.
    fn lm_linear_grads(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference_linear_grads::<Self>(x, w, dy)
    }

    /// The SwiGLU product `silu(gate) ⊙ up` of two tensors of one shape.
    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        reference_silu_mul::<Self>(gate, up)
    }

    /// Gradients `(∂/∂gate, ∂/∂up)` of [`LmBackend::silu_mul`] for the upstream gradient `dout`.
    fn silu_mul_grads(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dout: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference_silu_mul_grads::<Self>(gate, up, dout)
    }

    /// RMSNorm `x / sqrt(mean(x²) + eps) · w` of each row of `x: [N, d]` (`w: [d]`).
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        reference_rms_norm_prim::<Self>(x, w, eps)
    }

    /// [`LmBackend::rms_norm`] of `groups` equal blocks of rows of `x: [groups·N, d]`, block
    /// `g` with row `g` of the gains `w: [groups, d]` (inference only, no gradient op).
    fn rms_norm_grouped(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f64,
        groups: usize,
    ) -> FloatTensor<Self> {
        reference_rms_norm_grouped::<Self>(x, w, eps, groups)
    }

    /// Gradients `(∂/∂x, ∂/∂w)` of [`LmBackend::rms_norm`] for the upstream gradient `dy`.
    fn rms_norm_grads(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f64,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference_rms_norm_grads::<Self>(x, w, eps, dy)
    }

    /// A KV cache buffer `[capacity, d]` with rows `start..start + n` replaced by
    /// `rows: [n, d]` ([`cache_write`]).
    fn cache_write(
        buffer: FloatTensor<Self>,
        rows: FloatTensor<Self>,
        start: usize,
    ) -> FloatTensor<Self> {
        reference_cache_write::<Self>(buffer, rows, start)
    }

    /// Attention of `q: [n, d]` (rotated) over the first `len` rows of a KV cache's `keys`,
    /// `values: [capacity, d]` ([`cached_attention`]): `[n, d]`. Inference only.
    fn cached_attention(
        q: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        len: usize,
        heads: usize,
    ) -> FloatTensor<Self> {
        reference_cached_attention::<Self>(q, keys, values, len, heads)
    }

    /// Causal self-attention with RoPE on `q` and `k`, softmax scale `1/√head_dim`:
    /// `[N, d]` outputs (before `o_proj`).
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> FloatTensor<Self> {
        Self::causal_attention_lse(q, k, v, cos, sin, shape).0
    }

    /// [`LmBackend::causal_attention`] and the log-sum-exp of each softmax row,
    /// `[batch, heads, seq]` flattened (what the backward pass needs besides the inputs).
    fn causal_attention_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tiled::ops::causal_attention_lse::<Self>([q, k, v], [cos, sin], shape)
    }

    /// Gradients `(∂/∂q, ∂/∂k, ∂/∂v)` of [`LmBackend::causal_attention`] for the upstream
    /// gradient `dout: [N, d]`, from the inputs, the output and its log-sum-exp.
    #[allow(clippy::too_many_arguments)]
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
        tiled::ops::causal_attention_grads::<Self>([q, k, v], [cos, sin], [out, lse, dout], shape)
    }
}

pub(crate) fn float<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

pub(crate) fn int<B: Backend>(p: IntTensor<B>) -> Tensor<B, 1, Int> {
    Tensor::from_primitive(p)
}

pub(crate) fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Moves `a` into a `T` when both are the same type (a `TypeId` check), else hands it back.
#[allow(dead_code)] // without a backend feature there is nothing to dispatch to
pub(crate) fn same_type<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => Ok(t.take().expect("slot is full")),
        None => Err(slot.expect("slot is full")),
    }
}

/// Dispatch to the [`LmBackend`] ops of the compiled-in backend that `$B` is: for each of
/// `Flex`, `Wgpu`, cuda (each also under `Autodiff`), when `$args: $Args<$B>` is an
/// `$Args<L>`, binds it to `$a`, the type to `$L`, and returns `$body` (a `$B` value)
/// from the enclosing function; otherwise evaluates to `$args`, handed back.
macro_rules! on_lm_backend {
    ($B:ty, $args:expr, $Args:ident, |$a:ident: $L:ident| $body:expr) => {{
        let args = $args;
        #[cfg(feature = "flex")]
        let args = on_lm_backend!(@try $B, args, $Args, burn::backend::Flex, $a, $L, $body);
        #[cfg(feature = "flex")]
        let args = on_lm_backend!(@try $B, args, $Args,
            burn::backend::Autodiff<burn::backend::Flex>, $a, $L, $body);
        #[cfg(feature = "wgpu")]
        let args = on_lm_backend!(@try $B, args, $Args, burn::backend::Wgpu, $a, $L, $body);
        #[cfg(feature = "wgpu")]
        let args = on_lm_backend!(@try $B, args, $Args,
            burn::backend::Autodiff<burn::backend::Wgpu>, $a, $L, $body);
        #[cfg(feature = "cuda")]
        let args = on_lm_backend!(@try $B, args, $Args, crate::CudaF32, $a, $L, $body);
        #[cfg(feature = "cuda")]
        let args = on_lm_backend!(@try $B, args, $Args,
            burn::backend::Autodiff<crate::CudaF32>, $a, $L, $body);
        args
    }};
    (@try $B:ty, $args:expr, $Args:ident, $T:ty, $a:ident, $L:ident, $body:expr) => {
        match $crate::fused::same_type::<$Args<$B>, $Args<$T>>($args) {
            Ok($a) => {
                #[allow(dead_code)]
                type $L = $T;
                return $crate::fused::same_type($body).expect("same backend");
            }
            Err(args) => args,
        }
    };
}
pub(crate) use on_lm_backend;

/// Whether [`Kernel::Auto`] runs backend `B` on [`LmBackend`] ops (CPU kernels for `Flex`,
/// CubeCL kernels for `Wgpu` and cuda, each with or without autodiff): the list of
/// `on_lm_backend`.
pub fn fused_available<B: Backend>() -> bool {
    type Id<X> = std::marker::PhantomData<X>;
    let _ = on_lm_backend!(B, Id::<B>::default(), Id, |_found: L| true);
    false
}
