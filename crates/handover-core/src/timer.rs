//! The session's timers: one deadline per kind, the earliest one is what the driver sleeps for.

use crate::time::Timestamp;

/// Why the session wants to be woken up. [`Session::poll_timeout`](crate::Session::poll_timeout)
/// returns the earliest deadline with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Timer {
    /// Retry a failed token, conversation or close call.
    ControlRetry,
    /// The next user message may go: its retry backoff or the pacing window has passed.
    SendReady,
    /// Retry a failed delivery to the bot platform.
    BotRetry,
    /// Reconnect the stream after a drop.
    StreamReconnect,
    /// The stream has been silent for the watchdog window.
    StreamWatchdog,
    /// Waited long enough for the stream; create the conversation anyway.
    StreamConnectTimeout,
    /// Backfill from the entries list.
    SafetyPoll,
    /// Renew a verified user's token, or close a guest handover while its token still works.
    TokenRenewal,
    /// The token is about to expire; stop using it.
    TokenExpiry,
    /// The grace period after expiry has run out.
    TokenGrace,
    /// The user stopped typing.
    TypingIdle,
}

impl Timer {
    /// Every timer, in the order in which due timers fire.
    pub const ALL: [Self; 11] = [
        Self::TokenExpiry,
        Self::TokenGrace,
        Self::TokenRenewal,
        Self::ControlRetry,
        Self::StreamConnectTimeout,
        Self::StreamReconnect,
        Self::StreamWatchdog,
        Self::SafetyPoll,
        Self::TypingIdle,
        Self::SendReady,
        Self::BotRetry,
    ];

    fn index(self) -> usize {
        match self {
            Self::TokenExpiry => 0,
            Self::TokenGrace => 1,
            Self::TokenRenewal => 2,
            Self::ControlRetry => 3,
            Self::StreamConnectTimeout => 4,
            Self::StreamReconnect => 5,
            Self::StreamWatchdog => 6,
            Self::SafetyPoll => 7,
            Self::TypingIdle => 8,
            Self::SendReady => 9,
            Self::BotRetry => 10,
        }
    }
}

/// One optional deadline per [`Timer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct TimerTable([Option<Timestamp>; Timer::ALL.len()]);

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Timestamp) {
        self.0[timer.index()] = Some(at);
    }

    pub(crate) fn clear(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Timestamp> {
        self.0[timer.index()]
    }

    /// The earliest deadline; ties go to the timer that fires first.
    pub(crate) fn next(&self) -> Option<(Timestamp, Timer)> {
        Timer::ALL
            .iter()
            .filter_map(|&timer| self.get(timer).map(|at| (at, timer)))
            .min_by_key(|&(at, timer)| (at, timer.index()))
    }

    /// Clears and returns every timer due at `now`, in firing order.
    pub(crate) fn take_due(&mut self, now: Timestamp) -> Vec<Timer> {
        let mut due = Vec::new();
        for timer in Timer::ALL {
            if self.get(timer).is_some_and(|at| at <= now) {
                self.clear(timer);
                due.push(timer);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_deadline_wins_and_only_due_timers_fire() {
        let mut table = TimerTable::default();
        let at = Timestamp::from_unix_secs;
        assert_eq!(table.next(), None);
        table.set(Timer::SafetyPoll, at(120));
        table.set(Timer::StreamWatchdog, at(100));
        table.set(Timer::StreamWatchdog, at(90));
        assert_eq!(table.next(), Some((at(90), Timer::StreamWatchdog)));
        assert_eq!(table.take_due(at(89)), vec![]);
        assert_eq!(
            table.take_due(at(120)),
            vec![Timer::StreamWatchdog, Timer::SafetyPoll]
        );
        assert_eq!(table.next(), None);
    }
}
