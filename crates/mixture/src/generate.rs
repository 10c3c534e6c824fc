//! Generation options, their validation, and the text a generation streams: what
//! `Mixture::generate` (paper §2.4: only the routed expert runs) needs besides the model.

use serde::{Deserialize, Serialize};
use smalltalk_data::TextTokenizer;
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{Lm, SamplingOptions};

use crate::error::{MixtureError, Result};
use crate::route::RoutingDecision;

/// The most tokens one generation may ask for: more is taken for a mistake.
pub const MAX_NEW_TOKENS: usize = 1_000_000;

/// How to generate; with the `clap` feature, also the flags of `smalltalk generate`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct GenerateOptions {
    /// Routing prefix M̂, at least 2: the prompt's first M̂ tokens pick the expert (fewer when
    /// the prompt is shorter). Default: the mixture's (`mixture.json`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub prefix: Option<usize>,
    /// Tokens to generate at most, 1 to 1,000,000 (stops early at the end-of-document token).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub max_tokens: usize,
    /// Temperature (> 0, or exactly 0 for greedy), top-k, top-p (in (0, 1]) and seed.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub sampling: SamplingOptions,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            prefix: None,
            max_tokens: 64,
            sampling: SamplingOptions::default(),
        }
    }
}

impl GenerateOptions {
    /// Check the values (errors name the option).
    pub fn validate(&self) -> Result<()> {
        let s = &self.sampling;
        let bad = |m: String| Err(MixtureError::Config(m));
        if !s.temperature.is_finite() || s.temperature < 0.0 {
            return bad(format!(
                "temperature must be > 0, or 0 for greedy decoding, not {}",
                s.temperature
            ));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], not {}", s.top_p));
        }
        if let Some(prefix) = self.prefix.filter(|&p| p < 2) {
            return bad(format!(
                "the routing prefix must be at least 2 tokens (the first token is not scored), not {prefix}"
            ));
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_NEW_TOKENS {
            return bad(format!(
                "max-tokens must be between 1 and {MAX_NEW_TOKENS}, not {}",
                self.max_tokens
            ));
        }
        Ok(())
    }
}

/// Refuse a prompt that cannot be continued: empty, or longer than the expert's context.
pub fn check_prompt<B: Backend>(prompt: &str, ids: &[u32], model: &Lm<B>) -> Result<()> {
    if prompt.is_empty() || ids.is_empty() {
        return Err(MixtureError::Config("the prompt is empty".into()));
    }
    let ctx = model.config().max_seq_len;
    if ids.len() > ctx {
        return Err(MixtureError::Config(format!(
            "the prompt has {} tokens, more than the expert's context of {ctx}",
            ids.len()
        )));
    }
    Ok(())
}

/// Time spent on one generation, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Routing: the routers over the prompt's first M̂ tokens (tokenizing included).
    pub routing_seconds: f64,
    /// Loading the chosen expert (0 when the cache held it).
    pub load_seconds: f64,
    /// The prompt's forward pass and the first new token (the prefill).
    pub prefill_seconds: f64,
    /// Every further new token.
    pub decode_seconds: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// New tokens.
    pub new_tokens: usize,
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The routing decision (the member, every member's score, the time it took).
    pub routing: RoutingDecision,
    /// The generated token ids (the end-of-document token included when it was sampled).
    pub tokens: Vec<u32>,
    /// The generated text (end-of-document token left out).
    pub completion: String,
    /// Where the time went. In a batch, prefill and decode times are those of the whole
    /// group of prompts that went to the same expert.
    pub timing: Timing,
}

/// The text of a growing completion, handed out in pieces that decode cleanly (byte-level
/// BPE may split a character across tokens); the end-of-document token is left out.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    shown: String,
    body: Vec<u32>,
}

impl<'a> TextStream<'a> {
    /// A stream over `tokenizer`'s ids.
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        TextStream {
            tokenizer,
            shown: String::new(),
            body: Vec::new(),
        }
    }

    /// Add token `t`; returns the new text it completes, if any.
    pub fn push(&mut self, t: u32) -> Option<String> {
        if t == self.tokenizer.eos_id {
            return None;
        }
        self.body.push(t);
        let text = self.tokenizer.decode(&self.body).ok()?;
        if !text.ends_with('\u{FFFD}')
            && text.len() > self.shown.len()
            && text.starts_with(&self.shown)
        {
            let piece = text[self.shown.len()..].to_string();
            self.shown = text;
            return Some(piece);
        }
        None
    }

    /// The whole completion, and what of it was not handed out yet.
    pub fn finish(self) -> Result<(String, Option<String>)> {
        let completion = self.tokenizer.decode(&self.body)?;
        let rest = (completion.len() > self.shown.len() && completion.starts_with(&self.shown))
            .then(|| completion[self.shown.len()..].to_string());
        Ok((completion, rest))
    }
}
