//! Time as the core sees it: a UTC timestamp passed in by the caller.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch (UTC).
///
/// The core never reads a clock. Every [`Session::handle`](crate::Session::handle) call carries
/// the caller's idea of "now" as a `Timestamp`. One wall-clock type serves both purposes the
/// core has for time:
///
/// - Salesforce token expiry is absolute (the JWT `exp` claim), so it must be compared against
///   UTC.
/// - Deadlines are persisted with the session. A deadline kept as a monotonic instant would mean
///   nothing after a restart; a UTC deadline that passed while the bridge was down simply fires
///   on the first call after the restart.
///
/// Drivers should derive `now` from a monotonic clock anchored to UTC once at start (so that NTP
/// steps do not make time jump). The session clamps any step backwards to the latest time it has
/// seen, so a backwards step can delay a timer but never fires one early or reorders anything.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// A timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// A timestamp `secs` seconds after the Unix epoch (JWT `exp` claims are in seconds).
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `self + duration`, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(duration)))
    }

    /// `self - duration`, saturating at the epoch.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(duration)))
    }
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        self.saturating_add(rhs)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        self.saturating_sub(rhs)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_secs(10);
        assert_eq!(t.as_unix_millis(), 10_000);
        assert_eq!(t - Duration::from_secs(20), Timestamp::EPOCH);
        assert_eq!(
            Timestamp::from_unix_millis(u64::MAX) + Duration::from_secs(1),
            Timestamp::from_unix_millis(u64::MAX)
        );
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            (t + Duration::from_millis(1500)).saturating_duration_since(t),
            Duration::from_millis(1500)
        );
    }
}
