//! How stages report progress: one trait, implemented by the binary (progress bars with ETA,
//! or JSON lines for scripts) and by [`NoProgress`]. Library crates never draw anything.

/// Receives a stage's progress. Every method has an empty default.
pub trait Progress {
    /// A phase named `what` starts (or resumes) with `done` of `total` units done.
    fn start(&mut self, _what: &str, _done: u64, _total: u64) {}
    /// `done` units of the current phase are done; `message` says what is happening.
    fn update(&mut self, _done: u64, _message: &str) {}
    /// A line for people (printed above any bar).
    fn note(&mut self, _text: &str) {}
    /// A structured record for scripts (one JSON object per call, e.g. an EM iteration).
    fn record(&mut self, _value: &serde_json::Value) {}
    /// The current phase ended.
    fn finish(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
