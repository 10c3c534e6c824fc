//! `smalltalk route`: which expert each text goes to (`smalltalk_eval::TextRouter`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use smalltalk_data::{CorpusFormat, CorpusReader};
use smalltalk_eval::TextRouter;
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;

use crate::backends::on_backend;
use crate::report::Output;

/// `route` flags.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Routers folder written by `smalltalk routers train` (holds the tokenizer too).
    #[arg(long)]
    routers: PathBuf,
    /// A text to route.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// A file of texts: JSON lines (one text per line, field `text`) or a plain-text file (one
    /// text), optionally .gz/.zst.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Routing prefix M̂ in tokens, at least 2 (texts shorter than this are routed on what
    /// there is).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
}

/// Run `smalltalk route`.
pub fn run(args: RouteArgs, backend: BackendKind, out: &Output) -> Result<()> {
    if args.prefix < 2 {
        bail!(
            "--prefix must be at least 2 (the first token is not scored), not {}",
            args.prefix
        );
    }
    let texts = match (&args.text, &args.file) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(path)) => {
            let mut texts = Vec::new();
            for doc in CorpusReader::open(std::slice::from_ref(path), CorpusFormat::default())? {
                texts.push(doc?.text);
            }
            if texts.is_empty() {
                bail!("{}: no texts to route", path.display());
            }
            texts
        }
        (None, None) => bail!("give --text or --file"),
    };
    on_backend!(backend, AB, _name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        let router = TextRouter::load::<B>(&args.routers, &Default::default())
            .with_context(|| format!("routers in {}", args.routers.display()))?;
        for (i, text) in texts.iter().enumerate() {
            match router.route(text, args.prefix) {
                Ok(r) => {
                    let mut value = serde_json::to_value(&r)?;
                    value["index"] = i.into();
                    out.result(&value, || format!("text {i} -> {}", r.describe()));
                }
                Err(smalltalk_eval::EvalError::Routing(
                    e @ smalltalk_routing::RoutingError::TooShort { .. },
                )) => out.result(&json!({"index": i, "expert": null, "reason": e.to_string()}),
                                 || format!("text {i}: {e}")),
                Err(e) => return Err(e.into()),
            }
        }
    });
    Ok(())
}
