//! The flex tensors of the row and linear ops ([`LmBackend`](super::LmBackend) for `Flex` calls
//! these): f32 inputs made contiguous, the kernels of [`super::rows`] run in parallel over blocks
//! of rows, the products through [`super::gemm`]. Each returns `None` for other dtypes or
//! shapes, and the caller falls back to the reference ops.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape, TensorMetadata};

use super::flex::{all_f32, f32_vec_tensor, slice};
use super::gemm;
use super::isa::Isa;

/// `silu(gate) ⊙ up` of two f32 tensors of one shape with [`super::rows::silu_mul`], in
/// parallel over blocks of rows; `None` for other dtypes or shapes.
pub(crate) fn silu_mul(gate: &FlexTensor, up: &FlexTensor) -> Option<FlexTensor> {
    use rayon::prelude::*;
    if gate.dtype() != DType::F32 || up.dtype() != DType::F32 || gate.shape() != up.shape() {
        return None;
    }
    let (gate, up) = (gate.to_contiguous(), up.to_contiguous());
    let (g, u) = (slice(&gate), slice(&up));
    let mut out = vec![0f32; g.len()];
    const BLOCK: usize = 16 * 1024;
    out.par_chunks_mut(BLOCK)
        .zip(g.par_chunks(BLOCK).zip(u.par_chunks(BLOCK)))
        .for_each(|(o, (g, u))| super::rows::silu_mul_on(Isa::active(), g, u, o));
    Some(f32_vec_tensor(out, gate.shape()))
}

/// Gradients `(∂gate, ∂up)` of [`silu_mul`] for `dout` (f32 tensors of one shape) with
/// [`super::rows::silu_mul_grads`], in parallel over blocks; `None` for other dtypes or shapes.
pub(crate) fn silu_mul_grads(
    gate: &FlexTensor,
    up: &FlexTensor,
    dout: &FlexTensor,
) -> Option<(FlexTensor, FlexTensor)> {
    use rayon::prelude::*;
    if !all_f32(&[gate, up, dout]) || gate.shape() != up.shape() || gate.shape() != dout.shape() {
        return None;
    }
    let [gate, up, dout] = [gate, up, dout].map(|t| t.to_contiguous());
    let (g, u, d) = (slice(&gate), slice(&up), slice(&dout));
    let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
    const BLOCK: usize = 16 * 1024;
    dg.par_chunks_mut(BLOCK)
        .zip(du.par_chunks_mut(BLOCK))
        .zip(
            g.par_chunks(BLOCK)
                .zip(u.par_chunks(BLOCK))
                .zip(d.par_chunks(BLOCK)),
        )
        .for_each(|((dg, du), ((g, u), d))| {
            super::rows::silu_mul_grads_on(Isa::active(), g, u, d, dg, du)
        });
    Some((
        f32_vec_tensor(dg, gate.shape()),
        f32_vec_tensor(du, gate.shape()),
    ))
}

/// `x: [N, in]`, `w: [out, in]` as contiguous f32 tensors with `[N, in, out]`, or `None`.
fn linear_inputs(x: &FlexTensor, w: &FlexTensor) -> Option<(FlexTensor, FlexTensor, [usize; 3])> {
    let (xs, ws) = (x.shape(), w.shape());
    if !all_f32(&[x, w]) || xs.num_dims() != 2 || ws.num_dims() != 2 || xs[1] != ws[1] {
        return None;
    }
    Some((x.to_contiguous(), w.to_contiguous(), [xs[0], xs[1], ws[0]]))
}

/// `x · wᵀ` of f32 `x: [N, in]`, `w: [out, in]` by [`gemm::matmul_new`]; `None` for other
/// dtypes or shapes.
pub(crate) fn linear(x: &FlexTensor, w: &FlexTensor) -> Option<FlexTensor> {
    let (x, w, [n, d_in, d_out]) = linear_inputs(x, w)?;
    let rows = |t: usize| (1, t as isize);
    let cols = |t: usize| (t as isize, 1);
    let y = gemm::matmul_new(
        (n, d_out, d_in),
        (slice(&x), rows(d_in)),
        (slice(&w), cols(d_in)),
    );
    Some(f32_vec_tensor(y, Shape::new([n, d_out])))
}

/// `groups` linear layers side by side ([`super::LmBackend::lm_grouped_linear`]): f32
/// `x: [groups·N, in]`, `w: [groups·out, in]`, each group's rows times its own weight by
/// [`gemm::matmul_new_grouped`] (each group's bits those of [`linear`] alone); `None` for other
/// dtypes or shapes.
pub(crate) fn grouped_linear(x: &FlexTensor, w: &FlexTensor, groups: usize) -> Option<FlexTensor> {
    let (x, w, [rows, d_in, outs]) = linear_inputs(x, w)?;
    if groups == 0 || !rows.is_multiple_of(groups) || !outs.is_multiple_of(groups) {
        return None;
    }
    let (n, d_out) = (rows / groups, outs / groups);
    let y = gemm::matmul_new_grouped(
        groups,
        (n, d_out, d_in),
        (slice(&x), (1, d_in as isize), n * d_in),
        (slice(&w), (d_in as isize, 1), d_out * d_in),
    );
    Some(f32_vec_tensor(y, Shape::new([rows, d_out])))
}

