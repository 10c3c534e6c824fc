//! The chunked LM-head + cross-entropy kernel on raw f32 slices.
//!
//! For each chunk of `C` rows of `h [N, D]` against the head matrix `E [V, D]`:
//! `buf = h_c·Eᵀ` (gemm), every row turned into `w·(softmax − onehot)` (rayon, SIMD),
//! `dh_c = buf·E`, `dE += bufᵀ·h_c`. Only one `[C, V]` buffer ever exists. Chunking is fixed
//! by `chunk_rows` and the per-chunk `dE` updates run in chunk order, so results are identical
//! run to run for a given thread count.

use rayon::prelude::*;

use super::gemm::matmul_into;

use super::isa::Isa;
use super::rows::{ce_grad_row_on, logprob_row_on};

/// Shapes of one fused-head call: `n` rows, vocabulary `v`, width `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    /// Rows of `h` (tokens).
    pub n: usize,
    /// Rows of `E` (vocabulary size).
    pub v: usize,
    /// Hidden width.
    pub d: usize,
}

/// Result of [`nll_grads`]: the weighted NLL sum (already times `scale`) and its gradients.
#[derive(Debug, Clone)]
pub struct NllGrads {
    /// `scale · Σ_i w_i · (logsumexp_i − x_i[t_i])`.
    pub loss: f64,
    /// `∂loss/∂h`, `[N, D]` row-major.
    pub dh: Vec<f32>,
    /// `∂loss/∂E`, `[V, D]` row-major.
    pub de: Vec<f32>,
}

/// Default rows per chunk: keeps the `[C, V]` scratch near 32 MiB, between 16 and 1024 rows.
pub fn default_chunk_rows(v: usize) -> usize {
    ((8 << 20) / v.max(1)).clamp(16, 1024)
}

/// `buf[rows, V] = h_c · Eᵀ` for the chunk `h_c` of `rows` rows.
fn chunk_logits(shape: HeadShape, h_c: &[f32], e: &[f32], buf: &mut [f32]) {
    let (v, d) = (shape.v, shape.d);
    let rows = h_c.len() / d.max(1);
    matmul_into(
        (rows, v, d),
        buf,
        false,
        (h_c, (1, d as isize)),
        (e, (d as isize, 1)),
    );
}

fn check(shape: HeadShape, h: &[f32], e: &[f32], targets: &[u32]) {
    let HeadShape { n, v, d } = shape;
    assert_eq!(h.len(), n * d, "h must be [N, D]");
    assert_eq!(e.len(), v * d, "E must be [V, D]");
    assert_eq!(targets.len(), n, "one target per row");
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        panic!("target id {t} is out of range for vocab {v}");
    }
}

/// Loss `scale · Σ w_i·(lse_i − x_i[t_i])` of `logits = h·Eᵀ` and its gradients w.r.t. `h` and
/// `E`, without materialising more than `chunk_rows × V` logits. Rows with `w_i = 0` (padding)
/// contribute nothing. The row arithmetic runs with the instruction set `isa`. Panics on shape
/// mismatches or a target `≥ V`.
#[allow(clippy::too_many_arguments)]
pub fn nll_grads(
    shape: HeadShape,
    h: &[f32],
    e: &[f32],
    targets: &[u32],
    weights: &[f32],
    scale: f32,
    chunk_rows: usize,
    isa: Isa,
) -> NllGrads {
    check(shape, h, e, targets);
    assert_eq!(weights.len(), shape.n, "one weight per row");
    let HeadShape { n, v, d } = shape;
    let chunk = chunk_rows.clamp(1, n.max(1));
    let mut buf = vec![0f32; chunk * v];
    let mut row_nll = vec![0f64; n];
    let mut dh = vec![0f32; n * d];
    let mut de = vec![0f32; v * d];
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        let h_c = &h[start * d..(start + rows) * d];
        let buf_c = &mut buf[..rows * v];
        chunk_logits(shape, h_c, e, buf_c);
        buf_c
            .par_chunks_mut(v)
            .zip(row_nll[start..start + rows].par_iter_mut())
            .enumerate()
            .for_each(|(i, (row, nll))| {
                let w = weights[start + i];
                *nll = w as f64 * ce_grad_row_on(isa, row, targets[start + i] as usize, w * scale);
            });
        if weights[start..start + rows].iter().any(|&w| w != 0.0) {
            let dh_c = &mut dh[start * d..(start + rows) * d];
            matmul_into(
                (rows, d, v),
                dh_c,
                false,
                (buf_c, (1, v as isize)),
                (e, (1, d as isize)),
            );
            matmul_into(
                (v, d, rows),
                &mut de,
                true,
                (buf_c, (v as isize, 1)),
                (h_c, (1, d as isize)),
            );
        }
        start += rows;
    }
    let loss = row_nll.iter().sum::<f64>() * scale as f64;
    NllGrads { loss, dh, de }
}

/// `log p(t_i | row i)` of `logits = h·Eᵀ`, one value per row, computed `chunk_rows` rows at a
/// time, the row arithmetic with the instruction set `isa`. Panics on shape mismatches or a
/// target `≥ V`.
pub fn target_logprobs(
    shape: HeadShape,
    h: &[f32],
    e: &[f32],
    targets: &[u32],
    chunk_rows: usize,
    isa: Isa,
) -> Vec<f32> {
    check(shape, h, e, targets);
    let HeadShape { n, v, d } = shape;
    let chunk = chunk_rows.clamp(1, n.max(1));
    let mut buf = vec![0f32; chunk * v];
    let mut out = vec![0f32; n];
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        let buf_c = &mut buf[..rows * v];
        chunk_logits(shape, &h[start * d..(start + rows) * d], e, buf_c);
        buf_c
            .par_chunks_mut(v)
            .zip(out[start..start + rows].par_iter_mut())
            .enumerate()
            .for_each(|(i, (row, lp))| *lp = logprob_row_on(isa, row, targets[start + i] as usize));
        start += rows;
    }
    out
}
