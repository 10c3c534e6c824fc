//! Every instruction-set path of the flex kernels (`smalltalk_lm::fused::isa`) on odd shapes:
//! each equals the reference ops (outputs and gradients) and gives exactly the baseline path's
//! bits. Paths this CPU lacks are skipped, and named on stderr.

use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
use smalltalk_lm::fused::attention_kernel::{self, AttentionInputs};
use smalltalk_lm::fused::head_kernel::{self, HeadShape};
use smalltalk_lm::fused::isa::Isa;
use smalltalk_lm::fused::rows::{
    rms_norm_rows_grads_on, rms_norm_rows_on, silu_mul_grads_on, silu_mul_on,
};
use smalltalk_lm::fused::AttentionShape;
use smalltalk_lm::rope::Rope;

use crate::lm_tiled::{check_attention, check_head, AttentionOps, HeadOps, ATTENTION_SHAPES};
use crate::lm_util::{dev, normal, random_tokens, to_vec, B};

/// The levels this CPU runs; the others are reported as skipped.
fn levels() -> Vec<Isa> {
    let (run, skip): (Vec<Isa>, Vec<Isa>) = Isa::ALL.into_iter().partition(|i| i.is_supported());
    for isa in &skip {
        eprintln!("skipped: the {isa} path (this CPU lacks it)");
    }
    eprintln!("checked: {run:?}");
    run
}

fn vec2(t: Tensor<B, 2>) -> (Vec<f32>, [usize; 2]) {
    let dims = t.dims();
    (to_vec(t), dims)
}

fn ids(t: Tensor<B, 1, Int>) -> Vec<u32> {
    let data = t.into_data().convert::<i64>();
    data.into_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn tensor<const D: usize>(x: Vec<f32>, dims: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(x, dims), &dev())
}

/// The raw head kernel with `isa`, over chunks of 16 rows (a short last chunk at 37 rows).
fn kernel_head(isa: Isa) -> HeadOps<B> {
    let grads = move |h: Tensor<B, 2>, e: Tensor<B, 2>, t, w: Tensor<B, 1>, denom: f64| {
        let ((h, [n, d]), (e, [v, _])) = (vec2(h), vec2(e));
        let shape = HeadShape { n, v, d };
        let scale = (1.0 / denom) as f32;
        let out = head_kernel::nll_grads(shape, &h, &e, &ids(t), &to_vec(w), scale, 16, isa);
        (
            tensor(vec![out.loss as f32], [1]),
            tensor(out.dh, [n, d]),
            tensor(out.de, [v, d]),
        )
    };
    HeadOps {
        grads: Box::new(grads),
        nll: Box::new(move |h, e, t, w, d| grads(h, e, t, w, d).0),
        logprobs: Box::new(move |h, e, t| {
            let ((h, [n, d]), (e, [v, _])) = (vec2(h), vec2(e));
            let shape = HeadShape { n, v, d };
            tensor(
                head_kernel::target_logprobs(shape, &h, &e, &ids(t), 16, isa),
                [n],
            )
        }),
    }
}

/// The raw attention kernel with `isa`.
fn kernel_attention(isa: Isa) -> AttentionOps<B> {
    AttentionOps {
        forward: Box::new(move |[q, k, v], (c, sn), s| {
            let [q, k, v, c, sn] = [q, k, v, c, sn].map(to_vec);
            let inp = inputs(s, [&q, &k, &v, &c, &sn]);
            let (out, lse) = attention_kernel::forward(inp, isa);
            (
                tensor(out, [s.rows(), s.width()]),
                tensor(lse, [lse_len(s)]),
            )
        }),
        grads: Box::new(move |[q, k, v], (c, sn), o, l, up, s| {
            let [q, k, v, c, sn, o, up] = [q, k, v, c, sn, o, up].map(to_vec);
            let inp = inputs(s, [&q, &k, &v, &c, &sn]);
            let g = attention_kernel::backward(inp, &o, &to_vec(l), &up, isa);
            let dims = [s.rows(), s.width()];
            (tensor(g.dq, dims), tensor(g.dk, dims), tensor(g.dv, dims))
        }),
    }
}

