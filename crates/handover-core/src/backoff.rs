//! Exponential backoff with jitter, from a deterministic generator seeded by the caller.

use std::time::Duration;

use crate::settings::RetryPolicy;

/// SplitMix64: tiny, fast and good enough for spreading retries. Seeded from the conversation
/// id, so a session's jitter is reproducible in tests and after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The delay before attempt number `attempt + 1`, after `attempt` failures (1-based):
    /// `initial × 2^(attempt-1)` capped at `max`, then scaled by a random factor in [½, 1].
    pub(crate) fn delay(&mut self, policy: &RetryPolicy, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let base = policy
            .initial
            .saturating_mul(1u32 << exponent)
            .min(policy.max);
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        let half = base_ms / 2;
        let spread = self.next_u64() % (base_ms - half + 1);
        Duration::from_millis(half + spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_attempts: 10,
        };
        let mut jitter = Jitter::new(7);
        for attempt in 1..40 {
            let delay = jitter.delay(&policy, attempt);
            let base = Duration::from_secs(1 << (attempt - 1).min(5)).min(policy.max);
            assert!(delay >= base / 2 && delay <= base, "{attempt}: {delay:?}");
        }
        assert_eq!(
            Jitter::new(7).delay(&policy, 3),
            Jitter::new(7).delay(&policy, 3),
            "same seed, same delay"
        );
    }
}
