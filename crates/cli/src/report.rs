//! Results for people (plain lines) or for scripts (`--json`, one object per line); progress
//! bars are in [`crate::progress`].

/// Where results and progress go.
pub struct Output {
    json: bool,
}

impl Output {
    /// Human output, or JSON lines when `json`.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Whether results are printed as JSON lines.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Print a result: `value` as one JSON line, or the human text.
    pub fn result<T: serde::Serialize + ?Sized>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(value).expect("results serialise")
            );
        } else {
            println!("{}", human());
        }
    }
}
