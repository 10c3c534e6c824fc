//! Small summaries of repeated measurements (benchmarks report min and median of runs), and
//! the process's peak memory.

/// `(min, median)` of `xs` (the mean of the two middle values for an even count; NaN for none).
pub fn min_median(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], median)
}

/// Peak resident memory of this process in bytes (Linux: `VmHWM`; 0 elsewhere).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_median_of_even_and_odd_samples() {
        assert_eq!(min_median(&[3.0, 1.0, 2.0]), (1.0, 2.0));
        assert_eq!(min_median(&[4.0, 1.0, 3.0, 2.0]), (1.0, 2.5));
        assert!(min_median(&[]).0.is_nan());
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        assert_eq!(peak_rss_bytes() > 0, cfg!(target_os = "linux"));
    }
}
