//! The fused ops against the reference ops on odd shapes: a last vocabulary chunk and a last
//! query block that are cut short, a chunk wider than the vocabulary, a single position.
//! Generic over the backend and over which implementation is checked: the tiled ops
//! (`smalltalk_lm::fused::tiled`) on flex here, and — through [`HeadOps`] / [`AttentionOps`]
//! — a backend's own [`LmBackend`] ops; the `wgpu_backend` tests run both on wgpu, where the
//! backend's ops are the CubeCL kernels.

use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};
use smalltalk_lm::fused::tiled::{
    blocked_attention_grads, blocked_attention_lse, chunked_logprobs, chunked_nll,
    chunked_nll_grads,
};
use smalltalk_lm::fused::{
    reference_attention_grads, reference_attention_lse, reference_nll, reference_nll_grads,
    AttentionShape, LmBackend,
};
use smalltalk_lm::loss::target_logprobs;
use smalltalk_lm::rope::Rope;

use crate::lm_util::{close_with_floor, normal, random_tokens, to_vec, B};

fn t2<BB: Backend>(x: &[f32], dims: [usize; 2], device: &BB::Device) -> Tensor<BB, 2> {
    Tensor::from_data(TensorData::new(x.to_vec(), dims), device)
}

type T1<BB> = Tensor<BB, 1>;
type T2<BB> = Tensor<BB, 2>;
type Targets<BB> = Tensor<BB, 1, Int>;

#[allow(clippy::type_complexity)]
/// One implementation of the LM head ops: `(h, e, targets, weights, denom)` →
/// `(loss, ∂h, ∂e)`, the loss alone, and `(h, e, targets)` → log-probs.
pub struct HeadOps<BB: Backend> {
    /// Loss and gradients.
    pub grads: Box<dyn Fn(T2<BB>, T2<BB>, Targets<BB>, T1<BB>, f64) -> (T1<BB>, T2<BB>, T2<BB>)>,
    /// The loss.
    pub nll: Box<dyn Fn(T2<BB>, T2<BB>, Targets<BB>, T1<BB>, f64) -> T1<BB>>,
    /// Log-probs of the targets.
    pub logprobs: Box<dyn Fn(T2<BB>, T2<BB>, Targets<BB>) -> T1<BB>>,
}

/// The tiled head over chunks of `chunk` rows.
pub fn tiled_head<BB: Backend>(chunk: usize) -> HeadOps<BB> {
    HeadOps {
        grads: Box::new(move |h, e, t, w, d| chunked_nll_grads(h, e, t, w, d, chunk)),
        nll: Box::new(move |h, e, t, w, d| chunked_nll(h, e, t, w, d, chunk)),
        logprobs: Box::new(move |h, e, t| chunked_logprobs(h, e, t, chunk)),
    }
}

fn prim<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> BB::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn float<BB: Backend, const D: usize>(p: BB::FloatTensorPrimitive) -> Tensor<BB, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// The backend's own [`LmBackend`] head ops.
pub fn backend_head<BB: LmBackend>() -> HeadOps<BB> {
    HeadOps {
        grads: Box::new(|h, e, t, w, d| {
            let (l, gh, ge) =
                BB::lm_head_nll_grads(prim(h), prim(e), t.into_primitive(), prim(w), d);
            (float(l), float(gh), float(ge))
        }),
        nll: Box::new(|h, e, t, w, d| {
            float(BB::lm_head_nll(
                prim(h),
                prim(e),
                t.into_primitive(),
                prim(w),
                d,
            ))
        }),
        logprobs: Box::new(|h, e, t| {
            float(BB::lm_head_logprobs(prim(h), prim(e), t.into_primitive()))
        }),
    }
}

