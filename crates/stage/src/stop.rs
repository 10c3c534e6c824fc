//! A process-wide stop request. The binary sets it on SIGTERM/SIGINT; training loops check it
//! after every step, write a checkpoint and return, so a rerun resumes from there.

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
