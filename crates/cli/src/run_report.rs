//! `smalltalk report`: the run report, written by [`smalltalk_report::write_report`] into the
//! run folder (`report.md`, SVG plots, `report.json`, and `config.toml`: every stage's
//! effective settings, collected from the stage folders).

use std::path::PathBuf;

use anyhow::Result;
use smalltalk_report::RunLayout;

/// `report` flags.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run folder: data/, routers/, partition/, experts/, eval.json (and
    /// stage_seconds.json).
    #[arg(long)]
    run: PathBuf,
    /// The config file the run used (quoted in the report).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Run `smalltalk report`: write the report and print the headline table (the report as JSON
/// with --json).
pub fn run(args: ReportArgs, out: &crate::report::Output) -> Result<()> {
    let layout = RunLayout::new(&args.run);
    let report = smalltalk_report::write_report(&layout, args.config.as_deref())?;
    let value = serde_json::to_value(&report)?;
    out.result(&value, || {
        format!(
            "{}\nreport: {}",
            report.headline(),
            layout.report_md().display()
        )
    });
    Ok(())
}
