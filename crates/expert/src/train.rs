//! The expert and dense stages: train one expert on its part of the partition, or the dense
//! baseline on all the rows.
//!
//! Run folders (under the experts folder given to the stages):
//! - `expert-NN/` — expert `NN`: `checkpoints/`, `metrics.jsonl` (see `smalltalk_lm::Trainer`),
//!   `config.toml` (the effective `[experts]` settings), `stage.json` + `.lock` (ownership,
//!   inputs: dataset, tokenizer, partition; settings; see `smalltalk_stage::folder`).
//! - `dense/` — the dense baseline, same layout (inputs: dataset, tokenizer).
//!
//! Every run resumes from its newest checkpoint when rerun and returns at once when finished —
//! only with the inputs and settings it was made with. A larger step budget for a started or
//! finished run is refused unless asked for with [`StepBudget::Extend`]: the run then
//! continues on the original schedule, whose last learning rate holds for the extra steps
//! (no jump back up the cosine).

use std::path::{Path, PathBuf};

use serde::Serialize;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::train::TrainSummary;
use smalltalk_lm::{
    Checkpoint, Lm, LmConfig, ProgressObserver, SequenceSource, SubsetSource, TrainConfig, Trainer,
};
use smalltalk_routing::{PartitionManifest, TrainingRows};
use smalltalk_stage::atomic::write_file;
use smalltalk_stage::folder::{Identity, SettingsPolicy, StageFolder};
use smalltalk_stage::layout::{dense_dir, dense_steps_dir, expert_dir};
use smalltalk_stage::Progress;

use crate::config::{DenseScaling, ExpertConfig};
use crate::error::{ExpertError, Result};

/// Whether a run's step budget may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepBudget {
    /// The budget must be the one the run was started with (the default).
    #[default]
    Fixed,
    /// Extend a started or finished run to a larger `total_steps`, continuing its original
    /// learning-rate schedule (the final rate holds for the added steps).
    Extend,
}

/// What a stage call did (serialised flat: `dir`, `skipped` and the summary's keys).
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// The run folder.
    pub dir: PathBuf,
    /// The trainer's summary.
    #[serde(flatten)]
    pub summary: TrainSummary,
}

impl RunOutcome {
    /// The outcome for people; `label` names the run (e.g. "expert 3").
    pub fn describe(&self, label: &str) -> String {
        let s = &self.summary;
        match (self.skipped(), s.last_loss) {
            (true, _) => format!(
                "{label} in {} is already trained (skipped)",
                self.dir.display()
            ),
            (false, Some(l)) => format!(
                "{label}: steps {}..{} in {}, last loss {l:.4}",
                s.start_step,
                s.end_step,
                self.dir.display()
            ),
            (false, None) => format!("{label}: nothing to do"),
        }
    }

    /// Whether the run was already finished (nothing trained).
    pub fn skipped(&self) -> bool {
        self.summary.start_step == self.summary.end_step && self.summary.finished
    }
}

/// Which expert to train, from which folders, into which.
#[derive(Debug, Clone, Copy)]
pub struct ExpertJob<'a> {
    /// The dataset folder (its training split).
    pub data: &'a Path,
    /// The partition folder.
    pub partition: &'a Path,
    /// The experts folder (the run goes to `expert-NN/` in it).
    pub experts: &'a Path,
    /// The expert's index.
    pub expert: usize,
    /// Whether the step budget may grow.
    pub budget: StepBudget,
}

/// Files that mark a run folder written before stage markers existed.
const LEGACY_FILES: [&str; 1] = ["checkpoints"];

