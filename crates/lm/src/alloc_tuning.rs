//! glibc malloc settings for the CPU backend (the measurements are in BENCHMARKS.md). A program
//! that trains or scores with the `flex` backend calls [`apply`] first thing in `main`.
//!
//! burn-flex has no memory pool: every op output is a fresh `Vec`, freed when its last
//! reference drops. glibc serves allocations above `M_MMAP_THRESHOLD` (at most 32 MiB by
//! default) with `mmap` and unmaps them on free, so each logits-sized buffer of a training step
//! (`[8192, 32000]` f32 = 1 GB at the router shape) costs ~262k fresh page faults, every step.
//! That page-fault churn was ~45 % of the wall time of a router training step. Keeping such
//! blocks on the heap (`M_MMAP_THRESHOLD` = 1 GiB, `M_MMAP_MAX` = 0) and never trimming the
//! heap (`M_TRIM_THRESHOLD` = `i32::MAX`) lets later steps reuse the pages. The cost: resident
//! memory stays at its peak for the life of the process, which is what a training run wants.
//!
//! Set `SMALLTALK_NO_MALLOPT=1` to skip the tuning (to measure its effect). On other platforms
//! or C libraries this does nothing.

/// The environment variable that disables the tuning when set to anything but empty or `0`.
pub const DISABLE_ENV: &str = "SMALLTALK_NO_MALLOPT";

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    // <malloc.h>
    pub const M_TRIM_THRESHOLD: c_int = -1;
    pub const M_MMAP_THRESHOLD: c_int = -3;
    pub const M_MMAP_MAX: c_int = -4;

    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }
}

static APPLIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`apply`] ran and every setting took effect in this process.
pub fn applied() -> bool {
    APPLIED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the tuning is disabled by [`DISABLE_ENV`].
pub fn disabled() -> bool {
    std::env::var(DISABLE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Apply the malloc settings unless disabled; returns whether all of them were applied. Call
/// it first thing in `main`, before threads start and large allocations happen.
pub fn apply() -> bool {
    if disabled() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use glibc::*;
        // SAFETY: `mallopt` only changes allocator parameters; it is called before any other
        // thread exists, and every value is within the documented range.
        let ok = unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
                && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1
                && mallopt(M_MMAP_MAX, 0) == 1
        };
        APPLIED.store(ok, std::sync::atomic::Ordering::Relaxed);
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn applies_on_glibc() {
        // The test process is multi-threaded, but mallopt is thread-safe (it takes the arena lock).
        if !super::disabled() {
            assert_eq!(
                super::apply(),
                cfg!(all(target_os = "linux", target_env = "gnu"))
            );
        }
    }
}
