//! `smalltalk routers train`: the EM stage (routers learn to split the training split).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use serde_json::json;
use smalltalk_data::{Dataset, SequenceReader, Split, Verify};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::StepMetrics;
use smalltalk_router::{train_routers, DomainLabels, EmData, EmObserver, IterationMetrics};

use crate::backends::{dispatch, BackendJob};
use crate::config::Config;
use crate::report::Output;

/// The router stage.
#[derive(Debug, Subcommand)]
pub enum RoutersCommand {
    /// Train E router LMs by hard EM on the training split of a dataset.
    ///
    /// Starts from a random equal split of a first chunk; each iteration trains every router
    /// for K steps on the first M tokens of its part, scores a fresh chunk with all routers and
    /// reassigns it with the balanced assignment. Writes OUT/{config.toml, tokenizer.json,
    /// router-NN/ (checkpoints, metrics.jsonl), em/state.json, em/metrics.jsonl, routers.json}.
    /// Resumable: rerun the same command after an interruption; a finished run is skipped.
    Train(TrainArgs),
}

/// `routers train` flags.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset folder written by `smalltalk data build`.
    #[arg(long)]
    data: PathBuf,
    /// Output folder for the routers.
    #[arg(long)]
    out: PathBuf,
    /// TOML config; its [routers] table sets every EM option (flags below override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of routers / experts E [config: routers.experts; default 4].
    #[arg(long)]
    experts: Option<usize>,
    /// EM iterations T [config: routers.iterations; default 94].
    #[arg(long)]
    iterations: Option<usize>,
    /// Router steps per iteration K [config: routers.steps_per_iteration; default 1373].
    #[arg(long)]
    steps: Option<usize>,
    /// Routing prefix M in tokens [config: routers.prefix_len; default 256].
    #[arg(long)]
    prefix: Option<usize>,
}

/// Run a `routers` command.
pub fn run(cmd: RoutersCommand, backend: BackendKind, out: &Output) -> Result<()> {
    match cmd {
        RoutersCommand::Train(args) => train(args, backend, out),
    }
}

/// The training split of a dataset with its domain labels and an identity string.
pub struct TrainingRows {
    /// The opened dataset.
    pub dataset: Dataset,
    /// Its training split.
    pub reader: SequenceReader,
    /// Domain label of every row (`u32::MAX`: none).
    pub labels: Vec<u32>,
    /// Tokenizer hash + shard checksums: what identifies the data.
    pub identity: String,
}

impl TrainingRows {
    /// Open the training split of the dataset in `dir` (checksums verified).
    pub fn open(dir: &Path) -> Result<Self> {
        let dataset = Dataset::open(dir).with_context(|| format!("dataset {}", dir.display()))?;
        let reader = dataset
            .reader(Split::Train, Verify::Checksums)
            .with_context(|| format!("training split of {}", dir.display()))?;
        let labels = (0..reader.len()).map(|i| reader.meta(i).domain).collect();
        let m = dataset.manifest();
        let train = m.split(Split::Train);
        let shards: Vec<&str> = train
            .shards
            .iter()
            .map(|s| s.tokens_checksum.as_str())
            .collect();
        let identity = format!("{}:{}", m.tokenizer.hash, shards.join(","));
        Ok(TrainingRows {
            dataset,
            reader,
            labels,
            identity,
        })
    }

    /// The rows as EM input (labels only when the dataset has domains).
    pub fn em_data(&self) -> EmData<'_> {
        let names = &self.dataset.manifest().domains;
        EmData {
            source: &self.reader,
            domains: (!names.is_empty()).then(|| DomainLabels {
                labels: &self.labels,
                names,
            }),
            identity: self.identity.clone(),
        }
    }
}

fn train(args: TrainArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let mut config = Config::load_or_default(args.config.as_deref())?;
    let r = &mut config.routers;
    if let Some(e) = args.experts {
        r.experts = e;
    }
    if let Some(t) = args.iterations {
        r.iterations = t;
    }
    if let Some(k) = args.steps {
        r.steps_per_iteration = k;
    }
    if let Some(m) = args.prefix {
        r.prefix_len = m;
    }
    let rows = TrainingRows::open(&args.data)?;
    let vocab = rows.dataset.manifest().tokenizer.vocab_size;
    if !r.model.contains_key("vocab_size") {
        r.model
            .insert("vocab_size".into(), toml::Value::Integer(vocab as i64));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let effective = toml::to_string_pretty(&RoutersOnly {
        routers: &config.routers,
    })
    .expect("config serialises");
    smalltalk_data::atomic::write_file(&args.out.join("config.toml"), effective.as_bytes())?;
    let tokenizer = rows
        .dataset
        .dir()
        .join(&rows.dataset.manifest().tokenizer.file);
    let tok_bytes =
        std::fs::read(&tokenizer).with_context(|| format!("reading {}", tokenizer.display()))?;
    smalltalk_data::atomic::write_file(&args.out.join("tokenizer.json"), &tok_bytes)?;
    dispatch(
        backend,
        TrainJob {
            config: &config,
            rows: &rows,
            out_dir: &args.out,
            out,
        },
    )
}

#[derive(serde::Serialize)]
struct RoutersOnly<'a> {
    routers: &'a smalltalk_router::EmConfig,
}

