//! The LM head + cross-entropy entry points: the reference computation (full logits) and the
//! dispatch to the fused kernel of [`super::head_kernel`].

use burn::tensor::{activation::softmax, backend::Backend, Int, Tensor};

use super::Kernel;
#[cfg(feature = "flex")]
use super::LmBackend;
#[cfg(feature = "flex")]
use super::{float, prim, same_type};
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

/// Training loss `Σ w·(lse − x_t) / denom` of `logits = h·eᵀ` (see [`LmBackend::lm_head_nll`]),
/// through the fused kernel where [`Kernel::Auto`] finds one.
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

/// `log p(t_i | row i)` of `logits = h·eᵀ`, `[N]`, fused where [`Kernel::Auto`] finds a
/// kernel (`Flex`); no gradient flows through the fused path.
pub fn head_logprobs<B: Backend>(
    h: Tensor<B, 2>,
    e: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    kernel: Kernel,
) -> Tensor<B, 1> {
    let reference = |(h, e, t): Args<B>| target_logprobs(upcast_half(h.matmul(e.transpose())), t);
    if kernel == Kernel::Reference {
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