/// The LM head ops equal the full-logits reference: loss, gradients and log-probs of 37 rows
/// over a vocabulary of `vocab` tokens.
pub fn check_head<BB: Backend>(device: &BB::Device, vocab: usize, ops: &HeadOps<BB>, rel: f32) {
    let (n, v, d) = (37, vocab, 8);
    let (h, e) = (normal(1, n * d, 1.0), normal(2, v * d, 0.7));
    let t = random_tokens(3, n, v);
    let mut w = vec![1f32; n];
    w[5] = 0.0; // an ignored target
    let targets = || Tensor::<BB, 1, Int>::from_data(TensorData::new(t.clone(), [n]), device);
    let weights = || Tensor::<BB, 1>::from_data(TensorData::new(w.clone(), [n]), device);
    let (hh, ee) = (
        || t2::<BB>(&h, [n, d], device),
        || t2::<BB>(&e, [v, d], device),
    );
    let what = |x: &str| format!("vocab {v}: {x}");
    let (loss, dh, de) = reference_nll_grads(hh(), ee(), targets(), weights(), 40.0);
    let (l, gh, ge) = (ops.grads)(hh(), ee(), targets(), weights(), 40.0);
    close_with_floor(&what("loss"), &to_vec(l), &to_vec(loss), rel, 1.0);
    close_with_floor(&what("dh"), &to_vec(gh), &to_vec(dh), rel, 1e-2);
    close_with_floor(&what("de"), &to_vec(ge), &to_vec(de), rel, 1e-2);
    let forward = (ops.nll)(hh(), ee(), targets(), weights(), 40.0);
    let want = reference_nll(hh(), ee(), targets(), weights(), 40.0);
    close_with_floor(&what("forward"), &to_vec(forward), &to_vec(want), rel, 1.0);
    let lp = target_logprobs(hh().matmul(ee().transpose()), targets());
    let got = (ops.logprobs)(hh(), ee(), targets());
    close_with_floor(&what("logprobs"), &to_vec(got), &to_vec(lp), rel, 1.0);
}

/// The tiled head over chunks of `chunks` rows (e.g. 16: a short last chunk; 64: wider than
/// the 50-token vocabulary) equals the reference.
pub fn check_chunked_head<BB: Backend>(device: &BB::Device, chunks: &[usize], rel: f32) {
    for &chunk in chunks {
        check_head::<BB>(device, 50, &tiled_head(chunk), rel);
    }
}

type Qkv<BB> = [T2<BB>; 3];
type Tables<BB> = (T2<BB>, T2<BB>);

#[allow(clippy::type_complexity)]
/// One implementation of attention: `(out, lse)` and `(∂q, ∂k, ∂v)` from
/// `(q, k, v, rope, out, lse, ∂out)`.
pub struct AttentionOps<BB: Backend> {
    /// Output and log-sum-exp.
    pub forward: Box<dyn Fn(Qkv<BB>, Tables<BB>, AttentionShape) -> (T2<BB>, T1<BB>)>,
    /// Gradients.
    pub grads: Box<
        dyn Fn(
            Qkv<BB>,
            Tables<BB>,
            T2<BB>,
            T1<BB>,
            T2<BB>,
            AttentionShape,
        ) -> (T2<BB>, T2<BB>, T2<BB>),
    >,
}

/// The tiled attention over query blocks of `block`.
pub fn tiled_attention<BB: Backend>(block: usize) -> AttentionOps<BB> {
    AttentionOps {
        forward: Box::new(move |[q, k, v], r, s| blocked_attention_lse(q, k, v, r, s, block)),
        grads: Box::new(move |qkv, r, o, l, up, s| {
            blocked_attention_grads(qkv, r, o, l, up, s, block)
        }),
    }
}

/// The backend's own [`LmBackend`] attention ops.
pub fn backend_attention<BB: LmBackend>() -> AttentionOps<BB> {
    AttentionOps {
        forward: Box::new(|[q, k, v], (c, sn), s| {
            let (o, l) = BB::causal_attention_lse(prim(q), prim(k), prim(v), prim(c), prim(sn), s);
            (float(o), float(l))
        }),
        grads: Box::new(|[q, k, v], (c, sn), o, l, up, s| {
            let (dq, dk, dv) = BB::causal_attention_grads(
                prim(q),
                prim(k),
                prim(v),
                prim(c),
                prim(sn),
                prim(o),
                prim(l),
                prim(up),
                s,
            );
            (float(dq), float(dk), float(dv))
        }),
    }
}

/// `(batch, seq, heads, head_dim)` of the attention checks: a short last block, a single
/// position, several blocks.
pub const ATTENTION_SHAPES: [(usize, usize, usize, usize); 3] =
    [(2, 13, 3, 8), (1, 1, 2, 4), (3, 40, 2, 6)];

