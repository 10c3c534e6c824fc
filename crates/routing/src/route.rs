//! The one routing path: a sequence goes to the expert whose scorer gives its first M̂ tokens
//! the highest score (paper Eqs. 4–7: argmax over routers, no balancing at inference).

use serde::{Deserialize, Serialize};
use smalltalk_partition::{argmax_assign, ScoreMatrix};

use crate::error::{Result, RoutingError};
use crate::scorer::PrefixScorer;

/// Where one text goes and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    /// The chosen expert (ties go to the lowest index).
    pub expert: usize,
    /// Tokens of the text the decision used (`min(prefix, text length)`).
    pub prefix_tokens: usize,
    /// Every expert's score of that prefix.
    pub scores: Vec<f32>,
}

impl Routed {
    /// `expert 1 (routed on 8 tokens; router log-likelihoods -12.30, -9.10)`.
    pub fn describe(&self) -> String {
        let scores: Vec<String> = self.scores.iter().map(|s| format!("{s:.2}")).collect();
        format!(
            "expert {} (routed on {} tokens; router log-likelihoods {})",
            self.expert,
            self.prefix_tokens,
            scores.join(", ")
        )
    }
}

/// Route one tokenized text by its first `prefix` tokens (all of them when it is shorter).
/// Needs `prefix ≥ 2` and a text of at least 2 tokens (the first token is not scored).
pub fn route(scorer: &dyn PrefixScorer, tokens: &[u32], prefix: usize) -> Result<Routed> {
    check_prefix(prefix)?;
    let m = tokens.len().min(prefix);
    if m < 2 {
        return Err(RoutingError::TooShort {
            tokens: tokens.len(),
        });
    }
    let batch = route_batch(scorer, &tokens[..m], m, None)?;
    Ok(Routed {
        expert: batch.experts[0] as usize,
        prefix_tokens: m,
        scores: batch.scores,
    })
}

/// Routing decisions for many prefixes at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedBatch {
    /// Row-major `[n, E]` scores.
    pub scores: Vec<f32>,
    /// The argmax expert of each prefix.
    pub experts: Vec<u32>,
}

/// Route `n` prefixes of `prefix_len` tokens laid out one after another in `prefixes`
/// (`pad` targets are not scored).
pub fn route_batch(
    scorer: &dyn PrefixScorer,
    prefixes: &[u32],
    prefix_len: usize,
    pad: Option<u32>,
) -> Result<RoutedBatch> {
    check_prefix(prefix_len)?;
    if !prefixes.len().is_multiple_of(prefix_len) {
        return Err(RoutingError::Config(format!(
            "{} tokens do not split into prefixes of {prefix_len}",
            prefixes.len()
        )));
    }
    let scores = scorer
        .score(prefixes, prefix_len, pad)
        .map_err(RoutingError::Scorer)?;
    let experts = argmax(&scores, scorer.experts())?;
    Ok(RoutedBatch { scores, experts })
}

/// The argmax expert of each row of a row-major `[n, experts]` score matrix.
pub fn argmax(scores: &[f32], experts: usize) -> Result<Vec<u32>> {
    Ok(argmax_assign(&ScoreMatrix::new(scores, experts)?))
}

fn check_prefix(prefix: usize) -> Result<()> {
    if prefix < 2 {
        return Err(RoutingError::Config(format!(
            "the routing prefix must be at least 2 tokens (the first token is not scored), not {prefix}"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scorer::ScorerError;

    /// Expert `e` scores a prefix by how many of its tokens equal `e` (a toy router).
    pub struct CountScorer(pub usize);

    impl PrefixScorer for CountScorer {
        fn experts(&self) -> usize {
            self.0
        }
        fn trained_prefix(&self) -> usize {
            4
        }
        fn fingerprint(&self) -> String {
            format!("count-{}", self.0)
        }
        fn tokenizer_hash(&self) -> String {
            "xxh3:test".into()
        }
        fn score(
            &self,
            prefixes: &[u32],
            prefix_len: usize,
            pad: Option<u32>,
        ) -> std::result::Result<Vec<f32>, ScorerError> {
            let mut out = Vec::new();
            for p in prefixes.chunks(prefix_len) {
                for e in 0..self.0 {
                    let hits = p[1..]
                        .iter()
                        .filter(|&&t| Some(t) != pad && t as usize == e)
                        .count();
                    out.push(hits as f32);
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn routes_to_the_best_scorer_on_the_prefix_only() {
        let s = CountScorer(3);
        let r = route(&s, &[9, 2, 2, 1, 1, 1, 1, 1], 4).unwrap();
        assert_eq!(r.expert, 2);
        assert_eq!(r.prefix_tokens, 4);
        assert_eq!(r.scores, vec![0.0, 1.0, 2.0]);
        // A longer prefix sees the ones.
        assert_eq!(route(&s, &[9, 2, 2, 1, 1, 1, 1, 1], 8).unwrap().expert, 1);
        // Short texts route on what there is; ties go to the lowest index.
        assert_eq!(route(&s, &[0, 5], 32).unwrap().expert, 0);
        assert!(matches!(
            route(&s, &[1], 32),
            Err(RoutingError::TooShort { tokens: 1 })
        ));
        assert!(route(&s, &[1, 2, 3], 1).is_err());
        assert!(route(&s, &[1, 2, 3], 0).is_err());
    }
}
