//! The flex attention kernel's passes over one head, a block of [`ROWS`] query rows at a time:
//! their score rows share every key load and their outputs every value load, with
//! `ROWS × LANES` independent accumulators, so the products run near the speed of a matrix
//! product instead of one dependent reduction per score. The backward pass is
//! FlashAttention-2's (`∂S = P∘(∂P − rowsum(∂O∘O))`), recomputing `P` from the saved
//! log-sum-exp, with the same block products.
//!
//! Query rows `i0 .. i0 + ROWS` of a head see keys `0 ..= i`; the block computes scores up to
//! the last row's key rounded up to whole lane blocks (the key and value copies are padded to a
//! multiple of [`LANES`] columns, so no loop has a scalar tail: short sequences such as the
//! 32-token routing prefixes stay vectorised) and zeroes each row's probabilities past its own.
//! Sums over the head dimension run in order `c = 0, 1, …` and sums over keys over [`LANES`]
//! lanes, the same for every instruction set.

pub use super::block_rows::unroll_rows;
use super::block_rows::{lanes, mul_add_lanes_rows, mul_add_rows, mul_add_sum_rows, ROWS};
use super::isa::LANES;
use super::rows::fast_exp;

/// Scores `p[r·stride + j] = Σ_c qt[c·ROWS + r]·kt[c·stride + j]` for `r < ROWS`,
/// `j < width` (`qt`: the block's queries transposed, `[hd, ROWS]`, missing rows zero; `kt`:
/// `[hd, stride]`; `width` a multiple of [`LANES`]).
// Indexed loops over the rows: in this form LLVM keeps every accumulator in a register.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block_scores<const UNROLL: bool>(
    qt: &[f32],
    kt: &[f32],
    stride: usize,
    width: usize,
    p: &mut [f32],
) {
    let hd = qt.len() / ROWS;
    for j in (0..width).step_by(LANES) {
        let mut acc = [[0f32; LANES]; ROWS];
        for c in 0..hd {
            let k = *lanes(kt, c * stride + j);
            let q: [f32; ROWS] = qt[c * ROWS..(c + 1) * ROWS]
                .try_into()
                .expect("a row block");
            mul_add_rows::<UNROLL>(&mut acc, &q, &k);
        }
        for (r, acc) in acc.iter().enumerate() {
            p[r * stride + j..][..LANES].copy_from_slice(acc);
        }
    }
}

/// The largest of `row[..seen]` ([`LANES`] lanes over the whole lane-padded row, masked).
// Indexed loops over fixed-size lane blocks: in this form LLVM vectorises the masks.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn masked_max(row: &[f32], seen: usize) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    for j in (0..row.len()).step_by(LANES) {
        let x = lanes(row, j);
        for l in 0..LANES {
            let x = if j + l < seen {
                x[l]
            } else {
                f32::NEG_INFINITY
            };
            m[l] = if x > m[l] { x } else { m[l] };
        }
    }
    m.iter()
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a })
}

/// Replace `row[j]` by `e^(row[j] − m)` for `j < seen` and by 0 past it; return the sum
/// ([`LANES`] lanes, fixed order).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn masked_exp(row: &mut [f32], m: f32, seen: usize) -> f32 {
    let mut sum = [0f32; LANES];
    for j in (0..row.len()).step_by(LANES) {
        let x: &mut [f32; LANES] = (&mut row[j..j + LANES]).try_into().expect("a lane block");
        for l in 0..LANES {
            let keep = j + l < seen;
            // Masked lanes go through exp at −∞ (clamped, finite), then become exact zeros.
            let e = fast_exp(if keep { x[l] - m } else { f32::NEG_INFINITY });
            x[l] = if keep { e } else { 0.0 };
            sum[l] += x[l];
        }
    }
    sum.iter().sum()
}

/// `out[r·hd + c] = inv[r]·Σ_{j<width} p[r·stride + j]·vt[c·stride + j]` for the block's rows
/// (`width` a multiple of [`LANES`]).
// Indexed loops over the rows: in this form LLVM keeps every accumulator in a register.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block_values<const UNROLL: bool>(
    p: &[f32],
    vt: &[f32],
    stride: usize,
    width: usize,
    inv: &[f32; ROWS],
    out: &mut [f32],
) {
    let hd = vt.len() / stride;
    let rows = out.len() / hd;
    for c in 0..hd {
        let v = &vt[c * stride..][..width];
        let mut acc = [[0f32; LANES]; ROWS];
        for j in (0..width).step_by(LANES) {
            // Every bounds check before the arithmetic, so the row loop unrolls into registers.
            let vb = *lanes(v, j);
            let pb: [[f32; LANES]; ROWS] = std::array::from_fn(|r| *lanes(p, r * stride + j));
            mul_add_lanes_rows::<UNROLL>(&mut acc, &pb, &vb);
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            out[r * hd + c] = acc.iter().sum::<f32>() * inv[r];
        }
    }
}

