//! Salesforce call results and conversation entries.

use std::time::Duration;

use crate::bot::{
    AgentMessage, BotDelivery, EndReason, HandoverStatus, Notification, ProviderEvent, QueueUpdate,
};
use crate::ids::{CallId, EntryId};
use crate::io::{Command, Observation};
use crate::salesforce::{
    CallFailure, ConversationEntry, EntryPayload, MessageContent, ParticipantChange,
    ParticipantOperation, Role, RoutingResult, RoutingStatus, RoutingType, SalesforceRequest,
    SalesforceResponse, Sender, SessionStatus,
};
use crate::time::Timestamp;

use super::{Backfill, ConversationState, Pending, Phase, Session, record};

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The event stream (live or replayed).
    Stream,
    /// The entries list.
    Backfill,
}

impl Session {
    pub(super) fn on_salesforce(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        let Some(pending) = self.calls.remove(&call) else {
            record(out, Observation::StaleResult);
            return;
        };
        match pending {
            Pending::Mint { renewal, attempt } => {
                self.on_mint_result(out, now, renewal, attempt, result);
            }
            Pending::Continue { attempt } => self.on_continue_result(out, now, attempt, result),
            Pending::Create { attempt } => self.on_create_result(out, now, attempt, result),
            Pending::Send => self.on_send_result(out, now, call, result),
            Pending::Backfill => self.on_backfill_result(out, now, call, result),
            Pending::RoutingStatus => self.on_routing_status(out, now, call, result),
            Pending::Close { attempt } => self.on_close_result(out, now, attempt, result),
            Pending::BestEffort => {
                if let Err(failure) = result {
                    record(out, Observation::BestEffortFailed);
                    if failure == CallFailure::Unauthorized {
                        self.on_unauthorized(out, now);
                    }
                }
            }
            Pending::Bot | Pending::BotTyping => {
                // A bot call answered as if it were a Salesforce call: a driver bug.
                self.calls.insert(call, pending);
                record(out, Observation::StaleResult);
            }
        }
    }

    // ---- backfill ---------------------------------------------------------------------------

    /// Lists recent entries unless a routine listing is already under way. Returns whether a
    /// backfill is now under way.
    pub(super) fn request_backfill(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        last: bool,
    ) -> bool {
        // While the create call is in flight, entries of the conversation prove it exists.
        if self.conversation == ConversationState::NotCreated {
            return false;
        }
        // A listing under way serves a routine backfill. A final one must list what exists
        // now, after the end signal, so it starts afresh and the older listing's answer is
        // dropped when it comes.
        if !last && self.backfill.is_some() {
            return true;
        }
        let Some(call) = self.list_entries(out, now, None) else {
            return false;
        };
        self.backfill = Some(Backfill {
            call,
            last,
            pages: 0,
            before: None,
            newest: None,
            collected: Vec::new(),
        });
        true
    }

    fn list_entries(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        before: Option<Timestamp>,
    ) -> Option<CallId> {
        let credential = self.credential(now)?;
        let request = SalesforceRequest::ListEntries {
            conversation_id: self.request.conversation_id,
            before,
            limit: self.config.backfill_page_size,
        };
        Some(self.call_salesforce(out, Pending::Backfill, Some(credential), request))
    }

