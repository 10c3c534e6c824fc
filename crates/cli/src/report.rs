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
    pub fn result(&self, value: &serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }
}

/// Peak resident memory of this process in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