fn lse_len(s: AttentionShape) -> usize {
    s.batch * s.heads * s.seq
}

fn inputs<'a>(shape: AttentionShape, t: [&'a [f32]; 5]) -> AttentionInputs<'a> {
    let [q, k, v, cos, sin] = t;
    AttentionInputs {
        shape,
        q,
        k,
        v,
        cos,
        sin,
    }
}

#[test]
fn every_isa_path_matches_the_reference_ops() {
    for isa in levels() {
        check_head::<B>(&dev(), 50, &kernel_head(isa), 1e-5);
        check_head::<B>(&dev(), 700, &kernel_head(isa), 1e-5);
        check_attention::<B>(&dev(), &ATTENTION_SHAPES, &kernel_attention(isa), 2e-5);
        let (g, u) = (normal(5, 1001, 3.0), normal(6, 1001, 1.0));
        let mut out = vec![0f32; 1001];
        silu_mul_on(isa, &g, &u, &mut out);
        for ((&g, &u), &o) in g.iter().zip(&u).zip(&out) {
            let want = g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64;
            let err = (o as f64 - want).abs() / want.abs().max(1e-3);
            assert!(err < 1e-6, "{isa}: silu_mul({g}, {u}) = {o}, want {want}");
        }
        let (dg, du) = silu_grads(isa);
        let d = normal(9, 1001, 1.0);
        for i in 0..1001 {
            let (g, u, d) = (g[i] as f64, u[i] as f64, d[i] as f64);
            let s = 1.0 / (1.0 + (-g).exp());
            let (want_g, want_u) = (d * u * s * (1.0 + g * (1.0 - s)), d * g * s);
            let err = |got: f32, want: f64| (got as f64 - want).abs() / want.abs().max(1e-3);
            assert!(
                err(dg[i], want_g) < 1e-5,
                "{isa}: ∂gate[{i}] {} vs {want_g}",
                dg[i]
            );
            assert!(
                err(du[i], want_u) < 1e-5,
                "{isa}: ∂up[{i}] {} vs {want_u}",
                du[i]
            );
        }
        let (x, w, got) = rms_norm(isa);
        for (r, (x, y)) in x.chunks(w.len()).zip(got.chunks(w.len())).enumerate() {
            let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / w.len() as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            for ((&x, &w), &y) in x.iter().zip(&w).zip(y) {
                let want = x as f64 * inv * w as f64;
                assert!(
                    (y as f64 - want).abs() < 2e-6,
                    "{isa}: rms_norm row {r}: {y} vs {want}"
                );
            }
        }
        check_rms_norm_grads(isa, &x, &w);
    }
}

/// The RMSNorm gradients with `isa` equal the f64 formulas.
fn check_rms_norm_grads(isa: Isa, x: &[f32], w: &[f32]) {
    let (dy, dx, dw) = rms_norm_grads(isa);
    let d = w.len();
    let mut want_dw = vec![0f64; d];
    for (r, (x, dy)) in x.chunks(d).zip(dy.chunks(d)).enumerate() {
        let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        let s: f64 = (0..d)
            .map(|j| dy[j] as f64 * w[j] as f64 * x[j] as f64)
            .sum();
        for j in 0..d {
            let (x, dy, w) = (x[j] as f64, dy[j] as f64, w[j] as f64);
            let want = inv * dy * w - x * inv.powi(3) * s / d as f64;
            let got = dx[r * d + j] as f64;
            assert!(
                (got - want).abs() < 2e-5,
                "{isa}: ∂x[{r}, {j}] {got} vs {want}"
            );
            want_dw[j] += dy * x * inv;
        }
    }
    for (j, (&got, want)) in dw.iter().zip(want_dw).enumerate() {
        assert!(
            (got as f64 - want).abs() < 2e-5,
            "{isa}: ∂w[{j}] {got} vs {want}"
        );
    }
}

