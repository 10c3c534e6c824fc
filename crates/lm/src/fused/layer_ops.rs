//! The layer ops of the model besides attention and the head — linear layers (one or a group
//! side by side), the SwiGLU product, RMSNorm (one gain or a gain per group of rows) — as
//! entry points that route the backends with [`LmBackend`] ops to them, and their reference
//! forms from burn tensor ops (the trait's default bodies, and what the tests compare with).

use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Tensor};

#[allow(unused_imports)] // `LmBackend` is named only by the dispatch of a compiled-in backend
use super::{float, on_lm_backend, prim, LmBackend};

/// A bias-free linear layer `x · wᵀ` (`x: [N, in]`, `w: [out, in]`): on the backends with
/// [`LmBackend`] ops their [`LmBackend::lm_linear`] (on `Flex` a gemm into an output that is not
/// zero-filled first, and under `Autodiff` one graph node whose backward step is
/// [`LmBackend::lm_linear_grads`], two such gemms), elsewhere burn's matmul.
pub fn linear<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 2>);
    let (x, w) = on_lm_backend!(B, (x, w), Args, |a: L| {
        float::<L, 2>(L::lm_linear(prim(a.0), prim(a.1)))
    });
    times_transposed(x, w)
}

/// [`LmBackend::lm_linear`] from burn's matmul.
pub fn reference_linear<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>) -> FloatTensor<B> {
    prim(times_transposed(float::<B, 2>(x), float::<B, 2>(w)))
}

/// `x · wᵀ`; a single row (decoding one token) as products and a sum over `in`, not a matrix
/// product: burn's wgpu backend picks a vector-matrix kernel for one row that gave wrong values
/// with the transposed weight (see the `wgpu_backend` decoding test).
fn times_transposed<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let ([rows, _], [out, _]) = (x.dims(), w.dims());
    if rows == 1 {
        return (w * x).sum_dim(1).reshape([1, out]);
    }
    x.matmul(w.transpose())
}

/// `groups` linear layers side by side ([`LmBackend::lm_grouped_linear`]): `x: [groups·N, in]`,
/// `w: [groups·out, in]` → `[groups·N, out]`, on the backends with [`LmBackend`] ops their
/// op (on `Flex` one gemm per group into one output), elsewhere burn's batched matmul.
pub fn grouped_linear<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, groups: usize) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 2>);
    let (x, w) = on_lm_backend!(B, (x, w), Args, |a: L| {
        float::<L, 2>(L::lm_grouped_linear(prim(a.0), prim(a.1), groups))
    });
    float(reference_grouped_linear::<B>(prim(x), prim(w), groups))
}

/// [`LmBackend::lm_grouped_linear`] from burn's batched matmul.
pub fn reference_grouped_linear<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    groups: usize,
) -> FloatTensor<B> {
    let (x, w) = (float::<B, 2>(x), float::<B, 2>(w));
    let ([rows, d_in], [outs, _]) = (x.dims(), w.dims());
    let x = x.reshape([groups, rows / groups, d_in]);
    let w = w.reshape([groups, outs / groups, d_in]);
    prim(x.matmul(w.swap_dims(1, 2)).reshape([rows, outs / groups]))
}

/// [`LmBackend::lm_linear_grads`] from burn's matmul.
pub fn reference_linear_grads<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, w, dy) = (float::<B, 2>(x), float::<B, 2>(w), float::<B, 2>(dy));
    let dx = dy.clone().matmul(w);
    let dw = dy.transpose().matmul(x);
    (prim(dx), prim(dw))
}

/// `silu(gate) ⊙ up`, the SwiGLU product of two `[N, f]` tensors: on the backends with
/// [`LmBackend`] ops their [`LmBackend::silu_mul`] (on `Flex` one pass with a vectorised `exp`,
/// [`rows::silu_mul`], and under `Autodiff` one graph node with [`LmBackend::silu_mul_grads`]),
/// elsewhere burn's `silu` and a product.
pub fn silu_mul<B: Backend>(gate: Tensor<B, 2>, up: Tensor<B, 2>) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 2>);
    let (gate, up) = on_lm_backend!(B, (gate, up), Args, |a: L| {
        float::<L, 2>(L::silu_mul(prim(a.0), prim(a.1)))
    });
    burn::tensor::activation::silu(gate) * up
}

