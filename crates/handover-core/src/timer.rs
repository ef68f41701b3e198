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
    /// Stream entries have waited as long as they may for the listing that puts them in
    /// order; relay them now.
    StreamHold,
    /// Ask again for the listing that held stream entries wait for (the last one failed).
    ListingRetry,
}

impl Timer {
    /// Every timer, in the order in which due timers fire.
    pub const ALL: [Self; 13] = [
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
        Self::StreamHold,
        Self::ListingRetry,
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
            Self::StreamHold => 11,
            Self::ListingRetry => 12,
        }
    }
}

/// One optional deadline per [`Timer`].
///
/// Stored as a list in the order of [`Timer::index`]; a list from a version that had fewer
/// timers reads with the newer ones unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "Vec<Option<Timestamp>>"))]
pub(crate) struct TimerTable([Option<Timestamp>; Timer::ALL.len()]);

impl TryFrom<Vec<Option<Timestamp>>> for TimerTable {
    type Error = String;

    fn try_from(stored: Vec<Option<Timestamp>>) -> Result<Self, Self::Error> {
        if stored.len() > Timer::ALL.len() {
            return Err(format!(
                "{} timers stored, this version knows {}",
                stored.len(),
                Timer::ALL.len()
            ));
        }
        let mut table = Self::default();
        for (slot, at) in table.0.iter_mut().zip(stored) {
            *slot = at;
        }
        Ok(table)
    }
}

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

    /// A session stored by a version with fewer timers reads back with the new ones unset.
    #[cfg(feature = "serde")]
    #[test]
    fn a_table_stored_with_fewer_timers_reads_back() {
        let older = "[null,null,null,null,null,null,null,120000,null,null,null]";
        let table: TimerTable = serde_json::from_str(older).expect("an older table reads");
        assert_eq!(
            table.next(),
            Some((Timestamp::from_unix_secs(120), Timer::SafetyPoll))
        );
        assert_eq!(table.get(Timer::StreamHold), None);
        let too_many = format!("[{}]", vec!["null"; Timer::ALL.len() + 1].join(","));
        assert!(serde_json::from_str::<TimerTable>(&too_many).is_err());
    }
}
