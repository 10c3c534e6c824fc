//! Next-token log-probabilities and the training loss, from flattened logits.
//!
//! Both use `log p(t) = x_t − logsumexp(x)` with the row max detached, which skips the
//! `[N, vocab]`-sized subtraction of a full `log_softmax` and gives the same
//! gradient (softmax minus one-hot).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// `log p(targets[i] | row i)` for logits `[N, vocab]` and targets `[N]`; returns `[N]`.
pub fn target_logprobs<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let max = logits.clone().detach().max_dim(1); // [N, 1]
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
    let picked = logits.gather(1, targets.reshape([n, 1]));
    (picked - lse).reshape([n])
}

/// Sum of `−log p(target)` over the rows whose weight is 1 (weights are 0 for ignored, e.g.
/// padding, targets); returns a one-element tensor.
pub fn nll_sum<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
) -> Tensor<B, 1> {
    (target_logprobs(logits, targets) * weights).sum().neg()
}

/// Token ids `[rows, seq]` as an int tensor on `device` (ids are checked by the caller).
pub fn token_tensor<B: Backend>(
    tokens: &[u32],
    rows: usize,
    seq: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    debug_assert_eq!(tokens.len(), rows * seq);
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    Tensor::from_data(TensorData::new(ids, [rows, seq]), device)
}

/// Targets `[N]` as an int tensor, with ignored ones (`pad`) replaced by id 0, plus the 0/1
/// weight of each target, in the float dtype of `like`.
pub fn targets_and_weights<B: Backend>(
    targets: &[u32],
    pad: Option<u32>,
    like: &Tensor<B, 2>,
) -> (Tensor<B, 1, Int>, Tensor<B, 1>) {
    let device = like.device();
    let n = targets.len();
    let ids: Vec<i32> = targets
        .iter()
        .map(|&t| if Some(t) == pad { 0 } else { t as i32 })
        .collect();
    let w: Vec<f32> = targets
        .iter()
        .map(|&t| if Some(t) == pad { 0.0 } else { 1.0 })
        .collect();
    (
        Tensor::from_data(TensorData::new(ids, [n]), &device),
        Tensor::from_data(TensorData::new(w, [n]), (&device, like.dtype())),
    )
}
