//! The members' routers as one `PrefixScorer` (paper §2.4, Eqs. 4–7): the router LMs (a
//! `smalltalk_router::RouterSet` of each member's own weights file, in member order) or a
//! baseline method's scorer, with each member's score offset added to its score.

use smalltalk_routing::{DomainGroups, PrefixScorer, ScorerError};

/// A scorer with each member's score offset added (the mixture's routing scores). The
/// `domain` method routes by labels, not scores: its offsets do not apply.
pub struct OffsetScorer {
    pub(crate) inner: Box<dyn PrefixScorer + Send + Sync>,
    pub(crate) offsets: Vec<f32>,
}

impl OffsetScorer {
    fn shift(&self, mut scores: Vec<f32>) -> Vec<f32> {
        if self.offsets.iter().any(|&o| o != 0.0) {
            let e = self.offsets.len();
            for (i, s) in scores.iter_mut().enumerate() {
                *s += self.offsets[i % e];
            }
        }
        scores
    }
}

impl PrefixScorer for OffsetScorer {
    fn experts(&self) -> usize {
        self.inner.experts()
    }
    fn trained_prefix(&self) -> usize {
        self.inner.trained_prefix()
    }
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
    fn tokenizer_hash(&self) -> String {
        self.inner.tokenizer_hash()
    }
    fn score(
        &self,
        prefixes: &[u32],
        prefix_len: usize,
        pad: Option<u32>,
    ) -> Result<Vec<f32>, ScorerError> {
        Ok(self.shift(self.inner.score(prefixes, prefix_len, pad)?))
    }
    fn score_lengths(
        &self,
        rows: &[u32],
        row_len: usize,
        prefix_lens: &[usize],
        pad: Option<u32>,
    ) -> Result<Vec<Vec<f32>>, ScorerError> {
        let all = self.inner.score_lengths(rows, row_len, prefix_lens, pad)?;
        Ok(all.into_iter().map(|s| self.shift(s)).collect())
    }
    fn domain_groups(&self) -> Option<&DomainGroups> {
        self.inner.domain_groups()
    }
}
