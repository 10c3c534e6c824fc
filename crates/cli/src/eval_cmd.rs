//! `smalltalk eval`: flags → `smalltalk_eval::eval_run`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use smalltalk_data::Split;
use smalltalk_eval::{eval_run, routing_quality, EvalData, EvalOptions};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;

use crate::backends::on_backend;
use crate::report::Output;

/// `eval` flags.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// What to evaluate: a dataset folder (its --split), or any held-out file (JSON lines with
    /// `text` and optionally `domain`, or plain text; .gz/.zst) tokenized with the run's
    /// tokenizer (the routers folder's tokenizer.json): each document's first tokens, up to the
    /// experts' training row length, form one row (shorter ones are padded). Documents with no
    /// token to score (empty text) are skipped and counted (`skipped_documents`), never
    /// averaged in.
    #[arg(long)]
    data: PathBuf,
    /// The mixture: a run folder (its mixture.json) or a mixture.json (`smalltalk mixture
    /// write`): its members' routers and experts and its dense baselines.
    #[arg(long, required_unless_present = "routers")]
    mixture: Option<PathBuf>,
    /// With --routing-only: a routers folder (`smalltalk routers train`), instead of a
    /// mixture's.
    #[arg(long, requires = "routing_only", conflicts_with = "mixture")]
    routers: Option<PathBuf>,
    /// Measure the routing alone (expert load and domain purity at every prefix; no experts
    /// needed): how well the routers split held-out text by its first tokens.
    #[arg(long)]
    routing_only: bool,
    /// Evaluate members that stopped before the end of their schedule (named in the report's
    /// `unfinished`).
    #[arg(long)]
    allow_unfinished: bool,
    /// Which split of a dataset folder to evaluate.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// Routing prefix M̂ in tokens (argmax over routers, no balancing); at least 2 and at most
    /// the row length: a longer one is refused (it is the headline result).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
    /// More routing prefixes to report in the same run, e.g. 8,16,32,64,128,256. The same
    /// rule as --prefix (2 to the row length); an entry longer than the rows is left out and
    /// named in the report (`prefix_sweep_left_out`, and a line of the summary), so one fixed
    /// sweep serves datasets of any row length (--routing-only alike).
    #[arg(long, value_delimiter = ',')]
    prefix_sweep: Vec<usize>,
    /// Seed of the random-routing baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON to this file (what `smalltalk report` reads as eval.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Run `smalltalk eval`.
pub fn run(args: EvalArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let data = EvalData::at(&args.data, args.split);
    let options = EvalOptions {
        allow_unfinished: args.allow_unfinished,
        ..EvalOptions::new(args.prefix, &args.prefix_sweep, args.seed)
    };
    let mixture = args.mixture.as_ref().filter(|_| !args.routing_only);
    let Some(mixture) = mixture else {
        let routers = match (&args.routers, &args.mixture) {
            (Some(r), _) => r.clone(),
            (None, Some(m)) => {
                let (manifest, file) = smalltalk_mixture::MixtureManifest::load(m)?;
                let root = file.parent().unwrap_or(std::path::Path::new("."));
                smalltalk_mixture::manifest::resolve(root, &manifest.routing.routers)
            }
            (None, None) => anyhow::bail!("give --mixture (or --routers with --routing-only)"),
        };
        let quality = on_backend!(backend, AB, _name => {
            type B = <AB as AutodiffBackend>::InnerBackend;
            routing_quality::<B>(&routers, &data, &options.prefixes, &Default::default())
        })
        .context("routing held-out rows")?;
        out.result(&quality, || quality.describe());
        return Ok(());
    };
    let (report, name) = on_backend!(backend, AB, name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        (eval_run::<B>(mixture, &data, &options, &Default::default()), name)
    });
    let report = report.context("evaluating the mixture")?;
    let mut value = serde_json::to_value(&report)?;
    value["backend"] = name.into();
    if let Some(path) = &args.out {
        smalltalk_stage::atomic::write_file(
            path,
            serde_json::to_string_pretty(&value)?.as_bytes(),
        )?;
        // What a killed earlier run left: a successful rerun leaves no temporaries.
        smalltalk_stage::atomic::remove_stale_temps(path)?;
    }
    out.result(&value, || report.describe());
    Ok(())
}
