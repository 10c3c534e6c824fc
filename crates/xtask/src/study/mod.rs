//! `cargo xtask study`: when does an asynchronous mixture beat a dense model of the same
//! inference cost? The paper's claim (§4, Tab 2) measured on our machines, over budgets.
//!
//! For each budget (expert steps) it trains, through the `smalltalk` binary and its stages: the
//! mixture under every routing method (EM routers with two seeds, TF-IDF as in c-BTM, random,
//! the corpus's domain labels), the dense baseline under both protocols (E× batch with the same
//! steps, the paper's, with two seeds; E× steps with the same batch), and evaluates each on
//! validation (documents of the training's own files) and test (whole files the training never
//! saw). It also measures routing purity against prefix length for EM routers and TF-IDF at
//! E = 4 and 8. Then it writes `study.json`, `report.md` and SVG plots. Every model is a stage:
//! rerunning the study skips what is done.

mod collect;
mod plan;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::jobs::{minutes, Job, Runner};
use crate::util::{build_cli, workspace_root};
use plan::{model_config, routers_config, Series, StudyLayout, METHODS};

/// Study options.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// Corpus (JSON lines with `domain` and `source`; default: ../shared/corpus/mix-large.jsonl.gz
    /// next to the workspace).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Study folder (created; reused on rerun: finished models are skipped).
    #[arg(long, default_value = "runs/study")]
    out: PathBuf,
    /// Where report.md, study.json and the plots are also written (committed results).
    #[arg(long, default_value = "results/study-cpu")]
    results: PathBuf,
    /// SmallTalk config of every stage (the study sets steps, warm-up, seed and protocol).
    #[arg(long, default_value = "configs/study-cpu.toml")]
    config: PathBuf,
    /// Budgets as steps of each expert. The defaults give about 1, 4, 12 and 32 training
    /// tokens per parameter for the dense model at the study config's size.
    #[arg(long, value_delimiter = ',', default_value = "10,40,120,320")]
    steps: Vec<usize>,
    /// Number of experts E of the mixtures.
    #[arg(long, default_value_t = 4)]
    experts: usize,
    /// Router counts of the purity study (EM routers and TF-IDF).
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    purity_experts: Vec<usize>,
    /// Commands run at once (they share the cores).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Measured work rate in training tokens per second for the time estimate (2 jobs on 2
    /// cores of an AMD EPYC, AVX2, at the study config's size).
    #[arg(long, default_value_t = 18_000.0)]
    rate: f64,
}

impl StudyArgs {
    /// The command that makes this study, as written into its report.
    fn command_line(&self) -> String {
        let list = |v: &[usize]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let corpus = self
            .corpus
            .as_ref()
            .map_or("../shared/corpus/mix-large.jsonl.gz".into(), |c| {
                c.display().to_string()
            });
        format!(
            "cargo xtask study --corpus {corpus} --config {} --out {} --results {} --steps {} \
             --experts {} --purity-experts {}",
            self.config.display(),
            self.out.display(),
            self.results.display(),
            list(&self.steps),
            self.experts,
            list(&self.purity_experts),
        )
    }
}

/// Prefix lengths of the purity study.
const PURITY_PREFIXES: &str = "16,32,64,128,256";
/// The evaluated splits: validation (the training's own files) and test (unseen files).
pub const SPLITS: [&str; 2] = ["validation", "test"];

