//! Per-entry exponential backoff with jitter (kube-rs's error policy, in small), on
//! [`crate::retry`]'s delay.

use std::time::Duration;

/// How long to wait before retrying a failed entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound on the delay, however many failures, and on a server's `Retry-After`.
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
    /// random `unit` in `[0, 1)` ([`crate::retry::delay`]).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        crate::retry::delay(self.base, self.max, self.jitter, failures, unit)
    }

    /// The wait after a failure: the delay, or the server's `Retry-After` (at most `max`) when
    /// that is longer.
    pub fn wait(&self, failures: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        crate::retry::wait_before_retry(self.delay(failures, unit), retry_after, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_is_a_floor_capped_by_max() {
        let b = BackoffConfig {
            base: Duration::from_secs(2),
            max: Duration::from_mins(1),
            jitter: 0.0,
        };
        assert_eq!(b.wait(1, 0.5, None), Duration::from_secs(2));
        assert_eq!(
            b.wait(1, 0.5, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(b.wait(1, 0.5, Some(Duration::from_hours(5))), b.max);
        assert_eq!(
            b.wait(6, 0.5, Some(Duration::from_secs(1))),
            Duration::from_mins(1)
        );
    }
}
