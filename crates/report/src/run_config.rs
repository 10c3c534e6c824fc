//! The SmallTalk TOML config a user writes: one file, one table per stage, every key optional
//! (defaults are the paper's settings scaled for the stage). Each stage writes its effective
//! table into its output folder; [`crate::write_report`] collects them back.

use std::path::Path;

use serde::{Deserialize, Serialize};
use smalltalk_data::DataSettings;
use smalltalk_expert::ExpertConfig;
use smalltalk_router::EmConfig;
use smalltalk_routing::PartitionSettings;

use crate::error::{ReportError, Result};

/// Every stage's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The data stage (`[data]`, `[data.split]`, `[data.tokenizer]`, `[data.format]`).
    pub data: DataSettings,
    /// Router EM (`[routers]`, `[routers.model]` preset overrides, `[routers.train]`).
    pub routers: EmConfig,
    /// The partition stage (`[partition]`).
    pub partition: PartitionSettings,
    /// Experts and the dense baseline (`[experts]`, `[experts.model]`, `[experts.train]`).
    pub experts: ExpertConfig,
    /// What each stage asks a cluster scheduler for (`[cluster]`), read by
    /// `smalltalk-launch`; no stage reads it.
    pub cluster: toml::Table,
}

impl RunConfig {
    /// Read a config file; unknown keys and wrong types are errors naming the file, key and
    /// line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ReportError::Toml {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// The file's settings, or the defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self> {
        path.map(Self::load)
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configs_parse_and_unknown_keys_are_named() {
        for (name, text) in [
            (
                "pipeline-cpu.toml",
                include_str!("../../../configs/pipeline-cpu.toml"),
            ),
            (
                "pipeline-paper-gpu.toml",
                include_str!("../../../configs/pipeline-paper-gpu.toml"),
            ),
            (
                "study-cpu.toml",
                include_str!("../../../configs/study-cpu.toml"),
            ),
            (
                "study-cpu-b4.toml",
                include_str!("../../../configs/study-cpu-b4.toml"),
            ),
        ] {
            let config: RunConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.routers.experts, 4, "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[routers]\nexperts = 2\nbogus = 1\n").unwrap();
        let err = RunConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("bogus") && err.contains("bad.toml"), "{err}");
    }
}