/// SwiGLU gradients with `isa` of 1,001 elements: `(∂gate, ∂up)`.
fn silu_grads(isa: Isa) -> (Vec<f32>, Vec<f32>) {
    let (g, u, d) = (
        normal(5, 1001, 3.0),
        normal(6, 1001, 1.0),
        normal(9, 1001, 1.0),
    );
    let (mut dg, mut du) = (vec![0f32; 1001], vec![0f32; 1001]);
    silu_mul_grads_on(isa, &g, &u, &d, &mut dg, &mut du);
    (dg, du)
}

/// RMSNorm gradients with `isa` for the rows of [`rms_norm`]: `(dy, ∂x, ∂w)`.
fn rms_norm_grads(isa: Isa) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, w, _) = rms_norm(isa);
    let dy = normal(10, x.len(), 1.0);
    let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; w.len()]);
    rms_norm_rows_grads_on(isa, &x, &w, 1e-5, &dy, &mut dx, &mut dw);
    (dy, dx, dw)
}

/// RMSNorm with `isa` of 5 rows of 37 features: `(x, gain, y)`.
fn rms_norm(isa: Isa) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, w) = (normal(7, 5 * 37, 2.0), normal(8, 37, 1.0));
    let mut y = vec![0f32; x.len()];
    rms_norm_rows_on(isa, &x, &w, 1e-5, &mut y);
    (x, w, y)
}

/// Every output of every kernel with `isa`, flattened.
fn all_outputs(isa: Isa) -> Vec<Vec<f32>> {
    let (n, v, d) = (37, 700, 8);
    let (h, e) = (normal(1, n * d, 1.0), normal(2, v * d, 0.7));
    let t = random_tokens(3, n, v);
    let mut w = vec![1f32; n];
    w[5] = 0.0;
    let shape = HeadShape { n, v, d };
    let head = head_kernel::nll_grads(shape, &h, &e, &t, &w, 0.03, 16, isa);
    let mut outs = vec![vec![head.loss as f32], head.dh, head.de];
    outs.push(head_kernel::target_logprobs(shape, &h, &e, &t, 16, isa));
    for (batch, seq, heads, head_dim) in ATTENTION_SHAPES {
        let s = AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
        };
        let [q, k, v, up] = [1, 2, 3, 4].map(|seed| normal(seed, s.rows() * s.width(), 1.0));
        let rope = Rope::<B>::new(head_dim, seq, 10_000.0, &dev());
        let (c, sn) = (to_vec(rope.cos), to_vec(rope.sin));
        let inp = inputs(s, [&q, &k, &v, &c, &sn]);
        let (out, lse) = attention_kernel::forward(inp, isa);
        let g = attention_kernel::backward(inp, &out, &lse, &up, isa);
        outs.extend([out, lse, g.dq, g.dk, g.dv]);
    }
    let (g, u) = (normal(5, 1001, 3.0), normal(6, 1001, 1.0));
    let mut silu = vec![0f32; 1001];
    silu_mul_on(isa, &g, &u, &mut silu);
    outs.push(silu);
    outs.push(rms_norm(isa).2);
    let (dg, du) = silu_grads(isa);
    let (_, dx, dw) = rms_norm_grads(isa);
    outs.extend([dg, du, dx, dw]);
    outs
}

#[test]
fn every_isa_path_gives_the_baseline_bits() {
    let bits = |outs: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        outs.iter()
            .map(|o| o.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let baseline = bits(all_outputs(Isa::Baseline));
    for isa in levels().into_iter().filter(|&i| i != Isa::Baseline) {
        for (i, (got, want)) in bits(all_outputs(isa)).iter().zip(&baseline).enumerate() {
            assert!(
                got == want,
                "{isa}: output {i} differs from the baseline path"
            );
        }
    }
}
