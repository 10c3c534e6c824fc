//! [`LmBackend`] for `Autodiff<B>`: the loss and both gradients come from `B` in the forward
//! pass (the loss is a scalar, so the backward step only scales them by the upstream gradient).
//! Scoring (`lm_head_logprobs`) keeps the default reference ops: use the inner backend there.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::Shape;

use super::LmBackend;

/// Backward step of the fused head: parents `[h, e]`, state `(∂loss/∂h, ∂loss/∂e)`.
#[derive(Debug)]
struct HeadNllBackward;

impl<B: Backend> Backward<B, 2> for HeadNllBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<B>(&ops.node);
        let g = B::float_reshape(upstream, Shape::new([1, 1]));
        let (dh, de) = ops.state;
        let [parent_h, parent_e] = ops.parents;
        if let Some(node) = parent_h {
            grads.register::<B>(node.id, B::float_mul(dh, g.clone()));
        }
        if let Some(node) = parent_e {
            grads.register::<B>(node.id, B::float_mul(de, g));
        }
    }
}

impl<B: LmBackend, C: CheckpointStrategy> LmBackend for Autodiff<B, C> {
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
