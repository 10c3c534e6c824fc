//! The CPU instruction set the flex kernels run with, chosen at run time.
//!
//! Every kernel body is written once, over fixed blocks of [`LANES`] f32 lanes of plain IEEE
//! arithmetic (no fused multiply-add contraction, reductions in a fixed order), and compiled
//! three times by [`multiversion!`](crate::multiversion): for AVX-512 (F, BW, VL, DQ: one 512-bit
//! register per block), for AVX2 + FMA (two 256-bit registers per block) and for the baseline
//! target. [`Isa::active`] takes the best level the CPU has, capped by the environment variable
//! [`ISA_ENV`] (`avx512`, `avx2` or `baseline`) so that every path can be measured and tested on
//! one machine. The same operations run in the same order on every path: all paths give
//! bit-identical results, and only their speed differs.
//!
//! The matrix products (burn's matmuls and the ones inside the LM-head kernel) are the `gemm`
//! crate's, built with its AVX-512 kernels; `gemm` picks its path by its own detection, which
//! the variable does not reach.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Lanes per block in every kernel body: one AVX-512 register of f32, two AVX2 registers.
pub const LANES: usize = 16;

/// Environment variable that caps the instruction set of the kernels (`avx512`, `avx2`,
/// `baseline`); unset means the best the CPU has. A level above the CPU's is capped at it.
pub const ISA_ENV: &str = "SMALLTALK_CPU_ISA";

/// An instruction-set level of the CPU kernels, ordered from lowest to highest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64), also every non-x86 target.
    Baseline,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512 F, BW, VL and DQ (with AVX2 + FMA).
    Avx512,
}

/// `SMALLTALK_CPU_ISA` holds a value that names no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ISA_ENV}={value:?} names no instruction set: expected avx512, avx2 or baseline")]
pub struct UnknownIsa {
    /// The value found.
    pub value: String,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Baseline, Isa::Avx2, Isa::Avx512];

    /// The level's name as [`ISA_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The highest level this CPU supports (detected once).
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        self <= Isa::detected()
    }

    /// The level set by [`ISA_ENV`] (`None` when unset or empty), not yet capped.
    pub fn from_env() -> Result<Option<Isa>, UnknownIsa> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// The level the kernels run with: [`Isa::detected`] capped by [`ISA_ENV`] (read once).
    /// Panics with the message of [`UnknownIsa`] on a bad value; binaries check
    /// [`Isa::from_env`] first to report it as an error.
    pub fn active() -> Isa {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| match Isa::from_env() {
            Ok(cap) => cap.map_or(Isa::detected(), |c| c.min(Isa::detected())),
            Err(e) => panic!("{e}"),
        })
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = UnknownIsa;

    fn from_str(s: &str) -> Result<Isa, UnknownIsa> {
        let s = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or(UnknownIsa { value: s })
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma");
    if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Baseline
}

/// Defines `fn name(isa: Isa, args…) -> R` that runs the `#[inline(always)]` body `body(args…)`
/// compiled for `isa` (capped at what the CPU has, so any [`Isa`] is safe to pass).
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$attr])*
        $vis fn $name(isa: $crate::fused::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match isa.min($crate::fused::isa::Isa::detected()) {
                    // SAFETY: the level is capped at what the CPU has.
                    $crate::fused::isa::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::fused::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::fused::isa::Isa::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            $body($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_values_are_named() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
            assert_eq!(
                format!(" {} ", isa.name().to_uppercase()).parse::<Isa>(),
                Ok(isa)
            );
        }
        let err = "sse9".parse::<Isa>().unwrap_err().to_string();
        assert!(err.contains(ISA_ENV) && err.contains("sse9"), "{err}");
        assert!(Isa::Baseline.is_supported());
        assert!(Isa::active() <= Isa::detected());
    }

    #[inline(always)]
    fn sum_body(x: &[f32]) -> f32 {
        let mut lanes = [0f32; LANES];
        let blocks = x.chunks_exact(LANES);
        let tail: f32 = blocks.remainder().iter().sum();
        for b in blocks {
            for (l, v) in lanes.iter_mut().zip(b) {
                *l += v;
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    crate::multiversion!(fn sum(x: &[f32]) -> f32 => sum_body);

    #[test]
    fn every_level_gives_the_same_bits() {
        let x: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.731).sin()).collect();
        let want = sum_body(&x);
        for isa in Isa::ALL {
            // Levels above the CPU's run capped: still the same bits.
            assert_eq!(sum(isa, &x).to_bits(), want.to_bits(), "{isa}");
        }
    }
}
