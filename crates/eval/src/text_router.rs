//! The routers of a folder together with their tokenizer: route a text.

use std::path::Path;

use smalltalk_data::TextTokenizer;
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_router::manifest::TOKENIZER_FILE;
use smalltalk_router::RouterSet;
use smalltalk_routing::{route, Routed};

use crate::error::Result;

/// Routers + the tokenizer they read, loaded from a routers folder.
pub struct TextRouter<B: Backend> {
    /// The routers.
    pub routers: RouterSet<B>,
    /// Their tokenizer (`tokenizer.json` of the routers folder).
    pub tokenizer: TextTokenizer,
}

impl<B: Backend> TextRouter<B> {
    /// Load the routers folder `dir`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let routers = RouterSet::<B>::load(dir, device)?;
        let tokenizer = TextTokenizer::load(&dir.join(TOKENIZER_FILE), None)?;
        Ok(TextRouter { routers, tokenizer })
    }

    /// Route `text` by its first `prefix` tokens (paper Eqs. 4–7); fails for texts of fewer
    /// than 2 tokens.
    pub fn route(&self, text: &str, prefix: usize) -> Result<Routed> {
        let ids = self.tokenizer.encode(text)?;
        Ok(route(&self.routers, &ids, prefix)?)
    }

    /// The routers' tokenizer checksum.
    pub fn tokenizer_hash(&self) -> &str {
        &self.routers.tokenizer_hash
    }
}