/// Run the study.
pub fn run(args: StudyArgs) -> Result<()> {
    let root = workspace_root();
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(|| root.join("..").join("shared/corpus/mix-large.jsonl.gz"));
    let config_path = root.join(&args.config);
    let base: toml::Table = toml::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let layout = StudyLayout::new(&args.out);
    std::fs::create_dir_all(layout.root().join("bin"))?;
    std::fs::create_dir_all(layout.root().join("configs"))?;
    let built = build_cli(&[])?;
    copy_binary(&built, &layout.bin())?;
    let bin = layout.bin();
    let e = args.experts;
    let shape = collect::StudyShape::from_config(&base, e)?;
    println!(
        "study: corpus {}, folder {}, budgets {:?} expert steps, E = {e}",
        corpus.display(),
        layout.root().display(),
        args.steps
    );
    let est = plan_costs(&args, &shape);
    println!(
        "expected time at {:.0} tokens/s (measured on 2 cores, AMD EPYC, AVX2): about {}",
        args.rate,
        minutes(est / args.rate)
    );
    let mut runner = Runner::new(args.jobs, 2, layout.root().join("logs"), est)?;
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.arg("--json").args(args);
        c
    };
    let p = |p: &PathBuf| p.to_string_lossy().into_owned();
    let cfg = p(&config_path);
    let data = p(&layout.data());

    if !layout.tokenizer().exists() {
        let c = cmd(&[
            "data",
            "tokenizer",
            "--corpus",
            &p(&corpus),
            "--config",
            &cfg,
        ]);
        let mut c = c;
        c.arg("--out").arg(layout.tokenizer());
        runner.phase("tokenizer", vec![job("tokenizer", c, 30.0 * args.rate)])?;
    }
    let mut c = cmd(&["data", "build", "--corpus", &p(&corpus), "--config", &cfg]);
    c.args(["--tokenizer", &p(&layout.tokenizer()), "--out", &data]);
    runner.phase("data", vec![job("data", c, 60.0 * args.rate)])?;

    // Routing methods at E (partitions and mixtures); routing purity of EM and TF-IDF.
    let routers_job = |method: &str, n: usize| -> Result<Job> {
        let file = layout.root().join(format!("configs/routers-{method}.toml"));
        smalltalk_stage::atomic::write_file(&file, routers_config(&base, method)?.as_bytes())?;
        let mut c = cmd(&["routers", "train", "--data", &data, "--config", &p(&file)]);
        c.args([
            "--experts",
            &n.to_string(),
            "--out",
            &p(&layout.routers(method, n)),
        ]);
        Ok(job(
            &format!("routers-{method}-e{n}"),
            c,
            shape.routers_cost(method, n),
        ))
    };
    let routing_jobs = |counts: &[usize]| {
        let mut jobs = Vec::new();
        for method in ["em", "tfidf"] {
            for &n in counts {
                for split in SPLITS {
                    let out = layout.routing(method, n, split);
                    if out.exists() {
                        continue;
                    }
                    let mut c = cmd(&["eval", "--routing-only", "--data", &data, "--split", split]);
                    c.args(["--routers", &p(&layout.routers(method, n))]);
                    c.args(["--prefix", "8", "--prefix-sweep", PURITY_PREFIXES]);
                    let label = format!("routing-{method}-e{n}-{split}");
                    let mut j = job(&label, c, shape.routing_cost(n));
                    j.capture = Some(out);
                    jobs.push(j);
                }
            }
        }
        jobs
    };
    let routers = METHODS
        .iter()
        .map(|m| routers_job(m, e))
        .collect::<Result<_>>()?;
    runner.phase("routers", routers)?;
    let mut jobs = Vec::new();
    for method in METHODS {
        let mut c = cmd(&["partition", "--data", &data, "--config", &cfg]);
        c.args(["--routers", &p(&layout.routers(method, e))]);
        c.args(["--out", &p(&layout.partition(method))]);
        jobs.push(job(
            &format!("partition-{method}"),
            c,
            shape.partition_cost(method),
        ));
    }
    jobs.extend(routing_jobs(&[e]));
    runner.phase("partitions and routing purity", jobs)?;

    // Routers only for the purity study (router counts other than E): trained alongside the
    // largest budget's models, so that a long EM run does not hold one core while the other
    // idles.
    let others: Vec<usize> = args
        .purity_experts
        .iter()
        .copied()
        .filter(|&n| n != e)
        .collect();
    let mut purity_routers = Vec::new();
    for &n in &others {
        purity_routers.push(routers_job("em", n)?);
        purity_routers.push(routers_job("tfidf", n)?);
    }
    for (b, &steps) in args.steps.iter().enumerate() {
        let last = b + 1 == args.steps.len();
        let mut jobs = if last {
            std::mem::take(&mut purity_routers)
        } else {
            Vec::new()
        };
        for series in Series::all() {
            let Series { method, seed } = series;
            let dir = layout.models(steps, &series);
            std::fs::create_dir_all(&dir)?;
            let config = |seed: u64, protocol: &str| -> Result<String> {
                let file = layout.config(steps, seed, protocol);
                let text = model_config(&base, steps, seed, protocol)?;
                smalltalk_stage::atomic::write_file(&file, text.as_bytes())?;
                Ok(p(&file))
            };
            let file = config(seed, "batch")?;
            let label = format!("steps-{steps}/{}", series.name());
            for i in 0..e {
                let mut c = cmd(&["expert", "train", "--data", &data, "--config", &file]);
                c.args(["--partition", &p(&layout.partition(method))]);
                c.args(["--out", &p(&dir), "--expert", &i.to_string()]);
                let mut j = job(
                    &format!("{label}/expert-{i:02}"),
                    c,
                    shape.train_cost(steps, 1),
                );
                j.capture = Some(dir.join(format!("expert-{i:02}.json")));
                jobs.push(j);
            }
            if method != "em" {
                link(&format!("../em-s{seed}/dense"), &dir.join("dense"))?;
                continue;
            }
            let mut protocols = vec![("batch", file)];
            if seed == 0 {
                protocols.push(("steps", config(0, "steps")?));
            }
            for (protocol, file) in protocols {
                let mut c = cmd(&["dense", "train", "--data", &data, "--config", &file]);
                c.args([
                    "--out",
                    &p(&dir),
                    "--experts",
                    &e.to_string(),
                    "--scaling",
                    protocol,
                ]);
                let name = if protocol == "batch" {
                    "dense"
                } else {
                    "dense-steps"
                };
                let mut j = job(&format!("{label}/{name}"), c, shape.train_cost(steps, e));
                j.capture = Some(dir.join(format!("{name}.json")));
                jobs.push(j);
            }
        }
        // The longest jobs first, so that the last ones running do not leave a core idle.
        jobs.sort_by(|a, b| b.cost.total_cmp(&a.cost));
        runner.phase(&format!("models, {steps} expert steps"), jobs)?;
        // Each series' mixture manifest (its routers, partition and models), which the
        // evaluations read.
        let mut manifests = Vec::new();
        for series in Series::all() {
            let models = layout.models(steps, &series);
            let mut c = cmd(&["mixture", "write"]);
            c.args(["--routers", &p(&layout.routers(series.method, e))]);
            c.args(["--partition", &p(&layout.partition(series.method))]);
            c.args(["--experts", &p(&models)]);
            c.args(["--out", &p(&models.join("mixture.json"))]);
            let label = format!("mixture-steps-{steps}-{}", series.name());
            manifests.push(job(&label, c, 1.0));
        }
        runner.phase(
            &format!("mixture manifests, {steps} expert steps"),
            manifests,
        )?;
        let mut evals = Vec::new();
        std::fs::create_dir_all(layout.root().join(format!("evals/steps-{steps}")))?;
        for series in Series::all() {
            for split in SPLITS {
                let out = layout.eval(steps, &series, split);
                if out.exists() {
                    continue;
                }
                let mut c = cmd(&["eval", "--data", &data, "--split", split, "--prefix", "32"]);
                let models = layout.models(steps, &series);
                c.args(["--mixture", &p(&models.join("mixture.json"))]);
                c.args(["--out", &p(&out)]);
                evals.push(job(
                    &format!("eval-steps-{steps}-{}-{split}", series.name()),
                    c,
                    shape.eval_cost(split),
                ));
            }
        }
        if last {
            evals.extend(routing_jobs(&others));
        }
        runner.phase(&format!("evaluation, {steps} expert steps"), evals)?;
    }
    // When no budget took them: the purity study's routers and their routing.
    runner.phase("routers for the purity study", purity_routers)?;
    runner.phase("routing purity", routing_jobs(&others))?;
    let command = args.command_line();
    let study = collect::collect(
        &layout,
        &args.steps,
        e,
        &args.purity_experts,
        &shape,
        &command,
    )?;
    for dir in [layout.root().to_path_buf(), args.results.clone()] {
        study.write(&dir)?;
    }
    println!(
        "study done; report in {}",
        args.results.join("report.md").display()
    );
    Ok(())
}

