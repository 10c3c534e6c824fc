//! The routers stage: a dataset folder in, a complete routers folder out.
//!
//! The routers folder holds, besides what [`crate::run_em`] writes:
//! - `stage.json`, `.lock` — ownership, the dataset's identity, the effective settings (see
//!   `smalltalk_stage::folder`); a rerun on other data or settings is refused.
//! - `config.toml` — the effective `[routers]` settings, defaults included.
//! - `tokenizer.json` — the dataset's tokenizer, so routing a text needs only this folder.

use std::path::Path;

use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_routing::TrainingRows;
use smalltalk_stage::atomic::write_file;
use smalltalk_stage::folder::{Identity, SettingsPolicy, StageFolder};
use smalltalk_stage::Progress;

use crate::config::{EmConfig, RouterMethod};
use crate::em::{run_em, EmData, EmSummary};
use crate::error::{Result, RouterError};
use crate::manifest::TOKENIZER_FILE;
use crate::methods::fit_baseline;

/// Files that mark a routers folder written before stage markers existed.
const LEGACY_FILES: [&str; 2] = ["routers.json", "em"];

/// Train the routers of `cfg` by hard EM on the training split of the dataset in `data_dir`,
/// into the routers folder `out` (see the module docs and [`crate::em`]). The routers'
/// vocabulary is the dataset's unless `cfg.model` sets one (it must then match). Settings are
/// checked before anything is written. Resumes an interrupted run; a finished run returns at
/// once. Returns what EM did.
pub fn train_routers<AB: AutodiffBackend>(
    data_dir: &Path,
    out: &Path,
    cfg: &EmConfig,
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<EmSummary> {
    let rows = TrainingRows::open(data_dir)?;
    let mut cfg = cfg.clone();
    let vocab = rows.vocab_size();
    match cfg.model.get("vocab_size").and_then(|v| v.as_integer()) {
        None => {
            cfg.model
                .insert("vocab_size".into(), toml::Value::Integer(vocab as i64));
        }
        Some(v) if v as usize != vocab => {
            return Err(RouterError::Config(format!(
                "`routers.model.vocab_size` is {v} but the dataset's tokenizer has {vocab} ids"
            )))
        }
        Some(_) => {}
    }
    cfg.validate(rows.reader.row_len())?;
    if cfg.method == RouterMethod::Domain && rows.domains().is_none() {
        return Err(RouterError::Config(format!(
            "the `domain` method needs domain labels, and the dataset {} has none (give the corpus a `domain` field)",
            data_dir.display()
        )));
    }
    let identity = Identity::new("routers", &cfg)
        .input("dataset", rows.identity())
        .input("tokenizer", rows.tokenizer_hash());
    let folder = StageFolder::claim(out, &identity, &LEGACY_FILES, SettingsPolicy::Same)?;
    #[derive(serde::Serialize)]
    struct RoutersOnly<'a> {
        routers: &'a EmConfig,
    }
    let effective = toml::to_string_pretty(&RoutersOnly { routers: &cfg }).expect("serialises");
    write_file(&folder.dir().join("config.toml"), effective.as_bytes())?;
    let tokenizer = rows
        .dataset
        .dir()
        .join(&rows.dataset.manifest().tokenizer.file);
    let bytes = std::fs::read(&tokenizer).map_err(|e| RouterError::io(&tokenizer, e))?;
    write_file(&folder.dir().join(TOKENIZER_FILE), &bytes)?;
    if cfg.method != RouterMethod::Em {
        let manifest = fit_baseline(&cfg, &rows, folder.dir())?;
        return Ok(EmSummary {
            resumed_from: 0,
            iterations_done: 0,
            metrics: vec![],
            manifest: Some(manifest),
            stopped: false,
        });
    }
    let data = EmData {
        source: &rows.reader,
        domains: rows.domains(),
        identity: rows.identity(),
    };
    run_em::<AB>(&cfg, &data, folder.dir(), device, progress)
}
