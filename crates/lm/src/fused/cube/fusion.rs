//! [`LmBackend`] for `Fusion<B>` (burn's wgpu and cuda backends): each fused op of `B` becomes
//! one custom operation in the fusion stream, which runs `B`'s kernels when the stream is
//! executed (the pattern of burn-vision's ops on fusion backends). Inputs that are not f32
//! take the [`tiled`] ops, which fusion handles as ordinary tensor ops.

use std::fmt;
use std::sync::Arc;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::all_f32;
use crate::fused::{tiled, AttentionShape, LmBackend};

/// `B`'s op on the float inputs and, for the head ops, the targets.
type Run<B> =
    Arc<dyn Fn(Vec<FloatTensor<B>>, Option<IntTensor<B>>) -> Vec<FloatTensor<B>> + Send + Sync>;

/// One fused op in the stream: its description (inputs: the floats, then the targets if any).
struct LmOp<B: FusionBackend> {
    desc: CustomOpIr,
    floats: usize,
    run: Run<B>,
}

impl<B: FusionBackend> fmt::Debug for LmOp<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LmOp({})", self.desc.id)
    }
}

impl<B: FusionBackend> Operation<B::FusionRuntime> for LmOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let (floats, int) = self.desc.inputs.split_at(self.floats);
        let floats = floats
            .iter()
            .map(|t| handles.get_float_tensor::<B>(t))
            .collect();
        let int = int.first().map(|t| handles.get_int_tensor::<B>(t));
        for (ir, t) in self.desc.outputs.iter().zip((self.run)(floats, int)) {
            handles.register_float_tensor::<B>(&ir.id, t);
        }
    }
}

type Tensor<B> = FusionTensor<<B as FusionBackend>::FusionRuntime>;

/// Registers `run` as the custom op `name` with f32 outputs of `shapes`.
fn register<B: FusionBackend>(
    name: &'static str,
    floats: Vec<Tensor<B>>,
    int: Option<Tensor<B>>,
    shapes: Vec<Shape>,
    run: Run<B>,
) -> Vec<Tensor<B>> {
    let client = floats[0].client.clone();
    let streams = OperationStreams::with_inputs(floats.iter().chain(int.iter()));
    let outputs: Vec<TensorIr> = shapes
        .into_iter()
        .map(|shape| TensorIr::uninit(client.create_empty_handle(), shape, DType::F32))
        .collect();
    let count = floats.len();
    let inputs: Vec<TensorIr> = floats.into_iter().chain(int).map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = LmOp::<B> {
        desc: desc.clone(),
        floats: count,
        run,
    };
    client.register(streams, OperationIr::Custom(desc), op)
}

/// `N` outputs of an op, in order.
fn outs<T, const N: usize>(v: Vec<T>) -> [T; N] {
    v.try_into().ok().expect("the op's declared outputs")
}

impl<B: FusionBackend + LmBackend> LmBackend for Fusion<B> {
    fn lm_head_nll(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&h, &e, &weights]) {
            return tiled::ops::lm_head_nll::<Self>(h, e, targets, weights, denom);
        }
        let run: Run<B> = Arc::new(move |f, t| {
            let [h, e, w] = outs(f);
            vec![B::lm_head_nll(h, e, t.expect("targets"), w, denom)]
        });
        let shapes = vec![Shape::new([1])];
        let [loss] = outs(register::<B>(
            "lm_head_nll",
            vec![h, e, weights],
            Some(targets),
            shapes,
            run,
        ));
        loss
    }

    fn lm_head_nll_grads(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&h, &e, &weights]) {
            return tiled::ops::lm_head_nll_grads::<Self>(h, e, targets, weights, denom);
        }
        let run: Run<B> = Arc::new(move |f, t| {
            let [h, e, w] = outs(f);
            let (loss, dh, de) = B::lm_head_nll_grads(h, e, t.expect("targets"), w, denom);
            vec![loss, dh, de]
        });
        let shapes = vec![Shape::new([1]), h.shape(), e.shape()];
        let floats = vec![h, e, weights];
        let [loss, dh, de] = outs(register::<B>(
            "lm_head_nll_grads",
            floats,
            Some(targets),
            shapes,
            run,
        ));
        (loss, dh, de)
    }

    fn lm_head_logprobs(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&h, &e]) {
            return tiled::ops::lm_head_logprobs::<Self>(h, e, targets);
        }
        let run: Run<B> = Arc::new(move |f, t| {
            let [h, e] = outs(f);
            vec![B::lm_head_logprobs(h, e, t.expect("targets"))]
        });
        let shapes = vec![Shape::new([h.shape()[0]])];
        let [lp] = outs(register::<B>(
            "lm_head_logprobs",
            vec![h, e],
            Some(targets),
            shapes,
            run,
        ));
        lp
    }

    fn causal_attention_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&q, &k, &v, &cos, &sin]) {
            return tiled::ops::causal_attention_lse::<Self>([q, k, v], [cos, sin], shape);
        }
        let run: Run<B> = Arc::new(move |f, _| {
            let [q, k, v, cos, sin] = outs(f);
            let (out, lse) = B::causal_attention_lse(q, k, v, cos, sin, shape);
            vec![out, lse]
        });
        let rows = shape.batch * shape.heads * shape.seq;
        let shapes = vec![q.shape(), Shape::new([rows])];
        let floats = vec![q, k, v, cos, sin];
        let [out, lse] = outs(register::<B>(
            "causal_attention_lse",
            floats,
            None,
            shapes,
            run,
        ));
        (out, lse)
    }

    fn causal_attention_grads(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&q, &k, &v, &cos, &sin, &out, &lse, &dout]) {
            let (qkv, rope) = ([q, k, v], [cos, sin]);
            return tiled::ops::causal_attention_grads::<Self>(qkv, rope, [out, lse, dout], shape);
        }
        let run: Run<B> = Arc::new(move |f, _| {
            let [q, k, v, cos, sin, out, lse, dout] = outs(f);
            let (dq, dk, dv) = B::causal_attention_grads(q, k, v, cos, sin, out, lse, dout, shape);
            vec![dq, dk, dv]
        });
        let shapes = vec![q.shape(), k.shape(), v.shape()];
        let floats = vec![q, k, v, cos, sin, out, lse, dout];
        let [dq, dk, dv] = outs(register::<B>(
            "causal_attention_grads",
            floats,
            None,
            shapes,
            run,
        ));
        (dq, dk, dv)
    }
}
