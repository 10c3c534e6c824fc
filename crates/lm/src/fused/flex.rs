//! [`LmBackend`] for burn-flex: raw f32 slices into the chunked [`kernel`](super::kernel).
//! Other float dtypes (e.g. the f64 gradient checks) take the reference ops.

use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::tensor::{DType, Shape, TensorMetadata};

use super::attention_kernel::{self, AttentionInputs};
use super::gemm;
use super::head_kernel::{self as kernel, default_chunk_rows, HeadShape};
use super::isa::Isa;
use super::{float, int, prim, reference_nll_grads, LmBackend};
use super::{
    reference_attention, reference_attention_grads, reference_attention_lse, AttentionShape,
};

fn f32_vec_tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// Target ids of an int tensor as `u32` (any int dtype flex uses; negative ids panic).
fn target_ids(t: &FlexTensor) -> Vec<u32> {
    let t = t.to_contiguous();
    let ids: Vec<i64> = match t.dtype() {
        DType::I64 => t.as_slice::<i64>().expect("contiguous").to_vec(),
        DType::I32 => t
            .as_slice::<i32>()
            .expect("contiguous")
            .iter()
            .map(|&x| x as i64)
            .collect(),
        other => t
            .clone()
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .unwrap_or_else(|e| panic!("targets of dtype {other:?} cannot be read as ids: {e:?}")),
    };
    ids.into_iter()
        .map(|x| u32::try_from(x).unwrap_or_else(|_| panic!("negative target id {x}")))
        .collect()
}

