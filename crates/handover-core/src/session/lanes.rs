//! The two delivery lanes: user messages toward Salesforce (ordered, paced, one in flight) and
//! deliveries toward the bot platform (ordered, one in flight).

use crate::bot::{BotDelivery, DeliveryFailure, EndReason, ProviderEvent};
use crate::ids::{CallId, EntryId};
use crate::io::{Command, Observation};
use crate::salesforce::{
    Acknowledgement, AcknowledgementKind, CallFailure, SalesforceRequest, SalesforceResponse,
};
use crate::time::Timestamp;
use crate::timer::Timer;

use super::{BotItem, ConversationState, Origin, OutboundItem, Pending, Phase, Session, record};

impl Session {
    // ---- toward Salesforce ------------------------------------------------------------------

    pub(super) fn enqueue_outbound(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        items: Vec<OutboundItem>,
    ) {
        let hold = !self.request.settings.forward_while_queued && !self.agents.ever_joined;
        for item in items {
            if hold && item.origin != Origin::Transcript {
                self.outbound.held.push_back(item);
            } else {
                self.outbound.ready.push_back(item);
            }
        }
        self.pump_outbound(out, now);
    }

    pub(super) fn release_held(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        let held = std::mem::take(&mut self.outbound.held);
        self.outbound.ready.extend(held);
        self.pump_outbound(out, now);
    }

    /// Sends the next message if nothing is in flight, the conversation exists, a token is
    /// usable, and neither a retry backoff nor the pacing window holds it back.
    pub(super) fn pump_outbound(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.phase.is_live()
            || self.conversation != ConversationState::Created
            || self.outbound.in_flight.is_some()
        {
            return;
        }
        let Some(head) = self.outbound.ready.front_mut() else {
            self.timers.clear(Timer::SendReady);
            return;
        };
        let paced_until = self.outbound.pacer.next_slot(now);
        let ready_at = self
            .outbound
            .not_before
            .map_or(paced_until, |not_before| not_before.max(paced_until));
        if ready_at > now {
            if paced_until > now && !head.pacing_reported {
                head.pacing_reported = true;
                record(out, Observation::PacingDelay);
            }
            self.timers.set(Timer::SendReady, ready_at);
            return;
        }
        let Some(credential) = self.credential(now) else {
            // Resumed when a token is back.
            return;
        };
        let Some(item) = self.outbound.ready.pop_front() else {
            return;
        };
        self.outbound.not_before = None;
        self.timers.clear(Timer::SendReady);
        self.outbound.pacer.record(now);
        let request = SalesforceRequest::SendMessage {
            conversation_id: self.request.conversation_id,
            message: item.message.clone(),
            new_session: item.new_session.then(|| self.routing_attributes.clone()),
        };
        let call = self.call_salesforce(out, Pending::Send, Some(credential), request);
        self.outbound.in_flight = Some((call, item));
    }

