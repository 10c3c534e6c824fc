//! The LM head + cross-entropy entry points: the reference computation (full logits) and the
//! dispatch to the fused kernel of [`super::head_kernel`].

use burn::tensor::{activation::softmax, backend::Backend, Int, Tensor};

// `float`, `prim` and `LmBackend` are used by the dispatch arms of the compiled-in backends.
#[allow(unused_imports)]
use super::{float, on_lm_backend, prim, Kernel, LmBackend};
use crate::loss::{nll_sum, target_logprobs};
use crate::precision::{cast_like, upcast_half};

/// The reference loss: full logits, then [`nll_sum`] divided by `denom` (the computation the
/// trainer used before fusion, op for op).
pub fn reference_nll<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
) -> Tensor<B, 1> {
    nll_sum(upcast_half(h.matmul(e.transpose())), targets, weights).div_scalar(denom)
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
    let logits = upcast_half(h.clone().matmul(e.clone().transpose()));
    let loss = nll_sum(logits.clone(), targets.clone(), weights.clone()).div_scalar(denom);
    let onehot: Tensor<B, 2> = targets.one_hot::<2>(v).float();
    let w = weights.reshape([n, 1]).div_scalar(denom);
    let g = (softmax(logits, 1) - onehot) * w;
    let g = cast_like(g, &h); // back to the inputs' dtype (bf16 logits were upcast)
    let dh = g.clone().matmul(e);
    let de = g.transpose().matmul(h);
    (loss, dh, de)
}

/// `(h, e, targets, weights)`.
#[allow(dead_code)] // without a backend feature there is nothing to dispatch to
type NllArgs<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1, Int>, Tensor<B, 1>);
/// `(h, e, targets)`.
#[allow(dead_code)] // without a backend feature there is nothing to dispatch to
type Args<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1, Int>);

/// Training loss `Σ w·(lse − x_t) / denom` of `logits = h·eᵀ` (see [`LmBackend::lm_head_nll`]),
/// through the backend's [`LmBackend`] op where [`Kernel::Auto`] finds one.
pub fn head_nll<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
    denom: f64,
    kernel: Kernel,
) -> Tensor<B, 1> {
    if kernel == Kernel::Reference {
        return reference_nll(h, e, targets, weights, denom);
    }
    let args = on_lm_backend!(B, (h, e, targets, weights), NllArgs, |a: L| {
        let (h, e, t, w) = a;
        float::<L, 1>(L::lm_head_nll(
            prim(h),
            prim(e),
            t.into_primitive(),
            prim(w),
            denom,
        ))
    });
    let (h, e, targets, weights) = args;
    reference_nll(h, e, targets, weights, denom)
}

/// `log p(t_i | row i)` of `logits = h·eᵀ`, `[N]`, through the backend's [`LmBackend`] op
/// where [`Kernel::Auto`] finds one (no gradient flows through the fused CPU kernel).
pub fn head_logprobs<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    kernel: Kernel,
) -> Tensor<B, 1> {
    if kernel == Kernel::Reference {
        return target_logprobs(upcast_half(h.matmul(e.transpose())), targets);
    }
    let (h, e, t) = on_lm_backend!(B, (h, e, targets), Args, |a: L| {
        let (h, e, t) = a;
        float::<L, 1>(L::lm_head_logprobs(prim(h), prim(e), t.into_primitive()))
    });
    target_logprobs(upcast_half(h.matmul(e.transpose())), t)
}
