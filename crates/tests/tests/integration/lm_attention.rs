//! The fused causal attention op (RoPE, causal softmax, flat `[batch·seq, d]` layout) against
//! the reference burn ops: outputs, gradients w.r.t. q, k and v, the explicit reference
//! formulas (the fallback for non-f32 dtypes) and determinism.

use smalltalk_lm::burn::backend::Flex;
use smalltalk_lm::burn::tensor::{backend::Backend, Tensor};
use smalltalk_lm::fused::{
    causal_attention, reference_attention, reference_attention_grads, reference_attention_lse,
    AttentionShape,
};
use smalltalk_lm::rope::Rope;
use smalltalk_lm::Kernel;

use crate::lm_util::{close_with_floor, normal, tensor, to_vec, AB};

/// Inputs are O(1), so intermediates are too: compare relative to at least 1.
fn close(name: &str, got: &[f32], want: &[f32], rel: f32) {
    close_with_floor(name, got, want, rel, 1.0);
}

/// Odd sizes on purpose: sequences that are not a multiple of the 8-wide SIMD blocks, a
/// single position, and head widths other than 8.
const SHAPES: [AttentionShape; 3] = [
    AttentionShape {
        batch: 2,
        seq: 13,
        heads: 3,
        head_dim: 8,
    },
    AttentionShape {
        batch: 1,
        seq: 1,
        heads: 2,
        head_dim: 4,
    },
    AttentionShape {
        batch: 3,
        seq: 40,
        heads: 2,
        head_dim: 6,
    },
];

/// The RoPE tables `(cos, sin)`.
type RopeTables = (Vec<f32>, Vec<f32>);

/// `(q, k, v, upstream gradient)` for `shape`, and the RoPE tables.
fn inputs(shape: AttentionShape) -> ([Vec<f32>; 4], RopeTables) {
    let n = shape.rows() * shape.width();
    let rope = Rope::<Flex>::new(shape.head_dim, shape.seq, 10_000.0, &Default::default());
    let tables = (to_vec(rope.cos), to_vec(rope.sin));
    ([1, 2, 3, 4].map(|seed| normal(seed, n, 1.0)), tables)
}

fn tables<BB: Backend>(
    shape: AttentionShape,
    (cos, sin): &(Vec<f32>, Vec<f32>),
) -> (Tensor<BB, 2>, Tensor<BB, 2>) {
    let dims = [shape.seq, shape.head_dim];
    (tensor(cos, dims), tensor(sin, dims))
}

/// Output and `(∂q, ∂k, ∂v)` of `Σ out ∘ upstream` through `Autodiff<Flex>`.
fn run(shape: AttentionShape, kernel: Kernel) -> [Vec<f32>; 4] {
    let ([q, k, v, up], rope) = inputs(shape);
    let dims = [shape.rows(), shape.width()];
    let [q, k, v] = [q, k, v].map(|x| tensor::<AB>(&x, dims).require_grad());
    let out = causal_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        tables(shape, &rope),
        shape,
        kernel,
    );
    let grads = (out.clone() * tensor::<AB>(&up, dims)).sum().backward();
    let grad = |x: &Tensor<AB, 2>| to_vec(x.grad(&grads).expect("gradient"));
    [to_vec(out), grad(&q), grad(&k), grad(&v)]
}

const NAMES: [&str; 4] = ["out", "dq", "dk", "dv"];

#[test]
fn fused_attention_matches_reference_outputs_and_grads() {
    for shape in SHAPES {
        let fused = run(shape, Kernel::Auto);
        let reference = run(shape, Kernel::Reference);
        for ((name, f), r) in NAMES.iter().zip(&fused).zip(&reference) {
            close(&format!("{shape:?} {name}"), f, r, 2e-5);
        }
    }
}

#[test]
fn explicit_reference_formulas_match_burn_autodiff() {
    for shape in SHAPES {
        let ([q, k, v, up], rope) = inputs(shape);
        let dims = [shape.rows(), shape.width()];
        let t = |x: &[f32]| tensor::<Flex>(x, dims);
        let plain = reference_attention(t(&q), t(&k), t(&v), tables(shape, &rope), shape);
        let (out, lse) = reference_attention_lse(t(&q), t(&k), t(&v), tables(shape, &rope), shape);
        close(
            "lse-form output",
            &to_vec(out.clone()),
            &to_vec(plain),
            1e-5,
        );
        let (dq, dk, dv) = reference_attention_grads(
            [t(&q), t(&k), t(&v)],
            tables(shape, &rope),
            out,
            lse,
            t(&up),
            shape,
        );
        let want = run(shape, Kernel::Reference);
        for (name, got, want) in [
            ("dq", dq, &want[1]),
            ("dk", dk, &want[2]),
            ("dv", dv, &want[3]),
        ] {
            close(&format!("{shape:?} {name}"), &to_vec(got), want, 2e-5);
        }
    }
}

#[test]
fn fused_attention_is_deterministic_and_the_same_without_autodiff() {
    let shape = SHAPES[0];
    assert_eq!(
        run(shape, Kernel::Auto),
        run(shape, Kernel::Auto),
        "two runs differ"
    );
    let ([q, k, v, _], rope) = inputs(shape);
    let dims = [shape.rows(), shape.width()];
    let t = |x: &[f32]| tensor::<Flex>(x, dims);
    let inference = causal_attention(
        t(&q),
        t(&k),
        t(&v),
        tables(shape, &rope),
        shape,
        Kernel::Auto,
    );
    assert_eq!(
        to_vec(inference),
        run(shape, Kernel::Auto)[0],
        "inference != training forward"
    );
}