    /// A page arrived. Everything at or before the horizon was listed by an earlier
    /// backfill; if this page is full and does not reach back to the horizon, entries may be
    /// missing between the two (a withheld entry, a silent stream), so the page before it is
    /// fetched first. Then all pages are relayed at once, in the order things happened.
    fn on_backfill_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        let Some(mut backfill) = self.backfill.take() else {
            return;
        };
        if backfill.call != call {
            self.backfill = Some(backfill);
            return;
        }
        backfill.pages += 1;
        let complete = match result {
            Ok(SalesforceResponse::Entries(page)) => {
                let full = page.len() >= self.config.backfill_page_size as usize;
                let oldest = page.first().and_then(|entry| entry.server_time);
                let newest = page.iter().filter_map(|entry| entry.server_time).max();
                backfill.newest = backfill.newest.max(newest);
                // Pages are fetched newest first; keep the collection oldest first.
                let mut collected = page;
                collected.append(&mut backfill.collected);
                backfill.collected = collected;
                let reaches_horizon = match (oldest, self.backfill_horizon) {
                    (Some(oldest), Some(horizon)) => oldest <= horizon,
                    (_, None) | (None, Some(_)) => false,
                };
                // The previous page began at the same millisecond: no progress is possible.
                let stuck = oldest.is_none() || oldest == backfill.before;
                if !full || reaches_horizon {
                    true
                } else if stuck || backfill.pages >= self.config.backfill_max_pages {
                    record(out, Observation::BackfillIncomplete);
                    false
                } else {
                    if self.phase != Phase::Ended
                        && let Some(next) = self.list_entries(out, now, oldest)
                    {
                        backfill.call = next;
                        backfill.before = oldest;
                        self.backfill = Some(backfill);
                        return;
                    }
                    false
                }
            }
            Err(failure) => {
                record(out, Observation::BestEffortFailed);
                if failure == CallFailure::Unauthorized {
                    self.on_unauthorized(out, now);
                }
                false
            }
            Ok(_) => {
                record(out, Observation::BestEffortFailed);
                false
            }
        };
        if complete && let Some(newest) = backfill.newest {
            self.backfill_horizon = Some(self.backfill_horizon.map_or(newest, |h| h.max(newest)));
        }
        self.relay_backfill(out, now, backfill);
    }

    fn relay_backfill(&mut self, out: &mut Vec<Command>, now: Timestamp, backfill: Backfill) {
        let mut entries = backfill.collected;
        // Oldest first by contract; the stable sort only repairs an out-of-order listing and
        // keeps entries that share a millisecond in the order given.
        entries.sort_by_key(|entry| (entry.server_time.is_none(), entry.server_time));
        let mut new_entries = 0;
        for entry in entries {
            if self.on_entry(out, now, entry, Source::Backfill) {
                new_entries += 1;
            }
        }
        if new_entries > 0 {
            record(out, Observation::Backfilled { new_entries });
        }
        if backfill.last
            && self.phase == Phase::Ending
            && let Some(ending) = self.ending.take()
        {
            self.finish_end(out, now, ending.reason, ending.detail, false);
        }
    }

    // ---- entries ----------------------------------------------------------------------------

    /// Processes one entry from any source. Returns whether it was new.
    pub(super) fn on_entry(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        entry: ConversationEntry,
        source: Source,
    ) -> bool {
        if entry.conversation_id != self.request.conversation_id {
            record(out, Observation::ForeignConversation);
            return false;
        }
        if self.phase == Phase::Ended {
            record(out, Observation::IgnoredAfterEnd);
            return false;
        }
        if !self
            .dedupe
            .first_sighting(&entry.identifier, entry.server_time)
        {
            // A backfill lists recent entries, most of them already seen; only a repeat on the
            // stream is a duplicate worth counting.
            if source == Source::Stream {
                record(out, Observation::DuplicateEntry);
            }
            return false;
        }
        let ConversationEntry {
            identifier,
            sender,
            payload,
            ..
        } = entry;
        if self.phase == Phase::Ending {
            // Only messages still matter: they are what the final backfill is for. And when
            // the end was a guess (the conversation vanished), Salesforce's own end wins.
            match payload {
                EntryPayload::Message(content) => {
                    self.on_message(out, now, identifier, sender, content);
                }
                EntryPayload::CloseConversation => self.explain_ending(EndReason::UserClosed),
                EntryPayload::SessionStatusChanged {
                    status: SessionStatus::Ended,
                    ended_by,
                } => self.explain_ending(if ended_by == Some(Role::EndUser) {
                    EndReason::UserClosed
                } else {
                    EndReason::AgentEnded
                }),
                // Only the messages and the end matter now.
                EntryPayload::SessionStatusChanged { .. }
                | EntryPayload::ParticipantChanged(_)
                | EntryPayload::RoutingResult(_)
                | EntryPayload::TypingStarted
                | EntryPayload::TypingStopped
                | EntryPayload::DeliveryAcknowledged { .. }
                | EntryPayload::ReadAcknowledged { .. }
                | EntryPayload::QueuePosition { .. }
                | EntryPayload::ProgressIndicator { .. }
                | EntryPayload::Unknown { .. } => {}
            }
            return true;
        }
        match payload {
            EntryPayload::Message(content) => {
                self.on_message(out, now, identifier, sender, content)
            }
            EntryPayload::ParticipantChanged(changes) => {
                for change in changes {
                    self.on_participant(out, now, change);
                }
            }
            EntryPayload::RoutingResult(result) => self.on_routing_result(out, now, result),
            EntryPayload::SessionStatusChanged { status, ended_by } => {
                self.on_session_status(out, now, status, ended_by);
            }
            EntryPayload::CloseConversation => {
                self.end(out, now, EndReason::UserClosed, None, false);
            }
            EntryPayload::TypingStarted | EntryPayload::ProgressIndicator { .. } => {
                self.relay_typing(out, &sender, true);
            }
            EntryPayload::TypingStopped => self.relay_typing(out, &sender, false),
            EntryPayload::DeliveryAcknowledged { acknowledged } => {
                self.forward(
                    out,
                    now,
                    ProviderEvent::Delivered {
                        entry: acknowledged,
                    },
                );
            }
            EntryPayload::ReadAcknowledged { acknowledged } => {
                self.forward(
                    out,
                    now,
                    ProviderEvent::Read {
                        entry: acknowledged,
                    },
                );
            }
            EntryPayload::QueuePosition { position } => {
                self.queue_update(out, now, Some(position), None);
            }
            EntryPayload::Unknown { entry_type } => {
                record(out, Observation::UnknownEntryType { entry_type });
            }
        }
        true
    }

    fn explain_ending(&mut self, reason: EndReason) {
        if let Some(ending) = &mut self.ending
            && ending.reason == EndReason::ProviderError
        {
            ending.reason = reason;
            ending.detail = None;
        }
    }

    fn on_message(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        identifier: EntryId,
        sender: Sender,
        content: MessageContent,
    ) {
        if sender.role == Role::EndUser {
            // Salesforce's echo of what the bridge sent; never relayed back.
            return;
        }
        if !sender.role.is_relayed() {
            record(
                out,
                Observation::Ignored {
                    what: "message from a role that is not relayed",
                },
            );
            return;
        }
        if content.is_empty() {
            record(out, Observation::EmptyAgentMessage);
            return;
        }
        let message = AgentMessage {
            entry: identifier.clone(),
            role: sender.role,
            sender_name: sender.display_name,
            content,
        };
        let delivery = BotDelivery::Notify(Notification::Agent(message));
        self.enqueue_bot(out, now, delivery, Some(identifier));
    }

    fn relay_typing(&mut self, out: &mut Vec<Command>, sender: &Sender, on: bool) {
        if sender.role.is_relayed() {
            self.call_bot(out, Pending::BotTyping, BotDelivery::Typing { on });
        }
    }

    // ---- participants and routing -----------------------------------------------------------

    fn on_participant(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        change: ParticipantChange,
    ) {
        if change.role != Role::EndUser {
            self.forward(
                out,
                now,
                ProviderEvent::Participant {
                    operation: change.operation.clone(),
                    role: change.role.clone(),
                    name: change.display_name.clone(),
                },
            );
        }
        if change.role != Role::Agent {
            return;
        }
        let key = change
            .subject
            .clone()
            .or_else(|| change.display_name.clone())
            .unwrap_or_else(|| "agent".to_owned());
        match change.operation {
            ParticipantOperation::Add => self.agent_joined(out, now, key, change.display_name),
            ParticipantOperation::Remove => self.agent_removed(out, now, &key),
            ParticipantOperation::Update | ParticipantOperation::Unknown(_) => {}
        }
    }

    fn agent_joined(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        key: String,
        name: Option<String>,
    ) {
        let was_alone = self.agents.present.is_empty();
        self.agents.present.insert(key, name.clone());
        self.agents.removal_check = None;
        if !was_alone {
            return;
        }
        let previous = std::mem::replace(&mut self.agents.last_name, name.clone());
        self.agents.ever_joined = true;
        self.agents.transfer_seen = false;
        self.phase = Phase::WithAgent;
        self.release_held(out, now);
        if !self.agents.flow_active {
            self.agents.flow_active = true;
            self.inject(out, now, HandoverStatus::Active { agent_name: name });
        } else if self.request.settings.agent_change_notification && name != previous {
            let agent = name.as_deref().unwrap_or("another agent");
            let text = self.config.agent_change_text.replace("{agent}", agent);
            self.status_seq += 1;
            let key = format!("{}/notice/{}", self.request.handover_id, self.status_seq);
            let delivery = BotDelivery::Notify(Notification::Notice { key, text });
            self.enqueue_bot(out, now, delivery, None);
        }
    }

    fn agent_removed(&mut self, out: &mut Vec<Command>, now: Timestamp, key: &str) {
        if self.agents.present.remove(key).is_none() && self.agents.present.len() == 1 {
            // The removal names the agent differently from the join; there was only one.
            self.agents.present.clear();
        }
        if !self.agents.present.is_empty() || self.phase != Phase::WithAgent {
            return;
        }
        if self.agents.transfer_seen {
            self.phase = Phase::Transferring;
            return;
        }
        // A transfer also removes the agent. Only the routing status tells the two apart.
        self.phase = Phase::AgentLeft;
        match self.credential(now) {
            Some(credential) => {
                let request = SalesforceRequest::FetchRoutingStatus {
                    conversation_id: self.request.conversation_id,
                };
                let call =
                    self.call_salesforce(out, Pending::RoutingStatus, Some(credential), request);
                self.agents.removal_check = Some(call);
            }
            // Unknown: staying open is the safe choice.
            None => self.agents.flow_active = false,
        }
    }

    fn on_routing_status(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        if self.agents.removal_check != Some(call) {
            return;
        }
        self.agents.removal_check = None;
        if !self.phase.is_live() || !self.agents.present.is_empty() {
            return;
        }
        match result {
            Ok(SalesforceResponse::RoutingStatus(
                RoutingStatus::Transfer | RoutingStatus::Routed | RoutingStatus::Initial,
            )) => self.phase = Phase::Transferring,
            Ok(SalesforceResponse::RoutingStatus(RoutingStatus::NeedsRouting)) => {
                if self.agents.transfer_seen {
                    self.phase = Phase::Transferring;
                } else if self.config.ends_when_agent_leaves(&self.request.settings) {
                    self.end(out, now, EndReason::AgentLeft, None, true);
                } else {
                    self.agents.flow_active = false;
                }
            }
            Err(CallFailure::Unauthorized) => {
                self.agents.flow_active = false;
                self.on_unauthorized(out, now);
            }
            // An unknown status: never end on a guess.
            Ok(_) | Err(_) => self.agents.flow_active = false,
        }
    }

    fn on_routing_result(&mut self, out: &mut Vec<Command>, now: Timestamp, result: RoutingResult) {
        self.forward(
            out,
            now,
            ProviderEvent::Routing {
                routing_type: result.routing_type.clone(),
                failure: result.failure.clone(),
            },
        );
        if let Some(failure) = result.failure {
            if result.routing_type == RoutingType::Initial {
                let detail = failure.reason.unwrap_or(failure.kind);
                self.end(out, now, EndReason::RoutingFailed, Some(detail), true);
            }
            // A failed transfer leaves the conversation where it was.
            return;
        }
        if result.routing_type == RoutingType::Transfer {
            self.agents.transfer_seen = true;
            if self.agents.present.is_empty() && self.phase == Phase::AgentLeft {
                self.phase = Phase::Transferring;
            }
        }
        if let Some(wait) = result.estimated_wait {
            self.queue_update(out, now, None, Some(wait));
        }
    }

    fn on_session_status(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        status: SessionStatus,
        ended_by: Option<Role>,
    ) {
        match status {
            SessionStatus::Ended => {
                let reason = if ended_by == Some(Role::EndUser) {
                    EndReason::UserClosed
                } else {
                    EndReason::AgentEnded
                };
                self.end(out, now, reason, None, false);
            }
            SessionStatus::Inactive => {
                self.forward(out, now, ProviderEvent::SessionStatus(status));
                self.phase = Phase::Inactive;
                self.agents.present.clear();
                self.agents.removal_check = None;
                self.agents.flow_active = false;
                if self.user_typing {
                    self.stop_typing(out, now);
                }
            }
            SessionStatus::Waiting => {
                self.forward(out, now, ProviderEvent::SessionStatus(status));
                if matches!(self.phase, Phase::Inactive | Phase::AgentLeft) {
                    self.phase = Phase::Queued;
                }
            }
            SessionStatus::New | SessionStatus::Active | SessionStatus::Other(_) => {
                self.forward(out, now, ProviderEvent::SessionStatus(status));
            }
        }
    }

    /// A queue position or wait estimate arrived; tell the Flow if the handover asks for it
    /// and something changed.
    fn queue_update(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        position: Option<u32>,
        wait: Option<Duration>,
    ) {
        if position.is_some() {
            self.queue.position = position;
        }
        if wait.is_some() {
            self.queue.wait = wait;
        }
        let settings = &self.request.settings.queue;
        if !matches!(
            self.phase,
            Phase::OpeningStream
                | Phase::CreatingConversation
                | Phase::Queued
                | Phase::Transferring
        ) {
            return;
        }
        let position = self.queue.position.filter(|_| settings.position);
        let wait = self.queue.wait.filter(|_| settings.estimated_wait_time);
        if position.is_none() && wait.is_none() {
            return;
        }
        let over = settings.alternative.as_ref().filter(|alternative| {
            position
                .zip(alternative.max_position)
                .is_some_and(|(p, max)| p > max)
                || wait
                    .zip(alternative.max_wait)
                    .is_some_and(|(w, max)| w > max)
        });
        let update = match over {
            Some(alternative) => QueueUpdate {
                position: None,
                estimated_wait: None,
                alternative_text: Some(alternative.text.clone()),
            },
            None => QueueUpdate {
                position,
                estimated_wait: wait,
                alternative_text: None,
            },
        };
        if self.queue.last_sent.as_ref() == Some(&update) {
            return;
        }
        self.queue.last_sent = Some(update.clone());
        self.inject(out, now, HandoverStatus::Queue(update));
    }
}
