//! `smalltalk partition`: flags → `smalltalk_routing::partition_stage` with the trained routers.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_router::load_scorer;
use smalltalk_routing::partition_stage;

use crate::backends::on_backend;
use crate::progress::{BarProgress, BarStyle};
use crate::report::Output;
use smalltalk_report::RunConfig;

/// `partition` flags.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// Dataset folder (its training split is partitioned).
    #[arg(long)]
    data: PathBuf,
    /// Routers folder written by `smalltalk routers train`.
    #[arg(long)]
    routers: PathBuf,
    /// Output folder: expert-NN.rows (row indices of each expert) and partition.json.
    #[arg(long)]
    out: PathBuf,
    /// TOML config; its [partition] table sets the options (flags below override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rows balanced together [config: partition.chunk_sequences; default 262144].
    #[arg(long)]
    chunk: Option<usize>,
    /// Prefix scored per row; 0 = the routers' training prefix [config: partition.prefix_len].
    #[arg(long)]
    prefix: Option<usize>,
}

/// Run `smalltalk partition`.
pub fn run(args: PartitionArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let mut config = RunConfig::load_or_default(args.config.as_deref())?;
    let settings = &mut config.partition;
    settings.chunk_sequences = args.chunk.unwrap_or(settings.chunk_sequences);
    settings.prefix_len = args.prefix.unwrap_or(settings.prefix_len);
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Steps);
    let (outcome, name) = on_backend!(backend, AB, name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        let routers = load_scorer::<B>(&args.routers, &Default::default())
            .with_context(|| format!("routers in {}", args.routers.display()))?;
        (partition_stage(routers.as_ref(), &args.data, &args.out, settings, &mut progress), name)
    });
    if let Err(smalltalk_routing::RoutingError::Stopped) = outcome {
        return Ok(smalltalk_stage::stop::check(true, "partition", &args.out)?);
    }
    let outcome = outcome.with_context(|| format!("partitioning into {}", args.out.display()))?;
    let mut value = outcome.to_json(&args.out);
    value["backend"] = name.into();
    out.result(&value, || outcome.describe(&args.out));
    Ok(())
}
