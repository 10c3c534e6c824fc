//! [`LmBackend`] for burn-flex: raw f32 slices into the chunked [`kernel`](super::kernel).
//! Other float dtypes (e.g. the f64 gradient checks) take the reference ops.

use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::tensor::{DType, Shape, TensorMetadata};

use super::attention_kernel::{self, AttentionInputs};
use super::flex_ops::{
    grouped_linear, linear, linear_grads, rms_norm, rms_norm_grads, rms_norm_grouped, silu_mul,
    silu_mul_grads,
};
use super::head_kernel::{self as kernel, default_chunk_rows, HeadShape};
use super::isa::Isa;
use super::{float, int, prim, reference_nll_grads, LmBackend};
use super::{
    reference_attention, reference_attention_grads, reference_attention_lse, AttentionShape,
};

pub(super) fn f32_vec_tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
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

pub(super) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

impl LmBackend for Flex {
    fn cache_write(buffer: FlexTensor, rows: FlexTensor, start: usize) -> FlexTensor {
        let whole = |b: &FlexTensor| {
            b.is_contiguous()
                && b.layout().start_offset() == 0
                && b.storage::<f32>().len() == b.shape().num_elements()
        };
        if !all_f32(&[&buffer, &rows]) || !whole(&buffer) {
            return super::reference_cache_write::<Flex>(buffer, rows, start);
        }
        let (mut buffer, rows) = (buffer, rows.to_contiguous());
        let d = buffer.shape()[1];
        let new = slice(&rows);
        // Copies the buffer only when it is shared (copy-on-write), never in decoding.
        buffer.storage_mut::<f32>()[start * d..start * d + new.len()].copy_from_slice(new);
        buffer
    }

    fn cached_attention(
        q: FlexTensor,
        keys: FlexTensor,
        values: FlexTensor,
        len: usize,
        heads: usize,
    ) -> FlexTensor {
        if !all_f32(&[&q, &keys, &values]) {
            return super::reference_cached_attention::<Flex>(q, keys, values, len, heads);
        }
        let [n, d] = [q.shape()[0], q.shape()[1]];
        let [q, keys, values] = [&q, &keys, &values].map(|t| t.to_contiguous());
        let out = super::cached_attention::cached_attention_kernel(
            slice(&q),
            slice(&keys),
            slice(&values),
            (n, len, d, heads),
        );
        f32_vec_tensor(out, Shape::new([n, d]))
    }

    fn lm_linear(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        linear(&x, &w).unwrap_or_else(|| super::reference_linear::<Flex>(x, w))
    }

    fn lm_grouped_linear(x: FlexTensor, w: FlexTensor, groups: usize) -> FlexTensor {
        grouped_linear(&x, &w, groups)
            .unwrap_or_else(|| super::reference_grouped_linear::<Flex>(x, w, groups))
    }

    fn lm_linear_grads(x: FlexTensor, w: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
        linear_grads(&x, &w, &dy).unwrap_or_else(|| super::reference_linear_grads::<Flex>(x, w, dy))
    }

    fn rms_norm(x: FlexTensor, w: FlexTensor, eps: f64) -> FlexTensor {
        rms_norm(&x, &w, eps).unwrap_or_else(|| super::reference_rms_norm_prim::<Flex>(x, w, eps))
    }

    fn rms_norm_grouped(x: FlexTensor, w: FlexTensor, eps: f64, groups: usize) -> FlexTensor {
        rms_norm_grouped(&x, &w, eps, groups)
            .unwrap_or_else(|| super::reference_rms_norm_grouped::<Flex>(x, w, eps, groups))
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

pub(super) fn all_f32(tensors: &[&FlexTensor]) -> bool {
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
