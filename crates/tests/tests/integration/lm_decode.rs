//! KV-cache decoding against the whole-sequence forward pass: the logits at every decoded
//! position, greedy tokens, ragged batches, prefill in pieces, and the context window.

use smalltalk_lm::burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use smalltalk_lm::{
    generate, generate_batch, generate_reference, CachedInput, ForwardOptions, Lm, LmConfig,
    SamplingOptions,
};

use crate::lm_util::{dev, random_tokens, tiny, to_vec, B};

/// An odd shape (head width 6, 3 heads, vocabulary 41) with weights large enough that greedy
/// decoding wanders over the vocabulary.
pub fn decode_model<BB: Backend>(max_seq_len: usize, device: &BB::Device) -> Lm<BB> {
    let cfg = LmConfig {
        d_model: 18,
        n_heads: 3,
        d_ff: 40,
        n_layers: 2,
        max_seq_len,
        init_std: 0.5,
        ..tiny(41)
    };
    Lm::new(&cfg, 7, device).unwrap()
}

/// Next-token logits at every position of `tokens`, from one whole-sequence forward pass.
pub fn full_logits<BB: Backend>(model: &Lm<BB>, tokens: &[u32]) -> Vec<Vec<f32>> {
    let data: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let t =
        Tensor::<BB, 2, Int>::from_data(TensorData::new(data, [1, tokens.len()]), &model.device());
    let vocab = model.config().vocab_size;
    to_vec(model.forward(t))
        .chunks(vocab)
        .map(<[f32]>::to_vec)
        .collect()
}

