//! The tiled ops (what `wgpu` and `cuda` run; `smalltalk_lm::fused::tiled`) against the
//! reference ops on odd shapes: a last vocabulary chunk and a last query block that are cut
//! short, a chunk wider than the vocabulary, a single position. Generic over the backend:
//! these tests run them on flex; the `wgpu_backend` tests run the same checks on wgpu.

use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
use smalltalk_lm::fused::tiled::{
    blocked_attention_grads, blocked_attention_lse, chunked_logprobs, chunked_nll,
    chunked_nll_grads,
};
use smalltalk_lm::fused::{
    reference_attention_grads, reference_attention_lse, reference_nll, reference_nll_grads,
    AttentionShape,
};
use smalltalk_lm::loss::target_logprobs;
use smalltalk_lm::rope::Rope;

use crate::lm_util::{close_with_floor, normal, random_tokens, to_vec, B};

fn t2<BB: Backend>(x: &[f32], dims: [usize; 2], device: &BB::Device) -> Tensor<BB, 2> {
    Tensor::from_data(TensorData::new(x.to_vec(), dims), device)
}

/// The LM head: loss, gradients and log-probs over chunks of `chunks` rows (e.g. 16: a short
/// last chunk; 64: wider than the vocabulary) of a 50-token vocabulary equal the full-logits
/// reference.
pub fn check_chunked_head<BB: Backend>(device: &BB::Device, chunks: &[usize], rel: f32) {
    let (n, v, d) = (37, 50, 8);
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
    let (loss, dh, de) = reference_nll_grads(hh(), ee(), targets(), weights(), 40.0);
    let lp = target_logprobs(hh().matmul(ee().transpose()), targets());
    for &chunk in chunks {
        let what = |x: &str| format!("chunk {chunk}: {x}");
        let (l, gh, ge) = chunked_nll_grads(hh(), ee(), targets(), weights(), 40.0, chunk);
        close_with_floor(&what("loss"), &to_vec(l), &to_vec(loss.clone()), rel, 1.0);
        close_with_floor(&what("dh"), &to_vec(gh), &to_vec(dh.clone()), rel, 1e-2);
        close_with_floor(&what("de"), &to_vec(ge), &to_vec(de.clone()), rel, 1e-2);
        let forward = chunked_nll(hh(), ee(), targets(), weights(), 40.0, chunk);
        let want = reference_nll(hh(), ee(), targets(), weights(), 40.0);
        close_with_floor(&what("forward"), &to_vec(forward), &to_vec(want), rel, 1.0);
        let got = chunked_logprobs(hh(), ee(), targets(), chunk);
        close_with_floor(
            &what("logprobs"),
            &to_vec(got),
            &to_vec(lp.clone()),
            rel,
            1.0,
        );
    }
}

/// `(batch, seq, heads, head_dim)` of the attention checks: a short last block, a single
/// position, several blocks.
pub const ATTENTION_SHAPES: [(usize, usize, usize, usize); 3] =
    [(2, 13, 3, 8), (1, 1, 2, 4), (3, 40, 2, 6)];

/// Attention: output, log-sum-exp and `(∂q, ∂k, ∂v)` over query blocks of 5 equal the
/// reference formulas for each of `shapes` (`(batch, seq, heads, head_dim)`).
pub fn check_blocked_attention<BB: Backend>(
    device: &BB::Device,
    shapes: &[(usize, usize, usize, usize)],
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
        let (out, lse) = reference_attention_lse(t(&q), t(&k), t(&v), tables(), s);
        let want = reference_attention_grads(
            [t(&q), t(&k), t(&v)],
            tables(),
            out.clone(),
            lse.clone(),
            t(&up),
            s,
        );
        let (got_out, got_lse) = blocked_attention_lse(t(&q), t(&k), t(&v), tables(), s, 5);
        close_with_floor(
            &format!("{s:?} out"),
            &to_vec(got_out.clone()),
            &to_vec(out),
            rel,
            1.0,
        );
        close_with_floor(
            &format!("{s:?} lse"),
            &to_vec(got_lse.clone()),
            &to_vec(lse),
            rel,
            1.0,
        );
        let got = blocked_attention_grads(
            [t(&q), t(&k), t(&v)],
            tables(),
            got_out,
            got_lse,
            t(&up),
            s,
            5,
        );
        for (name, g, w) in [
            ("dq", got.0, want.0),
            ("dk", got.1, want.1),
            ("dv", got.2, want.2),
        ] {
            close_with_floor(&format!("{s:?} {name}"), &to_vec(g), &to_vec(w), rel, 1.0);
        }
    }
}

#[test]
fn chunked_head_matches_the_reference_on_flex() {
    check_chunked_head::<B>(&Default::default(), &[16, 64], 1e-5);
}

#[test]
fn blocked_attention_matches_the_reference_on_flex() {
    check_blocked_attention::<B>(&Default::default(), &ATTENTION_SHAPES, 2e-5);
}
