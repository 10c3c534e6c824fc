//! The run's effective configuration: each stage's own table, taken from the `config.toml` the
//! stage wrote into its folder, one after the other in pipeline order.

use std::path::Path;

use smalltalk_stage::layout::stage_config;
use smalltalk_stage::RunLayout;

use crate::error::{ReportError, Result};
use crate::inputs::read_text;

/// Every stage's effective settings, as TOML text of disjoint tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EffectiveConfig {
    /// The run's `config.toml`.
    pub text: String,
    /// The stage files it was made from, relative to the run folder.
    pub sources: Vec<String>,
}

/// Read the stage configs of the run: `data/config.toml` (`[data]`), `routers/config.toml`
/// (`[routers]`), `partition/config.toml` (`[partition]`), `experts/expert-00/config.toml` and
/// `experts/dense/config.toml` (`[experts]`). Absent files are skipped; of each file only its
/// stage's table is kept (the data stage may write every table). A second `[experts]` table
/// equal to the first is noted; one that differs is kept as comments, so the text stays a
/// valid config.
pub(crate) fn collect(layout: &RunLayout) -> Result<EffectiveConfig> {
    let stages = [
        ("data", layout.data()),
        ("routers", layout.routers()),
        ("partition", layout.partition()),
        ("experts", layout.expert(0)),
        ("experts", layout.dense()),
    ];
    let mut merged = toml::Table::new();
    let mut text = String::from(
        "# Every stage's effective settings, defaults included, as each stage wrote them into\n\
         # its folder (collected by `smalltalk report`).\n",
    );
    let mut sources = Vec::new();
    for (table, dir) in stages {
        let path = stage_config(&dir);
        if !path.exists() {
            continue;
        }
        let value = stage_table(&path, table)?;
        let name = path
            .strip_prefix(layout.root())
            .unwrap_or(&path)
            .display()
            .to_string();
        text.push('\n');
        match merged.get(table) {
            Some(first) if *first == value => {
                text.push_str(&format!("# {name}: the same [{table}] table as above\n"));
            }
            Some(_) => {
                text.push_str(&format!(
                    "# {name}: its [{table}] table differs from the one above:\n"
                ));
                for line in render(table, &value).lines() {
                    text.push_str(&format!("# {line}\n"));
                }
            }
            None => {
                text.push_str(&format!("# {name}\n{}", render(table, &value)));
                merged.insert(table.into(), value);
            }
        }
        sources.push(name);
    }
    Ok(EffectiveConfig { text, sources })
}

/// Table `table` of the TOML file `path`.
fn stage_table(path: &Path, table: &str) -> Result<toml::Value> {
    let bad = |message: String| ReportError::Toml {
        path: path.into(),
        message,
    };
    let doc: toml::Table = read_text(path)?
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    doc.get(table)
        .cloned()
        .ok_or_else(|| bad(format!("no [{table}] table")))
}

/// `value` as the TOML table `[table]`.
fn render(table: &str, value: &toml::Value) -> String {
    let mut doc = toml::Table::new();
    doc.insert(table.into(), value.clone());
    toml::to_string_pretty(&doc).expect("a TOML table serializes")
}
