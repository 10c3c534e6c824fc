//! Model shape, parameter count, causality and scoring.

use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
use smalltalk_lm::{score_prefix, token_logprobs, Lm, LmConfig, ScoreOptions, PRESET_NAMES};

use crate::lm_util::{dev, random_tokens, tiny, to_vec, B};

fn tokens_tensor(tokens: &[u32], rows: usize, seq: usize) -> Tensor<B, 2, Int> {
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    Tensor::from_data(TensorData::new(ids, [rows, seq]), &dev())
}

#[test]
fn router_4_4m_has_4_401_504_parameters() {
    let cfg = LmConfig::preset("router-4.4m").unwrap();
    assert_eq!(cfg.vocab_size, 32_000);
    let model = Lm::<B>::new(&cfg, 0, &dev()).unwrap();
    assert_eq!(model.num_params(), 4_401_504);
    assert_eq!(cfg.num_params(), 4_401_504);
}

#[test]
fn analytic_param_count_matches_the_model() {
    for tie in [true, false] {
        for cfg in [
            tiny(50),
            LmConfig {
                vocab_size: 300,
                ..LmConfig::preset("cpu-small").unwrap()
            },
        ] {
            let cfg = LmConfig {
                tie_embeddings: tie,
                ..cfg
            };
            let model = Lm::<B>::new(&cfg, 1, &dev()).unwrap();
            assert_eq!(model.num_params(), cfg.num_params(), "{cfg:?}");
        }
    }
    assert_eq!(PRESET_NAMES.len(), 7);
}

#[test]
fn init_is_deterministic_and_scaled() {
    let cfg = tiny(64);
    let a = Lm::<B>::new(&cfg, 5, &dev()).unwrap().named_tensors();
    let b = Lm::<B>::new(&cfg, 5, &dev()).unwrap().named_tensors();
    let c = Lm::<B>::new(&cfg, 6, &dev()).unwrap().named_tensors();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "embed_tokens.weight");
    assert!(names.contains(&"layers.1.self_attn.q_proj.weight"));
    assert!(names.contains(&"layers.0.mlp.down_proj.weight"));
    assert!(names.contains(&"norm.weight"));
    let emb = &a[0].1.values;
    let std = (emb.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / emb.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.002, "embedding std {std}");
    // Initial loss of a tied model with small init is close to ln(vocab).
    let model = Lm::<B>::new(&cfg, 5, &dev()).unwrap();
    let toks = random_tokens(1, 2 * 17, 64);
    let lp = token_logprobs(&model, &toks, 17, &ScoreOptions::default()).unwrap();
    let loss = -lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len() as f64;
    assert!((loss - (64f64).ln()).abs() < 0.1, "initial loss {loss}");
}

#[test]
fn changing_a_token_never_changes_earlier_logits() {
    for tie in [true, false] {
        let cfg = LmConfig {
            tie_embeddings: tie,
            init_std: 0.2,
            ..tiny(40)
        };
        let model = Lm::<B>::new(&cfg, 3, &dev()).unwrap();
        let (rows, seq) = (2, 16);
        let toks = random_tokens(9, rows * seq, 40);
        let base = to_vec(model.forward(tokens_tensor(&toks, rows, seq)));
        for t in [0usize, 5, 15] {
            let mut changed = toks.clone();
            for r in 0..rows {
                changed[r * seq + t] = (changed[r * seq + t] + 1) % 40;
            }
            let out = to_vec(model.forward(tokens_tensor(&changed, rows, seq)));
            let v = cfg.vocab_size;
            for r in 0..rows {
                for pos in 0..seq {
                    let range = (r * seq + pos) * v..(r * seq + pos + 1) * v;
                    let diff = base[range.clone()]
                        .iter()
                        .zip(&out[range])
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    if pos < t {
                        assert!(diff <= 1e-6, "tie={tie} t={t} pos={pos} changed by {diff}");
                    } else if pos == t {
                        assert!(diff > 1e-4, "position {t} should see its own token");
                    }
                }
            }
        }
    }
}

/// log_softmax + gather by hand, in f64, from the full logits.
fn naive_logprobs(model: &Lm<B>, toks: &[u32], rows: usize, seq: usize) -> Vec<Vec<f64>> {
    let v = model.config().vocab_size;
    let logits = to_vec(model.forward(tokens_tensor(toks, rows, seq)));
    (0..rows)
        .map(|r| {
            (0..seq - 1)
                .map(|p| {
                    let row = &logits[(r * seq + p) * v..(r * seq + p + 1) * v];
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                    let lse = max
                        + row
                            .iter()
                            .map(|&x| (x as f64 - max).exp())
                            .sum::<f64>()
                            .ln();
                    row[toks[r * seq + p + 1] as usize] as f64 - lse
                })
                .collect()
        })
        .collect()
}

#[test]
fn scoring_equals_naive_log_softmax_sums() {
    let cfg = LmConfig {
        init_std: 0.3,
        ..tiny(50)
    };
    let model = Lm::<B>::new(&cfg, 4, &dev()).unwrap();
    let (rows, row_len) = (5, 20);
    let toks = random_tokens(2, rows * row_len, 50);
    let naive = naive_logprobs(&model, &toks, rows, row_len);
    for m in [2usize, 7, 20] {
        // Tiny chunks (one row at a time) and one big chunk must agree.
        for max_logits in [1usize, 1 << 26] {
            let opts = ScoreOptions {
                max_logits,
                ..ScoreOptions::default()
            };
            let scores = score_prefix(&model, &toks, row_len, m, &opts).unwrap();
            for r in 0..rows {
                let expected: f64 = naive[r][..m - 1].iter().sum();
                assert!(
                    (scores[r] - expected).abs() < 1e-4 * expected.abs().max(1.0),
                    "M={m} row {r}: {} vs {expected}",
                    scores[r]
                );
            }
        }
    }
    assert_eq!(
        score_prefix(&model, &toks, row_len, 1, &ScoreOptions::default()).unwrap(),
        vec![0.0; rows]
    );
    let per_token = token_logprobs(&model, &toks, row_len, &ScoreOptions::default()).unwrap();
    assert_eq!(per_token.len(), rows * (row_len - 1));
    for r in 0..rows {
        for p in 0..row_len - 1 {
            assert!((per_token[r * (row_len - 1) + p] as f64 - naive[r][p]).abs() < 1e-4);
        }
    }
}

#[test]
fn scoring_skips_pad_targets_and_rejects_bad_input() {
    let cfg = tiny(30);
    let model = Lm::<B>::new(&cfg, 4, &dev()).unwrap();
    let mut toks = random_tokens(3, 2 * 10, 29);
    toks[6..10].fill(29); // pad tail of row 0
    let naive = naive_logprobs(&model, &toks, 2, 10);
    let opts = ScoreOptions {
        pad_id: Some(29),
        ..Default::default()
    };
    let s = score_prefix(&model, &toks, 10, 10, &opts).unwrap();
    let expected: f64 = naive[0][..5].iter().sum();
    assert!((s[0] - expected).abs() < 1e-4);
    assert!(
        score_prefix(&model, &toks, 7, 7, &opts).is_err(),
        "20 tokens are not rows of 7"
    );
    assert!(
        score_prefix(&model, &toks, 10, 11, &opts).is_err(),
        "prefix longer than rows"
    );
    assert!(
        score_prefix(&model, &[0, 30], 2, 2, &opts).is_err(),
        "token id out of vocab"
    );
}
