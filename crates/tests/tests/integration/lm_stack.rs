//! Scoring several models at once ([`ModelSet`]): stacked into one model or one by one, each
//! model's own scores.

use smalltalk_lm::burn::module::Param;
use smalltalk_lm::burn::tensor::Tensor;
use smalltalk_lm::{
    score_prefix_lengths, stacking_pays, token_logprobs, Lm, LmConfig, LmStack, ModelSet,
    Precision, ScoreOptions,
};

use crate::lm_util::{dev, random_tokens, tiny, B};

/// Three models of an odd shape (d 20 in 5 heads of 4, d_ff 36, vocab 37), `tied` or not, with
/// distinct weights and norm gains (gains of ones would hide a gain applied to the wrong model).
fn models(tied: bool) -> Vec<Lm<B>> {
    let cfg = LmConfig {
        d_model: 20,
        n_heads: 5,
        d_ff: 36,
        n_layers: 2,
        tie_embeddings: tied,
        init_std: 0.3,
        ..tiny(37)
    };
    (0..3u64)
        .map(|seed| {
            let mut m = Lm::<B>::new(&cfg, seed, &dev()).unwrap();
            let s = seed as f32;
            let scaled =
                |w: &Param<Tensor<B, 1>>, by: f32| Param::from_tensor(w.val().mul_scalar(by));
            m.norm.weight = scaled(&m.norm.weight, 1.1 + s);
            for layer in &mut m.layers {
                layer.input_layernorm.weight = scaled(&layer.input_layernorm.weight, 0.5 + s);
                layer.post_attention_layernorm.weight =
                    scaled(&layer.post_attention_layernorm.weight, 1.3 - 0.4 * s);
            }
            m
        })
        .collect()
}

#[test]
fn a_stack_scores_each_model_to_the_bit_of_the_model_alone() {
    let (rows, row_len) = (7, 13);
    let mut toks = random_tokens(5, rows * row_len, 36);
    toks[20..26].fill(36); // a pad tail in row 1
    for tied in [true, false] {
        let models = models(tied);
        let stack = ModelSet::stacked(models.clone());
        assert!(matches!(&stack, ModelSet::Stacked(s) if s.models() == 3));
        // One chunk, and chunks of one row (the stack sizes chunks for all its models).
        for max_logits in [1 << 26, 1] {
            let opts = ScoreOptions {
                max_logits,
                pad_id: Some(36),
                ..ScoreOptions::default()
            };
            let lens = [2, 9, 13];
            let stacked = stack
                .score_prefix_lengths(&toks, row_len, &lens, &opts)
                .unwrap();
            let per_token = stack.token_logprobs(&toks, row_len, &opts).unwrap();
            for (m, model) in models.iter().enumerate() {
                let alone = score_prefix_lengths(model, &toks, row_len, &lens, &opts).unwrap();
                assert_eq!(
                    stacked[m], alone,
                    "tied {tied}, model {m}, max_logits {max_logits}"
                );
                let alone = token_logprobs(model, &toks, row_len, &opts).unwrap();
                assert_eq!(per_token[m], alone, "tied {tied}, model {m} per token");
            }
            // The models differ, so a mix-up of models would show.
            assert_ne!(stacked[0], stacked[1]);
        }
    }
}

#[test]
fn a_bf16_stack_scores_close_to_each_model_alone() {
    let (rows, row_len) = (4, 11);
    let toks = random_tokens(6, rows * row_len, 37);
    let models = models(false);
    let stack = ModelSet::stacked(models.clone());
    assert!(matches!(stack, ModelSet::Stacked(_)));
    let opts = ScoreOptions {
        precision: Precision::Bf16,
        ..ScoreOptions::default()
    };
    let stacked = stack.token_logprobs(&toks, row_len, &opts).unwrap();
    for (m, model) in models.iter().enumerate() {
        let alone = token_logprobs(model, &toks, row_len, &opts).unwrap();
        for (a, b) in stacked[m].iter().zip(&alone) {
            assert!(
                (a - b).abs() < 0.05 * b.abs().max(1.0),
                "model {m}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn models_of_different_configs_do_not_stack() {
    let a = Lm::<B>::new(&tiny(37), 0, &dev()).unwrap();
    let b = Lm::<B>::new(&tiny(38), 0, &dev()).unwrap();
    let err = LmStack::new(&[&a, &b]).unwrap_err().to_string();
    assert!(err.contains("model 1"), "{err}");
    assert!(LmStack::<B>::new(&[]).is_err());
    // A set of such models runs them one at a time; one of matching models is stacked.
    let toks = random_tokens(7, 3 * 9, 37);
    let opts = ScoreOptions::default();
    let set = ModelSet::stacked(vec![a.clone(), b.clone()]);
    assert!(matches!(set, ModelSet::Each(_)));
    let alone: Vec<Vec<f32>> = [&a, &b]
        .iter()
        .map(|m| token_logprobs(m, &toks, 9, &opts).unwrap())
        .collect();
    assert_eq!(set.token_logprobs(&toks, 9, &opts).unwrap(), alone);
    let c = Lm::<B>::new(&tiny(37), 1, &dev()).unwrap();
    let want = vec![
        alone[0].clone(),
        token_logprobs(&c, &toks, 9, &opts).unwrap(),
    ];
    let set = ModelSet::stacked(vec![a, c]);
    assert!(matches!(set, ModelSet::Stacked(_)));
    assert_eq!(set.token_logprobs(&toks, 9, &opts).unwrap(), want);
}

#[test]
fn flex_scores_models_one_by_one() {
    // Measured slower stacked on CPU (module docs of `model_set`); GPU backends stack.
    assert!(!stacking_pays::<B>());
    let set = ModelSet::new(models(true));
    assert!(matches!(&set, ModelSet::Each(m) if m.len() == 3));
}
