//! Admission of start requests for one bot-side conversation (one Cognigy session).

use std::collections::VecDeque;

use crate::ids::{HandoverId, RequestId};

/// Decides what a start request means for one bot-side conversation: a new handover, a repeat
/// of an earlier request, or a conflict with the handover that is still live. One `StartGate`
/// per Cognigy session (userId + sessionId); one [`Session`](crate::Session) per handover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StartGate {
    live: Option<HandoverId>,
    /// Recent requests and the handover each one started, newest last.
    recent: VecDeque<(RequestId, HandoverId)>,
}

/// What a start request turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new handover with the id the caller offered (S01, S33).
    Started(HandoverId),
    /// The same request was seen before; this is its handover, live or ended (S07).
    Duplicate(HandoverId),
    /// Another handover is still live in this bot conversation (S08, answered with 409).
    Conflict(HandoverId),
}

impl StartGate {
    /// How many request ids are remembered for idempotency.
    pub const REMEMBERED_REQUESTS: usize = 16;

    /// What `request` would be, without admitting it.
    pub fn check(&self, request: &RequestId) -> Option<Admission> {
        if let Some((_, handover)) = self.recent.iter().find(|(id, _)| id == request) {
            return Some(Admission::Duplicate(*handover));
        }
        self.live.map(Admission::Conflict)
    }

    /// Admits `request`, starting `new_handover` if nothing stands in the way.
    pub fn admit(&mut self, request: RequestId, new_handover: HandoverId) -> Admission {
        if let Some(decision) = self.check(&request) {
            return decision;
        }
        if self.recent.len() == Self::REMEMBERED_REQUESTS {
            self.recent.pop_front();
        }
        self.recent.push_back((request, new_handover));
        self.live = Some(new_handover);
        Admission::Started(new_handover)
    }

    /// The handover reported its terminal status; the next request may start a new one.
    pub fn ended(&mut self, handover: HandoverId) {
        if self.live == Some(handover) {
            self.live = None;
        }
    }

    /// The live handover, if any.
    pub fn live(&self) -> Option<HandoverId> {
        self.live
    }
}
