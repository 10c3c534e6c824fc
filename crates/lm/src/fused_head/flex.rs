//! [`LmBackend`] for burn-flex: raw f32 slices into the chunked [`kernel`](super::kernel).
//! Other float dtypes (e.g. the f64 gradient checks) take the reference ops.

use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::tensor::{DType, Shape, TensorMetadata};

use super::kernel::{self, default_chunk_rows, HeadShape};
use super::{float, int, prim, reference_nll_grads, LmBackend};

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

impl LmBackend for Flex {
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
        );
        f32_vec_tensor(lp, Shape::new([shape.n]))
    }
}
