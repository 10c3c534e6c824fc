//! `smalltalk route`: which member each text goes to (`smalltalk_mixture::Mixture::route`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use smalltalk_data::CorpusReader;
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_mixture::{Mixture, MixtureError, OpenOptions};
use smalltalk_routing::RoutingError;

use crate::backends::on_backend;
use crate::report::Output;

/// `route` flags.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The mixture: a run folder (its mixture.json) or a mixture.json
    /// (`smalltalk mixture write`).
    #[arg(long)]
    mixture: PathBuf,
    /// A text to route (an empty text, or one too short to route, is an error).
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// A file of texts: JSON lines (one text per line, field `text`) or a plain-text file (one
    /// text), optionally .gz/.zst. A text too short to route gets a row with the reason.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Routing prefix M̂ in tokens, at least 2 (texts shorter than this are routed on what
    /// there is). Default: the mixture's.
    #[arg(long)]
    prefix: Option<usize>,
    /// Route with members that stopped before the end of their schedule.
    #[arg(long)]
    allow_unfinished: bool,
}

/// Run `smalltalk route`.
pub fn run(args: RouteArgs, backend: BackendKind, out: &Output) -> Result<()> {
    if let Some(p) = args.prefix.filter(|&p| p < 2) {
        bail!("--prefix must be at least 2 (the first token is not scored), not {p}");
    }
    let texts = match (&args.text, &args.file) {
        (Some(t), _) if t.is_empty() => {
            bail!("--text is empty: there is nothing to route (give a text of at least 2 tokens)")
        }
        (Some(t), _) => vec![t.clone()],
        (None, Some(path)) => CorpusReader::texts(path)?,
        (None, None) => bail!("give --text or --file"),
    };
    let options = OpenOptions {
        allow_unfinished: args.allow_unfinished,
        ..OpenOptions::default()
    };
    on_backend!(backend, AB, _name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        let mixture = Mixture::<B>::open(&args.mixture, &options, &Default::default())
            .with_context(|| format!("the mixture of {}", args.mixture.display()))?;
        for (i, text) in texts.iter().enumerate() {
            match mixture.route(text, args.prefix) {
                Ok(r) => {
                    let mut value = serde_json::to_value(&r)?;
                    value["index"] = i.into();
                    // The member's position, as `expert` (what scripts of earlier versions read).
                    value["expert"] = r.index.into();
                    out.result(&value, || format!("text {i} -> {}", r.describe()));
                }
                // The one text of --text must be routed: too short, it is an error. A file's
                // texts each get a row, a too-short one with the reason.
                Err(MixtureError::Routing(e @ RoutingError::TooShort { .. })) if args.text.is_some() => {
                    bail!("--text cannot be routed: {e}")
                }
                Err(MixtureError::Routing(e @ RoutingError::TooShort { .. })) => out.result(
                    &serde_json::json!({"index": i, "expert": null, "member": null, "reason": e.to_string()}),
                    || format!("text {i}: {e}"),
                ),
                Err(e) => return Err(e.into()),
            }
        }
    });
    Ok(())
}
