//! The deterministic train/validation/test split by document hash.
//!
//! A document's split depends only on its text and the seed, so identical documents always land in
//! the same split (no leakage of duplicates) and the split does not depend on corpus order.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data (routers, experts, dense baseline).
    Train,
    /// Held-out data for model selection and evaluation.
    Validation,
    /// Held-out data for final numbers.
    Test,
}

impl Split {
    /// The three splits in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// Lower-case name, used in file names.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Split::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| DataError::Config {
                key: "split".into(),
                message: format!("unknown split `{s}` (expected train, validation or test)"),
            })
    }
}

/// Fractions of documents held out, and the hash seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitSettings {
    /// Fraction of documents in the validation split.
    pub validation: f64,
    /// Fraction of documents in the test split.
    pub test: f64,
    /// Seed of the document hash.
    pub seed: u64,
}

impl Default for SplitSettings {
    fn default() -> Self {
        Self {
            validation: 0.05,
            test: 0.05,
            seed: 0,
        }
    }
}

impl SplitSettings {
    /// Check that the fractions are in range.
    pub fn validate(&self) -> Result<()> {
        let ok = |x: f64| (0.0..=1.0).contains(&x);
        if !ok(self.validation) || !ok(self.test) || self.validation + self.test >= 1.0 {
            return Err(DataError::Config {
                key: "split".into(),
                message: format!(
                    "validation ({}) and test ({}) must be in [0, 1] and leave room for training",
                    self.validation, self.test
                ),
            });
        }
        Ok(())
    }

    /// The split of a document, from a seeded hash of its text.
    pub fn split_of(&self, text: &str) -> Split {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), self.seed);
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.validation {
            Split::Validation
        } else if u < self.validation + self.test {
            Split::Test
        } else {
            Split::Train
        }
    }
}