/// Train expert `job.expert` from scratch on its part of the partition in `job.partition`
/// (rows of the training split of the dataset in `job.data`), into
/// `expert_dir(job.experts, job.expert)`.
/// Independent of every other expert: nothing but the dataset, the partition folder and the
/// settings is read. Refuses a partition made from other data, and a run folder made from
/// another partition, dataset or settings.
pub fn train_expert<AB: AutodiffBackend>(
    job: &ExpertJob<'_>,
    cfg: &ExpertConfig,
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<RunOutcome> {
    let ExpertJob {
        data: data_dir,
        partition: partition_dir,
        experts: experts_dir,
        expert,
        budget,
    } = *job;
    let rows = TrainingRows::open(data_dir)?;
    let partition = PartitionManifest::load(partition_dir)?;
    if partition.data_identity != rows.identity() || partition.rows != rows.reader.len() {
        return Err(ExpertError::Config(format!(
            "the partition {} was made from other training rows ({} rows, identity {}) than the dataset {} ({} rows, identity {})",
            partition_dir.display(),
            partition.rows,
            partition.data_identity,
            data_dir.display(),
            rows.reader.len(),
            rows.identity()
        )));
    }
    if expert >= partition.experts {
        return Err(ExpertError::Config(format!(
            "expert {expert} does not exist: the partition has {} (0..{})",
            partition.experts, partition.experts
        )));
    }
    let (model, init) = model_and_init::<AB>(cfg, rows.vocab_size())?;
    cfg.train.validate()?;
    check_fits(&model, rows.reader.row_len())?;
    let part = partition.read_rows(partition_dir, expert)?;
    #[derive(Serialize)]
    struct Settings<'a> {
        experts: &'a ExpertConfig,
        expert: usize,
    }
    let identity = Identity::new(
        "expert",
        &Settings {
            experts: cfg,
            expert,
        },
    )
    .input("dataset", rows.identity())
    .input("tokenizer", rows.tokenizer_hash())
    .input("partition", partition.fingerprint());
    let identity = with_init(identity, &init);
    let dir = expert_dir(experts_dir, expert);
    let folder = claim(&dir, &identity, budget)?;
    write_config(folder.dir(), cfg)?;
    let source = SubsetSource::new(&rows.reader, part);
    let summary = train_run::<AB>(
        &model,
        cfg.train.clone(),
        &folder,
        &source,
        (budget, cfg.init.as_deref()),
        device,
        progress,
    )?;
    Ok(RunOutcome { dir, summary })
}

/// Train the dense baseline on all training rows of the dataset in `data_dir`, with the same
/// total tokens as `experts` experts ([`ExpertConfig::dense_train`]): into
/// `dense_dir(experts_dir)` under the paper's protocol (E× batch), `dense_steps_dir` under
/// E× steps, so one run can hold both.
pub fn train_dense<AB: AutodiffBackend>(
    data_dir: &Path,
    experts_dir: &Path,
    cfg: &ExpertConfig,
    experts: usize,
    budget: StepBudget,
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<RunOutcome> {
    let rows = TrainingRows::open(data_dir)?;
    let (model, init) = model_and_init::<AB>(cfg, rows.vocab_size())?;
    let train = cfg.dense_train(experts)?;
    train.validate()?;
    check_fits(&model, rows.reader.row_len())?;
    #[derive(Serialize)]
    struct Settings<'a> {
        experts: &'a ExpertConfig,
        mixture_experts: usize,
    }
    let settings = Settings {
        experts: cfg,
        mixture_experts: experts,
    };
    let identity = Identity::new("dense", &settings)
        .input("dataset", rows.identity())
        .input("tokenizer", rows.tokenizer_hash());
    let identity = with_init(identity, &init);
    let dir = match cfg.dense_scaling {
        DenseScaling::Batch => dense_dir(experts_dir),
        DenseScaling::Steps => dense_steps_dir(experts_dir),
    };
    let folder = claim(&dir, &identity, budget)?;
    write_config(folder.dir(), cfg)?;
    let summary = train_run::<AB>(
        &model,
        train,
        &folder,
        &rows.reader,
        (budget, cfg.init.as_deref()),
        device,
        progress,
    )?;
    Ok(RunOutcome { dir, summary })
}

