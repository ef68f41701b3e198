//! Fault injection: what the control API can switch on, globally or for one conversation.

use serde::{Deserialize, Serialize};

/// Faults in effect. All off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Close every event-stream connection this long after it opened.
    pub drop_every_ms: Option<u64>,
    /// Close every event-stream connection after it sent this many events.
    pub drop_after_events: Option<u32>,
    /// Keep streams open but send nothing: no events, no pings.
    pub stall: bool,
    /// Send every event frame twice.
    pub duplicate_frames: bool,
    /// Send all pending frames in one chunk.
    pub coalesce_frames: bool,
    /// Send every frame in two chunks, cut in the middle.
    pub split_frames: bool,
    /// Probability (0–1) that a REST call fails with 503.
    pub error_rate_5xx: f64,
    /// Probability (0–1) that a REST call fails with 429.
    pub error_rate_429: f64,
    /// Added latency on every REST call, in milliseconds.
    pub latency_ms: u64,
    /// The next this-many events are left off the stream; only the entries list has them.
    pub withhold_next_events: u32,
    /// The next this-many events go out on the stream with their data cut in half (no longer
    /// JSON); the entries list has them intact.
    pub garble_next_events: u32,
    /// Events go out without an `id:` line and access tokens without a `lastEventId`: the
    /// client has no event id to resume from, and what a reconnect gets is up to
    /// `replay_without_last_event_id`.
    pub omit_event_ids: bool,
}

impl Faults {
    /// The stronger of two fault sets, for a conversation under global faults.
    pub fn combine(&self, other: &Self) -> Self {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            drop_every_ms: min(self.drop_every_ms, other.drop_every_ms),
            drop_after_events: min(
                self.drop_after_events.map(u64::from),
                other.drop_after_events.map(u64::from),
            )
            .and_then(|n| u32::try_from(n).ok()),
            stall: self.stall || other.stall,
            duplicate_frames: self.duplicate_frames || other.duplicate_frames,
            coalesce_frames: self.coalesce_frames || other.coalesce_frames,
            split_frames: self.split_frames || other.split_frames,
            error_rate_5xx: self.error_rate_5xx.max(other.error_rate_5xx),
            error_rate_429: self.error_rate_429.max(other.error_rate_429),
            latency_ms: self.latency_ms.max(other.latency_ms),
            withhold_next_events: self.withhold_next_events.max(other.withhold_next_events),
            garble_next_events: self.garble_next_events.max(other.garble_next_events),
            omit_event_ids: self.omit_event_ids || other.omit_event_ids,
        }
    }
}
