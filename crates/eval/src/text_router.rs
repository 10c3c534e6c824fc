//! The routers of a folder together with their tokenizer: route a text.

use std::path::Path;

use smalltalk_data::TextTokenizer;
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_router::manifest::TOKENIZER_FILE;
use smalltalk_router::{load_scorer, RouterMethod, RoutersManifest};
use smalltalk_routing::{route, PrefixScorer, Routed, RoutingError};

use crate::error::Result;

/// A routers folder loaded for routing texts: its scorer (router LMs or a baseline method)
/// and the tokenizer it reads.
pub struct TextRouter {
    /// The routers, whatever their method.
    pub scorer: Box<dyn PrefixScorer>,
    /// Their method (router LMs by EM, or a baseline).
    pub method: RouterMethod,
    /// Their tokenizer (`tokenizer.json` of the routers folder).
    pub tokenizer: TextTokenizer,
    tokenizer_hash: String,
}

impl TextRouter {
    /// Load the routers folder `dir` (router LMs run on backend `B`).
    pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Self> {
        let method = RoutersManifest::load(dir)?.method;
        let scorer = load_scorer::<B>(dir, device)?;
        let tokenizer = TextTokenizer::load(&dir.join(TOKENIZER_FILE), None)?;
        let tokenizer_hash = scorer.tokenizer_hash();
        Ok(TextRouter {
            scorer,
            method,
            tokenizer,
            tokenizer_hash,
        })
    }

    /// Route `text` by its first `prefix` tokens (paper Eqs. 4–7); fails for texts of fewer
    /// than 2 tokens.
    pub fn route(&self, text: &str, prefix: usize) -> Result<Routed> {
        let ids = self.tokenizer.encode(text)?;
        Ok(route(self.scorer.as_ref(), &ids, prefix)?)
    }

    /// [`TextRouter::route`] for text `index` of many, as (JSON for scripts, a line for
    /// people): a text too short to route gives `"expert": null` and the reason, not an error.
    pub fn route_line(
        &self,
        index: usize,
        text: &str,
        prefix: usize,
    ) -> Result<(serde_json::Value, String)> {
        match self.route(text, prefix) {
            Ok(r) => {
                let mut value = serde_json::to_value(&r).expect("routing serialises");
                value["index"] = index.into();
                Ok((value, format!("text {index} -> {}", r.describe())))
            }
            Err(crate::EvalError::Routing(e @ RoutingError::TooShort { .. })) => Ok((
                serde_json::json!({"index": index, "expert": null, "reason": e.to_string()}),
                format!("text {index}: {e}"),
            )),
            Err(e) => Err(e),
        }
    }

    /// The routers' tokenizer checksum.
    pub fn tokenizer_hash(&self) -> &str {
        &self.tokenizer_hash
    }
}