/// A job without captured output.
fn job(label: &str, cmd: Command, cost: f64) -> Job {
    Job {
        label: label.into(),
        cmd,
        cost,
        capture: None,
    }
}

/// Symlink `link` → `target` (relative), unless it exists.
fn link(target: &str, link: &std::path::Path) -> Result<()> {
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(target, link)
            .with_context(|| format!("linking {} to {target}", link.display()))?;
    }
    Ok(())
}

/// Copy the built binary into the study folder (atomically), so that rebuilding the workspace
/// while the study runs does not change the program under it.
fn copy_binary(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// The whole study's estimated work (token-steps).
fn plan_costs(args: &StudyArgs, shape: &collect::StudyShape) -> f64 {
    let e = args.experts;
    let mut total = 90.0 * args.rate;
    for method in METHODS {
        total += shape.routers_cost(method, e) + shape.partition_cost(method);
    }
    for &n in args.purity_experts.iter().filter(|&&n| n != e) {
        total += shape.routers_cost("em", n) + shape.routers_cost("tfidf", n);
    }
    total += args
        .purity_experts
        .iter()
        .map(|&n| 4.0 * shape.routing_cost(n))
        .sum::<f64>();
    for &steps in &args.steps {
        // Per budget: 5 mixtures of E experts, 3 dense models of E× the tokens, 10 evaluations.
        total += 5.0 * e as f64 * shape.train_cost(steps, 1) + 3.0 * shape.train_cost(steps, e);
        total += 5.0 * (shape.eval_cost("validation") + shape.eval_cost("test"));
    }
    total
}