/// The model of every run: the preset with its overrides, or, when branch-training, the shape
/// of the `init` weights file (whose vocabulary must be the dataset's) and that file's checksum.
fn model_and_init<AB: AutodiffBackend>(
    cfg: &ExpertConfig,
    vocab_size: usize,
) -> Result<(LmConfig, Option<String>)> {
    let Some(path) = &cfg.init else {
        return Ok((cfg.model_config(vocab_size)?, None));
    };
    if path.is_dir() {
        return Err(ExpertError::Config(format!(
            "[experts] init {}: a folder; give a weights file (for a Hugging Face folder, `smalltalk import hf {} FILE` first)",
            path.display(),
            path.display()
        )));
    }
    let model = Lm::<AB>::config_of_file(path)?;
    if model.vocab_size != vocab_size {
        return Err(ExpertError::Config(format!(
            "[experts] init {}: its vocabulary has {} tokens, the dataset's {}; branch from a model trained with the dataset's tokenizer",
            path.display(),
            model.vocab_size,
            vocab_size
        )));
    }
    let hash = smalltalk_stage::checksum::hash_file(path)?;
    Ok((model, Some(hash)))
}

/// `identity` with the init weights' checksum as an input, when branch-training.
fn with_init(identity: Identity, init: &Option<String>) -> Identity {
    match init {
        Some(hash) => identity.input("init", hash.clone()),
        None => identity,
    }
}

/// Refuse a model that cannot hold a training row (before anything is written).
fn check_fits(model: &LmConfig, row_len: usize) -> Result<()> {
    model.validate()?;
    if row_len - 1 > model.max_seq_len {
        return Err(ExpertError::Config(format!(
            "[experts.model] max_seq_len {} is shorter than the dataset's {} positions per row",
            model.max_seq_len,
            row_len - 1
        )));
    }
    Ok(())
}

/// Claim a run folder; with [`StepBudget::Extend`] the recorded settings may differ in the
/// step budget only.
fn claim(dir: &Path, identity: &Identity, budget: StepBudget) -> Result<StageFolder> {
    let policy = match (budget, Identity::read(dir)?) {
        (StepBudget::Extend, Some(old)) => {
            let same_but_steps = |id: &Identity| {
                let mut v = id.settings.clone();
                v["experts"]["train"]["total_steps"] = serde_json::Value::Null;
                v
            };
            if same_but_steps(&old) != same_but_steps(identity) {
                return Err(ExpertError::Config(format!(
                    "{}: --extend changes only the step budget; other settings differ from the run's",
                    dir.display()
                )));
            }
            SettingsPolicy::Update
        }
        _ => SettingsPolicy::Same,
    };
    Ok(StageFolder::claim(dir, identity, &LEGACY_FILES, policy)?)
}

fn train_run<AB: AutodiffBackend>(
    model: &LmConfig,
    train: TrainConfig,
    folder: &StageFolder,
    source: &dyn SequenceSource,
    (budget, init): (StepBudget, Option<&Path>),
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let fresh = Checkpoint::latest(&folder.dir().join("checkpoints"))?.is_none();
    let mut trainer = match (init, budget) {
        (Some(init), _) if fresh => {
            let start = Lm::<AB>::from_safetensors(model, init, device)?;
            Trainer::<AB>::from_model(start, train, folder.dir())?
        }
        (_, StepBudget::Fixed) => Trainer::<AB>::new(model, train, folder.dir(), device)?,
        (_, StepBudget::Extend) => Trainer::<AB>::new_extended(model, train, folder.dir(), device)?,
    };
    let mut observer = ProgressObserver::new(progress);
    Ok(trainer.run(source, &mut observer)?)
}

/// The effective `[experts]` settings beside the run.
fn write_config(dir: &Path, cfg: &ExpertConfig) -> Result<()> {
    #[derive(Serialize)]
    struct ExpertsOnly<'a> {
        experts: &'a ExpertConfig,
    }
    let text = toml::to_string_pretty(&ExpertsOnly { experts: cfg }).expect("config serialises");
    write_file(&dir.join("config.toml"), text.as_bytes())?;
    Ok(())
}
