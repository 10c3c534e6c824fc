//! `smalltalk mixture write|show|check`: the mixture's manifest (`mixture.json`, see
//! `smalltalk_mixture`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use smalltalk_mixture::{
    check, write_manifest, MixtureManifest, MixtureSources, WriteOptions, MIXTURE_FILE,
};
use smalltalk_stage::RunLayout;

use crate::report::Output;

/// `mixture` subcommands.
#[derive(Debug, Subcommand)]
pub enum MixtureCommand {
    /// Write the manifest of a trained mixture: every member's router and expert (paths,
    /// checksums, parameters, training data, final step), the routing, the tokenizer, the
    /// dense baselines. Refuses experts of another partition or tokenizer and unfinished ones.
    Write(WriteArgs),
    /// Print a manifest's members, routing and tokenizer.
    Show(PathArg),
    /// Verify a manifest: every file present, every checksum and tokenizer hash as recorded.
    Check(CheckArgs),
}

/// `mixture write` flags.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// A run folder (`cargo xtask pipeline`'s layout): its routers/, partition/ and experts/,
    /// the manifest at RUN/mixture.json.
    #[arg(long, conflicts_with_all = ["routers", "partition", "experts"])]
    run: Option<PathBuf>,
    /// The routers folder.
    #[arg(long, requires_all = ["partition", "experts", "out"])]
    routers: Option<PathBuf>,
    /// The partition folder the routers made.
    #[arg(long)]
    partition: Option<PathBuf>,
    /// The folder of the experts (and dense baselines).
    #[arg(long)]
    experts: Option<PathBuf>,
    /// The manifest file to write (with --run: RUN/mixture.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The routing prefix M̂ readers use by default.
    #[arg(long, default_value_t = 32)]
    prefix: usize,
    /// Accept experts that stopped before the end of their schedule (recorded per member).
    #[arg(long)]
    allow_unfinished: bool,
}

/// A manifest: a run folder or a mixture.json.
#[derive(Debug, Args)]
pub struct PathArg {
    /// A run folder (its mixture.json) or a manifest file.
    path: PathBuf,
}

/// `mixture check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A run folder (its mixture.json) or a manifest file.
    path: PathBuf,
    /// Accept unfinished members even where the manifest does not record them as accepted.
    #[arg(long)]
    allow_unfinished: bool,
}

/// Run `smalltalk mixture …`.
pub fn run(cmd: MixtureCommand, out: &Output) -> Result<()> {
    match cmd {
        MixtureCommand::Write(a) => {
            let (sources, file) = match (&a.run, &a.routers, &a.partition, &a.experts) {
                (Some(run), ..) => {
                    let run = RunLayout::new(run);
                    let file = a.out.clone().unwrap_or_else(|| run.mixture());
                    (MixtureSources::of_run(&run), file)
                }
                (None, Some(r), Some(p), Some(e)) => {
                    let sources = MixtureSources {
                        routers: r.clone(),
                        partition: p.clone(),
                        experts: e.clone(),
                    };
                    let file = a.out.clone().unwrap_or_else(|| e.join(MIXTURE_FILE));
                    (sources, file)
                }
                _ => bail!("give --run RUN, or --routers, --partition, --experts and --out"),
            };
            let options = WriteOptions {
                prefix: a.prefix,
                allow_unfinished: a.allow_unfinished,
            };
            let m = write_manifest(&sources, &file, &options)?;
            let value = serde_json::json!({"manifest": file, "members": m.names()});
            out.result(&value, || {
                format!("wrote {} ({} members)", file.display(), m.members.len())
            });
        }
        MixtureCommand::Show(a) => {
            let (m, file) = MixtureManifest::load(&a.path)?;
            out.result(&m, || describe(&m, &file));
        }
        MixtureCommand::Check(a) => {
            let report = check(&a.path, a.allow_unfinished)?;
            out.result(&report, || {
                let mut s = format!(
                    "{}: {} members, {} dense baselines, {} checksums verified: ok",
                    report.manifest, report.members, report.dense, report.checksums
                );
                if !report.unfinished.is_empty() {
                    s += &format!(" (unfinished, accepted: {})", report.unfinished.join(", "));
                }
                s
            });
        }
    }
    Ok(())
}

/// The manifest for people.
fn describe(m: &MixtureManifest, file: &std::path::Path) -> String {
    let r = &m.routing;
    let mut s = format!(
        "{}\nrouting: {} routers in {} (trained on {} tokens), prefix M̂ = {}\ntokenizer: {} ({})\npartition: {} ({})\nmembers:\n",
        file.display(),
        r.method,
        r.routers,
        r.trained_prefix,
        r.prefix,
        m.tokenizer.file,
        m.tokenizer.hash,
        m.partition.dir,
        m.partition.fingerprint
    );
    let model = |x: &smalltalk_mixture::ModelRecord| {
        format!(
            "{} ({} parameters, step {} of {}{})",
            x.weights,
            x.parameters,
            x.step,
            x.steps,
            if x.finished { "" } else { ", UNFINISHED" }
        )
    };
    for member in &m.members {
        s += &format!("  {} (score offset {})\n", member.name, member.score_offset);
        if let Some(r) = &member.router {
            s += &format!("    router: {}\n", model(r));
        }
        s += &format!("    expert: {}\n", model(&member.expert));
    }
    for d in &m.dense {
        s += &format!("  {} (dense baseline): {}\n", d.name, model(&d.model));
    }
    s.trim_end().to_string()
}
