//! The fused causal attention kernel on f32 slices (used by `Flex`).
//!
//! Inputs are the flat projections `q`, `k`, `v: [batch·seq, heads·head_dim]` and the RoPE
//! tables `cos`, `sin: [seq, head_dim]`. Each `(batch, head)` pair is one rayon task that
//! copies its head out of the flat layout (rotating `q` and `k`, folding the softmax scale
//! into `q`), keeps `k` and `v` transposed (`[head_dim, seq]`, padded to whole lane blocks) so
//! every inner loop runs over contiguous key positions, and walks the query rows four at a
//! time with `seq`-long scratch rows (`attention_block`, both passes): no `[seq, seq]` matrix
//! is stored. The backward pass is FlashAttention-2's (`∂S = P∘(∂P − rowsum(∂O∘O))`),
//! recomputing `P` from the saved log-sum-exp.
//!
//! Results do not depend on the number of threads nor on the instruction set: every reduction
//! runs in a fixed order inside one task, and the per-head loops are compiled for every
//! [`Isa`] level from one body (see [`super::isa`]).

use rayon::prelude::*;

use super::attention::AttentionShape;
use super::attention_block::{self, HeadSaved};
use super::isa::{Isa, LANES};

/// The inputs of one call, all row-major f32.
#[derive(Debug, Clone, Copy)]
pub struct AttentionInputs<'a> {
    /// Geometry.
    pub shape: AttentionShape,
    /// Queries before RoPE, `[N, d]`.
    pub q: &'a [f32],
    /// Keys before RoPE, `[N, d]`.
    pub k: &'a [f32],
    /// Values, `[N, d]`.
    pub v: &'a [f32],
    /// `cos` table, `[seq, head_dim]`.
    pub cos: &'a [f32],
    /// `sin` table, `[seq, head_dim]`.
    pub sin: &'a [f32],
}

impl AttentionInputs<'_> {
    fn check(&self) {
        let s = self.shape;
        let n = s.rows() * s.width();
        assert!(s.head_dim.is_multiple_of(2), "RoPE needs an even head_dim");
        assert_eq!(self.q.len(), n, "q must be [batch·seq, heads·head_dim]");
        assert_eq!(self.k.len(), n, "k must be [batch·seq, heads·head_dim]");
        assert_eq!(self.v.len(), n, "v must be [batch·seq, heads·head_dim]");
        assert_eq!(
            self.cos.len(),
            s.seq * s.head_dim,
            "cos must be [seq, head_dim]"
        );
        assert_eq!(
            self.sin.len(),
            s.seq * s.head_dim,
            "sin must be [seq, head_dim]"
        );
    }
}

/// Gradients of one call, `[N, d]` each.
#[derive(Debug, Clone)]
pub struct AttentionGrads {
    /// `∂/∂q` (before RoPE).
    pub dq: Vec<f32>,
    /// `∂/∂k` (before RoPE).
    pub dk: Vec<f32>,
    /// `∂/∂v`.
    pub dv: Vec<f32>,
}

/// Causal attention output `[N, d]` and the log-sum-exp of every score row,
/// `[batch, heads, seq]` flattened, computed with the instruction set `isa`.
pub fn forward(inp: AttentionInputs<'_>, isa: Isa) -> (Vec<f32>, Vec<f32>) {
    inp.check();
    let s = inp.shape;
    let mut out = vec![0f32; s.rows() * s.width()];
    let mut lse = vec![0f32; s.batch * s.heads * s.seq];
    let unroll = attention_block::unroll_rows(isa);
    out.par_chunks_mut(s.seq * s.head_dim)
        .zip(lse.par_chunks_mut(s.seq))
        .enumerate()
        .for_each(|(task, (o, l))| forward_head(isa, &inp, unroll, task, o, l));
    (heads_to_rows(&out, s, None), lse)
}

/// Gradients for the upstream gradient `dout: [N, d]`, given the forward pass's output and
/// log-sum-exp, computed with the instruction set `isa`.
pub fn backward(
    inp: AttentionInputs<'_>,
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    isa: Isa,
) -> AttentionGrads {
    inp.check();
    let s = inp.shape;
    let n = s.rows() * s.width();
    assert_eq!(out.len(), n, "out must be [batch·seq, heads·head_dim]");
    assert_eq!(dout.len(), n, "dout must be [batch·seq, heads·head_dim]");
    assert_eq!(
        lse.len(),
        s.batch * s.heads * s.seq,
        "lse must be [batch·heads·seq]"
    );
    let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let head = s.seq * s.head_dim;
    let unroll = attention_block::unroll_rows(isa);
    dq.par_chunks_mut(head)
        .zip(dk.par_chunks_mut(head))
        .zip(dv.par_chunks_mut(head))
        .enumerate()
        .for_each(|(task, ((dq, dk), dv))| {
            let lse = &lse[task * s.seq..][..s.seq];
            backward_head(isa, &inp, unroll, out, dout, lse, task, [dq, dk, dv]);
        });
    let rope = Some((inp.cos, inp.sin));
    AttentionGrads {
        dq: heads_to_rows(&dq, s, rope),
        dk: heads_to_rows(&dk, s, rope),
        dv: heads_to_rows(&dv, s, None),
    }
}

