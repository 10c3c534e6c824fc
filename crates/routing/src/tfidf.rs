//! The c-BTM baseline router (Gururangan et al. 2023, "Scaling Expert Language Models with
//! Unsupervised Domain Discovery"): documents are embedded as TF-IDF vectors, reduced with a
//! truncated SVD and clustered with balanced k-means into E clusters; a sequence goes to the
//! cluster whose centroid is nearest to its prefix's embedding.
//!
//! [`TfidfRouter`] is a [`PrefixScorer`]: its score of a prefix for expert `e` is the cosine
//! similarity of the prefix's embedding to centroid `e` (higher is nearer), so routing and the
//! partition stage use it exactly as they use the router LMs.
//!
//! The embedding of a text:
//! 1. words: maximal runs of alphanumeric characters, lowercased, plus every ASCII punctuation
//!    character as a word of its own (informative for code);
//! 2. TF-IDF over the fitted vocabulary (the `vocab_size` words with the highest document
//!    frequency): raw counts times the smooth idf `ln((1 + n) / (1 + df)) + 1`, the row scaled
//!    to unit length (scikit-learn's `TfidfVectorizer` defaults);
//! 3. projected on the `dims` SVD components and scaled to unit length.

mod files;
mod kmeans;
mod svd;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use smalltalk_data::TextTokenizer;

use crate::error::{Result, RoutingError};
use crate::scorer::{PrefixScorer, ScorerError};
use svd::{randomized_svd, Csr};

pub use files::{TFIDF_COMPONENTS_FILE, TFIDF_FILE, TFIDF_FORMAT};

/// Mixed into the seed of the k-means++ start, so that it does not replay the SVD's stream.
const KMEANS_STREAM: u64 = 0x6b6d_6561_6e73_2b2b;

/// How to fit the c-BTM TF-IDF router (`[tfidf]` in a TOML config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TfidfSettings {
    /// Words kept, those in the most documents (ties: alphabetical order).
    pub vocab_size: usize,
    /// SVD components kept (the embedding size; fewer when there are fewer documents or words).
    pub dims: usize,
    /// Most balanced k-means iterations (it stops earlier when an assignment repeats).
    pub iterations: usize,
    /// Seed of the random SVD projection and the k-means++ start.
    pub seed: u64,
}

impl Default for TfidfSettings {
    fn default() -> Self {
        TfidfSettings {
            vocab_size: 20_000,
            dims: 64,
            iterations: 20,
            seed: 0,
        }
    }
}

impl TfidfSettings {
    /// Check the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("dims", self.dims),
            ("iterations", self.iterations),
        ] {
            if value == 0 {
                return Err(RoutingError::Config(format!(
                    "[tfidf] `{key}` must be at least 1"
                )));
            }
        }
        Ok(())
    }
}

/// A fitted c-BTM router: vocabulary, idf, SVD components and E cluster centroids, plus the
/// tokenizer that turns prefixes back into text.
#[derive(Clone)]
pub struct TfidfRouter {
    settings: TfidfSettings,
    prefix_len: usize,
    documents: usize,
    tokenizer: TextTokenizer,
    tokenizer_hash: String,
    /// The vocabulary, by column.
    words: Vec<String>,
    /// Column of each vocabulary word.
    columns: HashMap<String, u32>,
    /// Smooth idf of each column.
    idf: Vec<f32>,
    /// Number of SVD components (the embedding size).
    dims: usize,
    /// The components, word-major: `[words.len(), dims]` (the transpose of the saved file).
    components_t: Vec<f32>,
    /// Unit centroids, row-major `[experts, dims]`.
    centroids: Vec<f32>,
    /// Checksum of `tfidf.json` as saved (it records the components' checksum).
    fingerprint: String,
}

