//! `smalltalk generate`: flags → `smalltalk_mixture::Mixture::generate`, streaming to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_mixture::{GenerateOptions, Mixture, OpenOptions};

use crate::backends::on_backend;
use crate::report::Output;

/// `generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The mixture: a run folder (its mixture.json) or a mixture.json
    /// (`smalltalk mixture write`).
    #[arg(long)]
    mixture: PathBuf,
    /// The prompt (at least 2 tokens, so the routers can score it).
    #[arg(long)]
    prompt: String,
    /// Generate with members that stopped before the end of their schedule.
    #[arg(long)]
    allow_unfinished: bool,
    #[command(flatten)]
    options: GenerateOptions,
}

/// Run `smalltalk generate`.
pub fn run(args: GenerateArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let options = args.options;
    options.validate()?;
    let json = out.is_json();
    let stream = |piece: &str| {
        if !json {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    };
    let open = OpenOptions {
        allow_unfinished: args.allow_unfinished,
        ..OpenOptions::default()
    };
    let generation = on_backend!(backend, AB, _name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        let mixture = Mixture::<B>::open(&args.mixture, &open, &Default::default())
            .with_context(|| format!("the mixture of {}", args.mixture.display()))?;
        if !json {
            print!("{}", args.prompt);
        }
        mixture.generate(&args.prompt, &options, stream)?
    });
    if json {
        let mut value = serde_json::to_value(&generation)?;
        value["prompt"] = args.prompt.into();
        out.result(&value, String::new);
    } else {
        println!();
        let t = &generation.timing;
        eprintln!(
            "{} answered; routing {:.1} ms, loading {:.1} ms, prefill {:.1} ms, {} tokens in {:.1} ms",
            generation.routing.describe(),
            t.routing_seconds * 1e3,
            t.load_seconds * 1e3,
            t.prefill_seconds * 1e3,
            t.new_tokens,
            (t.prefill_seconds + t.decode_seconds) * 1e3
        );
    }
    Ok(())
}
