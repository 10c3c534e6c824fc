//! The SmallTalk TOML config: one file, one table per stage, every key optional (defaults are
//! the paper's settings scaled for the stage). Each stage writes its effective table into its
//! output folder.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use smalltalk_data::DataSettings;
use smalltalk_expert::ExpertConfig;
use smalltalk_router::EmConfig;
use smalltalk_routing::PartitionSettings;

/// Every stage's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The data stage (`[data]`, `[data.split]`, `[data.tokenizer]`, `[data.format]`).
    pub data: DataSettings,
    /// Router EM (`[routers]`, `[routers.model]` preset overrides, `[routers.train]`).
    pub routers: EmConfig,
    /// The partition stage (`[partition]`).
    pub partition: PartitionSettings,
    /// Experts and the dense baseline (`[experts]`, `[experts.model]`, `[experts.train]`).
    pub experts: ExpertConfig,
}

impl Config {
    /// Read a config file; unknown keys and wrong types are errors naming the key and line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }

    /// The file's settings, or the defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self> {
        path.map(Self::load)
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

/// Parse a flag value by the serde name of a library enum (`bf16`, `train`, ...); the error
/// lists the names it accepts.
pub fn from_name<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configs_parse() {
        for (name, text) in [
            (
                "pipeline-cpu.toml",
                include_str!("../../../configs/pipeline-cpu.toml"),
            ),
            (
                "pipeline-paper-gpu.toml",
                include_str!("../../../configs/pipeline-paper-gpu.toml"),
            ),
        ] {
            let config: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.routers.experts, 4, "{name}");
        }
        let err = toml::from_str::<Config>("[routers]\nexperts = 2\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
