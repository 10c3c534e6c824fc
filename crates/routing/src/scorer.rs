//! What routes: anything that scores a batch of prefixes once per expert.

use crate::domain::DomainGroups;

/// The error a scorer returns (its own error type, boxed).
pub type ScorerError = Box<dyn std::error::Error + Send + Sync>;

/// Scores prefixes for E experts: `log p(x_1..x_M)` under router `e` (paper Eq. 9) or any
/// score where higher means "this expert fits better".
pub trait PrefixScorer {
    /// Number of experts, E.
    fn experts(&self) -> usize;
    /// The prefix length the scorer was trained on (the partition stage's default).
    fn trained_prefix(&self) -> usize;
    /// What identifies the scorer (its settings and training data): recorded by the stages
    /// that use it.
    fn fingerprint(&self) -> String;
    /// The checksum (`xxh3:…`) of the tokenizer whose ids the scorer reads.
    fn tokenizer_hash(&self) -> String;
    /// Row-major `[n, experts()]` scores of `n` prefixes of `prefix_len` tokens each, laid out
    /// one after another in `prefixes`; targets equal to `pad` are not scored.
    fn score(
        &self,
        prefixes: &[u32],
        prefix_len: usize,
        pad: Option<u32>,
    ) -> Result<Vec<f32>, ScorerError>;

    /// [`PrefixScorer::score`] at several prefix lengths of the same rows (`row_len` tokens
    /// each in `rows`, every length `≤ row_len`): one `[n, experts()]` matrix per length, in
    /// the order of `prefix_lens`. The default scores each length on its own; a causal LM
    /// scorer reads every length from one pass over the longest.
    fn score_lengths(
        &self,
        rows: &[u32],
        row_len: usize,
        prefix_lens: &[usize],
        pad: Option<u32>,
    ) -> Result<Vec<Vec<f32>>, ScorerError> {
        prefix_lens
            .iter()
            .map(|&m| {
                let prefixes: Vec<u32> = rows
                    .chunks(row_len)
                    .flat_map(|r| &r[..m])
                    .copied()
                    .collect();
                self.score(&prefixes, m, pad)
            })
            .collect()
    }

    /// For the `domain` method, which routes by a row's domain label instead of its text: the
    /// expert of each domain. `None` (the default) for scorers that read the text.
    fn domain_groups(&self) -> Option<&DomainGroups> {
        None
    }
}