/// The block's rows `i0 .. i0 + rows` of `x` `[seq, hd]` transposed into `xt` `[hd, ROWS]`,
/// missing rows zero.
#[inline(always)]
fn load_rows_t(x: &[f32], hd: usize, i0: usize, rows: usize, xt: &mut [f32]) {
    xt.fill(0.0);
    for (r, x) in x[i0 * hd..][..rows * hd].chunks_exact(hd).enumerate() {
        for (c, &v) in x.iter().enumerate() {
            xt[c * ROWS + r] = v;
        }
    }
}

/// `dst[c·stride + j] += Σ_r xt[c·ROWS + r]·p[r·stride + j]` for `j < width` (a multiple of
/// [`LANES`]), rows added in order.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block_outer<const UNROLL: bool>(
    xt: &[f32],
    p: &[f32],
    stride: usize,
    width: usize,
    dst: &mut [f32],
) {
    let hd = xt.len() / ROWS;
    for j in (0..width).step_by(LANES) {
        let pb: [[f32; LANES]; ROWS] = std::array::from_fn(|r| *lanes(p, r * stride + j));
        for c in 0..hd {
            let x: [f32; ROWS] = xt[c * ROWS..(c + 1) * ROWS]
                .try_into()
                .expect("a row block");
            let d: &mut [f32; LANES] = (&mut dst[c * stride + j..][..LANES])
                .try_into()
                .expect("a lane block");
            mul_add_sum_rows::<UNROLL>(d, &x, &pb);
        }
    }
}

/// Causal attention of one head: `q` `[seq, hd]` (rotated, scaled), `kt`, `vt` `[hd, stride]`
/// (rotated keys, values; `stride` is `seq` rounded up to a multiple of [`LANES`], the padding
/// columns zero) into `out` `[seq, hd]` and the log-sum-exp of every score row. `UNROLL`: the
/// row helpers' form for the instruction set ([`unroll_rows`]).
#[inline(always)]
pub fn forward<const UNROLL: bool>(
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    stride: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let seq = lse.len();
    let hd = q.len() / seq.max(1);
    debug_assert!(stride.is_multiple_of(LANES) && stride >= seq);
    let mut p = vec![0f32; ROWS * stride];
    let mut qt = vec![0f32; hd * ROWS];
    for i0 in (0..seq).step_by(ROWS) {
        let rows = ROWS.min(seq - i0);
        let width = (i0 + rows).div_ceil(LANES) * LANES;
        load_rows_t(q, hd, i0, rows, &mut qt);
        block_scores::<UNROLL>(&qt, kt, stride, width, &mut p);
        let mut inv = [0f32; ROWS];
        for r in 0..rows {
            let row = &mut p[r * stride..][..width];
            let seen = i0 + r + 1;
            let m = masked_max(row, seen);
            let sum = masked_exp(row, m, seen);
            inv[r] = 1.0 / sum;
            lse[i0 + r] = m + sum.ln();
        }
        block_values::<UNROLL>(
            &p,
            vt,
            stride,
            width,
            &inv,
            &mut out[i0 * hd..][..rows * hd],
        );
    }
}

/// The forward pass's tensors of one head that its backward pass reads: `q` `[seq, hd]`
/// (rotated, scaled), `kt`, `vt` `[hd, stride]` as in [`forward`], the output `o` and its
/// upstream gradient `d_o` `[seq, hd]`, and the log-sum-exp `[seq]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadSaved<'a> {
    /// Rotated, scaled queries.
    pub q: &'a [f32],
    /// Rotated keys, transposed and lane-padded.
    pub kt: &'a [f32],
    /// Values, transposed and lane-padded.
    pub vt: &'a [f32],
    /// Row stride of `kt` and `vt`.
    pub stride: usize,
    /// Attention output.
    pub o: &'a [f32],
    /// Upstream gradient of the output.
    pub d_o: &'a [f32],
    /// Log-sum-exp of every score row.
    pub lse: &'a [f32],
}

