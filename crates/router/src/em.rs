//! Hard EM over E router LMs (paper §2.2, Algorithm 1): random equal split of a first chunk;
//! per iteration train each router for K steps on the M-token prefixes of its part (M-step),
//! score a fresh chunk with every router and reassign it with the balanced assignment
//! (E-step).
//!
//! Files under the routers directory:
//! - `router-NN/` — each router's training run (checkpoints, `metrics.jsonl`), see
//!   `smalltalk_lm::Trainer`; a checkpoint is written at the end of every iteration.
//! - `em/metrics.jsonl` — one [`IterationMetrics`] per completed iteration.
//! - `em/state.json` — [`EmState`]: the commit point of an iteration, written after every
//!   router saved its checkpoint and after the metrics line.
//! - `routers.json` — [`RoutersManifest`], written when the last iteration is done.
//!
//! An iteration is committed as a whole: on a rerun, router checkpoints newer than the
//! committed iteration and metrics lines beyond it are discarded, so a kill at any instant
//! leaves either the previous iteration or the next one, and the resumed run ends bit-identical
//! to an uninterrupted one on CPU. A finished run returns at once. A stop request
//! (`smalltalk_stage::stop`) ends the call after the current router step without committing
//! the partial iteration.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::train::{Sampler, SamplerPosition};
use smalltalk_lm::{
    Checkpoint, ModelSet, SequenceSource, StepMetrics, SubsetSource, TrainObserver, Trainer,
};
use smalltalk_partition::{
    argmax_assign, balanced_assign, equal_capacities, part_sizes, random_balanced_assign,
    ScoreMatrix,
};
use smalltalk_routing::{best_nll_sum, domain_mix, purity, DomainLabels};
use smalltalk_stage::Progress;

use crate::config::EmConfig;
use crate::error::{Result, RouterError};
use crate::manifest::RoutersManifest;
use crate::metrics::{iteration_line, load_metrics, save_metrics, IterationMetrics};
use crate::scoring::score_rows;
use crate::state::{EmState, STATE_FORMAT, UNASSIGNED};

/// The training rows EM splits, with optional domain labels (for purity metrics only).
pub struct EmData<'a> {
    /// Training rows (`row_len ≥ prefix_len`).
    pub source: &'a dyn SequenceSource,
    /// Domain label of every row of `source`, if the corpus has them.
    pub domains: Option<DomainLabels<'a>>,
    /// A string that identifies the data (e.g. the dataset's tokenizer hash and checksums);
    /// a rerun on other data is refused.
    pub identity: String,
}

/// What a call to [`run_em`] did.
#[derive(Debug, Clone)]
pub struct EmSummary {
    /// Iterations completed before this call.
    pub resumed_from: usize,
    /// Iterations completed now.
    pub iterations_done: usize,
    /// Metrics of every completed iteration (including earlier calls').
    pub metrics: Vec<IterationMetrics>,
    /// The manifest of the finished routers (`None` when a stop request ended the call
    /// early).
    pub manifest: Option<RoutersManifest>,
    /// Whether a stop request ended the call before the last iteration.
    pub stopped: bool,
}

impl EmSummary {
    /// The outcome for scripts: the folder, iterations done and planned, whether the run was
    /// already finished (skipped), and the last iteration's purity and mean best NLL.
    pub fn to_json(&self, dir: &Path, cfg: &EmConfig) -> serde_json::Value {
        let last = self.metrics.last();
        serde_json::json!({
            "stage": "routers", "dir": dir, "experts": cfg.experts,
            "iterations": self.iterations_done, "resumed_from": self.resumed_from,
            "skipped": self.resumed_from >= cfg.iterations,
            "purity": last.and_then(|m| m.purity),
            "mean_best_nll": last.map(|m| m.mean_best_nll),
        })
    }

    /// The outcome for people.
    pub fn describe(&self, dir: &Path) -> String {
        if let Some(m) = self.manifest.as_ref().filter(|m| !m.method.is_em()) {
            return format!(
                "`{}` routing for {} experts in {}",
                m.method.name(),
                m.experts,
                dir.display()
            );
        }
        match (
            self.resumed_from == self.iterations_done,
            self.metrics.last(),
        ) {
            (true, _) => format!("routers in {} are already trained (skipped)", dir.display()),
            (false, Some(m)) => format!(
                "trained {} routers for {} iterations in {}: best prefix NLL {:.3}/token{}",
                m.part_sizes.len(),
                self.iterations_done,
                dir.display(),
                m.mean_best_nll,
                m.purity
                    .map_or(String::new(), |p| format!(", domain purity {p:.3}")),
            ),
            (false, None) => "no iteration ran".into(),
        }
    }
}

/// Rows of chunk `i`: consecutive slices of seeded epoch permutations of the `n` training
/// rows, so chunks are fresh until the split is used up and then revisit rows.
pub fn chunk_rows(seed: u64, n: usize, chunk: usize, i: usize) -> Vec<usize> {
    let start = (i * chunk) as u64;
    let position = SamplerPosition {
        epoch: start / n as u64,
        index: start % n as u64,
    };
    Sampler::new(seed ^ 0x454d_4348_554e_4b53, n, position).next_batch(chunk)
}

