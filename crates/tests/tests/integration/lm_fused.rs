//! The fused LM head + cross-entropy op against the reference ops: loss, gradients w.r.t. the
//! hidden states and the head matrix, tied-embedding accumulation, a whole training run, scoring.

use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
use smalltalk_lm::fused::head_kernel::{self as kernel, HeadShape};
use smalltalk_lm::fused::isa::Isa;
use smalltalk_lm::fused::{fused_available, head_logprobs, head_nll, reference_nll};
use smalltalk_lm::loss::{targets_and_weights, token_tensor};
use smalltalk_lm::{ForwardOptions, Kernel, Lm, LmConfig, TrainConfig, Trainer, VecSource};

use crate::lm_util::{
    close, dev, inputs_and_targets, normal, quick_train, random_tokens, tensor, tiny, to_vec, AB, B,
};

const N: usize = 37;
const V: usize = 50;
const D: usize = 8;
const PAD: u32 = 7;

/// Random `h [N, D]`, `E [V, D]`, targets with some pads, and the step denominator.
fn inputs() -> (Vec<f32>, Vec<f32>, Vec<u32>, f64) {
    let h = normal(1, N * D, 1.0);
    let e = normal(2, V * D, 0.7);
    let mut t = random_tokens(3, N, V);
    for i in [0, 5, 6, 20, 36] {
        t[i] = PAD;
    }
    let valid = t.iter().filter(|&&x| x != PAD).count();
    (h, e, t, valid as f64 + 3.0) // a denominator that is not the micro-batch count
}

/// Reference loss and grads through `Autodiff<Flex>` on the unfused ops.
fn reference(
    h: &[f32],
    e: &[f32],
    t: &[u32],
    denom: f64,
    kernel: Kernel,
) -> (f32, Vec<f32>, Vec<f32>) {
    let ht = tensor::<AB>(h, [N, D]).require_grad();
    let et = tensor::<AB>(e, [V, D]).require_grad();
    let (targets, weights) = targets_and_weights(t, Some(PAD), &ht);
    let loss = head_nll(ht.clone(), et.clone(), targets, weights, denom, kernel);
    let grads = loss.backward();
    let dh = to_vec(ht.grad(&grads).unwrap());
    let de = to_vec(et.grad(&grads).unwrap());
    (to_vec(loss)[0], dh, de)
}

#[test]
fn fused_kernel_matches_reference_loss_and_grads() {
    let (h, e, t, denom) = inputs();
    let (loss, dh, de) = reference(&h, &e, &t, denom, Kernel::Reference);
    let w: Vec<f32> = t
        .iter()
        .map(|&x| if x == PAD { 0.0 } else { 1.0 })
        .collect();
    let ids: Vec<u32> = t.iter().map(|&x| if x == PAD { 0 } else { x }).collect();
    let shape = HeadShape { n: N, v: V, d: D };
    let scale = (1.0 / denom) as f32;
    let run = |chunk| kernel::nll_grads(shape, &h, &e, &ids, &w, scale, chunk, Isa::active());
    for chunk in [1, 8, 16, N, 1000] {
        let out = run(chunk);
        assert!(
            ((out.loss as f32 - loss) / loss).abs() < 1e-5,
            "chunk {chunk}: {} vs {loss}",
            out.loss
        );
        close(&format!("dh/{chunk}"), &out.dh, &dh, 1e-5);
        close(&format!("dE/{chunk}"), &out.de, &de, 1e-5);
        // Pad rows get no gradient.
        assert!(out.dh[..D].iter().all(|&x| x == 0.0));
        // Deterministic: a second run is bit-identical.
        let again = run(chunk);
        assert_eq!(again.loss.to_bits(), out.loss.to_bits());
        assert!(again.dh == out.dh && again.de == out.de);
    }
}

#[test]
fn fused_autodiff_op_matches_reference_autodiff() {
    assert!(fused_available::<AB>() && fused_available::<B>());
    let (h, e, t, denom) = inputs();
    let (loss_r, dh_r, de_r) = reference(&h, &e, &t, denom, Kernel::Reference);
    let (loss_f, dh_f, de_f) = reference(&h, &e, &t, denom, Kernel::Auto);
    assert!(
        ((loss_f - loss_r) / loss_r).abs() < 1e-5,
        "{loss_f} vs {loss_r}"
    );
    assert_ne!(
        loss_f.to_bits(),
        loss_r.to_bits(),
        "Auto should not run the reference ops"
    );
    close("dh", &dh_f, &dh_r, 1e-5);
    close("dE", &de_f, &de_r, 1e-5);
    // The upstream gradient scales both: d(3·loss) = 3·d(loss).
    let ht = tensor::<AB>(&h, [N, D]).require_grad();
    let et = tensor::<AB>(&e, [V, D]).require_grad();
    let (targets, weights) = targets_and_weights(&t, Some(PAD), &ht);
    let loss = head_nll(
        ht.clone(),
        et.clone(),
        targets,
        weights,
        denom,
        Kernel::Auto,
    );
    let grads = loss.mul_scalar(3.0).backward();
    let dh3: Vec<f32> = dh_r.iter().map(|x| 3.0 * x).collect();
    close("3·dh", &to_vec(ht.grad(&grads).unwrap()), &dh3, 1e-5);
    // Without autodiff the fused loss is the same number.
    let (targets, weights) = targets_and_weights(&t, Some(PAD), &tensor::<B>(&h, [N, D]));
    let plain = head_nll(
        tensor::<B>(&h, [N, D]),
        tensor::<B>(&e, [V, D]),
        targets,
        weights,
        denom,
        Kernel::Auto,
    );
    assert!(((to_vec(plain)[0] - loss_r) / loss_r).abs() < 1e-5);
}