/// Gradients `(∂x = dy·w, ∂w = dyᵀ·x)` of [`linear`] for an f32 `dy: [N, out]`, by
/// [`gemm::matmul_new`]; `None` for other dtypes or shapes.
pub(crate) fn linear_grads(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
) -> Option<(FlexTensor, FlexTensor)> {
    let (x, w, [n, d_in, d_out]) = linear_inputs(x, w)?;
    if dy.dtype() != DType::F32 || dy.shape() != Shape::new([n, d_out]) {
        return None;
    }
    let dy = dy.to_contiguous();
    let rows = |t: usize| (1, t as isize);
    let cols = |t: usize| (t as isize, 1);
    let dx = gemm::matmul_new(
        (n, d_in, d_out),
        (slice(&dy), rows(d_out)),
        (slice(&w), rows(d_in)),
    );
    let dw = gemm::matmul_new(
        (d_out, d_in, n),
        (slice(&dy), cols(d_out)),
        (slice(&x), rows(d_in)),
    );
    Some((
        f32_vec_tensor(dx, Shape::new([n, d_in])),
        f32_vec_tensor(dw, Shape::new([d_out, d_in])),
    ))
}

/// Rows per parallel block of the RMSNorm kernels (about 16k values).
fn norm_block_rows(d: usize) -> usize {
    (16 * 1024 / d.max(1)).max(1)
}

/// `x: [N, d]` and `w: [d]` as contiguous f32 tensors, or `None`.
fn norm_inputs(x: &FlexTensor, w: &FlexTensor) -> Option<(FlexTensor, FlexTensor, usize)> {
    let (dims, d) = (x.shape(), w.shape().num_elements());
    if !all_f32(&[x, w]) || dims.num_dims() != 2 || dims[1] != d {
        return None;
    }
    Some((x.to_contiguous(), w.to_contiguous(), d))
}

/// RMSNorm of an f32 `x: [N, d]` with an f32 gain `w: [d]` by [`super::rows::rms_norm_rows`],
/// in parallel over blocks of rows; `None` for other dtypes or shapes.
pub(crate) fn rms_norm(x: &FlexTensor, w: &FlexTensor, eps: f64) -> Option<FlexTensor> {
    rms_norm_grouped(x, w, eps, 1)
}

/// [`rms_norm`] of `groups` equal blocks of rows of an f32 `x: [groups·N, d]`, block `g` with
/// row `g` of the f32 gains `w: [groups, d]` (each row's bits those of [`rms_norm`] with its
/// group's gain); `None` for other dtypes or shapes.
pub(crate) fn rms_norm_grouped(
    x: &FlexTensor,
    w: &FlexTensor,
    eps: f64,
    groups: usize,
) -> Option<FlexTensor> {
    use rayon::prelude::*;
    let (dims, ws) = (x.shape(), w.shape());
    let d = *dims.last()?;
    if !all_f32(&[x, w])
        || dims.num_dims() != 2
        || groups == 0
        || ws.num_elements() != groups * d
        || !dims[0].is_multiple_of(groups)
    {
        return None;
    }
    let (x, w) = (x.to_contiguous(), w.to_contiguous());
    let (xs, ws) = (slice(&x), slice(&w));
    let mut out = vec![0f32; xs.len()];
    let group = xs.len() / groups;
    let block = d * norm_block_rows(d);
    out.par_chunks_mut(group.max(1))
        .zip(xs.par_chunks(group.max(1)))
        .zip(ws.par_chunks(d.max(1)))
        .for_each(|((out, xs), w)| {
            out.par_chunks_mut(block)
                .zip(xs.par_chunks(block))
                .for_each(|(o, x)| {
                    super::rows::rms_norm_rows_on(Isa::active(), x, w, eps as f32, o)
                });
        });
    Some(f32_vec_tensor(out, x.shape()))
}

/// Gradients `(∂x, ∂w)` of [`rms_norm`] for `dy: [N, d]` by
/// [`super::rows::rms_norm_rows_grads`]: each block of rows sums its own `∂w`, and the blocks'
/// sums are added in block order (the same for any number of threads).
pub(crate) fn rms_norm_grads(
    x: &FlexTensor,
    w: &FlexTensor,
    eps: f64,
    dy: &FlexTensor,
) -> Option<(FlexTensor, FlexTensor)> {
    use rayon::prelude::*;
    let (x, w, d) = norm_inputs(x, w)?;
    if dy.dtype() != DType::F32 || dy.shape() != x.shape() {
        return None;
    }
    let dy = dy.to_contiguous();
    let (xs, ws, dys) = (slice(&x), slice(&w), slice(&dy));
    let block = d * norm_block_rows(d);
    let mut dx = vec![0f32; xs.len()];
    let mut partial = vec![0f32; xs.len().div_ceil(block.max(1)) * d];
    dx.par_chunks_mut(block)
        .zip(partial.par_chunks_mut(d))
        .zip(xs.par_chunks(block).zip(dys.par_chunks(block)))
        .for_each(|((dx, dw), (x, dy))| {
            super::rows::rms_norm_rows_grads_on(Isa::active(), x, ws, eps as f32, dy, dx, dw)
        });
    let mut dw = vec![0f32; d];
    for p in partial.chunks(d) {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    Some((f32_vec_tensor(dx, x.shape()), f32_vec_tensor(dw, w.shape())))
}
