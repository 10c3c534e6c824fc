//! The fitted c-BTM router on disk, a folder of two files written atomically:
//! - `tfidf-components.f32`: the SVD components, `dims × vocabulary` little-endian `f32`,
//!   row-major (one component per row, as scikit-learn's `components_`);
//! - `tfidf.json`: format, settings, prefix, tokenizer checksum, vocabulary, idf, centroids and
//!   the components file's size and checksum. Written last: its presence means complete.
//!
//! The router's fingerprint is the checksum of `tfidf.json`, which covers the components
//! through their recorded checksum.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use smalltalk_data::TextTokenizer;
use smalltalk_stage::atomic::write_file;
use smalltalk_stage::checksum::hash_bytes;
use smalltalk_stage::error::IoContext;

use super::{transpose, TfidfRouter, TfidfSettings};
use crate::error::{Result, RoutingError};

/// The router's description (see the module documentation).
pub const TFIDF_FILE: &str = "tfidf.json";
/// The SVD components.
pub const TFIDF_COMPONENTS_FILE: &str = "tfidf-components.f32";
/// Format tag of `tfidf.json`.
pub const TFIDF_FORMAT: &str = "smalltalk-tfidf-router-1";

/// The content of `tfidf.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TfidfFile {
    format: String,
    settings: TfidfSettings,
    experts: usize,
    prefix_len: usize,
    documents: usize,
    tokenizer_hash: String,
    dims: usize,
    components_file: String,
    components_bytes: u64,
    components_checksum: String,
    vocabulary: Vec<String>,
    idf: Vec<f32>,
    centroids: Vec<Vec<f32>>,
}

impl TfidfRouter {
    /// The bytes of `tfidf.json` and of the components file.
    pub(super) fn files(&self) -> (Vec<u8>, Vec<u8>) {
        let v = self.words.len();
        let components: Vec<u8> = transpose(&self.components_t, v, self.dims)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let file = TfidfFile {
            format: TFIDF_FORMAT.into(),
            settings: self.settings.clone(),
            experts: self.centroids.len() / self.dims.max(1),
            prefix_len: self.prefix_len,
            documents: self.documents,
            tokenizer_hash: self.tokenizer_hash.clone(),
            dims: self.dims,
            components_file: TFIDF_COMPONENTS_FILE.into(),
            components_bytes: components.len() as u64,
            components_checksum: hash_bytes(&components),
            vocabulary: self.words.clone(),
            idf: self.idf.clone(),
            centroids: self
                .centroids
                .chunks_exact(self.dims.max(1))
                .map(<[f32]>::to_vec)
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("tfidf.json serialises");
        (json, components)
    }

    /// Write the router into the folder `dir` (created if needed): the components first, then
    /// `tfidf.json`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).at(dir)?;
        let (json, components) = self.files();
        write_file(&dir.join(TFIDF_COMPONENTS_FILE), &components)?;
        write_file(&dir.join(TFIDF_FILE), &json)?;
        Ok(())
    }

    /// Read a router saved by [`TfidfRouter::save`]; `tokenizer` decodes the prefixes it scores
    /// and must be the one it was fitted with (callers compare
    /// [`crate::PrefixScorer::tokenizer_hash`] with the data they route, as the partition stage
    /// does). The components' size and checksum are verified; errors name the file at fault.
    pub fn load(dir: &Path, tokenizer: TextTokenizer) -> Result<TfidfRouter> {
        let json_path = dir.join(TFIDF_FILE);
        let json = std::fs::read(&json_path).at(&json_path)?;
        let bad = |message: String| RoutingError::state(&json_path, message);
        let file: TfidfFile =
            serde_json::from_slice(&json).map_err(|e| bad(format!("not a TF-IDF router: {e}")))?;
        if file.format != TFIDF_FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{TFIDF_FORMAT}`",
                file.format
            )));
        }
        file.settings.validate().map_err(|e| bad(e.to_string()))?;
        if file.components_file != TFIDF_COMPONENTS_FILE {
            return Err(bad(format!(
                "components file `{}`, expected `{TFIDF_COMPONENTS_FILE}`",
                file.components_file
            )));
        }
        let v = file.vocabulary.len();
        if file.idf.len() != v || file.dims == 0 || file.experts == 0 {
            return Err(bad(format!(
                "{} idf value(s) for {v} word(s), {} dims, {} experts",
                file.idf.len(),
                file.dims,
                file.experts
            )));
        }
        if file.centroids.len() != file.experts
            || file.centroids.iter().any(|c| c.len() != file.dims)
        {
            return Err(bad(format!(
                "the centroids are not {} × {}",
                file.experts, file.dims
            )));
        }
        let columns: HashMap<String, u32> = file
            .vocabulary
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        if columns.len() != v {
            return Err(bad("the vocabulary repeats a word".into()));
        }
        let comp_path = dir.join(&file.components_file);
        let bytes = std::fs::read(&comp_path).at(&comp_path)?;
        let expected = (file.dims * v * 4) as u64;
        if bytes.len() as u64 != expected || file.components_bytes != expected {
            return Err(RoutingError::state(
                &comp_path,
                format!(
                    "{} bytes, expected {expected} ({} components × {v} words × 4; {} recorded in {TFIDF_FILE})",
                    bytes.len(),
                    file.dims,
                    file.components_bytes
                ),
            ));
        }
        let checksum = hash_bytes(&bytes);
        if checksum != file.components_checksum {
            return Err(RoutingError::state(
                &comp_path,
                format!(
                    "checksum {checksum} does not match {} recorded in {TFIDF_FILE}: the file is corrupt or was changed",
                    file.components_checksum
                ),
            ));
        }
        let components: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(TfidfRouter {
            settings: file.settings,
            prefix_len: file.prefix_len,
            documents: file.documents,
            tokenizer,
            tokenizer_hash: file.tokenizer_hash,
            words: file.vocabulary,
            columns,
            idf: file.idf,
            dims: file.dims,
            components_t: transpose(&components, file.dims, v),
            centroids: file.centroids.concat(),
            fingerprint: hash_bytes(&json),
        })
    }
}