    pub(super) fn on_send_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        let Some((in_flight, mut item)) = self.outbound.in_flight.take() else {
            record(out, Observation::StaleResult);
            return;
        };
        if in_flight != call {
            self.outbound.in_flight = Some((in_flight, item));
            record(out, Observation::StaleResult);
            return;
        }
        if !self.phase.is_live() {
            if let (Err(_), Origin::User(message)) = (&result, &item.origin) {
                record(
                    out,
                    Observation::MessageRefused {
                        message: message.clone(),
                    },
                );
                // While ending, the outcome is still to be written: list it there. Once
                // ended, the outcome already lists it as unconfirmed.
                if self.phase == Phase::Ending && !self.refused.contains(message) {
                    self.refused.push(message.clone());
                }
            }
            return;
        }
        match result {
            // 409: an earlier attempt with the same id got through.
            Ok(_) | Err(CallFailure::Conflict) => {}
            Err(CallFailure::NoMessagingSession) if !item.new_session => {
                // The messaging session ended (inactivity, pre-chat "every session"): the same
                // message starts a new one, which Salesforce routes again.
                item.new_session = true;
                self.outbound.ready.push_front(item);
                if matches!(
                    self.phase,
                    Phase::WithAgent | Phase::AgentLeft | Phase::Inactive | Phase::Transferring
                ) {
                    self.phase = Phase::Queued;
                    self.agents.present.clear();
                    self.agents.flow_active = false;
                }
            }
            // Salesforce will not take the file (too large, wrong type, or refused for another
            // reason such as a file that could not be fetched): the agent gets the link instead.
            Err(
                CallFailure::PayloadTooLarge
                | CallFailure::UnsupportedMediaType
                | CallFailure::Rejected { .. },
            ) if item.fallback.is_some() => {
                if let Some(link) = item.fallback.take() {
                    record(out, Observation::FileSentAsLink);
                    item.message = link;
                    item.attempt = 0;
                }
                self.outbound.ready.push_front(item);
            }
            Err(CallFailure::Unauthorized) => {
                self.outbound.ready.push_front(item);
                self.on_unauthorized(out, now);
            }
            Err(failure @ (CallFailure::Transient(_) | CallFailure::RateLimited)) => {
                item.attempt += 1;
                let give_up = item.attempt >= self.config.retry.max_attempts;
                let delay = self.delay(item.attempt);
                self.outbound.ready.push_front(item);
                if give_up {
                    let detail = format!("Salesforce kept failing to accept a message: {failure}");
                    self.end(out, now, EndReason::ProviderError, Some(detail), true);
                    return;
                }
                self.outbound.not_before = Some(now + delay);
            }
            Err(CallFailure::NotFound) => {
                // The conversation is gone. The final backfill usually finds out why (a close
                // or an end the stream has not delivered yet) and that becomes the reason.
                self.outbound.ready.push_front(item);
                let detail = "the conversation no longer exists at Salesforce".to_owned();
                self.end_after_backfill(out, now, EndReason::ProviderError, Some(detail));
                return;
            }
            Err(
                failure @ (CallFailure::NoMessagingSession
                | CallFailure::PayloadTooLarge
                | CallFailure::UnsupportedMediaType
                | CallFailure::Rejected { .. }),
            ) => self.refuse(out, now, item, failure.to_string()),
        }
        self.pump_outbound(out, now);
    }

    /// Salesforce will never take this message. It is reported, not dropped: counted, listed
    /// in the outcome, and forwarded to the Flow when events are forwarded.
    fn refuse(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        item: OutboundItem,
        reason: String,
    ) {
        match item.origin {
            Origin::User(message) => {
                record(
                    out,
                    Observation::MessageRefused {
                        message: message.clone(),
                    },
                );
                if !self.refused.contains(&message) {
                    self.refused.push(message.clone());
                }
                self.forward(out, now, ProviderEvent::MessageRefused { message, reason });
            }
            Origin::Transcript | Origin::Presence => {
                record(
                    out,
                    Observation::Ignored {
                        what: "transcript or notice refused by Salesforce",
                    },
                );
            }
        }
    }

    // ---- toward the bot platform ------------------------------------------------------------

    pub(super) fn enqueue_bot(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        delivery: BotDelivery,
        acknowledge: Option<EntryId>,
    ) {
        self.bot.ready.push_back(BotItem {
            delivery,
            acknowledge,
        });
        self.pump_bot(out, now);
    }

    pub(super) fn pump_bot(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if self.bot.in_flight.is_some() {
            return;
        }
        if let Some(not_before) = self.bot.not_before
            && not_before > now
        {
            self.timers.set(Timer::BotRetry, not_before);
            return;
        }
        let Some(item) = self.bot.ready.pop_front() else {
            return;
        };
        self.bot.not_before = None;
        self.timers.clear(Timer::BotRetry);
        let call = self.call_bot(out, Pending::Bot, item.delivery.clone());
        self.bot.in_flight = Some((call, item));
    }

    pub(super) fn on_bot_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<(), DeliveryFailure>,
    ) {
        match self.calls.remove(&call) {
            Some(Pending::Bot) => {}
            Some(Pending::BotTyping) => {
                if result.is_err() {
                    record(out, Observation::BestEffortFailed);
                }
                return;
            }
            Some(other) => {
                self.calls.insert(call, other);
                record(out, Observation::StaleResult);
                return;
            }
            None => {
                record(out, Observation::StaleResult);
                return;
            }
        }
        let Some((in_flight, item)) = self.bot.in_flight.take() else {
            record(out, Observation::StaleResult);
            return;
        };
        if in_flight != call {
            self.bot.in_flight = Some((in_flight, item));
            record(out, Observation::StaleResult);
            return;
        }
        match result {
            Ok(()) => {
                self.bot.attempt = 0;
                if let Some(entry) = item.acknowledge {
                    self.acknowledge_delivered(out, now, entry);
                }
            }
            Err(DeliveryFailure::Transient(_)) => {
                self.bot.attempt += 1;
                if self.bot.attempt >= self.config.retry.max_attempts {
                    self.give_up_on_bot(out, now, item);
                } else {
                    record(out, Observation::BotDeliveryFailed { will_retry: true });
                    let delay = self.delay(self.bot.attempt);
                    self.bot.not_before = Some(now + delay);
                    self.bot.ready.push_front(item);
                }
            }
            Err(DeliveryFailure::Rejected { .. }) => self.give_up_on_bot(out, now, item),
        }
        self.pump_bot(out, now);
    }

    /// The bot platform will not take deliveries (S41): keep them for inspection and end the
    /// handover with an error. The terminal status gets a fresh retry budget of its own.
    fn give_up_on_bot(&mut self, out: &mut Vec<Command>, now: Timestamp, item: BotItem) {
        record(out, Observation::BotDeliveryFailed { will_retry: false });
        self.bot.attempt = 0;
        self.bot.not_before = None;
        self.bot.failed.push(item.delivery);
        // Everything behind it is given up on too, except the terminal status, which the Flow
        // must get whatever happened to the messages before it.
        for item in std::mem::take(&mut self.bot.ready) {
            if is_terminal(&item.delivery) {
                self.bot.ready.push_back(item);
            } else {
                self.bot.failed.push(item.delivery);
            }
        }
        if self.phase.is_live() {
            let detail = "the bot platform did not accept deliveries".to_owned();
            self.end(out, now, EndReason::ProviderError, Some(detail), true);
        }
    }

    fn acknowledge_delivered(&mut self, out: &mut Vec<Command>, now: Timestamp, entry: EntryId) {
        if !self.phase.is_live() {
            return;
        }
        let Some(credential) = self.credential(now) else {
            return;
        };
        let acknowledgement = Acknowledgement {
            id: self.client_id("ack", &[entry.as_str().as_bytes()]),
            entry,
            kind: AcknowledgementKind::Delivered,
        };
        let request = SalesforceRequest::Acknowledge {
            conversation_id: self.request.conversation_id,
            acknowledgements: vec![acknowledgement],
        };
        self.call_salesforce(out, Pending::BestEffort, Some(credential), request);
    }
}

fn is_terminal(delivery: &BotDelivery) -> bool {
    matches!(
        delivery,
        BotDelivery::Inject(crate::bot::StatusUpdate {
            status: crate::bot::HandoverStatus::Ended(_),
            ..
        })
    )
}