/// Attention: output, log-sum-exp and `(∂q, ∂k, ∂v)` of `ops` equal the reference formulas
/// for each of `shapes` (`(batch, seq, heads, head_dim)`).
pub fn check_attention<BB: Backend>(
    device: &BB::Device,
    shapes: &[(usize, usize, usize, usize)],
    ops: &AttentionOps<BB>,
    rel: f32,
) {
    for &(batch, seq, heads, head_dim) in shapes {
        let s = AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
        };
        let dims = [s.rows(), s.width()];
        let [q, k, v, up] = [1, 2, 3, 4].map(|seed| normal(seed, s.rows() * s.width(), 1.0));
        let t = |x: &[f32]| t2::<BB>(x, dims, device);
        let rope = Rope::<BB>::new(head_dim, seq, 10_000.0, device);
        let tables = || (rope.cos.clone(), rope.sin.clone());
        let qkv = || [t(&q), t(&k), t(&v)];
        let (out, lse) = reference_attention_lse(t(&q), t(&k), t(&v), tables(), s);
        let want = reference_attention_grads(qkv(), tables(), out.clone(), lse.clone(), t(&up), s);
        let (got_out, got_lse) = (ops.forward)(qkv(), tables(), s);
        let what = |x: &str| format!("{s:?} {x}");
        close_with_floor(
            &what("out"),
            &to_vec(got_out.clone()),
            &to_vec(out),
            rel,
            1.0,
        );
        close_with_floor(
            &what("lse"),
            &to_vec(got_lse.clone()),
            &to_vec(lse),
            rel,
            1.0,
        );
        let got = (ops.grads)(qkv(), tables(), got_out, got_lse, t(&up), s);
        for (name, g, w) in [
            ("dq", got.0, want.0),
            ("dk", got.1, want.1),
            ("dv", got.2, want.2),
        ] {
            close_with_floor(&what(name), &to_vec(g), &to_vec(w), rel, 1.0);
        }
    }
}

/// The tiled attention over query blocks of 5 equals the reference for each of `shapes`.
pub fn check_blocked_attention<BB: Backend>(
    device: &BB::Device,
    shapes: &[(usize, usize, usize, usize)],
    rel: f32,
) {
    check_attention::<BB>(device, shapes, &tiled_attention(5), rel);
}

#[test]
fn chunked_head_matches_the_reference_on_flex() {
    check_chunked_head::<B>(&Default::default(), &[16, 64], 1e-5);
}

#[test]
fn flex_kernels_match_the_reference_through_the_backend_ops() {
    check_head::<B>(&Default::default(), 50, &backend_head(), 1e-5);
    check_head::<B>(&Default::default(), 700, &backend_head(), 1e-5);
    check_attention::<B>(
        &Default::default(),
        &ATTENTION_SHAPES,
        &backend_attention(),
        2e-5,
    );
}

#[test]
fn blocked_attention_matches_the_reference_on_flex() {
    check_blocked_attention::<B>(&Default::default(), &ATTENTION_SHAPES, 2e-5);
}

#[test]
fn flex_silu_mul_matches_burns_silu() {
    use smalltalk_lm::burn::tensor::activation::silu;
    let device = Default::default();
    let dims = [37, 29];
    let (g, u) = (normal(5, 37 * 29, 3.0), normal(6, 37 * 29, 1.0));
    let got = smalltalk_lm::fused::silu_mul(t2::<B>(&g, dims, &device), t2::<B>(&u, dims, &device));
    let want = silu(t2::<B>(&g, dims, &device)) * t2::<B>(&u, dims, &device);
    close_with_floor("silu_mul", &to_vec(got), &to_vec(want), 1e-6, 1e-3);
}

#[test]
fn flex_rms_norm_matches_the_reference_ops() {
    use smalltalk_lm::fused::{reference_rms_norm, rms_norm};
    let device = Default::default();
    let (x, w) = (normal(7, 41 * 37, 2.0), normal(8, 37, 1.0));
    let xt = || t2::<B>(&x, [41, 37], &device);
    let wt = || Tensor::<B, 1>::from_data(TensorData::new(w.clone(), [37]), &device);
    let got = to_vec(rms_norm(xt(), wt(), 1e-5));
    let want = to_vec(reference_rms_norm(xt(), wt(), 1e-5));
    assert_ne!(
        got, want,
        "flex should run the one-pass kernel, not burn's ops"
    );
    close_with_floor("rms_norm", &got, &want, 1e-5, 1e-3);
}

