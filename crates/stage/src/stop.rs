//! A process-wide stop request. A binary sets it on SIGTERM/SIGINT ([`on_signals`]); training
//! loops check it after every step, write a checkpoint and return, so a rerun resumes from
//! there; the binary then exits with [`Stopped`] (status 143).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// The shared flag (for a signal handler to set).
pub fn handle() -> Arc<AtomicBool> {
    flag().clone()
}

/// Ask every long loop of this process to checkpoint and return.
pub fn request() {
    flag().store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Make SIGTERM and SIGINT request a stop (a second signal ends the process at once, status
/// 143). For programs whose stages checkpoint on a stop.
pub fn on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = handle();
    for sig in [SIGTERM, SIGINT] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 143, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
}

/// A stage returned early because a stop was requested (exit with status 143).
#[derive(Debug, thiserror::Error)]
#[error("{stage} stopped on request after writing a checkpoint in {}; rerun the same command to resume", dir.display())]
pub struct Stopped {
    /// The stage.
    pub stage: String,
    /// Its output folder.
    pub dir: std::path::PathBuf,
}

/// `Err(Stopped)` when a stage `stopped` on request.
pub fn check(stopped: bool, stage: &str, dir: &std::path::Path) -> Result<(), Stopped> {
    if stopped {
        return Err(Stopped {
            stage: stage.into(),
            dir: dir.into(),
        });
    }
    Ok(())
}
