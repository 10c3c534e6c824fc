//! Progress of every stage on the terminal: [`BarProgress`] implements
//! [`smalltalk_stage::Progress`] (the library crates report through that trait and draw
//! nothing).
//!
//! - People: one bar per phase with elapsed time, position/length, rate and ETA (a spinner when
//!   the length is unknown); `note()` lines print above the bar; `record()` values are not shown.
//! - Scripts (`--json`): no bar and no notes; every `record()` value is one JSON line on stdout.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use smalltalk_stage::Progress;

/// What a bar counts, which decides how positions and rates are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarStyle {
    /// Bytes (corpus read, files written): `12.3 MiB/1.0 GiB`, `45 MiB/s`.
    Bytes,
    /// Counts (steps, rows, documents, iterations): `1,200/10,000`, `35.2/s`.
    Steps,
}

impl BarStyle {
    fn template(self, known_length: bool) -> &'static str {
        match (self, known_length) {
            (BarStyle::Bytes, true) => "{prefix:>10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            (BarStyle::Steps, true) => "{prefix:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} ETA {eta} {msg}",
            (BarStyle::Bytes, false) => "{spinner} {prefix} [{elapsed_precise}] {bytes} {bytes_per_sec} {msg}",
            (BarStyle::Steps, false) => "{spinner} {prefix} [{elapsed_precise}] {human_pos} {per_sec} {msg}",
        }
    }
}

/// A stage's progress for people (indicatif bars) or scripts (JSON lines); see the module docs.
///
/// Each [`Progress::start`] begins a new bar named after the phase (a total of 0 means
/// unknown: a spinner); [`Progress::finish`] (or dropping the value) clears it.
pub struct BarProgress {
    json: bool,
    style: BarStyle,
    bar: Option<ProgressBar>,
    message: String,
    records: Box<dyn Write + Send>,
}

impl BarProgress {
    /// Progress for people, or for scripts when `json` (the `--json` flag), counting in `style`.
    pub fn new(json: bool, style: BarStyle) -> Self {
        Self::with_records(json, style, Box::new(std::io::stdout()))
    }

    /// Like [`BarProgress::new`], with JSON records written to `records` instead of stdout.
    fn with_records(json: bool, style: BarStyle, records: Box<dyn Write + Send>) -> Self {
        BarProgress {
            json,
            style,
            bar: None,
            message: String::new(),
            records,
        }
    }

    fn new_bar(&self, what: &str, done: u64, total: u64) -> ProgressBar {
        let style = ProgressStyle::with_template(self.style.template(total > 0))
            .expect("valid progress template");
        let bar = if total > 0 {
            ProgressBar::new(total)
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        if done > 0 {
            // A resumed phase: the rate and ETA count only what this run does.
            bar.set_position(done);
            bar.tick();
            bar.reset_eta();
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

impl Progress for BarProgress {
    fn start(&mut self, what: &str, done: u64, total: u64) {
        if self.json {
            return;
        }
        self.finish();
        self.message.clear();
        self.bar = Some(self.new_bar(what, done, total));
    }

    fn update(&mut self, done: u64, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            if message != self.message {
                self.message = message.to_string();
                bar.set_message(self.message.clone());
            }
        }
    }

    fn note(&mut self, text: &str) {
        if self.json {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn record(&mut self, value: &serde_json::Value) {
        if self.json {
            let _ = writeln!(self.records, "{value}");
            let _ = self.records.flush();
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn drive(progress: &mut dyn Progress) {
        progress.start("phase", 0, 100);
        progress.update(40, "40 rows");
        progress.note("a line for people");
        progress.record(&serde_json::json!({"event": "em", "iteration": 1}));
        progress.finish();
        progress.start("unknown length", 5, 0);
        progress.update(9, "");
        progress.record(&serde_json::json!({"event": "em", "iteration": 2}));
    }

    #[test]
    fn json_mode_prints_records_only_one_line_each() {
        let out = Shared::default();
        let mut progress = BarProgress::with_records(true, BarStyle::Steps, Box::new(out.clone()));
        drive(&mut progress);
        assert!(progress.bar.is_none());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1]["iteration"], 2);
    }

    #[test]
    fn human_mode_draws_bars_and_keeps_records_off_stdout() {
        for style in [BarStyle::Bytes, BarStyle::Steps] {
            let out = Shared::default();
            let mut progress = BarProgress::with_records(false, style, Box::new(out.clone()));
            drive(&mut progress);
            let bar = progress.bar.as_ref().expect("a bar for the running phase");
            assert_eq!((bar.position(), bar.length()), (9, None));
            progress.finish();
            assert!(progress.bar.is_none());
            assert!(out.0.lock().unwrap().is_empty());
        }
    }
}
