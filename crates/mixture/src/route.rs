//! A routing decision (paper §2.4, Eqs. 4–7): the member whose router scores a text's first
//! M̂ tokens highest (score offsets included), every member's score, and the time it took.

use serde::{Deserialize, Serialize};

/// One member's routing score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberScore {
    /// The member.
    pub name: String,
    /// Its router's score of the prefix plus the member's score offset.
    pub score: f64,
}

/// Which member a text goes to, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingDecision {
    /// The chosen member (ties go to the first listed).
    pub member: String,
    /// Its position in the manifest's members.
    pub index: usize,
    /// Tokens of the text the decision used (`min(M̂, text length)`).
    pub prefix_tokens: usize,
    /// Every member's score, in manifest order.
    pub scores: Vec<MemberScore>,
    /// Seconds spent routing (tokenizing and scoring).
    pub seconds: f64,
}

impl RoutingDecision {
    /// `expert-01 (routed on 8 tokens; scores expert-00 -12.30, expert-01 -9.10)`.
    pub fn describe(&self) -> String {
        let scores: Vec<String> = self
            .scores
            .iter()
            .map(|s| format!("{} {:.2}", s.name, s.score))
            .collect();
        format!(
            "{} (routed on {} tokens in {:.1} ms; scores {})",
            self.member,
            self.prefix_tokens,
            self.seconds * 1e3,
            scores.join(", ")
        )
    }
}
