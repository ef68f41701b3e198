//! How a handover ends: one terminal status, then cleanup.

use crate::bot::{EndReason, HandoverStatus, Outcome};
use crate::io::{Command, Observation};
use crate::salesforce::{CallFailure, IssuedToken, SalesforceRequest, SalesforceResponse};
use crate::time::Timestamp;
use crate::timer::Timer;

use super::{
    ConversationState, Ending, Origin, OutboundItem, Pending, Phase, RetryOp, Session, record,
};

impl Session {
    /// Ends the handover for `reason`. `close` says whether the conversation must be closed
    /// at Salesforce (it need not when Salesforce ended it).
    ///
    /// When Salesforce ended it, one last backfill runs first, so that an agent message the
    /// stream withheld just before the end still reaches the user before the terminal status.
    pub(super) fn end(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        reason: EndReason,
        detail: Option<String>,
        close: bool,
    ) {
        if !self.phase.is_live() {
            return;
        }
        let salesforce_ended = matches!(reason, EndReason::AgentEnded | EndReason::UserClosed);
        if salesforce_ended && !close {
            self.end_after_backfill(out, now, reason, detail);
        } else {
            self.finish_end(out, now, reason, detail, close);
        }
    }

    /// Ends without closing the conversation, after one last backfill if one can be had.
    pub(super) fn end_after_backfill(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        reason: EndReason,
        detail: Option<String>,
    ) {
        if !self.phase.is_live() {
            return;
        }
        if self.request_backfill(out, now, true) {
            self.phase = Phase::Ending;
            self.ending = Some(Ending { reason, detail });
        } else {
            self.finish_end(out, now, reason, detail, false);
        }
    }

    pub(super) fn finish_end(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        reason: EndReason,
        detail: Option<String>,
        close: bool,
    ) {
        tracing::debug!(
            handover = %self.request.handover_id,
            reason = reason.as_str(),
            "handover ended"
        );
        self.phase = Phase::Ended;
        self.ending = None;
        // Stream entries still waiting for a listing came after the end.
        self.held.clear();
        let mut undelivered = self.refused.clone();
        let unsent = self
            .outbound
            .held
            .drain(..)
            .chain(self.outbound.ready.drain(..));
        for item in unsent {
            if let Origin::User(message) = item.origin
                && !undelivered.contains(&message)
            {
                undelivered.push(message);
            }
        }
        self.outbound.not_before = None;
        for timer in Timer::ALL {
            if timer != Timer::BotRetry {
                self.timers.clear(timer);
            }
        }
        self.control_retry = None;
        // A renewal already in flight is what a close owed with a refused token waits for.
        self.token.renewing = self.renewal_in_flight();
        self.user_typing = false;
        let unconfirmed = match &self.outbound.in_flight {
            Some((
                _,
                OutboundItem {
                    origin: Origin::User(message),
                    ..
                },
            )) => vec![message.clone()],
            Some(_) | None => Vec::new(),
        };
        let outcome = Outcome {
            reason,
            detail,
            undelivered,
            unconfirmed,
            missed: self.missed.clone(),
        };
        self.outcome = Some(outcome.clone());
        self.inject(out, now, HandoverStatus::Ended(outcome));
        self.close_stream(out);
        match (close, self.conversation) {
            (true, ConversationState::Created) => self.close_conversation(out, now, 1),
            (true, ConversationState::Creating { .. }) => {
                self.conversation = ConversationState::Creating {
                    close_when_created: true,
                };
            }
            (true, ConversationState::NotCreated) | (false, _) => self.revoke_token(out, now),
        }
    }

    pub(super) fn close_conversation(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        attempt: u32,
    ) {
        let Some(credential) = self.credential(now) else {
            if self.can_renew_to_close() {
                // Refused, but a verified user's token can be had again: close with that.
                self.close_after_renewal = Some(attempt);
                if !self.renewal_in_flight() {
                    self.mint(out, true, attempt);
                }
                return;
            }
            // The only credential for this conversation is gone; Salesforce's own inactivity
            // timeout will close it.
            record(out, Observation::CloseSkipped);
            return;
        };
        let request = SalesforceRequest::CloseConversation {
            conversation_id: self.request.conversation_id,
        };
        self.call_salesforce(out, Pending::Close { attempt }, Some(credential), request);
    }

    pub(super) fn on_close_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        attempt: u32,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        match result {
            // Already closed is closed.
            Ok(_) | Err(CallFailure::NotFound | CallFailure::Conflict) => {
                self.revoke_token(out, now)
            }
            Err(CallFailure::Unauthorized)
                if self.can_renew_to_close() && attempt < self.config.retry.max_attempts =>
            {
                // The close was the first call to meet the refusal.
                self.token.refused = true;
                self.close_conversation(out, now, attempt + 1);
            }
            Err(CallFailure::Unauthorized) => record(out, Observation::CloseSkipped),
            Err(failure) if failure.is_retryable() && attempt < self.config.retry.max_attempts => {
                self.schedule_control_retry(now, RetryOp::Close, attempt);
            }
            Err(_) => {
                record(out, Observation::BestEffortFailed);
                self.revoke_token(out, now);
            }
        }
    }

    /// Whether a close that has no usable token can get one: a verified user's token is
    /// renewed by minting again, unless the handover ended because that no longer works.
    fn can_renew_to_close(&self) -> bool {
        self.token.verified
            && self.request.settings.identity_token.is_some()
            && self
                .outcome
                .as_ref()
                .is_none_or(|outcome| outcome.reason != EndReason::TokenExpired)
    }

    /// A close owed with a refused token got the renewal's answer.
    pub(super) fn on_renewal_for_close(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        attempt: u32,
        issued: Result<IssuedToken, CallFailure>,
    ) {
        match issued {
            Ok(issued) if self.same_verified_subject(&issued.subject) => {
                self.token.current = Some(self.token_from(now, issued));
                self.token.refused = false;
                record(out, Observation::TokenRenewed);
                self.close_conversation(out, now, attempt);
            }
            other => {
                if let Ok(issued) = other {
                    // Another subject cannot close this conversation; a verified token of
                    // another user is still a credential.
                    self.revoke_issued(out, now, issued);
                }
                if attempt < self.config.retry.max_attempts {
                    self.schedule_control_retry(now, RetryOp::Close, attempt);
                } else {
                    record(out, Observation::CloseSkipped);
                }
            }
        }
    }

    /// A verified user's token is a credential to all their conversations; revoke it once the
    /// handover no longer needs it.
    fn revoke_token(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.token.verified {
            return;
        }
        if let Some(credential) = self.credential(now) {
            self.call_salesforce(
                out,
                Pending::BestEffort,
                Some(credential),
                SalesforceRequest::RevokeToken,
            );
        }
    }
}