/// Router `e`'s run directory.
pub fn router_dir(dir: &Path, e: usize) -> PathBuf {
    dir.join(format!("router-{e:02}"))
}

/// Roll router `e` back to the committed step: remove its newer checkpoints (written by an
/// iteration that was interrupted before `em/state.json` recorded it).
fn discard_uncommitted(dir: &Path, e: usize, committed_step: usize) -> Result<()> {
    let ckpts = router_dir(dir, e).join("checkpoints");
    for (step, path) in Checkpoint::list(&ckpts)? {
        if step > committed_step {
            std::fs::remove_dir_all(&path).map_err(|err| RouterError::io(&path, err))?;
        }
    }
    Ok(())
}

fn fingerprint(cfg: &EmConfig, data: &EmData<'_>) -> String {
    let text = format!(
        "{}|{}|{}|{}",
        serde_json::to_string(cfg).expect("config serialises"),
        data.source.num_sequences(),
        data.source.row_len(),
        data.identity
    );
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// Reports router steps as progress and averages the losses.
struct StepRelay<'a> {
    progress: &'a mut dyn Progress,
    iteration: usize,
    router: usize,
    experts: usize,
    k: usize,
    loss_sum: f64,
    steps: usize,
}

impl TrainObserver for StepRelay<'_> {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        self.loss_sum += m.loss;
        self.steps += 1;
        let within = m.step - (self.iteration - 1) * self.k;
        let done = ((self.iteration - 1) * self.experts + self.router) * self.k + within;
        self.progress.update(
            done as u64,
            &format!(
                "iteration {}, router {}: loss {:.3}, {:.0} tok/s",
                self.iteration, self.router, m.loss, m.tokens_per_s
            ),
        );
        ControlFlow::Continue(())
    }
}

