//! Outbound pacing: at most N messages per rolling window (Salesforce: 22 per conversation per
//! minute).

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Timestamp;

/// Remembers the last `max` send times. A send at `t` is allowed when fewer than `max` sends
/// happened, or the `max`-th most recent one is at least `window` before `t`. So any `max + 1`
/// consecutive sends span at least `window`: no rolling window of that length holds more than
/// `max` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Pacer {
    max: usize,
    window: Duration,
    sent: VecDeque<Timestamp>,
}

impl Pacer {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        let max = usize::try_from(max).unwrap_or(usize::MAX).max(1);
        Self {
            max,
            window,
            sent: VecDeque::with_capacity(max.min(64)),
        }
    }

    /// The earliest time the next send may happen (`now` if it may happen now).
    pub(crate) fn next_slot(&self, now: Timestamp) -> Timestamp {
        if self.sent.len() < self.max {
            return now;
        }
        // `sent` holds exactly the last `max` sends; the oldest bounds the window.
        let oldest = self.sent.front().copied().unwrap_or(now);
        now.max(oldest + self.window)
    }

    pub(crate) fn record(&mut self, at: Timestamp) {
        if self.sent.len() == self.max {
            self.sent.pop_front();
        }
        self.sent.push_back(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twenty_third_send_waits_for_the_window() {
        let mut pacer = Pacer::new(22, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_secs(1000);
        for i in 0..22 {
            let at = t0 + Duration::from_millis(i * 100);
            assert_eq!(pacer.next_slot(at), at);
            pacer.record(at);
        }
        let now = t0 + Duration::from_secs(3);
        assert_eq!(pacer.next_slot(now), t0 + Duration::from_secs(60));
        pacer.record(t0 + Duration::from_secs(60));
        // The next one waits for the second send to leave the window.
        assert_eq!(
            pacer.next_slot(t0 + Duration::from_secs(60)),
            t0 + Duration::from_millis(60_100)
        );
    }
}
