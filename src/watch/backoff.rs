//! Per-entry exponential backoff with jitter (kube-rs's error policy, in small).

use std::time::Duration;

/// How long to wait before retrying a failed entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound on the delay, however many failures.
    pub max: Duration,
    /// Fraction of the delay that is randomised, 0.0..=1.0: the delay is drawn from
    /// `[d * (1 - jitter), d]`. Spreads retries of many nodes hitting the same hub.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_mins(10),
            jitter: 0.2,
        }
    }
}

impl BackoffConfig {
    /// The delay after `failures` consecutive failures (1 = first failure), given a uniform
    /// random `unit` in `[0, 1)`. Doubles per failure up to `max`; never below `base * (1 -
    /// jitter)` and never above `max`.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = failures.saturating_sub(1).min(32);
        let raw = self
            .base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        raw.mul_f64(1.0 - jitter * unit)
    }
}

/// A small non-cryptographic generator (SplitMix64) for jitter; seeded from the OS.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn from_os() -> Self {
        let mut b = [0u8; 8];
        // Jitter only spreads retries; a fixed seed when the OS has no entropy is harmless.
        let _ = getrandom::fill(&mut b);
        Self(u64::from_le_bytes(b))
    }

    /// A uniform value in `[0, 1)`.
    pub(crate) fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: f64) -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_secs(2),
            max: Duration::from_mins(1),
            jitter,
        }
    }

    #[test]
    fn doubles_then_caps() {
        let b = cfg(0.0);
        let got: Vec<u64> = (0..9).map(|n| b.delay(n, 0.5).as_secs()).collect();
        assert_eq!(got, [0, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_mins(1));
    }

    #[test]
    fn jitter_stays_in_band() {
        let b = cfg(0.5);
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(8));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        let mut j = Jitter(42);
        for _ in 0..1000 {
            let u = j.next_unit();
            assert!((0.0..1.0).contains(&u));
            let d = b.delay(10, u);
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_mins(1),
                "{d:?}"
            );
        }
    }

    #[test]
    fn jitter_values_differ() {
        let mut j = Jitter(7);
        let a = j.next_unit();
        let b = j.next_unit();
        assert!((a - b).abs() > f64::EPSILON);
    }
}
