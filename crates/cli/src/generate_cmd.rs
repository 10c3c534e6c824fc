//! `smalltalk generate`: route a prompt by its prefix, load only the chosen expert, and stream
//! a sampled continuation.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use smalltalk_data::TextTokenizer;
use smalltalk_expert::expert_dir;
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use smalltalk_lm::{generate, Checkpoint, SamplingOptions, VecSource};
use smalltalk_router::{score_rows, RouterSet};

use crate::backends::{dispatch, BackendJob};
use crate::report::Output;

/// `generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Routers folder (holds the tokenizer too).
    #[arg(long)]
    routers: PathBuf,
    /// Folder holding expert-NN/ (`smalltalk expert train`).
    #[arg(long)]
    experts: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Routing prefix M̂: the prompt's first M̂ tokens pick the expert (fewer when the prompt
    /// is shorter).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
    /// Tokens to generate at most (stops early at the end-of-document token).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Run `smalltalk generate`.
pub fn run(args: GenerateArgs, backend: BackendKind, out: &Output) -> Result<()> {
    dispatch(backend, Job { args: &args, out })
}

struct Job<'a> {
    args: &'a GenerateArgs,
    out: &'a Output,
}

impl BackendJob for Job<'_> {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, _name: &'static str) -> Result<()> {
        run_on::<AB::InnerBackend>(self.args, self.out)
    }
}

fn run_on<B: Backend>(args: &GenerateArgs, out: &Output) -> Result<()> {
    let routers = RouterSet::<B>::load(&args.routers, &Default::default())
        .with_context(|| format!("routers in {}", args.routers.display()))?;
    let tok_path = args.routers.join("tokenizer.json");
    let tokenizer = TextTokenizer::load(&tok_path, None)
        .with_context(|| format!("tokenizer {}", tok_path.display()))?;
    let prompt = tokenizer.encode(&args.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt encodes to no tokens");
    let m = prompt.len().min(args.prefix.max(2));
    let scores = if m >= 2 {
        let source = VecSource::new(prompt[..m].to_vec(), m, None);
        score_rows(&routers.model_refs(), &source, &[0], m, 1, |_, _| {})?
    } else {
        vec![0.0; routers.experts()] // one token: nothing to score, every router ties
    };
    let matrix = smalltalk_partition::ScoreMatrix::new(&scores, routers.experts())?;
    let expert = smalltalk_partition::argmax_assign(&matrix)[0] as usize;
    let run = expert_dir(&args.experts, expert);
    let ckpt = Checkpoint::latest(&run.join("checkpoints"))?.with_context(|| {
        format!(
            "no checkpoint in {} (train expert {expert} first)",
            run.display()
        )
    })?;
    let model = ckpt.load_model::<B>(&Default::default())?;
    let why = format!(
        "expert {expert} answers (routed on {m} prompt tokens; router log-likelihoods {})",
        scores
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !out.is_json() {
        eprintln!("{why}");
        print!("{}", args.prompt);
    }
    let options = SamplingOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let eos = tokenizer.eos_id;
    let mut shown = String::new();
    let mut sofar = Vec::new();
    let ids = generate(&model, &prompt, args.max_tokens, &[eos], &options, |t| {
        if out.is_json() || t == eos {
            return;
        }
        sofar.push(t);
        // Print whatever decodes cleanly so far (byte-level BPE may split a character).
        if let Ok(text) = tokenizer.decode(&sofar) {
            if !text.ends_with('\u{FFFD}') && text.len() > shown.len() && text.starts_with(&shown) {
                print!("{}", &text[shown.len()..]);
                let _ = std::io::stdout().flush();
                shown = text;
            }
        }
    })?;
    let body: Vec<u32> = ids.iter().copied().filter(|&t| t != eos).collect();
    let text = tokenizer.decode(&body)?;
    if out.is_json() {
        out.result(
            &json!({"expert": expert, "prefix_tokens": m, "router_scores": scores,
                     "prompt": args.prompt, "completion": text, "tokens": ids.len()}),
            String::new,
        );
    } else {
        if text.len() > shown.len() && text.starts_with(&shown) {
            print!("{}", &text[shown.len()..]);
        }
        println!();
    }
    Ok(())
}
