//! `smalltalk route`: which expert each text goes to (`smalltalk_eval::TextRouter`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use smalltalk_data::CorpusReader;
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
        (None, Some(path)) => CorpusReader::texts(path)?,
        (None, None) => bail!("give --text or --file"),
    };
    on_backend!(backend, AB, _name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        let router = TextRouter::load::<B>(&args.routers, &Default::default())
            .with_context(|| format!("routers in {}", args.routers.display()))?;
        for (i, text) in texts.iter().enumerate() {
            let (value, line) = router.route_line(i, text, args.prefix)?;
            out.result(&value, || line);
        }
    });
    Ok(())
}