/// [`LmBackend::silu_mul`] from burn tensor ops.
pub fn reference_silu_mul<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    let (g, u) = (float::<B, 2>(gate), float::<B, 2>(up));
    prim(burn::tensor::activation::silu(g) * u)
}

/// [`LmBackend::silu_mul_grads`] from burn tensor ops: `∂up = dout·g·σ(g)`,
/// `∂gate = dout·up·σ(g)·(1 + g·(1 − σ(g)))`.
pub fn reference_silu_mul_grads<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    dout: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (g, u, d) = (float::<B, 2>(gate), float::<B, 2>(up), float::<B, 2>(dout));
    let s = burn::tensor::activation::sigmoid(g.clone());
    let dup = d.clone() * g.clone() * s.clone();
    let dgate = d * u * s.clone() * (g * (s.neg() + 1.0) + 1.0);
    (prim(dgate), prim(dup))
}

/// RMSNorm `x / sqrt(mean(x²) + eps) · weight` of each row of `x: [N, d]` (`weight: [d]`): on
/// the backends with [`LmBackend`] ops their [`LmBackend::rms_norm`] (on `Flex` one pass per
/// row, [`rows::rms_norm_rows`], and under `Autodiff` one graph node with
/// [`LmBackend::rms_norm_grads`]), elsewhere burn's ops.
pub fn rms_norm<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 1>);
    let (x, weight) = on_lm_backend!(B, (x, weight), Args, |a: L| {
        float::<L, 2>(L::rms_norm(prim(a.0), prim(a.1), eps))
    });
    reference_rms_norm(x, weight, eps)
}

/// RMSNorm from burn tensor ops (any backend, autodiff included).
pub fn reference_rms_norm<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 2> {
    x.clone() * inv_rms(x, eps) * weight.unsqueeze_dim(0)
}

/// `1 / sqrt(mean(x²) + eps)` of each row, `[N, 1]`.
fn inv_rms<B: Backend>(x: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    x.square().mean_dim(1).add_scalar(eps).sqrt().recip()
}

/// RMSNorm of `groups` equal blocks of rows of `x: [groups·N, d]`, block `g` with row `g` of
/// `weight: [groups, d]` ([`LmBackend::rms_norm_grouped`] where the backend has it, elsewhere
/// burn's ops).
pub fn rms_norm_grouped<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    eps: f64,
    groups: usize,
) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 2>);
    let (x, weight) = on_lm_backend!(B, (x, weight), Args, |a: L| {
        float::<L, 2>(L::rms_norm_grouped(prim(a.0), prim(a.1), eps, groups))
    });
    float(reference_rms_norm_grouped::<B>(
        prim(x),
        prim(weight),
        eps,
        groups,
    ))
}

/// [`LmBackend::rms_norm_grouped`] from burn tensor ops: each group's rows times its gain row.
pub fn reference_rms_norm_grouped<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    eps: f64,
    groups: usize,
) -> FloatTensor<B> {
    let (x, w) = (float::<B, 2>(x), float::<B, 2>(w));
    let [rows, d] = x.dims();
    let normed = x.clone() * inv_rms(x, eps);
    let gains = w.reshape([groups, 1, d]);
    prim((normed.reshape([groups, rows / groups, d]) * gains).reshape([rows, d]))
}

/// [`reference_rms_norm`] on primitives (the default [`LmBackend::rms_norm`]).
pub fn reference_rms_norm_prim<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    prim(reference_rms_norm(float::<B, 2>(x), float::<B, 1>(w), eps))
}

/// [`LmBackend::rms_norm_grads`] from burn tensor ops: with `g = dy·w` and `inv` each row's
/// `1/rms`, `∂x = inv·g − x·inv³·Σ(g·x)/d` and `∂w = Σ_rows dy·x·inv`.
pub fn reference_rms_norm_grads<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    eps: f64,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, w, dy) = (float::<B, 2>(x), float::<B, 1>(w), float::<B, 2>(dy));
    let [_, d] = x.dims();
    let inv = inv_rms(x.clone(), eps);
    let g = dy.clone() * w.unsqueeze_dim(0);
    let s = (g.clone() * x.clone()).sum_dim(1);
    let inv3 = inv.clone() * inv.clone() * inv.clone();
    let dx = g * inv.clone() - x.clone() * inv3 * s.div_scalar(d as f64);
    let dw = (dy * x * inv).sum_dim(0).reshape([d]);
    (prim(dx), prim(dw))
}
