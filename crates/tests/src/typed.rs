//! The typed fixtures: the tiny config's tables as each stage's settings, and the tiny dataset.

use std::path::Path;

use serde::de::DeserializeOwned;
use smalltalk_data::{build_dataset, train_tokenizer, DataSettings};
use smalltalk_expert::ExpertConfig;
use smalltalk_router::EmConfig;
use smalltalk_routing::PartitionSettings;
use smalltalk_stage::NoProgress;

use crate::TINY_CONFIG;

/// One table of [`TINY_CONFIG`] (`data`, `routers`, `partition`, `experts`) as its settings type.
pub fn tiny<T: DeserializeOwned>(table: &str) -> T {
    let all: toml::Table = toml::from_str(TINY_CONFIG).expect("the tiny config parses");
    all[table]
        .clone()
        .try_into()
        .unwrap_or_else(|e| panic!("[{table}]: {e}"))
}

/// The tiny settings of every stage.
pub struct TinySettings {
    /// `[data]`.
    pub data: DataSettings,
    /// `[routers]`.
    pub routers: EmConfig,
    /// `[partition]`.
    pub partition: PartitionSettings,
    /// `[experts]`.
    pub experts: ExpertConfig,
}

/// [`TINY_CONFIG`] parsed.
pub fn tiny_settings() -> TinySettings {
    TinySettings {
        data: tiny("data"),
        routers: tiny("routers"),
        partition: tiny("partition"),
        experts: tiny("experts"),
    }
}

/// Train a tokenizer on `corpus` and build the tiny dataset folder `out` with it.
pub fn build_tiny_dataset(corpus: &Path, out: &Path) {
    let settings: DataSettings = tiny("data");
    let inputs = [corpus.to_path_buf()];
    let tokenizer = train_tokenizer(&inputs, &settings, &mut NoProgress).expect("tokenizer");
    build_dataset(&inputs, &tokenizer, out, &settings, &mut NoProgress).expect("dataset");
}
