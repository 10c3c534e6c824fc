//! Fused ops for the hot spots of training and scoring on CPU: the LM head +
//! cross-entropy without an `[N, vocab]` tensor, and causal self-attention with RoPE without
//! `[batch, heads, seq, seq]` tensors.
//!
//! - [`LmBackend`]: a backend extension with one method per op. The default bodies are the
//!   reference burn tensor ops, so any backend implements it with an empty `impl`. `Flex`
//!   overrides them with raw f32 kernels ([`head_kernel`], [`attention_kernel`]);
//!   `Autodiff<B>` wraps `B`'s forward and backward kernels in custom backward steps.
//! - [`head_nll`] / [`head_logprobs`] / [`causal_attention`]: the entry points the model uses,
//!   generic over any `B: Backend` so no caller needs an extra bound. With [`Kernel::Auto`]
//!   they route `Flex` and `Autodiff<Flex>` (checked by `TypeId`) to the fused ops and every
//!   other backend to the reference ops, which are exactly the unfused computation.

pub mod attention;
#[cfg(feature = "flex")]
pub mod attention_kernel;
mod autodiff;
#[cfg(feature = "flex")]
mod flex;
mod head;
#[cfg(feature = "flex")]
pub mod head_kernel;
pub mod rows;

#[cfg(feature = "flex")]
use std::any::Any;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{backend::Backend, Int, Tensor, TensorPrimitive};

pub use attention::{
    causal_attention, reference_attention, reference_attention_grads, reference_attention_lse,
    AttentionShape,
};
pub use head::{head_logprobs, head_nll, reference_nll, reference_nll_grads};

/// Which implementation computes the fused ops (LM head + loss, attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// The fused kernels where they exist (CPU `flex`, with or without autodiff), else the
    /// reference ops.
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
        prim(reference_nll::<Self>(
            float(h),
            float(e),
            int(targets),
            float(weights),
            denom,
        ))
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
        let (loss, dh, de) =
            reference_nll_grads::<Self>(float(h), float(e), int(targets), float(weights), denom);
        (prim(loss), prim(dh), prim(de))
    }

    /// `log p(t_i | row i)`, `[N]`.
    fn lm_head_logprobs(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let logits = float::<Self, 2>(h).matmul(float::<Self, 2>(e).transpose());
        prim(crate::loss::target_logprobs(logits, int(targets)))
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
        let rope = (float(cos), float(sin));
        prim(reference_attention::<Self>(
            float(q),
            float(k),
            float(v),
            rope,
            shape,
        ))
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
        let rope = (float(cos), float(sin));
        let (out, lse) = reference_attention_lse::<Self>(float(q), float(k), float(v), rope, shape);
        (prim(out), prim(lse))
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
        let rope = (float(cos), float(sin));
        let (dq, dk, dv) = reference_attention_grads::<Self>(
            [float(q), float(k), float(v)],
            rope,
            float(out),
            float(lse),
            float(dout),
            shape,
        );
        (prim(dq), prim(dk), prim(dv))
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
#[cfg(feature = "flex")]
pub(crate) fn same_type<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => Ok(t.take().expect("slot is full")),
        None => Err(slot.expect("slot is full")),
    }
}

/// Whether [`Kernel::Auto`] has a fused kernel for backend `B` (`Flex`, `Autodiff<Flex>`).
pub fn fused_available<B: Backend>() -> bool {
    use std::any::TypeId;
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        let id = TypeId::of::<B>();
        id == TypeId::of::<Flex>() || id == TypeId::of::<Autodiff<Flex>>()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = TypeId::of::<B>;
        false
    }
}
