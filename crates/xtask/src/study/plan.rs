//! What the study trains and evaluates: the series of each budget, where each lives in the
//! study folder, and the `smalltalk` command that makes it.
//!
//! Layout of the study folder (`--out`):
//! - `bin/smalltalk`: the binary the study runs (a copy, so rebuilds do not change it midway)
//! - `tokenizer.json`, `data/`: one dataset for everything
//! - `routers/<method>-e<E>/`, `partitions/<method>/`: routing methods (E = 4 and 8 routers;
//!   partitions and experts at E = 4)
//! - `configs/steps-<S>-seed-<k>-<protocol>.toml`: the effective config of each model
//! - `models/steps-<S>/<series>/`: `expert-NN/` and `dense/` of each series (a link to seed
//!   0's EM `dense/` for the other methods), and in `em-s0/` also `dense-steps/`
//! - `evals/steps-<S>/<series>-<split>.json`, `routing/<method>-e<E>-<split>.json`

use std::path::{Path, PathBuf};

/// The methods that partition the corpus and route, as `[routers] method` names them.
pub const METHODS: [&str; 4] = ["em", "tfidf", "random", "domain"];

/// One mixture of a budget: E experts on the partition of `method`, trained with `seed`.
/// Its folder's `dense/` is the paper's dense (E× batch) of the same seed for EM, a link to
/// seed 0's otherwise; EM seed 0's folder also holds the E×-steps dense (`dense-steps/`), so
/// its evaluation reports the mixture against both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    /// Routing method.
    pub method: &'static str,
    /// Seed of the experts' (and, for EM, the dense models') initialisation and data order.
    pub seed: u64,
}

impl Series {
    /// Every series of one budget, in training order: EM with seeds 0 and 1, then the other
    /// methods with seed 0.
    pub fn all() -> Vec<Series> {
        let mut all = vec![
            Series {
                method: "em",
                seed: 0,
            },
            Series {
                method: "em",
                seed: 1,
            },
        ];
        all.extend(
            METHODS[1..]
                .iter()
                .map(|&method| Series { method, seed: 0 }),
        );
        all
    }

    /// Folder name under `models/steps-<S>/`.
    pub fn name(&self) -> String {
        format!("{}-s{}", self.method, self.seed)
    }
}

/// Paths of the study folder.
#[derive(Debug, Clone)]
pub struct StudyLayout {
    root: PathBuf,
}

impl StudyLayout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The study folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The copy of the `smalltalk` binary.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin/smalltalk")
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }

    /// The dataset.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Routers of `method` with `experts` experts.
    pub fn routers(&self, method: &str, experts: usize) -> PathBuf {
        self.root.join(format!("routers/{method}-e{experts}"))
    }

    /// The partition of `method` (at the study's E).
    pub fn partition(&self, method: &str) -> PathBuf {
        self.root.join(format!("partitions/{method}"))
    }

    /// The config of the models of budget `steps`, `seed` and dense protocol `protocol`.
    pub fn config(&self, steps: usize, seed: u64, protocol: &str) -> PathBuf {
        self.root
            .join(format!("configs/steps-{steps}-seed-{seed}-{protocol}.toml"))
    }

    /// The folder of `series` at budget `steps`.
    pub fn models(&self, steps: usize, series: &Series) -> PathBuf {
        self.root
            .join(format!("models/steps-{steps}/{}", series.name()))
    }

    /// The evaluation of `series` at budget `steps` on `split`.
    pub fn eval(&self, steps: usize, series: &Series, split: &str) -> PathBuf {
        self.root.join(format!(
            "evals/steps-{steps}/{}-{split}.json",
            series.name()
        ))
    }

    /// Routing alone (purity per prefix) of `method` with `experts` routers on `split`.
    pub fn routing(&self, method: &str, experts: usize, split: &str) -> PathBuf {
        self.root
            .join(format!("routing/{method}-e{experts}-{split}.json"))
    }
}

/// The effective config of the models of one budget: `base` (a SmallTalk config) with the
/// experts' steps, warm-up (5% of the steps, at least 1), seed and dense protocol set.
pub fn model_config(
    base: &toml::Table,
    steps: usize,
    seed: u64,
    protocol: &str,
) -> anyhow::Result<String> {
    let mut cfg = base.clone();
    let experts = table(&mut cfg, "experts")?;
    experts.insert("dense_scaling".into(), protocol.into());
    let train = table(experts, "train")?;
    train.insert("total_steps".into(), (steps as i64).into());
    train.insert("warmup_steps".into(), ((steps / 20).max(1) as i64).into());
    train.insert("seed".into(), (seed as i64).into());
    Ok(toml::to_string(&cfg)?)
}

/// `base` with `[routers] method` set.
pub fn routers_config(base: &toml::Table, method: &str) -> anyhow::Result<String> {
    let mut cfg = base.clone();
    table(&mut cfg, "routers")?.insert("method".into(), method.into());
    Ok(toml::to_string(&cfg)?)
}

/// The sub-table `key` of `t`, created when absent.
fn table<'a>(t: &'a mut toml::Table, key: &str) -> anyhow::Result<&'a mut toml::Table> {
    t.entry(key)
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .ok_or_else(|| anyhow::anyhow!("`{key}` in the study config must be a table"))
}
