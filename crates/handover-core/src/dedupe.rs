//! Bounded "seen" sets for exactly-once processing.

use std::collections::{BTreeSet, VecDeque};

use crate::ids::EntryId;
use crate::time::Timestamp;

/// A set that remembers the last `capacity` values inserted.
///
/// Stored as `capacity` and `order` only: `members` is rebuilt from `order` when read, so a
/// commit writes each value once. (Sessions stored before this also carry `members`, which
/// reading ignores.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecentSet<T: Ord + Clone> {
    capacity: usize,
    order: VecDeque<T>,
    members: BTreeSet<T>,
}

impl<T: Ord + Clone> RecentSet<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            members: BTreeSet::new(),
        }
    }

    pub(crate) fn contains(&self, value: &T) -> bool {
        self.members.contains(value)
    }

    /// Inserts `value`; returns whether it was new, and the value evicted to make room.
    pub(crate) fn insert(&mut self, value: T) -> (bool, Option<T>) {
        if self.members.contains(&value) {
            return (false, None);
        }
        let evicted = if self.order.len() == self.capacity {
            self.order.pop_front().inspect(|old| {
                self.members.remove(old);
            })
        } else {
            None
        };
        self.members.insert(value.clone());
        self.order.push_back(value);
        (true, evicted)
    }
}

#[cfg(feature = "serde")]
impl<T: Ord + Clone + serde::Serialize> serde::Serialize for RecentSet<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut state = serializer.serialize_struct("RecentSet", 2)?;
        state.serialize_field("capacity", &self.capacity)?;
        state.serialize_field("order", &self.order)?;
        state.end()
    }
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(rename = "RecentSet")]
struct RecentSetWire<T> {
    capacity: usize,
    order: VecDeque<T>,
}

#[cfg(feature = "serde")]
impl<'de, T: Ord + Clone + serde::Deserialize<'de>> serde::Deserialize<'de> for RecentSet<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let RecentSetWire { capacity, order } = RecentSetWire::deserialize(deserializer)?;
        let members: BTreeSet<T> = order.iter().cloned().collect();
        if members.len() != order.len() {
            return Err(serde::de::Error::custom("a recent set holds a value twice"));
        }
        Ok(Self {
            capacity: capacity.max(1),
            order,
            members,
        })
    }
}

/// The entries already processed, keyed by identifier. The last `capacity` identifiers are
/// kept exactly; older ones are recognised by a timestamp watermark: the latest server time
/// among the evicted entries. Entries at exactly the watermark are told apart by the ids
/// evicted at that millisecond, so a real entry that shares a millisecond with an evicted one
/// is never mistaken for it.
///
/// Stored without `ids`, which is rebuilt from `recent` when read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "EntryDedupeWire"))]
pub(crate) struct EntryDedupe {
    recent: RecentSet<(EntryId, Option<Timestamp>)>,
    #[cfg_attr(feature = "serde", serde(skip_serializing))]
    ids: BTreeSet<EntryId>,
    watermark: Option<Timestamp>,
    at_watermark: BTreeSet<EntryId>,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct EntryDedupeWire {
    recent: RecentSet<(EntryId, Option<Timestamp>)>,
    watermark: Option<Timestamp>,
    at_watermark: BTreeSet<EntryId>,
}

#[cfg(feature = "serde")]
impl From<EntryDedupeWire> for EntryDedupe {
    fn from(wire: EntryDedupeWire) -> Self {
        let ids = wire.recent.order.iter().map(|(id, _)| id.clone()).collect();
        Self {
            recent: wire.recent,
            ids,
            watermark: wire.watermark,
            at_watermark: wire.at_watermark,
        }
    }
}

impl EntryDedupe {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            recent: RecentSet::new(capacity),
            ids: BTreeSet::new(),
            watermark: None,
            at_watermark: BTreeSet::new(),
        }
    }

    /// Whether the entry has been seen, without recording it.
    pub(crate) fn has_seen(&self, id: &EntryId, server_time: Option<Timestamp>) -> bool {
        self.ids.contains(id)
            || matches!((server_time, self.watermark), (Some(time), Some(watermark))
                if time < watermark || (time == watermark && self.at_watermark.contains(id)))
    }

    /// Records the entry; returns `true` if it had not been seen.
    pub(crate) fn first_sighting(&mut self, id: &EntryId, server_time: Option<Timestamp>) -> bool {
        if self.has_seen(id, server_time) {
            return false;
        }
        let (_, evicted) = self.recent.insert((id.clone(), server_time));
        self.ids.insert(id.clone());
        if let Some((old_id, old_time)) = evicted {
            self.ids.remove(&old_id);
            if let Some(old_time) = old_time {
                match self.watermark {
                    Some(watermark) if old_time < watermark => {}
                    Some(watermark) if old_time == watermark => {
                        self.at_watermark.insert(old_id);
                    }
                    Some(_) | None => {
                        self.watermark = Some(old_time);
                        self.at_watermark = BTreeSet::from([old_id]);
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EntryId {
        EntryId::new(text).expect("test ids are not empty")
    }

    #[test]
    fn duplicates_are_recognised_even_after_eviction() {
        let mut dedupe = EntryDedupe::new(2);
        let at = Timestamp::from_unix_millis;
        assert!(dedupe.first_sighting(&id("a"), Some(at(1))));
        assert!(!dedupe.first_sighting(&id("a"), Some(at(1))));
        assert!(dedupe.first_sighting(&id("b"), Some(at(2))));
        assert!(dedupe.first_sighting(&id("c"), Some(at(3))));
        // "a" was evicted; it is recognised at the watermark by its id.
        assert!(!dedupe.first_sighting(&id("a"), Some(at(1))));
        // An unseen entry at the watermark itself still counts as new.
        assert!(dedupe.first_sighting(&id("a2"), Some(at(1))));
        // Anything older than the watermark was seen (the capacity covers any backfill).
        assert!(dedupe.first_sighting(&id("d"), Some(at(4))));
        assert!(!dedupe.first_sighting(&id("zzz"), Some(at(0))));
    }

    /// A store writes each remembered id once, and what it reads back is the same set.
    #[cfg(feature = "serde")]
    #[test]
    fn a_stored_dedupe_window_holds_each_id_once_and_reads_back_whole() {
        let at = Timestamp::from_unix_millis;
        let mut dedupe = EntryDedupe::new(3);
        for (n, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            assert!(dedupe.first_sighting(&id(name), Some(at(10 + n as u64))));
        }
        let stored = serde_json::to_string(&dedupe).expect("a window serializes");
        assert_eq!(stored.matches("\"e\"").count(), 1, "{stored}");
        let restored: EntryDedupe = serde_json::from_str(&stored).expect("a stored window reads");
        assert_eq!(restored, dedupe);
        // A session stored before carried `members` and `ids` too; reading ignores them.
        let older = r#"{"recent":{"capacity":3,"order":[["c",12]],"members":[["c",12]]},"ids":["c"],"watermark":11,"at_watermark":["b"]}"#;
        let read: EntryDedupe = serde_json::from_str(older).expect("an older window reads");
        assert!(read.has_seen(&id("c"), Some(at(12))));
        assert!(read.has_seen(&id("b"), Some(at(11))));
        assert!(!read.has_seen(&id("z"), Some(at(12))));
    }
}
