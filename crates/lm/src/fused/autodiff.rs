//! [`LmBackend`] for `Autodiff<B>`: each fused op of `B` becomes one node of the autodiff
//! graph with a hand-written backward step.
//!
//! - Head: the loss and both gradients come from `B` in the forward pass (the loss is a
//!   scalar, so the backward step only scales them by the upstream gradient).
//! - Attention: the forward pass keeps `q`, `k`, `v`, the output and the per-row log-sum-exp
//!   (all `O(N·d)`), and the backward step calls `B`'s attention gradients.
//! - Linear layers, SwiGLU product and RMSNorm: the forward pass keeps the inputs; the backward
//!   step calls `B`'s [`LmBackend::lm_linear_grads`] / [`LmBackend::silu_mul_grads`] /
//!   [`LmBackend::rms_norm_grads`].
//!
//! Scoring (`lm_head_logprobs`) keeps the default [`super::tiled`] op, differentiated by burn.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, Shape, TensorMetadata};

use super::{AttentionShape, LmBackend};

/// Register each parent's gradient (`None`: that parent needs none).
fn register<B: Backend, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    values: [FloatTensor<B>; N],
) {
    for (id, grad) in parents.into_iter().zip(values) {
        if let Some(id) = id {
            grads.register::<B>(id, grad);
        }
    }
}

/// Backward step of the fused head: parents `[h, e]`, state `(∂loss/∂h, ∂loss/∂e)`.
#[derive(Debug)]
struct HeadNllBackward;

impl<B: Backend> Backward<B, 2> for HeadNllBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<B>(&ops.node);
        let (dh, de) = ops.state;
        // The loss may be wider than the inputs (bf16 logits, f32 loss): scale in their dtype.
        let g = B::float_reshape(upstream, Shape::new([1, 1]));
        let g = match dh.dtype() {
            dtype if dtype != g.dtype() => B::float_cast(g, FloatDType::from(dtype)),
            _ => g,
        };
        let parents = ops.parents.map(|p| p.map(|n| n.id));
        register::<B, _>(
            grads,
            parents,
            [B::float_mul(dh, g.clone()), B::float_mul(de, g)],
        );
    }
}

/// What the attention backward step needs: inputs, RoPE tables, output, log-sum-exp.
type AttentionState<B> = (
    [FloatTensor<B>; 5],
    FloatTensor<B>,
    FloatTensor<B>,
    AttentionShape,
);

/// Backward step of the fused attention: parents `[q, k, v]`.
#[derive(Debug)]
struct AttentionBackward;

impl<B: LmBackend> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let ([q, k, v, cos, sin], out, lse, shape) = ops.state;
        let (dq, dk, dv) = B::causal_attention_grads(q, k, v, cos, sin, out, lse, dout, shape);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [dq, dk, dv]);
    }
}

/// Backward step of a linear layer: parents `[x, w]`, state the two inputs.
#[derive(Debug)]
struct LinearBackward;

impl<B: LmBackend> Backward<B, 2> for LinearBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let (dx, dw) = B::lm_linear_grads(x, w, dy);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [dx, dw]);
    }
}

/// Backward step of the SwiGLU product: parents `[gate, up]`, state the two inputs.
#[derive(Debug)]
struct SiluMulBackward;

impl<B: LmBackend> Backward<B, 2> for SiluMulBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let (gate, up) = ops.state;
        let (dgate, dup) = B::silu_mul_grads(gate, up, dout);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [dgate, dup]);
    }
}

/// Backward step of RMSNorm: parents `[x, w]`, state the inputs and `eps`.
#[derive(Debug)]
struct RmsNormBackward;

impl<B: LmBackend> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, eps) = ops.state;
        let (dx, dw) = B::rms_norm_grads(x, w, eps, dy);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [dx, dw]);
    }
}

impl<B: LmBackend, C: CheckpointStrategy> LmBackend for Autodiff<B, C> {
    fn lm_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = LinearBackward
            .prepare::<C>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful();
        let (x, w) = (x.primitive, w.primitive);
        match prep {
            OpsKind::Tracked(prep) => {
                let out = B::lm_linear(x.clone(), w.clone());
                prep.finish((x, w), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::lm_linear(x, w)),
        }
    }

    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let prep = RmsNormBackward
            .prepare::<C>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful();
        let (x, w) = (x.primitive, w.primitive);
        match prep {
            OpsKind::Tracked(prep) => {
                let out = B::rms_norm(x.clone(), w.clone(), eps);
                prep.finish((x, w, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x, w, eps)),
        }
    }

    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SiluMulBackward
            .prepare::<C>([gate.node.clone(), up.node.clone()])
            .compute_bound()
            .stateful();
        let (gate, up) = (gate.primitive, up.primitive);
        match prep {
            OpsKind::Tracked(prep) => {
                let out = B::silu_mul(gate.clone(), up.clone());
                prep.finish((gate, up), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::silu_mul(gate, up)),
        }
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: AttentionShape,
    ) -> FloatTensor<Self> {
        let prep = AttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful();
        let (q, k, v) = (q.primitive, k.primitive, v.primitive);
        let (cos, sin) = (cos.primitive, sin.primitive);
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, lse) = B::causal_attention_lse(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    cos.clone(),
                    sin.clone(),
                    shape,
                );
                prep.finish(([q, k, v, cos, sin], out.clone(), lse, shape), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(q, k, v, cos, sin, shape)),
        }
    }

    fn lm_head_nll(
        h: FloatTensor<Self>,
        e: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        denom: f64,
    ) -> FloatTensor<Self> {
        let prep = HeadNllBackward
            .prepare::<C>([h.node.clone(), e.node.clone()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let (loss, dh, de) = B::lm_head_nll_grads(
                    h.primitive,
                    e.primitive,
                    targets,
                    weights.primitive,
                    denom,
                );
                prep.finish((dh, de), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::lm_head_nll(
                h.primitive,
                e.primitive,
                targets,
                weights.primitive,
                denom,
            )),
        }
    }
}
