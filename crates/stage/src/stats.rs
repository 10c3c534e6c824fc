//! Small summaries of repeated measurements (benchmarks report min and median of runs).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_median_of_even_and_odd_samples() {
        assert_eq!(min_median(&[3.0, 1.0, 2.0]), (1.0, 2.0));
        assert_eq!(min_median(&[4.0, 1.0, 3.0, 2.0]), (1.0, 2.5));
        assert!(min_median(&[]).0.is_nan());
    }
}