/// Backward pass of one head: `dq` `[seq, hd]` (w.r.t. the rotated queries before the scale:
/// times `scale`), and `dkt`, `dvt` `[hd, stride]` (w.r.t. the rotated keys and the values,
/// transposed; accumulated into, so zero them first). `UNROLL` as in [`forward`].
#[inline(always)]
pub fn backward<const UNROLL: bool>(
    h: HeadSaved<'_>,
    scale: f32,
    dq: &mut [f32],
    dkt: &mut [f32],
    dvt: &mut [f32],
) {
    let (seq, stride) = (h.lse.len(), h.stride);
    let hd = h.q.len() / seq.max(1);
    let (mut p, mut ds) = (vec![0f32; ROWS * stride], vec![0f32; ROWS * stride]);
    let (mut qt, mut dot_t) = (vec![0f32; hd * ROWS], vec![0f32; hd * ROWS]);
    for i0 in (0..seq).step_by(ROWS) {
        let rows = ROWS.min(seq - i0);
        let width = (i0 + rows).div_ceil(LANES) * LANES;
        load_rows_t(h.q, hd, i0, rows, &mut qt);
        load_rows_t(h.d_o, hd, i0, rows, &mut dot_t);
        block_scores::<UNROLL>(&qt, h.kt, stride, width, &mut p);
        // ∂P rows = ∂O·Vᵀ.
        block_scores::<UNROLL>(&dot_t, h.vt, stride, width, &mut ds);
        for r in 0..ROWS {
            let (pr, dr) = (
                &mut p[r * stride..][..width],
                &mut ds[r * stride..][..width],
            );
            if r >= rows {
                pr.fill(0.0);
                dr.fill(0.0);
                continue;
            }
            let i = i0 + r;
            masked_exp(pr, h.lse[i], i + 1);
            let (doi, oi) = (&h.d_o[i * hd..][..hd], &h.o[i * hd..][..hd]);
            let rowsum: f32 = doi.iter().zip(oi).map(|(a, b)| a * b).sum();
            // ∂S = P∘(∂P − rowsum); zero past the row's keys, as P is.
            for (g, &pj) in dr.iter_mut().zip(pr.iter()) {
                *g = pj * (*g - rowsum);
            }
        }
        block_values::<UNROLL>(
            &ds,
            h.kt,
            stride,
            width,
            &[scale; ROWS],
            &mut dq[i0 * hd..][..rows * hd],
        );
        block_outer::<UNROLL>(&qt, &ds, stride, width, dkt);
        block_outer::<UNROLL>(&dot_t, &p, stride, width, dvt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms of the row helpers run on every machine here (compiled for the baseline), so
    /// the AVX-512 form is checked even where no AVX-512 path can run: same bits, both passes.
    #[test]
    fn rows_written_out_give_the_bits_of_the_row_loops() {
        for (seq, hd) in [(1usize, 2usize), (7, 4), (33, 6), (40, 12)] {
            let stride = seq.div_ceil(LANES) * LANES;
            let val =
                |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1013) as f32 / 1013.0 - 0.5;
            let q: Vec<f32> = (0..seq * hd).map(|i| val(i, 1)).collect();
            let d_o: Vec<f32> = (0..seq * hd).map(|i| val(i, 4)).collect();
            // Transposed keys and values, zero past `seq` as the kernel pads them.
            let padded = |salt| -> Vec<f32> {
                (0..hd * stride)
                    .map(|i| if i % stride < seq { val(i, salt) } else { 0.0 })
                    .collect()
            };
            let (kt, vt) = (padded(2), padded(3));
            let run = |unroll: bool| {
                let (mut out, mut lse) = (vec![0f32; seq * hd], vec![0f32; seq]);
                let (mut dq, mut dkt, mut dvt) = (
                    vec![0f32; seq * hd],
                    vec![0f32; hd * stride],
                    vec![0f32; hd * stride],
                );
                if unroll {
                    forward::<true>(&q, &kt, &vt, stride, &mut out, &mut lse);
                } else {
                    forward::<false>(&q, &kt, &vt, stride, &mut out, &mut lse);
                }
                let saved = HeadSaved {
                    q: &q,
                    kt: &kt,
                    vt: &vt,
                    stride,
                    o: &out,
                    d_o: &d_o,
                    lse: &lse,
                };
                if unroll {
                    backward::<true>(saved, 0.5, &mut dq, &mut dkt, &mut dvt);
                } else {
                    backward::<false>(saved, 0.5, &mut dq, &mut dkt, &mut dvt);
                }
                [out, lse, dq, dkt, dvt].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            };
            assert_eq!(run(true), run(false), "seq {seq}, head dim {hd}");
        }
    }
}
