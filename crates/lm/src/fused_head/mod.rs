//! Fused LM head + cross-entropy: the training loss and the scoring log-probs of
//! `logits = h · Eᵀ` without an `[N, vocab]` tensor (ENGINEERING §9.3–9.5).
//!
//! - [`LmBackend`]: a backend extension with one op per use (loss, loss + gradients, target
//!   log-probs). The default bodies are the reference burn tensor ops, so any backend can
//!   implement it with an empty `impl`. `Flex` overrides them with the chunked gemm kernel of
//!   [`kernel`]; `Autodiff<B>` wraps `B`'s loss + gradients in a custom backward step (two
//!   parents, `h` and `E`; gradient registration adds, so tied embeddings accumulate both uses).
//! - [`head_nll`] / [`head_logprobs`]: the entry points used by the model, generic over any
//!   `B: Backend` so no caller needs an extra bound. With [`HeadKernel::Auto`] they route
//!   `Flex` and `Autodiff<Flex>` (checked by `TypeId`) to the fused op and every other backend
//!   to the reference ops, which are exactly the pre-fusion computation.

mod autodiff;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub mod kernel;
pub mod rows;

#[cfg(feature = "flex")]
use std::any::Any;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{activation::softmax, backend::Backend, Int, Tensor, TensorPrimitive};

use crate::loss::{nll_sum, target_logprobs};

/// Which implementation computes the LM head + loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadKernel {
    /// The fused kernel where one exists (CPU `flex`, with or without autodiff), else the
    /// reference ops.
    #[default]
    Auto,
    /// Always the reference ops: full logits, then `x_t − logsumexp`.
    Reference,
}

/// Backend extension for the fused head. All methods take `h: [N, D]`, `e: [V, D]` (the tied
/// embedding or the untied `lm_head.weight`) and `targets: [N]` (ids `< V`).
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
        reference_nll::<Self>(float(h), float(e), int(targets), float(weights), denom)
            .into_primitive()
            .tensor()
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
        prim(target_logprobs(logits, int(targets)))
    }
}

fn float<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn int<B: Backend>(p: IntTensor<B>) -> Tensor<B, 1, Int> {
    Tensor::from_primitive(p)
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// The reference loss: full logits, then [`nll_sum`] divided by `denom` (the computation the
/// trainer used before fusion, op for op).
pub fn reference_nll<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
) -> Tensor<B, 1> {
    nll_sum(h.matmul(e.transpose()), targets, weights).div_scalar(denom)
}

/// The reference loss and its gradients `(loss, ∂/∂h, ∂/∂e)` from explicit tensor ops
/// (`G = w·(softmax − onehot)/denom`, `∂h = G·E`, `∂e = Gᵀ·h`), no autodiff needed.
pub fn reference_nll_grads<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
) -> (Tensor<B, 1>, Tensor<B, 2>, Tensor<B, 2>) {
    let [n, _] = h.dims();
    let [v, _] = e.dims();
    let logits = h.clone().matmul(e.clone().transpose());
    let loss = nll_sum(logits.clone(), targets.clone(), weights.clone()).div_scalar(denom);
    let onehot: Tensor<B, 2> = targets.one_hot::<2>(v).float();
    let w = weights.reshape([n, 1]).div_scalar(denom);
    let g = (softmax(logits, 1) - onehot) * w;
    let dh = g.clone().matmul(e);
    let de = g.transpose().matmul(h);
    (loss, dh, de)
}

/// Moves `a` into a `T` when both are the same type (a `TypeId` check), else hands it back.
#[cfg(feature = "flex")]
fn same_type<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => Ok(t.take().expect("slot is full")),
        None => Err(slot.expect("slot is full")),
    }
}

/// `(h, e, targets)`.
type Args<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1, Int>);

/// Runs `f::<L>` on the arguments when `B` is the backend `L`, else hands them back.
#[cfg(feature = "flex")]
fn on_backend<B: Backend, L: LmBackend, const D: usize>(
    args: Args<B>,
    f: impl FnOnce(Args<L>) -> Tensor<L, D>,
) -> Result<Tensor<B, D>, Args<B>> {
    let args = same_type::<Args<B>, Args<L>>(args)?;
    Ok(same_type::<Tensor<L, D>, Tensor<B, D>>(f(args)).expect("same backend"))
}

/// Whether [`HeadKernel::Auto`] has a fused kernel for backend `B` (`Flex`, `Autodiff<Flex>`).
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

/// Training loss `Σ w·(lse − x_t) / denom` of `logits = h·eᵀ` (see [`LmBackend::lm_head_nll`]),
/// through the fused kernel where [`HeadKernel::Auto`] finds one.
pub fn head_nll<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
    kernel: HeadKernel,
) -> Tensor<B, 1> {
    if kernel == HeadKernel::Reference {
        return reference_nll(h, e, targets, weights, denom);
    }
    #[cfg(feature = "flex")]
    {
        fn fused<L: LmBackend>(args: Args<L>, weights: Tensor<L, 1>, denom: f64) -> Tensor<L, 1> {
            let (h, e, t) = args;
            let p = L::lm_head_nll(prim(h), prim(e), t.into_primitive(), prim(weights), denom);
            float(p)
        }
        use burn::backend::{Autodiff, Flex};
        let w = weights.clone();
        let args = (h, e, targets);
        let args = match on_backend::<B, Flex, 1>(args, |a| {
            fused(a, same_type(w.clone()).expect("same backend"), denom)
        }) {
            Ok(loss) => return loss,
            Err(args) => args,
        };
        let args = match on_backend::<B, Autodiff<Flex>, 1>(args, |a| {
            fused(a, same_type(w).expect("same backend"), denom)
        }) {
            Ok(loss) => return loss,
            Err(args) => args,
        };
        let (h, e, targets) = args;
        reference_nll(h, e, targets, weights, denom)
    }
    #[cfg(not(feature = "flex"))]
    reference_nll(h, e, targets, weights, denom)
}

/// `log p(t_i | row i)` of `logits = h·eᵀ`, `[N]`, fused where [`HeadKernel::Auto`] finds a
/// kernel (`Flex`); no gradient flows through the fused path.
pub fn head_logprobs<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    kernel: HeadKernel,
) -> Tensor<B, 1> {
    let reference = |(h, e, t): Args<B>| target_logprobs(h.matmul(e.transpose()), t);
    if kernel == HeadKernel::Reference {
        return reference((h, e, targets));
    }
    #[cfg(feature = "flex")]
    {
        let fused = |(h, e, t): Args<burn::backend::Flex>| {
            float(burn::backend::Flex::lm_head_logprobs(
                prim(h),
                prim(e),
                t.into_primitive(),
            ))
        };
        match on_backend::<B, burn::backend::Flex, 1>((h, e, targets), fused) {
            Ok(lp) => lp,
            Err(args) => reference(args),
        }
    }
    #[cfg(not(feature = "flex"))]
    reference((h, e, targets))
}