struct TrainJob<'a> {
    config: &'a Config,
    rows: &'a TrainingRows,
    out_dir: &'a Path,
    out: &'a Output,
}

impl BackendJob for TrainJob<'_> {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, name: &'static str) -> Result<()> {
        let cfg = &self.config.routers;
        let mut progress = EmProgress {
            bar: self.out.steps_bar("routers"),
            out: self.out,
            experts: cfg.experts,
            k: cfg.steps_per_iteration,
        };
        let data = self.rows.em_data();
        let summary =
            train_routers::<AB>(cfg, &data, self.out_dir, &Default::default(), &mut progress)
                .with_context(|| format!("training routers in {}", self.out_dir.display()))?;
        progress.bar.finish_and_clear();
        let last = summary.metrics.last();
        self.out.result(
            &json!({
                "stage": "routers", "backend": name, "dir": self.out_dir,
                "experts": cfg.experts, "iterations": summary.iterations_done,
                "resumed_from": summary.resumed_from,
                "skipped": summary.resumed_from >= cfg.iterations,
                "purity": last.and_then(|m| m.purity),
                "mean_best_nll": last.map(|m| m.mean_best_nll),
            }),
            || match (summary.resumed_from >= cfg.iterations, last) {
                (true, _) => format!(
                    "routers in {} are already trained (skipped)",
                    self.out_dir.display()
                ),
                (false, Some(m)) => format!(
                    "trained {} routers for {} iterations in {}: best prefix NLL {:.3}/token{}",
                    cfg.experts,
                    summary.iterations_done,
                    self.out_dir.display(),
                    m.mean_best_nll,
                    m.purity
                        .map_or(String::new(), |p| format!(", domain purity {p:.3}")),
                ),
                (false, None) => "no iteration ran".into(),
            },
        );
        Ok(())
    }
}

/// One bar over all router steps (E × K per iteration); a line per iteration.
struct EmProgress<'a> {
    bar: ProgressBar,
    out: &'a Output,
    experts: usize,
    k: usize,
}

impl EmObserver for EmProgress<'_> {
    fn on_start(&mut self, done: usize, total: usize) {
        self.bar.set_length((total * self.k * self.experts) as u64);
        self.bar.set_position((done * self.k * self.experts) as u64);
        self.bar.reset_eta();
    }
    fn on_router_step(&mut self, iteration: usize, router: usize, m: &StepMetrics) {
        let within = m.step - (iteration - 1) * self.k;
        let pos = ((iteration - 1) * self.experts + router) * self.k + within;
        self.bar.set_position(pos as u64);
        self.bar.set_message(format!(
            "iteration {iteration}, router {router}: loss {:.3}, {:.0} tok/s",
            m.loss, m.tokens_per_s
        ));
    }
    fn on_scoring(&mut self, iteration: usize, done: usize, total: usize) {
        self.bar
            .set_message(format!("iteration {iteration}: scoring {done}/{total}"));
    }
    fn on_iteration(&mut self, m: &IterationMetrics) {
        let value = serde_json::to_value(m).expect("metrics serialise");
        let line = format!(
            "iteration {:>3}: train loss {}  best prefix NLL {:.3}  argmax load {}  changed {}  purity {}",
            m.iteration,
            m.train_loss.iter().map(|l| format!("{l:.3}")).collect::<Vec<_>>().join("/"),
            m.mean_best_nll,
            m.argmax_load.iter().map(|l| format!("{l:.2}")).collect::<Vec<_>>().join("/"),
            m.changed_fraction.map_or("-".into(), |c| format!("{c:.3}")),
            m.purity.map_or("-".into(), |p| format!("{p:.3}")),
        );
        self.bar.suspend(|| self.out.result(&value, || line));
    }
}