/// `(shape, h, e)` as contiguous f32 tensors, or `None` when a dtype is not f32.
fn f32_inputs(h: &FlexTensor, e: &FlexTensor) -> Option<(HeadShape, FlexTensor, FlexTensor)> {
    if h.dtype() != DType::F32 || e.dtype() != DType::F32 {
        return None;
    }
    let (hs, es) = (h.shape(), e.shape());
    assert!(
        hs.num_dims() == 2 && es.num_dims() == 2,
        "h and e must be 2-D"
    );
    assert_eq!(hs[1], es[1], "h and e must have the same width");
    let shape = HeadShape {
        n: hs[0],
        v: es[0],
        d: hs[1],
    };
    Some((shape, h.to_contiguous(), e.to_contiguous()))
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

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
    use rayon::prelude::*;
    let (x, w, d) = norm_inputs(x, w)?;
    let (xs, ws) = (slice(&x), slice(&w));
    let mut out = vec![0f32; xs.len()];
    let block = d * norm_block_rows(d);
    out.par_chunks_mut(block)
        .zip(xs.par_chunks(block))
        .for_each(|(o, x)| super::rows::rms_norm_rows_on(Isa::active(), x, ws, eps as f32, o));
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

impl LmBackend for Flex {
    fn lm_linear(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        linear(&x, &w).unwrap_or_else(|| super::reference_linear::<Flex>(x, w))
    }

    fn lm_linear_grads(x: FlexTensor, w: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
        linear_grads(&x, &w, &dy).unwrap_or_else(|| super::reference_linear_grads::<Flex>(x, w, dy))
    }

    fn rms_norm(x: FlexTensor, w: FlexTensor, eps: f64) -> FlexTensor {
        rms_norm(&x, &w, eps).unwrap_or_else(|| super::reference_rms_norm_prim::<Flex>(x, w, eps))
    }

    fn rms_norm_grads(
        x: FlexTensor,
        w: FlexTensor,
        eps: f64,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        rms_norm_grads(&x, &w, eps, &dy)
            .unwrap_or_else(|| super::reference_rms_norm_grads::<Flex>(x, w, eps, dy))
    }

    fn silu_mul(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        silu_mul(&gate, &up).unwrap_or_else(|| super::reference_silu_mul::<Flex>(gate, up))
    }

    fn silu_mul_grads(
        gate: FlexTensor,
        up: FlexTensor,
        dout: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        silu_mul_grads(&gate, &up, &dout)
            .unwrap_or_else(|| super::reference_silu_mul_grads::<Flex>(gate, up, dout))
    }

    fn lm_head_nll(
        h: FlexTensor,
        e: FlexTensor,
        targets: FlexTensor,
        weights: FlexTensor,
        denom: f64,
    ) -> FlexTensor {
        Self::lm_head_nll_grads(h, e, targets, weights, denom).0
    }

    fn lm_head_nll_grads(
        h: FlexTensor,
        e: FlexTensor,
        targets: FlexTensor,
        weights: FlexTensor,
        denom: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let Some((shape, h, e)) = f32_inputs(&h, &e) else {
            let (l, dh, de) = reference_nll_grads::<Flex>(
                float(h),
                float(e),
                int(targets),
                float(weights),
                denom,
            );
            return (prim(l), prim(dh), prim(de));
        };
        let ids = target_ids(&targets);
        let w = weights.to_contiguous();
        let w: Vec<f32> = match w.dtype() {
            DType::F32 => slice(&w).to_vec(),
            _ => w
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 weights"),
        };
        let out = kernel::nll_grads(
            shape,
            slice(&h),
            slice(&e),
            &ids,
            &w,
            (1.0 / denom) as f32,
            default_chunk_rows(shape.v),
            Isa::active(),
        );
        (
            f32_vec_tensor(vec![out.loss as f32], Shape::new([1])),
            f32_vec_tensor(out.dh, Shape::new([shape.n, shape.d])),
            f32_vec_tensor(out.de, Shape::new([shape.v, shape.d])),
        )
    }

    fn lm_head_logprobs(h: FlexTensor, e: FlexTensor, targets: FlexTensor) -> FlexTensor {
        let Some((shape, h, e)) = f32_inputs(&h, &e) else {
            let logits = float::<Flex, 2>(h).matmul(float::<Flex, 2>(e).transpose());
            return prim(crate::loss::target_logprobs(logits, int(targets)));
        };
        let ids = target_ids(&targets);
        let lp = kernel::target_logprobs(
            shape,
            slice(&h),
            slice(&e),
            &ids,
            default_chunk_rows(shape.v),
            Isa::active(),
        );
        f32_vec_tensor(lp, Shape::new([shape.n]))
    }

    fn causal_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        shape: AttentionShape,
    ) -> FlexTensor {
        if !all_f32(&[&q, &k, &v, &cos, &sin]) {
            let rope = (float(cos), float(sin));
            return prim(reference_attention::<Flex>(
                float(q),
                float(k),
                float(v),
                rope,
                shape,
            ));
        }
        Self::causal_attention_lse(q, k, v, cos, sin, shape).0
    }

    fn causal_attention_lse(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        shape: AttentionShape,
    ) -> (FlexTensor, FlexTensor) {
        if !all_f32(&[&q, &k, &v, &cos, &sin]) {
            let rope = (float(cos), float(sin));
            let (out, lse) =
                reference_attention_lse::<Flex>(float(q), float(k), float(v), rope, shape);
            return (prim(out), prim(lse));
        }
        let [q, k, v, cos, sin] = [q, k, v, cos, sin].map(|t| t.to_contiguous());
        let inp = attention_inputs(shape, [&q, &k, &v, &cos, &sin]);
        let (out, lse) = attention_kernel::forward(inp, Isa::active());
        let flat = Shape::new([shape.rows(), shape.width()]);
        let lse_shape = Shape::new([shape.batch * shape.heads * shape.seq]);
        (f32_vec_tensor(out, flat), f32_vec_tensor(lse, lse_shape))
    }

    fn causal_attention_grads(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        out: FlexTensor,
        lse: FlexTensor,
        dout: FlexTensor,
        shape: AttentionShape,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !all_f32(&[&q, &k, &v, &cos, &sin, &out, &lse, &dout]) {
            let (dq, dk, dv) = reference_attention_grads::<Flex>(
                [float(q), float(k), float(v)],
                (float(cos), float(sin)),
                float(out),
                float(lse),
                float(dout),
                shape,
            );
            return (prim(dq), prim(dk), prim(dv));
        }
        let [q, k, v, cos, sin, out, lse, dout] =
            [q, k, v, cos, sin, out, lse, dout].map(|t| t.to_contiguous());
        let inp = attention_inputs(shape, [&q, &k, &v, &cos, &sin]);
        let g =
            attention_kernel::backward(inp, slice(&out), slice(&lse), slice(&dout), Isa::active());
        let flat = Shape::new([shape.rows(), shape.width()]);
        (
            f32_vec_tensor(g.dq, flat.clone()),
            f32_vec_tensor(g.dk, flat.clone()),
            f32_vec_tensor(g.dv, flat),
        )
    }
}

fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// Kernel inputs from contiguous f32 tensors `[q, k, v, cos, sin]`.
fn attention_inputs<'a>(shape: AttentionShape, t: [&'a FlexTensor; 5]) -> AttentionInputs<'a> {
    AttentionInputs {
        shape,
        q: slice(t[0]),
        k: slice(t[1]),
        v: slice(t[2]),
        cos: slice(t[3]),
        sin: slice(t[4]),
    }
}
