//! Generation with a mixture: route the prompt by its prefix (paper §2.2: only the chosen
//! expert runs), load that expert alone, and sample a continuation.

use std::path::Path;

use serde::{Deserialize, Serialize};
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{generate, SamplingOptions};
use smalltalk_routing::{route, Routed};
use smalltalk_stage::layout::expert_dir;

use crate::error::{EvalError, Result};
use crate::models::{check_tokenizer, latest_model};
use crate::text_router::TextRouter;

/// How to generate; with the `clap` feature, also the flags of `smalltalk generate`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct GenerateOptions {
    /// Routing prefix M̂, at least 2: the prompt's first M̂ tokens pick the expert (fewer when
    /// the prompt is shorter).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 32))]
    pub prefix: usize,
    /// Tokens to generate at most (stops early at the end-of-document token).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub max_tokens: usize,
    /// Temperature (> 0, or exactly 0 for greedy), top-k, top-p (in (0, 1]) and seed.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub sampling: SamplingOptions,
}

impl GenerateOptions {
    /// Check the values (errors name the option).
    pub fn validate(&self) -> Result<()> {
        let s = &self.sampling;
        let bad = |m: String| Err(EvalError::Config(m));
        if !s.temperature.is_finite() || s.temperature < 0.0 {
            return bad(format!(
                "temperature must be > 0, or 0 for greedy decoding, not {}",
                s.temperature
            ));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], not {}", s.top_p));
        }
        if self.prefix < 2 {
            return bad(format!(
                "the routing prefix must be at least 2 tokens (the first token is not scored), not {}",
                self.prefix
            ));
        }
        Ok(())
    }
}

/// What [`generate_text`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The routing decision (expert, prefix tokens used, every router's score).
    pub routed: Routed,
    /// The generated token ids (the end-of-document token included when it was sampled).
    pub tokens: Vec<u32>,
    /// The generated text (end-of-document token left out).
    pub completion: String,
}

/// Route `prompt` with the routers in `routers_dir`, load the chosen expert from
/// `experts_dir`, and sample a continuation. `on_text` receives the completion as it grows,
/// in pieces that decode cleanly (byte-level BPE may split a character across tokens).
pub fn generate_text<B: Backend>(
    routers_dir: &Path,
    experts_dir: &Path,
    prompt: &str,
    options: &GenerateOptions,
    device: &B::Device,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    options.validate()?;
    let router = TextRouter::load::<B>(routers_dir, device)?;
    let ids = router.tokenizer.encode(prompt)?;
    let routed = route(router.scorer.as_ref(), &ids, options.prefix)?;
    let run = expert_dir(experts_dir, routed.expert);
    check_tokenizer(&run, router.tokenizer_hash())?;
    let model = latest_model::<B>(&run, device)?;
    let tokenizer = &router.tokenizer;
    let eos = tokenizer.eos_id;
    let (mut shown, mut body) = (String::new(), Vec::new());
    let tokens = generate(
        &model,
        &ids,
        options.max_tokens,
        &[eos],
        &options.sampling,
        |t| {
            if t == eos {
                return;
            }
            body.push(t);
            if let Ok(text) = tokenizer.decode(&body) {
                if !text.ends_with('\u{FFFD}')
                    && text.len() > shown.len()
                    && text.starts_with(&shown)
                {
                    on_text(&text[shown.len()..]);
                    shown = text;
                }
            }
        },
    )?;
    let body: Vec<u32> = tokens.iter().copied().filter(|&t| t != eos).collect();
    let completion = tokenizer.decode(&body)?;
    if completion.len() > shown.len() && completion.starts_with(&shown) {
        on_text(&completion[shown.len()..]);
    }
    Ok(Generation {
        routed,
        tokens,
        completion,
    })
}
