//! Measure training throughput on flex: `cargo run --release -p smalltalk-lm --example
//! bench_train -- [preset] [batch] [seq] [steps] [fused|ref]` (defaults: router-4.4m 4 256 4
//! fused; `ref` computes the LM head + loss and the attention with the unfused reference
//! ops). Trains on random tokens in a temporary run directory and prints per-step time and
//! tokens/s (the first step includes warm-up allocations and is reported separately).

use std::ops::ControlFlow;
use std::time::Instant;

use smalltalk_lm::rng::SplitMix64;
use smalltalk_lm::{
    CpuTrainBackend, Kernel, LmConfig, StepMetrics, TrainConfig, TrainObserver, Trainer, VecSource,
};

struct Timer {
    last: Instant,
    times: Vec<f64>,
    tokens: u64,
}

impl TrainObserver for Timer {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        let dt = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.times.push(dt);
        self.tokens = m.tokens;
        println!(
            "step {:>3}  loss {:.4}  |g| {:.3}  {:.2} s  {:.0} tokens/s",
            m.step,
            m.loss,
            m.grad_norm,
            dt,
            m.tokens as f64 / dt
        );
        ControlFlow::Continue(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map_or("router-4.4m", String::as_str);
    let batch: usize = args.get(1).map_or(4, |s| s.parse().expect("batch"));
    let seq: usize = args.get(2).map_or(256, |s| s.parse().expect("seq"));
    let steps: usize = args.get(3).map_or(4, |s| s.parse().expect("steps"));
    let kernel = match args.get(4).map_or("fused", String::as_str) {
        "fused" => Kernel::Auto,
        "ref" => Kernel::Reference,
        other => panic!("head kernel must be `fused` or `ref`, not `{other}`"),
    };
    let cfg = LmConfig::preset(preset).expect("preset");
    let row_len = seq + 1;
    let mut rng = SplitMix64::new(1);
    let rows = batch * steps;
    let tokens: Vec<u32> = (0..rows * row_len)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let source = VecSource::new(tokens, row_len, None);
    let train = TrainConfig {
        total_steps: steps,
        batch_size: batch,
        warmup_steps: 1,
        checkpoint_every: 0,
        ..TrainConfig::default()
    };
    let dir = std::env::temp_dir().join(format!("smalltalk-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{preset}: {} params, batch {batch} x seq {seq}, {steps} steps, head {kernel:?}",
        cfg.num_params()
    );
    let mut trainer =
        Trainer::<CpuTrainBackend>::new(&cfg, train, &dir, &Default::default()).expect("trainer");
    trainer.set_kernel(kernel);
    let mut timer = Timer {
        last: Instant::now(),
        times: vec![],
        tokens: 0,
    };
    trainer.run(&source, &mut timer).expect("training");
    let steady = &timer.times[1.min(timer.times.len() - 1)..];
    let mean = steady.iter().sum::<f64>() / steady.len() as f64;
    println!(
        "steady state (steps 2..): {mean:.2} s/step, {:.0} tokens/s",
        timer.tokens as f64 / mean
    );
    let _ = std::fs::remove_dir_all(&dir);
}
