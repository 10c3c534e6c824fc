//! The generic (non-fused) code path on burn's wgpu backend, checked against flex: the path
//! that `cuda` and `wgpu` users train on. Built only with the `wgpu` feature and run on any
//! Vulkan device; in CI that is Mesa's lavapipe, Vulkan on the CPU (pin it with
//! `VK_ICD_FILENAMES=<lvp_icd json>` and `CUBECL_WGPU_DEFAULT_DEVICE=Cpu`).
//!
//! Tolerances (f32 on both sides; flex runs fused kernels, wgpu burn's reference ops, so sums
//! are ordered differently): per-step training loss within [`LOSS_TOL`], scores within
//! [`SCORE_TOL`] per row, and final weights after a few AdamW steps within [`WEIGHT_TOL`]
//! (Adam divides by √v, so a weight whose gradients are near zero can move by a few ulps of
//! `lr` more on one side; the bound is a small fraction of one step's `lr` = 3e-3).

use std::ops::ControlFlow;

use smalltalk_data::Split;
use smalltalk_eval::{eval_run, EvalData, EvalOptions};
use smalltalk_lm::burn::backend::wgpu::WgpuDevice;
use smalltalk_lm::burn::backend::{Autodiff, Wgpu};
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::{
    score_prefix, HostTensor, Lm, ModelSet, NoopObserver, ScoreOptions, StepMetrics, TrainConfig,
    TrainObserver, Trainer, VecSource,
};
use smalltalk_stage::RunLayout;

use crate::lm_util::{dev, quick_train, random_tokens, tiny, AB, B};
use crate::pipeline_api::train_tiny_run_on;
use smalltalk_routing::PartitionManifest;
use smalltalk_tests::tiny_settings;

/// Largest per-step difference of the training loss, wgpu against flex.
const LOSS_TOL: f64 = 1e-5;
/// Largest difference of a row's prefix log-likelihood, wgpu against flex.
const SCORE_TOL: f64 = 1e-4;
/// Largest difference of any weight after training, wgpu against flex.
const WEIGHT_TOL: f32 = 1e-4;

/// The wgpu training backend.
type WgpuTrain = Autodiff<Wgpu>;

/// The default wgpu device, opened through the probe (a clear error without a driver).
fn wdev() -> WgpuDevice {
    smalltalk_lm::backend::probe_wgpu().expect("a Vulkan device for the wgpu tests");
    WgpuDevice::default()
}

/// Records every step's loss.
#[derive(Default)]
struct Losses(Vec<f64>);

impl TrainObserver for Losses {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        self.0.push(m.loss);
        ControlFlow::Continue(())
    }
}

fn source() -> VecSource {
    VecSource::new(random_tokens(7, 12 * 17, 48), 17, None)
}

fn train_config() -> TrainConfig {
    TrainConfig {
        micro_batch_size: 2,
        ..quick_train(6, 4)
    }
}

/// Train the tiny model for 6 steps on `A`; the losses and the final weights.
fn train_on<A: AutodiffBackend>(device: &A::Device) -> (Vec<f64>, Vec<(String, HostTensor)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::<A>::new(&tiny(48), train_config(), dir.path(), device).unwrap();
    let mut losses = Losses::default();
    assert!(t.run(&source(), &mut losses).unwrap().finished);
    (losses.0, t.model().named_tensors())
}