/// `|a − b| ≤ tol · max|b|` over a row of logits.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tol * scale,
        "{what}: logits differ by {worst} (relative {})",
        worst / scale
    );
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in row.iter().enumerate() {
        if *x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Prefill each prompt of a ragged batch once, then decode `steps` greedy tokens per sequence
/// one position at a time; every step's logits must equal (within `tol`, relative) those of the
/// whole sequence run alone. Returns each sequence's tokens.
pub fn check_cached_against_full<BB: Backend>(
    model: &Lm<BB>,
    prompts: &[Vec<u32>],
    steps: usize,
    tol: f32,
) -> Vec<Vec<u32>> {
    check_cached_against(model, |s| full_logits(model, s), prompts, steps, tol)
}

/// [`check_cached_against_full`] with another oracle: `full(tokens)` gives the next-token
/// logits at every position of `tokens` (e.g. the same weights on another backend).
pub fn check_cached_against<BB: Backend>(
    model: &Lm<BB>,
    full: impl Fn(&[u32]) -> Vec<Vec<f32>>,
    prompts: &[Vec<u32>],
    steps: usize,
    tol: f32,
) -> Vec<Vec<u32>> {
    let vocab = model.config().vocab_size;
    let mut caches: Vec<_> = prompts.iter().map(|_| model.new_cache()).collect();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut fed = vec![0usize; prompts.len()];
    for step in 0..=steps {
        let mut inputs: Vec<CachedInput<'_, BB>> = caches
            .iter_mut()
            .zip(&seqs)
            .zip(&fed)
            .map(|((cache, s), &f)| CachedInput {
                cache,
                tokens: &s[f..],
            })
            .collect();
        let logits = to_vec(
            model
                .forward_cached(&mut inputs, ForwardOptions::default())
                .unwrap(),
        );
        drop(inputs);
        for (i, s) in seqs.iter_mut().enumerate() {
            let got = &logits[i * vocab..(i + 1) * vocab];
            let want = full(s);
            let what = format!("sequence {i}, step {step}, position {}", s.len() - 1);
            assert_close(got, want.last().unwrap(), tol, &what);
            fed[i] = s.len();
            s.push(argmax(got));
        }
    }
    seqs
}

fn greedy() -> SamplingOptions {
    SamplingOptions {
        temperature: 0.0,
        ..Default::default()
    }
}

#[test]
fn cached_decoding_gives_the_logits_of_the_whole_sequence() {
    let model = decode_model::<B>(64, &dev());
    let prompt = random_tokens(1, 6, 41);
    let seqs = check_cached_against_full(&model, std::slice::from_ref(&prompt), 40, 1e-5);
    let tokens = &seqs[0][prompt.len()..];
    let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
    assert!(distinct.len() > 3, "greedy decoding is stuck: {tokens:?}");
}

#[test]
fn a_ragged_batch_decodes_each_sequence_as_if_alone() {
    let model = decode_model::<B>(64, &dev());
    let prompts: Vec<Vec<u32>> = [3usize, 11, 1, 7]
        .iter()
        .enumerate()
        .map(|(i, &n)| random_tokens(10 + i as u64, n, 41))
        .collect();
    check_cached_against_full(&model, &prompts, 20, 1e-5);
}

#[test]
fn a_prompt_prefilled_in_pieces_gives_the_logits_of_one_prefill() {
    let model = decode_model::<B>(64, &dev());
    let tokens = random_tokens(3, 23, 41);
    let mut cache = model.new_cache();
    let mut last = Vec::new();
    for piece in [&tokens[..5], &tokens[5..6], &tokens[6..20], &tokens[20..]] {
        let mut inputs = [CachedInput {
            cache: &mut cache,
            tokens: piece,
        }];
        last = to_vec(
            model
                .forward_cached(&mut inputs, ForwardOptions::default())
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), 23);
    assert_close(
        &last,
        full_logits(&model, &tokens).last().unwrap(),
        1e-5,
        "pieces",
    );
}

#[test]
fn greedy_generation_matches_the_recomputing_reference_within_and_past_the_window() {
    for (max_seq_len, new) in [(64usize, 40usize), (16, 45)] {
        let model = decode_model::<B>(max_seq_len, &dev());
        let prompt = random_tokens(5, 9, 41);
        let cached = generate(&model, &prompt, new, &[], &greedy(), |_| {}).unwrap();
        let reference = generate_reference(&model, &prompt, new, &[], &greedy(), |_| {}).unwrap();
        assert_eq!(cached.len(), new);
        assert_eq!(cached, reference, "context {max_seq_len}");
    }
}

#[test]
fn a_batch_generates_what_each_prompt_generates_alone_and_stops_per_sequence() {
    let model = decode_model::<B>(32, &dev());
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| random_tokens(20 + i, 2 + 5 * i as usize, 41))
        .collect();
    let sampled = SamplingOptions {
        temperature: 0.9,
        top_k: 10,
        top_p: 0.95,
        seed: 3,
    };
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| generate(&model, p, 30, &[], &sampled, |_| {}).unwrap())
        .collect();
    let mut streamed = vec![Vec::new(); prompts.len()];
    let batch = generate_batch(&model, &prompts, 30, &[], &sampled, |i, t| {
        streamed[i].push(t)
    })
    .unwrap();
    assert_eq!(batch, alone);
    assert_eq!(streamed, alone);
    // A stop token ends its sequence only, right after it is drawn.
    let stop = alone[1][4];
    let stopped = generate_batch(&model, &prompts, 30, &[stop], &sampled, |_, _| {}).unwrap();
    for (s, a) in stopped.iter().zip(&alone) {
        let end = a.iter().position(|&t| t == stop).map_or(a.len(), |p| p + 1);
        assert_eq!(s, &a[..end]);
    }
}

#[test]
fn bad_prompts_are_refused_and_zero_tokens_generate_nothing() {
    let model = decode_model::<B>(16, &dev());
    let err = |r: smalltalk_lm::Result<Vec<u32>>| r.unwrap_err().to_string();
    assert!(err(generate(&model, &[], 4, &[], &greedy(), |_| {})).contains("empty prompt"));
    let long = random_tokens(1, 17, 41);
    assert!(err(generate(&model, &long, 4, &[], &greedy(), |_| {})).contains("context of 16"));
    assert!(err(generate(&model, &[3, 41], 4, &[], &greedy(), |_| {})).contains("out of range"));
    assert!(generate(&model, &[3], 0, &[], &greedy(), |_| {})
        .unwrap()
        .is_empty());
}