/// Rotate one head row by RoPE (`sign` 1) or by its inverse (`sign` −1), times `mul`:
/// `y₁ = x₁·c − sign·x₂·s`, `y₂ = x₂·c + sign·x₁·s` (rotate-half convention).
#[inline(always)]
fn rotate_row(x: &[f32], cos: &[f32], sin: &[f32], sign: f32, mul: f32, y: &mut [f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        y[i] = (a * cos[i] - sign * b * sin[i]) * mul;
        y[i + half] = (b * cos[i + half] + sign * a * sin[i + half]) * mul;
    }
}

/// Copy head `h` of sequence `b` out of a flat `[N, d]` tensor into `[seq, head_dim]`,
/// rotated by RoPE when `rope` is given, times `mul`.
#[inline(always)]
fn gather_head(
    x: &[f32],
    s: AttentionShape,
    (b, h): (usize, usize),
    rope: Option<(&[f32], &[f32])>,
    mul: f32,
    dst: &mut [f32],
) {
    let (d, hd) = (s.width(), s.head_dim);
    for t in 0..s.seq {
        let src = &x[(b * s.seq + t) * d + h * hd..][..hd];
        let row = &mut dst[t * hd..][..hd];
        match rope {
            Some((cos, sin)) => {
                let (c, sn) = (&cos[t * hd..][..hd], &sin[t * hd..][..hd]);
                rotate_row(src, c, sn, 1.0, mul, row);
            }
            None => row.iter_mut().zip(src).for_each(|(y, &x)| *y = x * mul),
        }
    }
}

/// `[rows, cols]` with row stride `src_stride` → `[cols, rows]` with row stride `dst_stride`
/// (columns of `dst` past `rows` are left as they are).
#[inline(always)]
fn transpose(
    src: &[f32],
    [rows, cols]: [usize; 2],
    src_stride: usize,
    dst_stride: usize,
    dst: &mut [f32],
) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

/// Head-major `[batch, heads, seq, head_dim]` back to the flat `[N, d]` layout, undoing RoPE
/// when `rope` is given (for gradients w.r.t. rotated queries / keys).
fn heads_to_rows(src: &[f32], s: AttentionShape, rope: Option<(&[f32], &[f32])>) -> Vec<f32> {
    let (d, hd) = (s.width(), s.head_dim);
    let mut dst = vec![0f32; s.rows() * d];
    dst.par_chunks_mut(s.seq * d)
        .enumerate()
        .for_each(|(b, rows)| {
            for t in 0..s.seq {
                for h in 0..s.heads {
                    let x = &src[((b * s.heads + h) * s.seq + t) * hd..][..hd];
                    let y = &mut rows[t * d + h * hd..][..hd];
                    match rope {
                        Some((cos, sin)) => {
                            let (c, sn) = (&cos[t * hd..][..hd], &sin[t * hd..][..hd]);
                            rotate_row(x, c, sn, -1.0, 1.0, y);
                        }
                        None => y.copy_from_slice(x),
                    }
                }
            }
        });
    dst
}

/// Per-task copies of one head: scaled rotated queries `[seq, hd]`, rotated keys and values
/// transposed `[hd, stride]`, `stride` being `seq` rounded up to a multiple of [`LANES`] (the
/// padding columns zero, so the forward block kernel's key loops need no scalar tail).
struct Head {
    q: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
    stride: usize,
}

#[inline(always)]
fn load_head(inp: &AttentionInputs<'_>, task: usize) -> Head {
    let s = inp.shape;
    let bh = (task / s.heads, task % s.heads);
    let len = s.seq * s.head_dim;
    let stride = s.seq.div_ceil(LANES) * LANES;
    let rope = Some((inp.cos, inp.sin));
    let mut q = vec![0f32; len];
    gather_head(inp.q, s, bh, rope, s.scale() as f32, &mut q);
    let mut rows = vec![0f32; len];
    let (mut kt, mut vt) = (
        vec![0f32; s.head_dim * stride],
        vec![0f32; s.head_dim * stride],
    );
    gather_head(inp.k, s, bh, rope, 1.0, &mut rows);
    transpose(&rows, [s.seq, s.head_dim], s.head_dim, stride, &mut kt);
    gather_head(inp.v, s, bh, None, 1.0, &mut rows);
    transpose(&rows, [s.seq, s.head_dim], s.head_dim, stride, &mut vt);
    Head { q, kt, vt, stride }
}

crate::multiversion!(
    /// Forward pass of head `task = b·heads + h` into its `[seq, hd]` output and `[seq]` lse;
    /// `unroll`: [`attention_block::unroll_rows`].
    fn forward_head(
        inp: &AttentionInputs<'_>,
        unroll: bool,
        task: usize,
        out: &mut [f32],
        lse: &mut [f32],
    ) => forward_head_body
);