/// Train `cfg.experts` routers by hard EM on `data` in `dir` (see the module docs), resuming
/// from whatever an earlier call committed. Progress counts router steps (E × K per
/// iteration); every iteration is also reported as a note and a JSON record. Most callers
/// want the stage, [`crate::train_routers`], which also writes the folder's config, tokenizer
/// and identity.
pub fn run_em<AB: AutodiffBackend>(
    cfg: &EmConfig,
    data: &EmData<'_>,
    dir: &Path,
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<EmSummary> {
    let source = data.source;
    cfg.validate(source.row_len())?;
    let model_cfg = cfg.model_config()?;
    let (n_rows, experts) = (source.num_sequences(), cfg.experts);
    if n_rows < experts {
        return Err(RouterError::Config(format!(
            "{n_rows} training rows cannot be split among {experts} routers"
        )));
    }
    let chunk = cfg.chunk_len(n_rows);
    let fp = fingerprint(cfg, data);
    let mut state = match EmState::load(dir)? {
        Some(s) if s.fingerprint != fp => {
            return Err(RouterError::state(
                EmState::path(dir),
                "this routers directory was trained with other settings or data; \
                 use a new directory (or delete this one)",
            ))
        }
        Some(s) => s,
        None => {
            let start = random_balanced_assign(chunk, experts, cfg.seed)?;
            let s = EmState {
                format: STATE_FORMAT,
                fingerprint: fp.clone(),
                iterations_done: 0,
                assignment: start.into_iter().map(|e| e as u16).collect(),
                last_expert: vec![UNASSIGNED; n_rows],
            };
            s.save(dir)?;
            s
        }
    };
    let resumed_from = state.iterations_done;
    let mut metrics = load_metrics(dir, resumed_from)?;
    let k = cfg.steps_per_iteration;
    if resumed_from >= cfg.iterations {
        let manifest = match RoutersManifest::load(dir) {
            Ok(m) => m,
            // Killed after the last commit but before the manifest: write it now.
            Err(_) => {
                let trainers = open_trainers::<AB>(cfg, dir, resumed_from * k, device)?;
                let m = RoutersManifest::new(cfg, model_cfg, &trainers, fp);
                m.save(dir)?;
                m
            }
        };
        return Ok(EmSummary {
            resumed_from,
            iterations_done: resumed_from,
            metrics,
            manifest: Some(manifest),
            stopped: false,
        });
    }
    save_metrics(dir, &metrics)?;
    let mut trainers = open_trainers::<AB>(cfg, dir, resumed_from * k, device)?;
    let total_steps = (cfg.iterations * experts * k) as u64;
    progress.start("routers", (resumed_from * experts * k) as u64, total_steps);
    for i in state.iterations_done..cfg.iterations {
        let started = Instant::now();
        let rows = chunk_rows(cfg.seed, n_rows, chunk, i);
        // M-step: each router trains K steps on its part of chunk i.
        let mut train_loss = Vec::with_capacity(experts);
        for (e, trainer) in trainers.iter_mut().enumerate() {
            let part: Vec<usize> = rows
                .iter()
                .zip(&state.assignment)
                .filter(|(_, &a)| a as usize == e)
                .map(|(&r, _)| r)
                .collect();
            if trainer.step() == i * k {
                trainer.start_new_data();
            }
            let mut relay = StepRelay {
                progress: &mut *progress,
                iteration: i + 1,
                router: e,
                experts,
                k,
                loss_sum: 0.0,
                steps: 0,
            };
            let run =
                trainer.run_until((i + 1) * k, &SubsetSource::new(source, part), &mut relay)?;
            if run.stopped || trainer.step() != (i + 1) * k {
                // A stop request: leave the iteration uncommitted (a rerun redoes it).
                progress.finish();
                return Ok(EmSummary {
                    resumed_from,
                    iterations_done: state.iterations_done,
                    metrics,
                    manifest: None,
                    stopped: true,
                });
            }
            train_loss.push(relay.loss_sum / relay.steps.max(1) as f64);
        }
        // E-step on a fresh chunk.
        let next_rows = chunk_rows(cfg.seed, n_rows, chunk, i + 1);
        let models = ModelSet::new(trainers.iter().map(|t| t.valid_model()).collect());
        let scores = score_rows(
            &models,
            source,
            &next_rows,
            cfg.prefix_len,
            cfg.score_batch,
            |done, total| {
                let at = ((i + 1) * experts * k) as u64;
                progress.update(at, &format!("iteration {}: scoring {done}/{total}", i + 1))
            },
        )?;
        let matrix = ScoreMatrix::new(&scores, experts)?;
        let next = balanced_assign(&matrix, &equal_capacities(next_rows.len(), experts))?;
        let m = iteration_metrics(cfg, data, &mut state, (i, &next_rows, &next), &matrix)?;
        let m = IterationMetrics {
            router_steps: (i + 1) * k,
            train_loss,
            seconds: started.elapsed().as_secs_f64(),
            ..m
        };
        metrics.push(m.clone());
        save_metrics(dir, &metrics)?;
        state.iterations_done = i + 1;
        state.assignment = next.iter().map(|&e| e as u16).collect();
        state.save(dir)?;
        progress.note(&iteration_line(&m));
        progress.record(&serde_json::to_value(&m).expect("metrics serialise"));
    }
    progress.finish();
    let manifest = RoutersManifest::new(cfg, model_cfg, &trainers, fp);
    manifest.save(dir)?;
    Ok(EmSummary {
        resumed_from,
        iterations_done: state.iterations_done,
        metrics,
        manifest: Some(manifest),
        stopped: false,
    })
}

/// The E routers' trainers, rolled back to the committed step `committed_step`.
fn open_trainers<AB: AutodiffBackend>(
    cfg: &EmConfig,
    dir: &Path,
    committed_step: usize,
    device: &AB::Device,
) -> Result<Vec<Trainer<AB>>> {
    let model_cfg = cfg.model_config()?;
    (0..cfg.experts)
        .map(|e| {
            discard_uncommitted(dir, e, committed_step)?;
            let t = Trainer::<AB>::new(&model_cfg, cfg.router_train(e), router_dir(dir, e), device)?;
            if t.step() != committed_step {
                return Err(RouterError::state(
                    router_dir(dir, e).join("checkpoints"),
                    format!(
                        "router {e} has no checkpoint at the committed step {committed_step} (it is at {})",
                        t.step()
                    ),
                ));
            }
            Ok(t)
        })
        .collect()
}

/// The E-step's metrics for chunk `rows` assigned `next` after iteration `i` (0-based);
/// updates `state.last_expert`. Training fields are filled in by the caller.
fn iteration_metrics(
    cfg: &EmConfig,
    data: &EmData<'_>,
    state: &mut EmState,
    (i, rows, next): (usize, &[usize], &[u32]),
    matrix: &ScoreMatrix<'_>,
) -> Result<IterationMetrics> {
    let experts = cfg.experts;
    let argmax = argmax_assign(matrix);
    let argmax_sizes = part_sizes(&argmax, experts)?;
    let tokens = (cfg.prefix_len - 1) as f64;
    let best_nll = best_nll_sum(matrix) / (rows.len() as f64 * tokens);
    let (mut seen, mut changed) = (0usize, 0usize);
    for (&r, &e) in rows.iter().zip(next) {
        let last = &mut state.last_expert[r];
        if *last != UNASSIGNED {
            seen += 1;
            changed += usize::from(*last as u32 != e);
        }
        *last = e as u16;
    }
    let mix = data
        .domains
        .as_ref()
        .map(|d| domain_mix(next, rows, experts, d));
    Ok(IterationMetrics {
        iteration: i + 1,
        router_steps: 0,
        train_loss: vec![],
        scored: rows.len(),
        part_sizes: part_sizes(next, experts)?,
        argmax_load: argmax_sizes
            .iter()
            .map(|&s| s as f64 / rows.len() as f64)
            .collect(),
        mean_best_nll: best_nll,
        changed_fraction: (seen > 0).then(|| changed as f64 / seen as f64),
        purity: mix.as_deref().and_then(purity),
        domain_mix: mix,
        seconds: 0.0,
    })
}