fn max_weight_diff(a: &[(String, HostTensor)], b: &[(String, HostTensor)]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!((na, &ta.shape), (nb, &tb.shape));
        for (x, y) in ta.values.iter().zip(&tb.values) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

#[test]
fn wgpu_training_matches_flex_step_by_step() {
    let (flex_losses, flex_weights) = train_on::<AB>(&dev());
    let (wgpu_losses, wgpu_weights) = train_on::<WgpuTrain>(&wdev());
    assert_eq!(flex_losses.len(), wgpu_losses.len());
    for (step, (f, w)) in flex_losses.iter().zip(&wgpu_losses).enumerate() {
        assert!(
            (f - w).abs() <= LOSS_TOL,
            "step {}: flex loss {f}, wgpu {w}",
            step + 1
        );
    }
    let diff = max_weight_diff(&flex_weights, &wgpu_weights);
    assert!(diff <= WEIGHT_TOL, "final weights differ by {diff}");
    // The same run twice on wgpu is bit-identical.
    let (again_losses, again_weights) = train_on::<WgpuTrain>(&wdev());
    assert_eq!(again_losses, wgpu_losses);
    assert!(
        again_weights == wgpu_weights,
        "wgpu training is not deterministic"
    );
}

#[test]
fn wgpu_scores_match_flex_for_the_same_weights() {
    let cfg = tiny(48);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // Trained weights (not just the initialisation), written by flex, read by both.
    let mut t = Trainer::<AB>::new(&cfg, quick_train(3, 4), dir.path(), &dev()).unwrap();
    t.run(&source(), &mut NoopObserver).unwrap();
    t.valid_model().save_safetensors(&path).unwrap();
    let flex = Lm::<B>::from_safetensors(&cfg, &path, &dev()).unwrap();
    let wgpu = Lm::<Wgpu>::from_safetensors(&cfg, &path, &wdev()).unwrap();
    let tokens = random_tokens(3, 9 * 17, 48);
    for prefix in [4, 16] {
        let a = score_prefix(&flex, &tokens, 17, prefix, &ScoreOptions::default()).unwrap();
        let b = score_prefix(&wgpu, &tokens, 17, prefix, &ScoreOptions::default()).unwrap();
        for (row, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= SCORE_TOL,
                "prefix {prefix} row {row}: {x} vs {y}"
            );
        }
    }
    // Two models on wgpu form one stack (one pass of each op for both), scoring as flex
    // scores each model alone.
    let fresh = dir.path().join("fresh.safetensors");
    Lm::<B>::new(&cfg, 5, &dev())
        .unwrap()
        .save_safetensors(&fresh)
        .unwrap();
    let flex_fresh = Lm::<B>::from_safetensors(&cfg, &fresh, &dev()).unwrap();
    let wgpu_fresh = Lm::<Wgpu>::from_safetensors(&cfg, &fresh, &wdev()).unwrap();
    let set = ModelSet::new(vec![wgpu, wgpu_fresh]);
    assert!(matches!(set, ModelSet::Stacked(_)), "wgpu stacks");
    let options = ScoreOptions::default();
    let stacked = set
        .score_prefix_lengths(&tokens, 17, &[16], &options)
        .unwrap();
    for (m, model) in [&flex, &flex_fresh].into_iter().enumerate() {
        let alone = score_prefix(model, &tokens, 17, 16, &options).unwrap();
        for (row, (x, y)) in alone.iter().zip(&stacked[m][0]).enumerate() {
            assert!(
                (x - y).abs() <= SCORE_TOL,
                "model {m} row {row}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn wgpu_tiled_ops_match_the_reference_ops() {
    let device = wdev();
    // One chunk size and one attention shape (a short last block): every new shape costs
    // shader compilation on lavapipe; flex runs them all (`lm_tiled`).
    crate::lm_tiled::check_chunked_head::<Wgpu>(&device, &[16], 1e-5);
    let shapes = &crate::lm_tiled::ATTENTION_SHAPES[..1];
    crate::lm_tiled::check_blocked_attention::<Wgpu>(&device, shapes, 2e-5);
}

#[test]
fn wgpu_cubecl_kernels_match_the_reference_ops() {
    use crate::lm_tiled::{backend_attention, backend_head, check_attention, check_head};
    use smalltalk_lm::burn::backend::wgpu::{CubeBackend, WgpuRuntime};
    let device = wdev();
    // Through fusion (what `Wgpu` is) and without it: the same kernels either way. A
    // vocabulary past one chunk (4,096 rows): two chunks, the second cut short.
    let vocab = smalltalk_lm::fused::tiled::VOCAB_CHUNK + 50;
    check_head::<Wgpu>(&device, vocab, &backend_head(), 1e-5);
    check_head::<Wgpu>(&device, 50, &backend_head(), 1e-5);
    check_attention::<Wgpu>(
        &device,
        &crate::lm_tiled::ATTENTION_SHAPES,
        &backend_attention(),
        2e-5,
    );
    type Raw = CubeBackend<WgpuRuntime, f32, i32, u32>;
    check_head::<Raw>(&device, vocab, &backend_head(), 1e-5);
    let shapes = &crate::lm_tiled::ATTENTION_SHAPES[..1];
    check_attention::<Raw>(&device, shapes, &backend_attention(), 2e-5);
}

#[test]
fn wgpu_training_resumes_bit_identically() {
    let cfg = tiny(48);
    let device = wdev();
    let straight = tempfile::tempdir().unwrap();
    let mut t = Trainer::<WgpuTrain>::new(&cfg, train_config(), straight.path(), &device).unwrap();
    t.run(&source(), &mut NoopObserver).unwrap();
    let reference = t.model().named_tensors();

    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::<WgpuTrain>::new(&cfg, train_config(), dir.path(), &device).unwrap();
    let s = first.run_until(3, &source(), &mut NoopObserver).unwrap();
    assert_eq!(s.end_step, 3);
    drop(first);
    let mut second = Trainer::<WgpuTrain>::new(&cfg, train_config(), dir.path(), &device).unwrap();
    assert_eq!(second.resumed_from(), Some(3));
    second.run(&source(), &mut NoopObserver).unwrap();
    assert!(
        second.model().named_tensors() == reference,
        "resumed wgpu weights differ from the uninterrupted wgpu run"
    );
}

#[test]
fn wgpu_runs_the_tiny_pipeline_and_evaluates_like_flex() {
    // The smoke config's routers (2 EM iterations of 3 steps), on both backends.
    let em = tiny_settings().routers;
    let (on_wgpu, on_flex) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (wgpu_run, flex_run) = (
        RunLayout::new(on_wgpu.path()),
        RunLayout::new(on_flex.path()),
    );
    let device = wdev();
    train_tiny_run_on::<WgpuTrain>(&wgpu_run, &em, &device);
    train_tiny_run_on::<AB>(&flex_run, &em, &dev());
    let options = EvalOptions {
        prefixes: vec![4],
        seed: 0,
        allow_unfinished: false,
    };
    let (wgpu_data, flex_data) = (wgpu_run.data(), flex_run.data());
    let wgpu = eval_run::<Wgpu>(
        wgpu_run.root(),
        &EvalData::at(&wgpu_data, Split::Validation),
        &options,
        &device,
    )
    .unwrap();
    let flex = eval_run::<B>(
        flex_run.root(),
        &EvalData::at(&flex_data, Split::Validation),
        &options,
        &dev(),
    )
    .unwrap();
    // Same data, same seeds: the partitions agree row for row, the perplexities closely.
    let rows = |run: &RunLayout| {
        let m = PartitionManifest::load(&run.partition()).unwrap();
        m.expert_rows
            .iter()
            .map(|r| r.sequences)
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&wgpu_run), rows(&flex_run));
    for (w, f) in [
        (wgpu.mixture_ppl, flex.mixture_ppl),
        (wgpu.dense_ppl, flex.dense_ppl),
        (wgpu.oracle_ppl, flex.oracle_ppl),
    ] {
        assert!(w.is_finite() && w > 1.0, "{wgpu:?}");
        assert!((w / f - 1.0).abs() < 1e-3, "wgpu {w} vs flex {f}");
    }
    assert_eq!(wgpu.expert_load, flex.expert_load);
}

/// Without a Vulkan driver the probe returns an error naming the driver to install (in a
/// child process: the device of this process is already open).
#[test]
fn wgpu_without_a_driver_is_a_clear_error() {
    if std::env::var_os("SMALLTALK_WGPU_PROBE_CHILD").is_some() {
        let err = smalltalk_lm::backend::probe_wgpu().unwrap_err();
        println!("probe error: {err}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "wgpu_backend::wgpu_without_a_driver_is_a_clear_error",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env("SMALLTALK_WGPU_PROBE_CHILD", "1")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("probe error: backend `wgpu` found no usable GPU adapter")
            && stdout.contains("mesa-vulkan-drivers"),
        "{stdout}"
    );
}

#[test]
fn wgpu_cached_decoding_matches_the_whole_sequence_and_flex() {
    use crate::lm_decode::{check_cached_against, check_cached_against_full, full_logits};
    // Widths that are multiples of 8 (d 32, heads of 8): at d 18 with heads of 6 (the flex
    // test's odd shape) wgpu's whole-sequence forward itself differs from flex's.
    let cfg = smalltalk_lm::LmConfig {
        init_std: 0.5,
        max_seq_len: 32,
        ..tiny(48)
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let flex = Lm::<B>::new(&cfg, 7, &dev()).unwrap();
    flex.save_safetensors(&path).unwrap();
    let wgpu = Lm::<Wgpu>::from_safetensors(&cfg, &path, &wdev()).unwrap();
    let prompts: Vec<Vec<u32>> = [4usize, 9, 1]
        .iter()
        .enumerate()
        .map(|(i, &n)| random_tokens(40 + i as u64, n, 48))
        .collect();
    // Cached decoding on wgpu against the whole sequence on flex (the reference backend).
    let on_wgpu = check_cached_against(&wgpu, |s| full_logits(&flex, s), &prompts, 12, 1e-5);
    let on_flex = check_cached_against_full(&flex, &prompts, 12, 1e-5);
    assert_eq!(
        on_wgpu, on_flex,
        "greedy tokens differ between wgpu and flex"
    );
}