#[test]
fn flex_silu_mul_under_autodiff_matches_burns_gradients() {
    use smalltalk_lm::burn::tensor::activation::silu;
    type AB = smalltalk_lm::burn::backend::Autodiff<B>;
    let device = Default::default();
    let dims = [37, 29];
    let (g, u, w) = (
        normal(5, 37 * 29, 3.0),
        normal(6, 37 * 29, 1.0),
        normal(7, 37 * 29, 1.0),
    );
    let run = |fused: bool| {
        let gt = t2::<AB>(&g, dims, &device).require_grad();
        let ut = t2::<AB>(&u, dims, &device).require_grad();
        let out = if fused {
            smalltalk_lm::fused::silu_mul(gt.clone(), ut.clone())
        } else {
            silu(gt.clone()) * ut.clone()
        };
        let grads = (out.clone() * t2::<AB>(&w, dims, &device)).sum().backward();
        let (dg, du) = (gt.grad(&grads).unwrap(), ut.grad(&grads).unwrap());
        (to_vec(out.inner()), to_vec(dg), to_vec(du))
    };
    let (got, want) = (run(true), run(false));
    assert_ne!(
        got.1, want.1,
        "Autodiff<Flex> should run the fused backward step"
    );
    close_with_floor("silu_mul", &got.0, &want.0, 1e-6, 1e-3);
    close_with_floor("∂gate", &got.1, &want.1, 1e-5, 1e-3);
    close_with_floor("∂up", &got.2, &want.2, 1e-5, 1e-3);
}

#[test]
fn flex_rms_norm_under_autodiff_matches_burns_gradients() {
    use smalltalk_lm::fused::{reference_rms_norm, rms_norm};
    type AB = smalltalk_lm::burn::backend::Autodiff<B>;
    let device = Default::default();
    // 1,500 rows of 37: more than one parallel block of rows, each summing its own ∂w.
    let (n, d) = (1500, 37);
    let (x, w, up) = (
        normal(7, n * d, 2.0),
        normal(8, d, 1.0),
        normal(9, n * d, 1.0),
    );
    let run = |fused: bool| {
        let xt = t2::<AB>(&x, [n, d], &device).require_grad();
        let wt =
            Tensor::<AB, 1>::from_data(TensorData::new(w.clone(), [d]), &device).require_grad();
        let y = if fused {
            rms_norm(xt.clone(), wt.clone(), 1e-5)
        } else {
            reference_rms_norm(xt.clone(), wt.clone(), 1e-5)
        };
        let grads = (y.clone() * t2::<AB>(&up, [n, d], &device))
            .sum()
            .backward();
        let (dx, dw) = (xt.grad(&grads).unwrap(), wt.grad(&grads).unwrap());
        (to_vec(y.inner()), to_vec(dx), to_vec(dw))
    };
    let (got, want) = (run(true), run(false));
    assert_ne!(
        got.1, want.1,
        "Autodiff<Flex> should run the fused backward step"
    );
    close_with_floor("rms_norm", &got.0, &want.0, 1e-5, 1e-3);
    close_with_floor("∂x", &got.1, &want.1, 1e-4, 1e-3);
    close_with_floor("∂w", &got.2, &want.2, 1e-4, 1e-2);
}

#[test]
fn flex_linear_under_autodiff_matches_burns_gradients() {
    type AB = smalltalk_lm::burn::backend::Autodiff<B>;
    let device = Default::default();
    // 1,000 x 70 -> 130: above the parallel gemm threshold; x also as a transposed view.
    let (n, d_in, d_out) = (1000, 70, 130);
    let (x, w, up) = (
        normal(10, n * d_in, 1.0),
        normal(11, d_out * d_in, 0.5),
        normal(12, n * d_out, 1.0),
    );
    for strided in [false, true] {
        let run = |fused: bool| {
            let (leaf, xt) = if strided {
                let leaf = t2::<AB>(
                    &to_vec(t2::<B>(&x, [n, d_in], &device).transpose()),
                    [d_in, n],
                    &device,
                )
                .require_grad();
                (leaf.clone(), leaf.transpose())
            } else {
                let leaf = t2::<AB>(&x, [n, d_in], &device).require_grad();
                (leaf.clone(), leaf)
            };
            let wt = t2::<AB>(&w, [d_out, d_in], &device).require_grad();
            let out = if fused {
                smalltalk_lm::fused::linear(xt, wt.clone())
            } else {
                xt.matmul(wt.clone().transpose())
            };
            let grads = (out.clone() * t2::<AB>(&up, [n, d_out], &device))
                .sum()
                .backward();
            let dx = leaf.grad(&grads).unwrap();
            (
                to_vec(out.inner()),
                to_vec(dx),
                to_vec(wt.grad(&grads).unwrap()),
            )
        };
        let (got, want) = (run(true), run(false));
        close_with_floor("linear", &got.0, &want.0, 1e-5, 1e-3);
        close_with_floor("∂x", &got.1, &want.1, 1e-5, 1e-3);
        close_with_floor("∂w", &got.2, &want.2, 1e-5, 1e-3);
    }
}
