//! Gradients against finite differences (f64), and global-norm clipping.

use std::collections::BTreeMap;

use smalltalk_lm::burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use smalltalk_lm::burn::optim::GradientsParams;
use smalltalk_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use smalltalk_lm::burn::tensor::{DType, FloatDType, Tensor};
use smalltalk_lm::loss::{nll_sum, targets_and_weights, token_tensor};
use smalltalk_lm::train::{clip_global_norm, global_grad_norm};
use smalltalk_lm::{Lm, LmConfig};

use crate::lm_util::{dev, inputs_and_targets, random_tokens, AB, B};

/// Mean next-token loss of a batch (the trainer's loss with one micro-batch).
fn loss<BB: Backend>(model: &Lm<BB>, toks: &[u32], rows: usize, row_len: usize) -> Tensor<BB, 1> {
    let time = row_len - 1;
    let (inputs, targets) = inputs_and_targets(toks, row_len);
    let logits =
        model.head(model.forward_hidden(token_tensor::<BB>(&inputs, rows, time, &model.device())));
    let (t, w) = targets_and_weights(&targets, None, &logits);
    nll_sum(logits, t, w).div_scalar((rows * time) as f64)
}

/// Gradient of every parameter, by name, as f64.
struct NamedGrads<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: BTreeMap<String, Vec<f64>>,
}

impl<BB: AutodiffBackend> ModuleVisitor<BB> for NamedGrads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<BB, D>>) {
        if let Some(g) = self.grads.get::<BB::InnerBackend, D>(p.id) {
            let v = g.into_data().convert::<f64>().into_vec::<f64>().unwrap();
            self.out.insert(self.path.join("."), v);
        }
    }
}

fn named_grads<M: AutodiffModule<AB>>(
    model: &M,
    grads: &GradientsParams,
) -> BTreeMap<String, Vec<f64>> {
    let mut v = NamedGrads {
        grads,
        path: vec![],
        out: BTreeMap::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Adds `delta` to element `index` of the parameter named `target` (f64 parameters).
struct Nudge {
    target: String,
    index: usize,
    delta: f64,
    path: Vec<String>,
}

impl<BB: Backend> ModuleMapper<BB> for Nudge {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<BB, D>>) -> Param<Tensor<BB, D>> {
        if self.path.join(".") != self.target {
            return p;
        }
        let (id, t, mapper) = p.consume();
        let mut data = t.to_data();
        data.as_mut_slice::<f64>().unwrap()[self.index] += self.delta;
        let t = Tensor::from_data(data, (&t.device(), DType::F64));
        Param::from_mapped_value(id, t, mapper)
    }
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    for tie in [true, false] {
        let cfg = LmConfig {
            vocab_size: 23,
            d_model: 8,
            n_layers: 2,
            n_heads: 2,
            d_ff: 12,
            max_seq_len: 8,
            tie_embeddings: tie,
            init_std: 0.5,
            ..LmConfig::default()
        };
        let (rows, row_len) = (2, 7);
        let toks = random_tokens(17, rows * row_len, 23);
        let model = Lm::<AB>::new(&cfg, 8, &dev())
            .unwrap()
            .to_float_dtype(FloatDType::F64);
        let l = loss(&model, &toks, rows, row_len);
        assert_eq!(l.dtype(), DType::F64);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        let analytic = named_grads(&model, &grads);
        let inner: Lm<B> = model.valid();
        let mut checked = 0;
        let mut names: Vec<&str> = vec![
            "embed_tokens.weight",
            "layers.0.input_layernorm.weight",
            "layers.0.self_attn.q_proj.weight",
            "layers.0.self_attn.k_proj.weight",
            "layers.1.self_attn.v_proj.weight",
            "layers.1.self_attn.o_proj.weight",
            "layers.0.mlp.gate_proj.weight",
            "layers.1.mlp.down_proj.weight",
            "norm.weight",
        ];
        if !tie {
            names.push("lm_head.weight");
        }
        for name in names {
            let g = &analytic[name];
            for index in [0, g.len() / 3, g.len() - 1] {
                let h = 1e-6;
                let eval = |delta: f64| -> f64 {
                    let nudged = inner.clone().map(&mut Nudge {
                        target: name.into(),
                        index,
                        delta,
                        path: vec![],
                    });
                    loss(&nudged, &toks, rows, row_len)
                        .into_data()
                        .convert::<f64>()
                        .into_vec::<f64>()
                        .unwrap()[0]
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                let err = (fd - g[index]).abs();
                assert!(
                    err <= 1e-6 + 1e-5 * g[index].abs(),
                    "tie={tie} {name}[{index}]: analytic {} vs fd {fd}",
                    g[index]
                );
                checked += 1;
            }
        }
        assert!(checked >= 27);
    }
}

#[test]
fn global_clipping_scales_to_max_norm() {
    let cfg = LmConfig {
        tie_embeddings: false,
        init_std: 0.3,
        ..crate::lm_util::tiny(40)
    };
    let model = Lm::<AB>::new(&cfg, 2, &dev()).unwrap();
    let toks = random_tokens(4, 3 * 12, 40);
    let mut grads = GradientsParams::from_grads(loss(&model, &toks, 3, 12).backward(), &model);
    let naive = |g: &GradientsParams| -> f64 {
        named_grads(&model, g)
            .values()
            .flatten()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    };
    let before = naive(&grads);
    assert!(before > 0.0);
    let reported = global_grad_norm(&model, &grads);
    assert!(
        (reported - before).abs() <= 1e-5 * before,
        "{reported} vs {before}"
    );

    // Above the norm: nothing changes.
    let untouched = named_grads(&model, &grads);
    let r = clip_global_norm(&model, &mut grads, before * 2.0);
    assert!((r - before).abs() <= 1e-5 * before);
    assert_eq!(named_grads(&model, &grads), untouched);

    // Below the norm: every gradient is scaled by the same factor to norm == max_norm.
    let max_norm = before / 7.0;
    let r = clip_global_norm(&model, &mut grads, max_norm);
    assert!(
        (r - before).abs() <= 1e-5 * before,
        "returns the pre-clip norm"
    );
    let after = naive(&grads);
    assert!(
        (after - max_norm).abs() <= 1e-4 * max_norm,
        "clipped norm {after} vs max {max_norm}"
    );
    let clipped = named_grads(&model, &grads);
    for (name, g) in &untouched {
        for (a, b) in g.iter().zip(&clipped[name]) {
            assert!(
                (b - a / 7.0).abs() <= 1e-4 * (a / 7.0).abs() + 1e-12,
                "{name}: {b} vs {}",
                a / 7.0
            );
        }
    }
}
