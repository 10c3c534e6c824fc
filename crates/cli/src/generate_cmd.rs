//! `smalltalk generate`: flags → `smalltalk_eval::generate_text`, streaming to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use smalltalk_eval::{generate_text, GenerateOptions};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::SamplingOptions;

use crate::backends::on_backend;
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
    /// The prompt (at least 2 tokens, so the routers can score it).
    #[arg(long)]
    prompt: String,
    /// Routing prefix M̂, at least 2: the prompt's first M̂ tokens pick the expert (fewer when
    /// the prompt is shorter).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
    /// Tokens to generate at most (stops early at the end-of-document token).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature: > 0, or 0 for greedy decoding.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f64,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1].
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Run `smalltalk generate`.
pub fn run(args: GenerateArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let options = GenerateOptions {
        prefix: args.prefix,
        max_tokens: args.max_tokens,
        sampling: SamplingOptions {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    options.validate()?;
    let json = out.is_json();
    if !json {
        print!("{}", args.prompt);
    }
    let stream = |piece: &str| {
        if !json {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    };
    let generation = on_backend!(backend, AB, _name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        generate_text::<B>(&args.routers, &args.experts, &args.prompt, &options,
                           &Default::default(), stream)?
    });
    if json {
        let mut value = serde_json::to_value(&generation)?;
        value["prompt"] = args.prompt.into();
        out.result(&value, String::new);
    } else {
        println!();
        eprintln!("{} answered", generation.routed.describe());
    }
    Ok(())
}
