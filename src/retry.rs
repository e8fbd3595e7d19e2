//! Retrying what failed: a growing pause with jitter, and one log line per change of state.
//!
//! Every loop that talks to another process (an agent to its server, a fetch to a remote) keeps
//! one [`Retry`]: a failure logs only when a run of failures starts, the pause doubles up to a
//! ceiling with a random part so that many agents do not come back in step, and the first
//! success after failures logs once that it recovered. It never sleeps itself.

use std::fmt::Display;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Retry {
    what: &'static str,
    failures: u32,
    base: Duration,
    max: Duration,
}

impl Retry {
    /// `what` names the action in the log, as in "Reporting to the server failed".
    pub fn new(what: &'static str, base: Duration, max: Duration) -> Retry {
        Retry { what, failures: 0, base, max }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt: the base,
    /// doubled per failure in a row up to the ceiling, of which a random half is taken off.
    /// Logs a warning for the first failure of a run only.
    pub fn failed(&mut self, error: &dyn Display) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            tracing::warn!(action = self.what, %error, "Failed; retrying with a growing pause, logged again once it works.");
        }
        let factor = 2u32.saturating_pow(self.failures - 1).min(1 << 16);
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Records a success; logs once when it ends a run of failures.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(action = self.what, failures = self.failures, "Works again.");
        }
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_with_jitter_up_to_the_ceiling() {
        let mut retry = Retry::new("testing", Duration::from_millis(100), Duration::from_secs(2));
        let pauses: Vec<Duration> = (0..10).map(|_| retry.failed(&"down")).collect();
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(100), "{pauses:?}");
        assert!(pauses[3] >= Duration::from_millis(400) && pauses[3] <= Duration::from_millis(800), "{pauses:?}");
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(2)), "{pauses:?}");
        assert!(pauses[9] >= Duration::from_secs(1), "{pauses:?}");
        assert_eq!(retry.failures(), 10);
        retry.succeeded();
        assert_eq!(retry.failures(), 0);
    }
}
