//! `smalltalk generate`: flags → `smalltalk_eval::generate_text`, streaming to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use smalltalk_eval::{generate_text, GenerateOptions};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;

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
    #[command(flatten)]
    options: GenerateOptions,
}

/// Run `smalltalk generate`.
pub fn run(args: GenerateArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let options = args.options;
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
