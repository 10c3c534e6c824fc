//! Time the LM head + loss alone at a given shape: `cargo run --release -p smalltalk-lm
//! --example bench_head -- [rows] [vocab] [d] [reps]` (defaults: 2048 32000 96 3). Reports the
//! fused flex kernel (loss + both gradients) and the reference ops under autodiff (forward +
//! backward), in seconds per call, and checks that two fused runs are bit-identical.

use std::time::Instant;

use smalltalk_lm::burn::backend::{Autodiff, Flex};
use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
use smalltalk_lm::fused::head_kernel::{self as kernel, default_chunk_rows, HeadShape};
use smalltalk_lm::fused::isa::Isa;
use smalltalk_lm::fused::reference_nll;
use smalltalk_lm::rng::SplitMix64;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("a number"))
        .collect();
    let n = args.first().copied().unwrap_or(2048);
    let v = args.get(1).copied().unwrap_or(32000);
    let d = args.get(2).copied().unwrap_or(96);
    let reps = args.get(3).copied().unwrap_or(3);
    let mut rng = SplitMix64::new(1);
    let mut normal = |k: usize| -> Vec<f32> {
        (0..k)
            .map(|_| (rng.below(1 << 20) as f32 / (1 << 20) as f32 - 0.5) * 0.1)
            .collect()
    };
    let (h, e) = (normal(n * d), normal(v * d));
    let targets: Vec<u32> = (0..n).map(|i| (i * 7919 % v) as u32).collect();
    let w = vec![1f32; n];
    let shape = HeadShape { n, v, d };
    let chunk = default_chunk_rows(v);
    let time = |f: &mut dyn FnMut()| {
        f(); // warm-up
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let run = || {
        kernel::nll_grads(
            shape,
            &h,
            &e,
            &targets,
            &w,
            1.0 / n as f32,
            chunk,
            Isa::active(),
        )
    };
    let fused = time(&mut || {
        std::hint::black_box(run());
    });
    // Run-to-run determinism at this shape (rayon row pass + multi-threaded gemm).
    let a = run();
    let b = run();
    let same = a.loss.to_bits() == b.loss.to_bits() && a.dh == b.dh && a.de == b.de;
    println!("two fused runs bit-identical: {same}");
    type AB = Autodiff<Flex>;
    let dev = Default::default();
    let ids: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    let reference = time(&mut || {
        let ht =
            Tensor::<AB, 2>::from_data(TensorData::new(h.clone(), [n, d]), &dev).require_grad();
        let et =
            Tensor::<AB, 2>::from_data(TensorData::new(e.clone(), [v, d]), &dev).require_grad();
        let t = Tensor::<AB, 1, Int>::from_data(TensorData::new(ids.clone(), [n]), &dev);
        let wt = Tensor::<AB, 1>::from_data(TensorData::new(w.clone(), [n]), &dev);
        let loss = reference_nll(ht, et, t, wt, n as f64);
        std::hint::black_box(loss.backward());
    });
    let flops = 6.0 * (n * v * d) as f64;
    println!(
        "head N={n} V={v} D={d} (chunk {chunk}): fused {fused:.3} s ({:.1} GFLOP/s), reference autodiff {reference:.3} s ({:.1}x)",
        flops / fused / 1e9,
        reference / fused
    );
}
