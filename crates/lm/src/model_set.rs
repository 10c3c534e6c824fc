//! The models that score the same rows: the E routers of the E-step and the partition, the E
//! experts of evaluation ("No Need to Talk", §2.2 and §3). They run either stacked into one
//! [`LmStack`] (one pass of every op for all of them) or one after another; both give the same
//! values, bit for bit on `flex`.
//!
//! Which one pays depends on the backend. On a GPU each op of each model is a kernel launch,
//! and the routers' ops are tiny (4.4M parameters), so stacking divides the launches by E. On
//! CPU `flex` every op already runs long enough that its dispatch is a few percent of the step,
//! and the stack's working set is E times larger: the default pipeline's partition ran about
//! 11% slower stacked on our AVX-512 machine (BENCHMARKS.md), so `flex` runs them one by one.
//! [`STACK_ENV`] overrides the choice, to measure both on one machine.

use burn::tensor::backend::Backend;

use crate::error::Result;
use crate::model::Lm;
use crate::score::{all_logprobs, prefix_sums, ScoreOptions};
use crate::stack::LmStack;

/// Most parameters a [`ModelSet`] copies into a stack (2²⁸, 1 GiB of f32): larger models run
/// one at a time rather than held twice while the stack is built.
pub const STACK_MAX_PARAMS: usize = 1 << 28;

/// Environment variable that overrides [`stacking_pays`]: `on` stacks on every backend, `off`
/// on none; unset or empty, the backend decides.
pub const STACK_ENV: &str = "SMALLTALK_STACK_MODELS";

/// [`STACK_ENV`] holds a value other than `on`, `off` or nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{STACK_ENV}={value:?}: expected on or off (or unset: stack on GPU backends only)")]
pub struct UnknownStacking {
    /// The value found.
    pub value: String,
}

/// The choice set by [`STACK_ENV`]: `Some(true)` for `on`, `Some(false)` for `off`, `None`
/// when unset or empty.
pub fn stacking_from_env() -> std::result::Result<Option<bool>, UnknownStacking> {
    parse_stacking(std::env::var(STACK_ENV).ok().as_deref())
}

/// The choice a value of [`STACK_ENV`] names (`None`: unset).
fn parse_stacking(value: Option<&str>) -> std::result::Result<Option<bool>, UnknownStacking> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        None | Some("") => Ok(None),
        Some(_) => Err(UnknownStacking {
            value: value.unwrap_or_default().to_string(),
        }),
    }
}

/// Several models that score the same rows, stacked or one by one.
#[derive(Debug, Clone)]
pub enum ModelSet<B: Backend> {
    /// One stack, one forward pass per chunk of rows for all models.
    Stacked(LmStack<B>),
    /// The models apart, run one after another.
    Each(Vec<Lm<B>>),
}

/// Whether [`ModelSet::new`] stacks on backend `B`: as [`STACK_ENV`] says when set, else on
/// every backend but CPU `flex` (see the module docs). Panics with the message of
/// [`UnknownStacking`] on a bad value; binaries check [`stacking_from_env`] first.
pub fn stacking_pays<B: Backend>() -> bool {
    match stacking_from_env() {
        Ok(Some(choice)) => return choice,
        Ok(None) => {}
        Err(e) => panic!("{e}"),
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        let b = TypeId::of::<B>();
        if b == TypeId::of::<Flex>() || b == TypeId::of::<Autodiff<Flex>>() {
            return false;
        }
    }
    true
}

impl<B: Backend> ModelSet<B> {
    /// `models` stacked where that pays on `B` ([`stacking_pays`]) and they can be
    /// ([`ModelSet::stacked`]), else apart.
    pub fn new(models: Vec<Lm<B>>) -> Self {
        if stacking_pays::<B>() {
            Self::stacked(models)
        } else {
            ModelSet::Each(models)
        }
    }

    /// `models` stacked when they share one config and hold at most [`STACK_MAX_PARAMS`]
    /// parameters together, else apart.
    pub fn stacked(models: Vec<Lm<B>>) -> Self {
        let params: usize = models.iter().map(|m| m.config().num_params()).sum();
        if params <= STACK_MAX_PARAMS {
            let refs: Vec<&Lm<B>> = models.iter().collect();
            if let Ok(stack) = LmStack::new(&refs) {
                return ModelSet::Stacked(stack);
            }
        }
        ModelSet::Each(models)
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        match self {
            ModelSet::Stacked(stack) => stack.models(),
            ModelSet::Each(models) => models.len(),
        }
    }

    /// Whether there are no models.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`crate::score_prefix_lengths`] under every model: indexed `[model][length][row]`.
    pub fn score_prefix_lengths(
        &self,
        tokens: &[u32],
        row_len: usize,
        prefix_lens: &[usize],
        options: &ScoreOptions,
    ) -> Result<Vec<Vec<Vec<f64>>>> {
        match self {
            ModelSet::Stacked(stack) => prefix_sums(stack, tokens, row_len, prefix_lens, options),
            ModelSet::Each(models) => models
                .iter()
                .map(|m| Ok(prefix_sums(m, tokens, row_len, prefix_lens, options)?.remove(0)))
                .collect(),
        }
    }

    /// [`crate::token_logprobs`] under every model: one `rows × (row_len − 1)` vector per model.
    pub fn token_logprobs(
        &self,
        tokens: &[u32],
        row_len: usize,
        options: &ScoreOptions,
    ) -> Result<Vec<Vec<f32>>> {
        match self {
            ModelSet::Stacked(stack) => all_logprobs(stack, tokens, row_len, options),
            ModelSet::Each(models) => models
                .iter()
                .map(|m| Ok(all_logprobs(m, tokens, row_len, options)?.remove(0)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stacking_variable_takes_on_off_or_nothing() {
        assert_eq!(parse_stacking(Some(" ON ")), Ok(Some(true)));
        assert_eq!(parse_stacking(Some("off")), Ok(Some(false)));
        assert_eq!(parse_stacking(Some("")), Ok(None));
        assert_eq!(parse_stacking(None), Ok(None));
        let err = parse_stacking(Some("yes")).unwrap_err().to_string();
        assert!(err.contains(STACK_ENV) && err.contains("\"yes\""), "{err}");
    }
}