#[inline(always)]
fn forward_head_body(
    inp: &AttentionInputs<'_>,
    unroll: bool,
    task: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let h = load_head(inp, task);
    if unroll {
        attention_block::forward::<true>(&h.q, &h.kt, &h.vt, h.stride, out, lse);
    } else {
        attention_block::forward::<false>(&h.q, &h.kt, &h.vt, h.stride, out, lse);
    }
}

crate::multiversion!(
    /// Backward pass of head `task`: writes its `[seq, hd]` gradients w.r.t. the rotated (and
    /// for `q`, unscaled) queries, the rotated keys, and the values; `unroll` as in
    /// [`forward_head`].
    #[allow(clippy::too_many_arguments)]
    fn backward_head(
        inp: &AttentionInputs<'_>,
        unroll: bool,
        out: &[f32],
        dout: &[f32],
        lse: &[f32],
        task: usize,
        grads: [&mut [f32]; 3],
    ) => backward_head_body
);

#[inline(always)]
fn backward_head_body(
    inp: &AttentionInputs<'_>,
    unroll: bool,
    out: &[f32],
    dout: &[f32],
    lse: &[f32],
    task: usize,
    [dq, dk, dv]: [&mut [f32]; 3],
) {
    let s = inp.shape;
    let (seq, hd) = (s.seq, s.head_dim);
    let bh = (task / s.heads, task % s.heads);
    let head = load_head(inp, task);
    let (mut o, mut d_o) = (vec![0f32; seq * hd], vec![0f32; seq * hd]);
    gather_head(out, s, bh, None, 1.0, &mut o);
    gather_head(dout, s, bh, None, 1.0, &mut d_o);
    let stride = head.stride;
    let (mut dkt, mut dvt) = (vec![0f32; hd * stride], vec![0f32; hd * stride]);
    let saved = HeadSaved {
        q: &head.q,
        kt: &head.kt,
        vt: &head.vt,
        stride,
        o: &o,
        d_o: &d_o,
        lse,
    };
    let scale = s.scale() as f32;
    if unroll {
        attention_block::backward::<true>(saved, scale, dq, &mut dkt, &mut dvt);
    } else {
        attention_block::backward::<false>(saved, scale, dq, &mut dkt, &mut dvt);
    }
    transpose(&dkt, [hd, seq], stride, hd, dk);
    transpose(&dvt, [hd, seq], stride, hd, dv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive f64 attention of one head for the forward check: rotated q, k; full softmax.
    fn naive(inp: &AttentionInputs<'_>) -> Vec<f64> {
        let s = inp.shape;
        let (d, hd, half) = (s.width(), s.head_dim, s.head_dim / 2);
        let rot = |x: &[f32], t: usize, i: usize| -> f64 {
            let (c, sn) = (inp.cos[t * hd + i] as f64, inp.sin[t * hd + i] as f64);
            let r = if i < half {
                -(x[i + half] as f64)
            } else {
                x[i - half] as f64
            };
            x[i] as f64 * c + r * sn
        };
        let mut out = vec![0f64; s.rows() * d];
        for b in 0..s.batch {
            for h in 0..s.heads {
                let row = |x: &'_ [f32], t: usize| x[(b * s.seq + t) * d + h * hd..][..hd].to_vec();
                for i in 0..s.seq {
                    let qi = row(inp.q, i);
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = row(inp.k, j);
                            (0..hd)
                                .map(|c| rot(&qi, i, c) * rot(&kj, j, c))
                                .sum::<f64>()
                                * s.scale()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                    for c in 0..hd {
                        let o: f64 = (0..=i)
                            .map(|j| (scores[j] - m).exp() / z * row(inp.v, j)[c] as f64)
                            .sum();
                        out[(b * s.seq + i) * d + h * hd + c] = o;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn forward_matches_naive_f64() {
        let shape = AttentionShape {
            batch: 2,
            seq: 11,
            heads: 3,
            head_dim: 6,
        };
        let n = shape.rows() * shape.width();
        let val = |i: usize, salt: usize| {
            (((i * 7919 + salt * 104_729) % 1013) as f32 / 1013.0 - 0.5) * 2.0
        };
        let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            (0..n).map(|i| val(i, 1)).collect(),
            (0..n).map(|i| val(i, 2)).collect(),
            (0..n).map(|i| val(i, 3)).collect(),
        );
        let t = shape.seq * shape.head_dim;
        let cos: Vec<f32> = (0..t).map(|i| (i as f32 * 0.37).cos()).collect();
        let sin: Vec<f32> = (0..t).map(|i| (i as f32 * 0.37).sin()).collect();
        let inp = AttentionInputs {
            shape,
            q: &q,
            k: &k,
            v: &v,
            cos: &cos,
            sin: &sin,
        };
        let want = naive(&inp);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let (out, lse) = forward(inp, isa);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((*a as f64 - b).abs() < 1e-5, "{isa}: out[{i}]: {a} vs {b}");
            }
            assert!(lse.iter().all(|x| x.is_finite()));
        }
    }
}
