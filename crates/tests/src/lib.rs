//! # smalltalk-tests
//!
//! Cross-crate integration and end-to-end tests of SmallTalk, compiled into a single test binary
//! (`tests/integration/main.rs`) to keep build and link time low; and the fixtures that binary
//! and the crates' own tests share: a tiny two-domain corpus and a tiny configuration of every
//! stage that runs anywhere in seconds.

use std::path::{Path, PathBuf};

#[cfg(feature = "typed")]
mod typed;
#[cfg(feature = "typed")]
pub use typed::{build_tiny_dataset, tiny, tiny_settings, TinySettings};

/// Every stage at a tiny size: sequences of 32 tokens (one document each), a 300-id vocabulary, 2 `tiny` routers
/// trained for 2 EM iterations of 3 steps, experts and dense for 4 steps.
pub const TINY_CONFIG: &str = r#"
[data]
seq_len = 32
packing = "doc-start"
[data.tokenizer]
vocab_size = 300
min_frequency = 1
[data.split]
validation = 0.1
test = 0.0

[routers]
experts = 2
preset = "tiny"
prefix_len = 8
iterations = 2
steps_per_iteration = 3
score_batch = 16
[routers.train]
batch_size = 4
lr = 1e-2
warmup_steps = 1

[partition]
chunk_sequences = 16
score_batch = 8

[experts]
preset = "tiny"
[experts.train]
total_steps = 4
batch_size = 4
warmup_steps = 1
"#;

/// A text of domain `d0` (English prose) and one of `d1` (code), numbered `i`.
pub fn domain_text(domain: usize, i: usize) -> String {
    if domain == 0 {
        format!("the cat sat on the mat number {i}. the cat sat on the mat again and again.")
    } else {
        format!("fn main() {{ let x = {i}; println!(\"{{}}\", x + 1); return; }}")
    }
}

/// Write an 80-document JSON-lines corpus alternating the two domains (`domain` field `d0` /
/// `d1`) to `dir/corpus.jsonl`.
pub fn write_two_domain_corpus(dir: &Path) -> PathBuf {
    let mut lines = String::new();
    for i in 0..80 {
        let text = domain_text(i % 2, i);
        lines.push_str(&format!(
            "{{\"text\": {text:?}, \"domain\": \"d{}\"}}\n",
            i % 2
        ));
    }
    let path = dir.join("corpus.jsonl");
    std::fs::write(&path, lines).expect("write the corpus");
    path
}