/// Loss of a model's head on `toks` (`[rows, row_len]`) plus the embedding gradient.
fn model_head_grad(
    model: &Lm<AB>,
    toks: &[u32],
    rows: usize,
    row_len: usize,
    kernel: Kernel,
) -> (f32, Vec<f32>, Option<Vec<f32>>) {
    let time = row_len - 1;
    let (inputs, targets) = inputs_and_targets(toks, row_len);
    let hidden = model.forward_hidden(token_tensor::<AB>(&inputs, rows, time, &dev()));
    let (t, w) = targets_and_weights(&targets, None, &hidden);
    let options = ForwardOptions {
        kernel,
        ..ForwardOptions::default()
    };
    let loss = model.head_nll(hidden, t, w, (rows * time) as f64, options);
    let grads = loss.backward();
    let emb = to_vec(model.embed_tokens.weight.grad(&grads).unwrap());
    let head = model
        .lm_head
        .as_ref()
        .map(|l| to_vec(l.weight.grad(&grads).unwrap()));
    (to_vec(loss)[0], emb, head)
}

#[test]
fn tied_and_untied_heads_accumulate_the_same_gradients() {
    for tie in [true, false] {
        let cfg = LmConfig {
            tie_embeddings: tie,
            ..tiny(V)
        };
        let model = Lm::<AB>::new(&cfg, 5, &dev()).unwrap();
        let toks = random_tokens(8, 3 * 13, V);
        let (lr, er, hr) = model_head_grad(&model, &toks, 3, 13, Kernel::Reference);
        let (lf, ef, hf) = model_head_grad(&model, &toks, 3, 13, Kernel::Auto);
        assert!(((lf - lr) / lr).abs() < 1e-5, "tie {tie}: {lf} vs {lr}");
        // Tied: the embedding grad holds both the lookup and the head contributions.
        close(&format!("embedding (tie {tie})"), &ef, &er, 1e-5);
        assert_eq!(hf.is_some(), !tie);
        if let (Some(hf), Some(hr)) = (hf, hr) {
            close("lm_head", &hf, &hr, 1e-5);
        }
    }
}

fn train(
    cfg: &LmConfig,
    kernel: Kernel,
    train: TrainConfig,
    source: &VecSource,
) -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    struct Losses(Vec<f64>);
    impl smalltalk_lm::TrainObserver for Losses {
        fn on_step(&mut self, m: &smalltalk_lm::StepMetrics) -> std::ops::ControlFlow<()> {
            self.0.push(m.loss);
            std::ops::ControlFlow::Continue(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::<AB>::new(cfg, train, dir.path(), &dev()).unwrap();
    trainer.set_kernel(kernel);
    let mut losses = Losses(vec![]);
    trainer.run(source, &mut losses).unwrap();
    let weights = trainer
        .model()
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.values))
        .collect();
    (losses.0, weights)
}

#[test]
fn training_steps_agree_between_fused_and_reference_heads() {
    for tie in [true, false] {
        let cfg = LmConfig {
            tie_embeddings: tie,
            ..tiny(V)
        };
        let row_len = 17;
        let mut toks = random_tokens(21, 8 * row_len, V);
        toks[20] = 3; // a pad target inside a row
        let source = VecSource::new(toks, row_len, Some(3));
        let config = TrainConfig {
            micro_batch_size: 2,
            ..quick_train(3, 4)
        };
        let (lr, wr) = train(&cfg, Kernel::Reference, config.clone(), &source);
        let (lf, wf) = train(&cfg, Kernel::Auto, config, &source);
        assert_eq!(lr.len(), 3);
        for (a, b) in lf.iter().zip(&lr) {
            assert!(((a - b) / b).abs() < 1e-5, "tie {tie}: loss {a} vs {b}");
        }
        for ((name, a), (_, b)) in wf.iter().zip(&wr) {
            close(&format!("{name} (tie {tie})"), a, b, 1e-4);
        }
    }
}

#[test]
fn fused_scoring_matches_reference_logprobs() {
    let (h, e, t, _) = inputs();
    let ids: Vec<i32> = t.iter().map(|&x| x as i32).collect();
    let targets = || Tensor::<B, 1, Int>::from_data(TensorData::new(ids.clone(), [N]), &dev());
    let fused = to_vec(head_logprobs(
        tensor::<B>(&h, [N, D]),
        tensor::<B>(&e, [V, D]),
        targets(),
        Kernel::Auto,
    ));
    let refr = to_vec(head_logprobs(
        tensor::<B>(&h, [N, D]),
        tensor::<B>(&e, [V, D]),
        targets(),
        Kernel::Reference,
    ));
    close("logprobs", &fused, &refr, 1e-5);
    let chunked =
        kernel::target_logprobs(HeadShape { n: N, v: V, d: D }, &h, &e, &t, 5, Isa::active());
    close("chunked logprobs", &chunked, &refr, 1e-5);
    // And the reference loss is minus their weighted mean.
    let w: Vec<f32> = vec![1.0; N];
    let loss = reference_nll(
        tensor::<B>(&h, [N, D]),
        tensor::<B>(&e, [V, D]),
        targets(),
        Tensor::from_data(TensorData::new(w, [N]), &dev()),
        N as f64,
    );
    let mean = -refr.iter().sum::<f32>() / N as f32;
    assert!((to_vec(loss)[0] - mean).abs() < 1e-5);
}
