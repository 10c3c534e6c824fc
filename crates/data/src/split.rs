//! The deterministic train/validation/test split by document hash.
//!
//! A document's split depends only on its text and the seed, so identical documents always land in
//! the same split (no leakage of duplicates) and the split does not depend on corpus order. With
//! a group field (`[data.split] group_field`, e.g. the `source` of each record) the hash is of the
//! document's group instead: whole groups — every file of one package, every chunk of one book —
//! go to one split, so held-out text comes from sources the training never saw.

use serde::{Deserialize, Serialize};

use crate::corpus::Document;
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
    /// Split whole groups, not documents: the record field whose value names a document's
    /// group (a JSON-lines field such as `source`; `domain` and `id` work too). Documents
    /// without it are their own group. Unset: every document is its own group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_field: Option<String>,
    /// With `group_field`: how many leading `/`-separated parts of the value form the group
    /// (1 groups `glibc-source/io/open.c` by its package `glibc-source`); 0 = the whole value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group_parts: usize,
    /// With `group_field`: which splits take whole groups. `all` (default): every split;
    /// `test`: only the test split (text from sources the training never saw), while the
    /// validation split takes single documents of the remaining groups (text from the
    /// training's own sources) — both views in one dataset.
    #[serde(default, skip_serializing_if = "GroupedSplits::is_all")]
    pub grouped: GroupedSplits,
}

/// Which splits take whole groups (see [`SplitSettings::grouped`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupedSplits {
    /// Validation and test both take whole groups.
    #[default]
    All,
    /// Only the test split takes whole groups; validation takes documents.
    Test,
}

impl GroupedSplits {
    fn is_all(&self) -> bool {
        *self == GroupedSplits::All
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for SplitSettings {
    fn default() -> Self {
        Self {
            validation: 0.05,
            test: 0.05,
            seed: 0,
            group_field: None,
            group_parts: 0,
            grouped: GroupedSplits::All,
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

    /// The split of a document: of its group when `group_field` is set and the document has
    /// it, else of its text.
    pub fn split_of_document(&self, doc: &Document) -> Split {
        let Some(group) = self.group_of(doc) else {
            return self.split_of(&doc.text);
        };
        let key = format!("\u{0}group\u{0}{group}");
        match self.grouped {
            GroupedSplits::All => self.split_of(&key),
            // A whole group goes to test with probability `test`; a document of the other
            // groups goes to validation with probability `validation / (1 - test)`, so both
            // fractions hold on average.
            GroupedSplits::Test if self.unit(&key) < self.test => Split::Test,
            GroupedSplits::Test if self.unit(&doc.text) < self.validation / (1.0 - self.test) => {
                Split::Validation
            }
            GroupedSplits::Test => Split::Train,
        }
    }

    /// The group of a document (see `group_field`, `group_parts`), if any.
    pub fn group_of(&self, doc: &Document) -> Option<String> {
        let field = self.group_field.as_deref()?;
        let value = match doc.fields.get(field).and_then(|v| v.as_str()) {
            Some(v) => v.to_string(),
            None if field == "domain" => doc.domain.clone()?,
            None if field == "id" => doc.id.clone(),
            None => return None,
        };
        Some(match self.group_parts {
            0 => value,
            n => value.split('/').take(n).collect::<Vec<_>>().join("/"),
        })
    }

    /// A seeded hash of `text` as a number in [0, 1).
    fn unit(&self, text: &str) -> f64 {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), self.seed);
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The split of a text, from a seeded hash of it.
    pub fn split_of(&self, text: &str) -> Split {
        let u = self.unit(text);
        if u < self.validation {
            Split::Validation
        } else if u < self.validation + self.test {
            Split::Test
        } else {
            Split::Train
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(source: Option<&str>, text: &str) -> Document {
        let mut fields = serde_json::Map::new();
        if let Some(s) = source {
            fields.insert("source".into(), s.into());
        }
        Document {
            id: text.into(),
            text: text.into(),
            domain: Some("d".into()),
            fields,
        }
    }

    #[test]
    fn grouped_test_holds_out_whole_groups_and_validation_takes_documents() {
        let settings = SplitSettings {
            validation: 0.2,
            test: 0.2,
            group_field: Some("source".into()),
            group_parts: 1,
            grouped: GroupedSplits::Test,
            ..SplitSettings::default()
        };
        let (mut test_groups, mut validation_docs, mut docs) = (0, 0, 0);
        for p in 0..200 {
            let splits: Vec<Split> = (0..20)
                .map(|f| {
                    let text = format!("text {p} {f}");
                    settings.split_of_document(&doc(Some(&format!("pkg{p}/f{f}.c")), &text))
                })
                .collect();
            if splits.contains(&Split::Test) {
                // A test package is test in every file; no other package has a test file.
                assert!(splits.iter().all(|&s| s == Split::Test), "package {p}");
                test_groups += 1;
            } else {
                validation_docs += splits.iter().filter(|&&s| s == Split::Validation).count();
                docs += splits.len();
            }
        }
        // Both fractions hold on average: 20% of groups, 20% of all documents (25% of the rest).
        assert!(
            (25..=55).contains(&test_groups),
            "{test_groups} test groups of 200"
        );
        let share = validation_docs as f64 / docs as f64;
        assert!((0.2..=0.3).contains(&share), "validation share {share}");
        // The default (`all`) puts validation groups whole too, and is not serialised.
        let all = SplitSettings {
            grouped: GroupedSplits::All,
            ..settings.clone()
        };
        assert!(!toml::to_string(&all).unwrap().contains("grouped"));
        assert!(toml::to_string(&settings)
            .unwrap()
            .contains("grouped = \"test\""));
    }

    #[test]
    fn whole_groups_go_to_one_split() {
        let grouped = SplitSettings {
            validation: 0.3,
            test: 0.2,
            group_field: Some("source".into()),
            group_parts: 1,
            ..SplitSettings::default()
        };
        let mut splits_seen = std::collections::BTreeSet::new();
        for p in 0..60 {
            let split = grouped.split_of_document(&doc(Some(&format!("pkg{p}/a.c")), "x"));
            splits_seen.insert(split);
            for f in 0..20 {
                let d = doc(
                    Some(&format!("pkg{p}/dir/f{f}.c")),
                    &format!("text {p} {f}"),
                );
                assert_eq!(grouped.split_of_document(&d), split, "package {p} file {f}");
            }
        }
        assert_eq!(splits_seen.len(), 3, "groups spread over every split");
        // Without the field a document is its own group; without grouping, the text decides.
        let d = doc(None, "alone");
        assert_eq!(grouped.split_of_document(&d), grouped.split_of("alone"));
        let plain = SplitSettings::default();
        assert_eq!(
            plain.split_of_document(&doc(Some("p/x"), "t")),
            plain.split_of("t")
        );
        // The whole value (group_parts 0) and a label field work as groups too.
        let by_domain = SplitSettings {
            group_field: Some("domain".into()),
            ..grouped.clone()
        };
        assert_eq!(by_domain.group_of(&doc(None, "t")).as_deref(), Some("d"));
        let whole = SplitSettings {
            group_parts: 0,
            ..grouped
        };
        assert_eq!(
            whole.group_of(&doc(Some("p/x/y"), "t")).as_deref(),
            Some("p/x/y")
        );
    }

    #[test]
    fn settings_without_groups_serialise_as_before() {
        let json = serde_json::to_string(&SplitSettings::default()).unwrap();
        assert_eq!(json, r#"{"validation":0.05,"test":0.05,"seed":0}"#);
    }
}