impl TfidfRouter {
    /// Fit the router on the training `texts` with `experts` clusters; returns it and each
    /// text's cluster (equal sizes, within one). `tokenizer` (whose checksum is
    /// `tokenizer_hash`) decodes the prefixes [`PrefixScorer::score`] is given; `prefix_len` is
    /// the prefix it is meant for ([`PrefixScorer::trained_prefix`]). The same inputs give the
    /// same router and clusters.
    pub fn fit(
        texts: &[String],
        experts: usize,
        settings: &TfidfSettings,
        tokenizer: TextTokenizer,
        tokenizer_hash: String,
        prefix_len: usize,
    ) -> Result<(TfidfRouter, Vec<u32>)> {
        settings.validate()?;
        if experts == 0 || texts.len() < experts {
            return Err(RoutingError::Config(format!(
                "c-BTM TF-IDF: {} text(s) cannot fill {experts} cluster(s): at least one text per cluster is needed",
                texts.len()
            )));
        }
        if prefix_len < 2 {
            return Err(RoutingError::Config(format!(
                "c-BTM TF-IDF: the routing prefix must be at least 2 tokens, not {prefix_len}"
            )));
        }
        let counts: Vec<Vec<(String, u32)>> = texts.par_iter().map(|t| word_counts(t)).collect();
        let words = select_vocabulary(&counts, settings.vocab_size);
        if words.is_empty() {
            return Err(RoutingError::Config(
                "c-BTM TF-IDF: the texts contain no words".into(),
            ));
        }
        let columns: HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, (w, _))| (w.clone(), i as u32))
            .collect();
        let n = texts.len() as f64;
        let idf: Vec<f32> = words
            .iter()
            .map(|&(_, df)| (((1.0 + n) / (1.0 + f64::from(df))).ln() + 1.0) as f32)
            .collect();
        let mut router = TfidfRouter {
            settings: settings.clone(),
            prefix_len,
            documents: texts.len(),
            tokenizer,
            tokenizer_hash,
            words: words.into_iter().map(|(w, _)| w).collect(),
            columns,
            idf,
            dims: 0,
            components_t: Vec::new(),
            centroids: Vec::new(),
            fingerprint: String::new(),
        };
        let mut matrix = Csr::new(router.words.len());
        for c in &counts {
            matrix.push_row(&router.tfidf_of(c));
        }
        let svd = randomized_svd(&matrix, settings.dims, settings.seed);
        drop(matrix);
        router.dims = svd.singular_values.len();
        if router.dims == 0 {
            return Err(RoutingError::Config(
                "c-BTM TF-IDF: the TF-IDF matrix has no nonzero singular value".into(),
            ));
        }
        router.components_t = transpose(&svd.components, router.dims, router.words.len());
        // The same embedding as `score` computes for a text (see `embed`).
        let points: Vec<Vec<f32>> = counts.par_iter().map(|c| router.embed_counts(c)).collect();
        let points = points.concat();
        drop(counts);
        let (centroids, clusters) = kmeans::balanced_kmeans(
            &points,
            router.dims,
            experts,
            settings.iterations,
            settings.seed ^ KMEANS_STREAM,
        )?;
        router.centroids = centroids;
        router.fingerprint = smalltalk_stage::checksum::hash_bytes(&router.files().0);
        Ok((router, clusters))
    }

    /// The settings it was fitted with.
    pub fn settings(&self) -> &TfidfSettings {
        &self.settings
    }

    /// The embedding size: SVD components kept.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of vocabulary words.
    pub fn vocabulary_len(&self) -> usize {
        self.words.len()
    }

    /// The unit cluster centroids, row-major `[experts, dims]`.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Cosine similarity of `text`'s embedding to each centroid (a text with no vocabulary
    /// word scores 0 everywhere).
    pub fn score_text(&self, text: &str) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.experts());
        kmeans::cosines(&self.embed(text), &self.centroids, &mut out);
        out
    }

    /// The unit embedding of a text (see the module documentation).
    fn embed(&self, text: &str) -> Vec<f32> {
        self.embed_counts(&word_counts(text))
    }

    /// The unit embedding of a text's word counts.
    fn embed_counts(&self, counts: &[(String, u32)]) -> Vec<f32> {
        let tfidf = self.tfidf_of(counts);
        let mut z = vec![0f32; self.dims];
        for (j, w) in tfidf {
            let comp = &self.components_t[j as usize * self.dims..(j as usize + 1) * self.dims];
            for (acc, &c) in z.iter_mut().zip(comp) {
                *acc += w * c;
            }
        }
        kmeans::normalize(&mut z);
        z
    }

    /// The unit TF-IDF row of a text's word counts, by ascending column (words outside the
    /// vocabulary are dropped).
    fn tfidf_of(&self, counts: &[(String, u32)]) -> Vec<(u32, f32)> {
        let mut row: Vec<(u32, f32)> = counts
            .iter()
            .filter_map(|(w, c)| {
                let j = *self.columns.get(w)?;
                Some((j, *c as f32 * self.idf[j as usize]))
            })
            .collect();
        row.sort_unstable_by_key(|&(j, _)| j);
        let norm = row
            .iter()
            .map(|&(_, v)| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        for (_, v) in &mut row {
            *v = (f64::from(*v) / norm) as f32;
        }
        row
    }

    /// The text [`PrefixScorer::score`] embeds for token ids (a prefix, or a whole training
    /// row): the tokenizer's padding and end-of-document tokens (and `pad`) are dropped, and
    /// the pieces between them decoded and joined by line breaks. Fitting on the texts of
    /// training rows made with this function makes a row's fit-time embedding equal to the one
    /// `score` computes for it.
    pub fn text_of_tokens(
        tokenizer: &TextTokenizer,
        ids: &[u32],
        pad: Option<u32>,
    ) -> Result<String> {
        let special = |t: &u32| Some(*t) == pad || *t == tokenizer.pad_id || *t == tokenizer.eos_id;
        let mut pieces = Vec::new();
        for piece in ids.split(special).filter(|p| !p.is_empty()) {
            pieces.push(tokenizer.decode(piece)?);
        }
        Ok(pieces.join("\n"))
    }
}

