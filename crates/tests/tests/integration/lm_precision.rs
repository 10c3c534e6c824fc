//! Mixed precision (`Precision::Bf16`): bf16 compute over f32 master weights, on CPU flex.

use std::ops::ControlFlow;

use smalltalk_lm::burn::tensor::DType;
use smalltalk_lm::loss::token_tensor;
use smalltalk_lm::train::LrSchedule;
use smalltalk_lm::{
    ForwardOptions, Lm, Precision, StepMetrics, TrainConfig, TrainObserver, Trainer, VecSource,
};

use crate::lm_util::{dev, quick_train, random_tokens, tiny, to_vec, AB, B};

fn hidden(model: &Lm<B>, tokens: &[u32], precision: Precision) -> (DType, Vec<f32>) {
    let options = ForwardOptions {
        precision,
        ..ForwardOptions::default()
    };
    let h = model.forward_hidden_with(token_tensor::<B>(tokens, 3, 16, &dev()), options);
    (h.dtype(), to_vec(h))
}

#[test]
fn bf16_forward_stays_close_to_f32_and_returns_f32() {
    let model = tiny(64).init::<B>(5, &dev());
    let tokens = random_tokens(4, 3 * 16, 64);
    let (full_dtype, full) = hidden(&model, &tokens, Precision::Full);
    let (bf16_dtype, half) = hidden(&model, &tokens, Precision::Bf16);
    assert_eq!((full_dtype, bf16_dtype), (DType::F32, DType::F32));
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let diff: Vec<f32> = full.iter().zip(&half).map(|(a, b)| a - b).collect();
    let rel = norm(&diff) / norm(&full);
    // bf16 keeps 8 significant bits (≈ 0.4 % per rounding): visibly different, still close.
    assert!(
        rel > 1e-5,
        "bf16 compute left no trace (relative difference {rel})"
    );
    assert!(rel < 0.03, "bf16 forward is {rel} away from f32");
}

#[derive(Default)]
struct Losses(Vec<f64>);

impl TrainObserver for Losses {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        assert!(m.loss.is_finite() && m.grad_norm.is_finite());
        self.0.push(m.loss);
        ControlFlow::Continue(())
    }
}

fn train(precision: Precision, steps: usize) -> (Vec<f64>, DType) {
    let cfg = tiny(32);
    let source = VecSource::new(random_tokens(99, 4 * 17, 32), 17, None);
    let train = TrainConfig {
        lr: 1e-2,
        warmup_steps: 5,
        schedule: LrSchedule::Constant,
        precision,
        ..quick_train(steps, 4)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::<AB>::new(&cfg, train, dir.path(), &dev()).unwrap();
    let mut losses = Losses::default();
    trainer.run(&source, &mut losses).unwrap();
    let dtype = trainer.model().embed_tokens.weight.val().dtype();
    (losses.0, dtype)
}

#[test]
fn bf16_training_learns_with_f32_master_weights() {
    let (full, _) = train(Precision::Full, 1);
    let (half, dtype) = train(Precision::Bf16, 150);
    assert_eq!(dtype, DType::F32, "parameters must stay f32");
    assert!(
        (half[0] - full[0]).abs() < 0.02,
        "first bf16 loss {} vs f32 {}",
        half[0],
        full[0]
    );
    let last = *half.last().unwrap();
    assert!(last < 0.5, "bf16 loss only fell from {} to {last}", half[0]);
}