impl std::fmt::Debug for TfidfRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfidfRouter")
            .field("experts", &self.experts())
            .field("dims", &self.dims)
            .field("vocabulary", &self.words.len())
            .field("documents", &self.documents)
            .field("prefix_len", &self.prefix_len)
            .field("settings", &self.settings)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl PrefixScorer for TfidfRouter {
    fn experts(&self) -> usize {
        self.centroids.len() / self.dims.max(1)
    }

    fn trained_prefix(&self) -> usize {
        self.prefix_len
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn tokenizer_hash(&self) -> String {
        self.tokenizer_hash.clone()
    }

    /// Decodes each prefix to text (all its tokens but padding and end-of-document ones) and
    /// returns the cosine similarity of its embedding to each centroid.
    fn score(
        &self,
        prefixes: &[u32],
        prefix_len: usize,
        pad: Option<u32>,
    ) -> std::result::Result<Vec<f32>, ScorerError> {
        if prefix_len == 0 || !prefixes.len().is_multiple_of(prefix_len) {
            return Err(Box::new(RoutingError::Config(format!(
                "{} tokens do not split into prefixes of {prefix_len}",
                prefixes.len()
            ))));
        }
        let rows: Result<Vec<Vec<f32>>> = prefixes
            .par_chunks(prefix_len)
            .map(|p| Ok(self.score_text(&Self::text_of_tokens(&self.tokenizer, p, pad)?)))
            .collect();
        Ok(rows.map_err(Box::new)?.concat())
    }
}

/// Each distinct word of `text` with its count, in order of first appearance.
fn word_counts(text: &str) -> Vec<(String, u32)> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut counts: Vec<(String, u32)> = Vec::new();
    let mut add = |w: String| match index.get(&w) {
        Some(&i) => counts[i].1 += 1,
        None => {
            index.insert(w.clone(), counts.len());
            counts.push((w, 1));
        }
    };
    let mut word = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            word.extend(ch.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            add(std::mem::take(&mut word));
        }
        if ch.is_ascii_punctuation() {
            add(ch.to_string());
        }
    }
    if !word.is_empty() {
        add(word);
    }
    counts
}

/// The `size` words in the most documents (ties: alphabetical), with their document
/// frequencies.
fn select_vocabulary(counts: &[Vec<(String, u32)>], size: usize) -> Vec<(String, u32)> {
    let mut df: HashMap<&str, u32> = HashMap::new();
    for doc in counts {
        for (w, _) in doc {
            *df.entry(w.as_str()).or_default() += 1;
        }
    }
    let mut words: Vec<(&str, u32)> = df.into_iter().collect();
    words.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    words.truncate(size);
    words.into_iter().map(|(w, d)| (w.to_string(), d)).collect()
}

/// The transpose of a row-major `[rows, cols]` matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}
