//! Tokens, the event stream, and creating the conversation.

use std::time::Duration;

use crate::bot::{EndReason, ProviderEvent};
use crate::ids::CallId;
use crate::io::{Command, Observation, ReconnectReason};
use crate::salesforce::{
    CallFailure, Credential, IssuedToken, MintKind, SalesforceRequest, SalesforceResponse,
    StreamClosed, StreamEvent, Subject,
};
use crate::time::Timestamp;
use crate::timer::Timer;

use super::{Connection, ConversationState, Pending, Phase, RetryOp, Session, Token, record};

impl Session {
    // ---- tokens -----------------------------------------------------------------------------

    pub(super) fn mint(&mut self, out: &mut Vec<Command>, renewal: bool, attempt: u32) {
        let kind = match &self.request.settings.identity_token {
            Some(identity) => MintKind::Verified(identity.clone()),
            None => MintKind::Guest,
        };
        if renewal {
            self.token.renewing = true;
        }
        let request = if renewal {
            SalesforceRequest::RenewToken(kind)
        } else {
            SalesforceRequest::MintToken(kind)
        };
        self.call_salesforce(out, Pending::Mint { renewal, attempt }, None, request);
    }

    /// The token to use for a call at `now`: `None` if there is none, if Salesforce refused
    /// it, or if it is within the safety margin of its expiry. Every Salesforce call that needs
    /// a token goes through here, which is what guarantees that no call carries a token known
    /// to be expired.
    pub(super) fn credential(&self, now: Timestamp) -> Option<Credential> {
        let token = self.token.current.as_ref()?;
        (!self.token.refused && now < token.usable_until).then(|| token.credential.clone())
    }

    /// Whether a call that carries a renewal is in flight.
    pub(super) fn renewal_in_flight(&self) -> bool {
        self.calls
            .values()
            .any(|pending| matches!(pending, Pending::Mint { renewal: true, .. }))
    }

    /// Whether `subject` is the verified user this conversation belongs to.
    pub(super) fn same_verified_subject(&self, subject: &Subject) -> bool {
        match (subject, self.token.current.as_ref().map(|t| &t.subject)) {
            (Subject::Verified(new), Some(Subject::Verified(old))) => new == old,
            _ => false,
        }
    }

    /// The safety margin before a token's expiry; it shrinks with short-lived tokens (tests
    /// use tokens of a few seconds).
    fn safety_margin(&self, now: Timestamp, expires_at: Timestamp) -> Duration {
        let lifetime = expires_at.saturating_duration_since(now);
        self.config.token_safety_margin.min(lifetime / 10)
    }

    pub(super) fn token_from(&self, now: Timestamp, issued: IssuedToken) -> Token {
        let usable_until = issued.expires_at - self.safety_margin(now, issued.expires_at);
        Token {
            credential: Credential {
                token: issued.token,
                expires_at: issued.expires_at,
            },
            subject: issued.subject,
            usable_until,
        }
    }

    /// Revokes a verified token that was minted but will not be used.
    pub(super) fn revoke_issued(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        issued: IssuedToken,
    ) {
        if matches!(issued.subject, Subject::Verified(_)) && now < issued.expires_at {
            let credential = Credential {
                token: issued.token,
                expires_at: issued.expires_at,
            };
            self.call_salesforce(
                out,
                Pending::BestEffort,
                Some(credential),
                SalesforceRequest::RevokeToken,
            );
        }
    }

    fn install_token(&mut self, now: Timestamp, issued: IssuedToken) {
        let lifetime = issued.expires_at.saturating_duration_since(now);
        let margin = self.safety_margin(now, issued.expires_at);
        let lead = self
            .config
            .token_renew_lead
            .min(lifetime / 5)
            .max(margin * 2);
        let usable_until = issued.expires_at - margin;
        self.timers.set(Timer::TokenExpiry, usable_until);
        self.timers
            .set(Timer::TokenRenewal, issued.expires_at - lead);
        if self.token.verified {
            self.timers.set(
                Timer::TokenGrace,
                issued.expires_at + self.config.token_grace,
            );
        } else {
            self.timers.clear(Timer::TokenGrace);
        }
        self.token.current = Some(self.token_from(now, issued));
        self.token.refused = false;
    }

    pub(super) fn on_mint_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        renewal: bool,
        attempt: u32,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        if renewal {
            self.token.renewing = false;
        }
        let issued = match result {
            Ok(SalesforceResponse::Token(issued)) => Ok(issued),
            Ok(_) => Err(unexpected_response()),
            Err(failure) => Err(failure),
        };
        if !self.phase.is_live() {
            if renewal && let Some(close_attempt) = self.close_after_renewal.take() {
                self.on_renewal_for_close(out, now, close_attempt, issued);
            } else if let Ok(issued) = issued {
                // Cancelled while minting. A verified token is still a live credential.
                self.revoke_issued(out, now, issued);
            }
            return;
        }
        match (renewal, issued) {
            (false, Ok(issued)) => self.on_first_token(out, now, issued),
            (true, Ok(issued)) => self.on_renewed_token(out, now, issued, attempt),
            (false, Err(failure)) => {
                if failure.is_retryable() && attempt < self.config.retry.max_attempts {
                    self.schedule_control_retry(now, RetryOp::Mint { renewal: false }, attempt);
                } else {
                    let detail = format!("could not get a Salesforce access token: {failure}");
                    self.end(out, now, EndReason::ProviderError, Some(detail), false);
                }
            }
            // Keep trying until the grace period runs out; the grace timer ends the handover.
            (true, Err(_)) => self.retry_renewal(now, attempt),
        }
    }

    fn on_first_token(&mut self, out: &mut Vec<Command>, now: Timestamp, issued: IssuedToken) {
        match &issued.subject {
            Subject::Verified(_) => self.token.verified = true,
            Subject::Anonymous(_) => {
                if self.request.settings.identity_token.is_some() {
                    record(out, Observation::VerifiedFallbackToGuest);
                    self.forward(out, now, ProviderEvent::VerifiedUserFellBackToGuest);
                }
            }
        }
        if self.last_event_id.is_none() {
            self.last_event_id = issued.last_event_id.clone();
        }
        self.install_token(now, issued);
        self.phase = Phase::OpeningStream;
        self.open_stream(out, now, None);
        self.timers.set(
            Timer::StreamConnectTimeout,
            now + self.config.stream_connect_timeout,
        );
    }

    fn on_renewed_token(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        issued: IssuedToken,
        attempt: u32,
    ) {
        if !self.same_verified_subject(&issued.subject) {
            // An anonymous token (identity token no longer valid) or another user's token
            // cannot reach this conversation. Salesforce judged the identity token itself, so
            // asking again soon with the same one would only spend the org's token budget:
            // plain backoff, not the hurry of `retry_renewal`.
            self.schedule_renewal(now, attempt, false);
            return;
        }
        self.install_token(now, issued);
        record(out, Observation::TokenRenewed);
        self.open_stream(out, now, Some(ReconnectReason::NewToken));
        self.after_token_recovered(out, now);
    }

    /// After a failed renewal call (429, 5xx, a timeout): retried, in a hurry once the
    /// token is unusable.
    fn retry_renewal(&mut self, now: Timestamp, attempt: u32) {
        self.schedule_renewal(now, attempt, true);
    }

    fn schedule_renewal(&mut self, now: Timestamp, attempt: u32, hurry: bool) {
        if self.phase.is_live() {
            self.token.renewing = true;
            let policy = self.config.renewal_retry.clone();
            let mut delay = self.jitter.delay(&policy, attempt);
            // Once the token is unusable the grace period is running: try at least once in
            // each half of what is left of it, rather than back off past its end.
            let unusable = self.token.refused
                || self
                    .token
                    .current
                    .as_ref()
                    .is_none_or(|token| now >= token.usable_until);
            if hurry
                && unusable
                && let Some(grace) = self.timers.get(Timer::TokenGrace)
            {
                let half_of_the_rest = grace.saturating_duration_since(now) / 2;
                delay = delay.min(half_of_the_rest.max(Duration::from_secs(2)));
            }
            self.control_retry = Some((RetryOp::Mint { renewal: true }, attempt + 1));
            self.timers.set(Timer::ControlRetry, now + delay);
        }
    }

    pub(super) fn on_token_renewal_due(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.phase.is_live() {
            return;
        }
        if self.token.verified {
            if !self.token.renewing {
                self.mint(out, true, 1);
            }
        } else {
            // A guest token cannot be renewed (a new one is a new subject, which cannot reach
            // this conversation). End now, while the token can still close the conversation,
            // rather than leave the agent with a conversation nobody can answer.
            let detail = "the guest access token is about to expire and cannot be renewed";
            self.end_token_expired(out, now, detail);
        }
    }

    pub(super) fn on_token_expiry(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.phase.is_live() {
            return;
        }
        record(out, Observation::TokenUnusable);
        self.forward(out, now, ProviderEvent::TokenUnusable);
        self.close_stream(out);
        if !self.token.verified {
            let detail = "the guest access token expired";
            self.end_token_expired(out, now, detail);
        }
    }

    pub(super) fn on_token_grace(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if self.phase.is_live() {
            let detail = "the access token expired and was not renewed within the grace period";
            self.end_token_expired(out, now, detail);
        }
    }

    /// The token is gone for good: end the handover, closing the conversation if a usable
    /// token is left to do it with.
    fn end_token_expired(&mut self, out: &mut Vec<Command>, now: Timestamp, detail: &str) {
        let detail = Some(detail.to_owned());
        self.end(out, now, EndReason::TokenExpired, detail, true);
    }

    /// Salesforce answered 401 before the token's expiry: try a continuation token, then
    /// (verified users) a new token, then give up.
    pub(super) fn on_unauthorized(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.phase.is_live() || self.token.refused {
            return;
        }
        self.token.refused = true;
        record(out, Observation::TokenUnusable);
        self.forward(out, now, ProviderEvent::TokenUnusable);
        self.close_stream(out);
        self.continue_token(out, now, 1);
    }

    fn continue_token(&mut self, out: &mut Vec<Command>, now: Timestamp, attempt: u32) {
        let Some(token) = self
            .token
            .current
            .as_ref()
            .filter(|token| now < token.usable_until)
        else {
            // Expired by time: only a new verified token helps, and the timers handle that.
            return;
        };
        let credential = token.credential.clone();
        self.call_salesforce(
            out,
            Pending::Continue { attempt },
            Some(credential),
            SalesforceRequest::ContinueToken,
        );
    }

    pub(super) fn on_continue_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        attempt: u32,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        if !self.phase.is_live() || !self.token.refused {
            return;
        }
        if let Ok(SalesforceResponse::Token(issued)) = result {
            // Same subject, same expiry (a continuation token does not extend it).
            let subject = self
                .token
                .current
                .as_ref()
                .map_or(issued.subject.clone(), |token| token.subject.clone());
            let usable_until = self
                .token
                .current
                .as_ref()
                .map_or(issued.expires_at, |token| token.usable_until)
                .min(issued.expires_at);
            self.token.current = Some(Token {
                credential: Credential {
                    token: issued.token,
                    expires_at: issued.expires_at,
                },
                subject,
                usable_until,
            });
            self.token.refused = false;
            record(out, Observation::TokenContinued);
            self.open_stream(out, now, Some(ReconnectReason::Unauthorized));
            self.after_token_recovered(out, now);
            return;
        }
        if self.token.verified {
            // S38: a token refused before its expiry is as good as expired now, so the grace
            // period runs from here, not from an expiry that no longer means anything.
            let deadline = now + self.config.token_grace;
            if self
                .timers
                .get(Timer::TokenGrace)
                .is_none_or(|grace| grace > deadline)
            {
                self.timers.set(Timer::TokenGrace, deadline);
            }
            if !self.token.renewing {
                self.mint(out, true, 1);
            }
        } else if attempt < self.config.retry.max_attempts {
            self.schedule_control_retry(now, RetryOp::Continue, attempt);
        } else {
            let detail =
                "Salesforce refused the guest access token and no continuation token could be had";
            self.end_token_expired(out, now, detail);
        }
    }

    fn after_token_recovered(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if self.phase == Phase::CreatingConversation
            && self.conversation == ConversationState::NotCreated
            && self.control_retry.is_none()
        {
            self.create_conversation(out, now, 1);
        }
        self.pump_outbound(out, now);
    }

    // ---- retries ----------------------------------------------------------------------------

    /// Schedules attempt `failed_attempts + 1` of `op`.
    pub(super) fn schedule_control_retry(
        &mut self,
        now: Timestamp,
        op: RetryOp,
        failed_attempts: u32,
    ) {
        let delay = self.delay(failed_attempts);
        self.control_retry = Some((op, failed_attempts + 1));
        self.timers.set(Timer::ControlRetry, now + delay);
    }

    pub(super) fn on_control_retry(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        let Some((op, attempt)) = self.control_retry.take() else {
            return;
        };
        match op {
            RetryOp::Mint { renewal: false } => {
                if self.phase == Phase::MintingToken {
                    self.mint(out, false, attempt);
                }
            }
            RetryOp::Mint { renewal: true } => {
                if self.phase.is_live() && self.token.verified {
                    self.mint(out, true, attempt);
                } else {
                    self.token.renewing = false;
                }
            }
            RetryOp::Continue => {
                if self.phase.is_live() && self.token.refused {
                    self.continue_token(out, now, attempt);
                }
            }
            RetryOp::Create => {
                if self.phase.is_live() && self.conversation == ConversationState::NotCreated {
                    self.create_conversation(out, now, attempt);
                }
            }
            RetryOp::Close => self.close_conversation(out, now, attempt),
        }
    }

    // ---- the conversation -------------------------------------------------------------------

    pub(super) fn create_conversation(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        attempt: u32,
    ) {
        self.timers.clear(Timer::StreamConnectTimeout);
        if self.phase == Phase::OpeningStream {
            self.phase = Phase::CreatingConversation;
        }
        if self.conversation != ConversationState::NotCreated {
            return;
        }
        let Some(credential) = self.credential(now) else {
            // A token is being recovered; `after_token_recovered` comes back here.
            return;
        };
        self.conversation = ConversationState::Creating {
            close_when_created: false,
        };
        let request = SalesforceRequest::CreateConversation {
            conversation_id: self.request.conversation_id,
            routing_attributes: self.routing_attributes.clone(),
        };
        self.call_salesforce(out, Pending::Create { attempt }, Some(credential), request);
    }

    pub(super) fn on_create_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        attempt: u32,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        let close_when_created = matches!(
            self.conversation,
            ConversationState::Creating {
                close_when_created: true
            }
        );
        match result {
            // 409: an earlier attempt that timed out did create it.
            Ok(_) | Err(CallFailure::Conflict) => {
                self.conversation = ConversationState::Created;
                if close_when_created {
                    self.close_conversation(out, now, 1);
                    return;
                }
                if !self.phase.is_live() {
                    return;
                }
                if self.phase == Phase::CreatingConversation {
                    self.phase = Phase::Queued;
                }
                self.timers
                    .set(Timer::SafetyPoll, now + self.safety_poll_interval());
                self.pump_outbound(out, now);
            }
            Err(failure) => {
                self.conversation = ConversationState::NotCreated;
                if !self.phase.is_live() {
                    // It may exist after all if the failure was a timeout; a close of a
                    // conversation that does not exist is harmless.
                    if close_when_created && failure.is_retryable() {
                        self.conversation = ConversationState::Created;
                        self.close_conversation(out, now, 1);
                    }
                    return;
                }
                if failure == CallFailure::Unauthorized {
                    self.on_unauthorized(out, now);
                } else if failure.is_retryable() && attempt < self.config.retry.max_attempts {
                    self.schedule_control_retry(now, RetryOp::Create, attempt);
                } else {
                    let detail = format!("could not create the conversation: {failure}");
                    self.end(out, now, EndReason::ProviderError, Some(detail), false);
                }
            }
        }
    }

    // ---- the event stream -------------------------------------------------------------------

    pub(super) fn open_stream(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        reason: Option<ReconnectReason>,
    ) {
        self.timers.clear(Timer::StreamReconnect);
        let Some(credential) = self.credential(now) else {
            self.stream.connection = Connection::Closed;
            self.timers.clear(Timer::StreamWatchdog);
            return;
        };
        if let Some(reason) = reason {
            record(out, Observation::StreamReconnect { reason });
        }
        let request = SalesforceRequest::OpenStream {
            last_event_id: self.last_event_id.clone(),
        };
        let call = self.call_salesforce(out, Pending::BestEffort, Some(credential), request);
        // The stream reports through `Input::Stream`, not through a call result.
        self.calls.remove(&call);
        self.stream.connection = Connection::Connecting(call);
        self.timers
            .set(Timer::StreamWatchdog, now + self.config.stream_watchdog);
    }

    /// Restored in a new process: the old connection is gone. A stream that was open or
    /// opening is reopened from the last event id (its `Opened` then triggers a backfill); a
    /// stream waiting for its reconnect timer keeps waiting.
    pub(super) fn on_resumed(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        record(out, Observation::Resumed);
        let had_stream = self.stream.connection != Connection::Closed;
        self.stream.connection = Connection::Closed;
        self.timers.clear(Timer::StreamWatchdog);
        if had_stream && self.phase.is_live() {
            self.open_stream(out, now, Some(ReconnectReason::Resumed));
        }
    }

    pub(super) fn close_stream(&mut self, out: &mut Vec<Command>) {
        self.timers.clear(Timer::StreamWatchdog);
        self.timers.clear(Timer::StreamReconnect);
        if self.stream.connection != Connection::Closed {
            self.stream.connection = Connection::Closed;
            self.call_salesforce(
                out,
                Pending::BestEffort,
                None,
                SalesforceRequest::CloseStream,
            );
        }
    }

    pub(super) fn on_stream(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        stream: CallId,
        event: StreamEvent,
    ) {
        let current = self.stream.connection.call() == Some(stream);
        if current && !matches!(event, StreamEvent::Closed(_)) {
            // Any sign of life resets the watchdog.
            self.timers
                .set(Timer::StreamWatchdog, now + self.config.stream_watchdog);
        }
        match event {
            StreamEvent::Opened => {
                if !current {
                    record(out, Observation::StaleResult);
                    return;
                }
                self.stream.connection = Connection::Open(stream);
                self.stream.attempt = 0;
                let reopened = self.stream.opened_once;
                self.stream.opened_once = true;
                if self.phase == Phase::OpeningStream {
                    self.create_conversation(out, now, 1);
                } else if reopened {
                    // Whatever the replay does not cover, the entries list does.
                    self.request_backfill(out, now, false);
                }
            }
            StreamEvent::Entry { event_id, entry } => {
                if current && event_id.is_some() {
                    self.last_event_id = event_id;
                }
                self.on_stream_entry(out, now, entry);
            }
            StreamEvent::Ping => {}
            StreamEvent::Unknown { event_id, name } => {
                if current && event_id.is_some() {
                    self.last_event_id = event_id;
                }
                record(out, Observation::UnknownEvent { name });
            }
            StreamEvent::Malformed { event_id, reason } => {
                if current && event_id.is_some() {
                    self.last_event_id = event_id;
                }
                record(out, Observation::MalformedEvent { reason });
                if self.phase.is_live() {
                    self.request_backfill(out, now, false);
                }
            }
            StreamEvent::Closed(closed) => {
                if !current {
                    return;
                }
                self.stream.connection = Connection::Closed;
                self.timers.clear(Timer::StreamWatchdog);
                if !self.phase.is_live() {
                    return;
                }
                match closed {
                    StreamClosed::Unauthorized => self.on_unauthorized(out, now),
                    StreamClosed::Dropped => {
                        self.stream.attempt = self.stream.attempt.saturating_add(1);
                        let policy = self.config.stream_backoff.clone();
                        let delay = self.jitter.delay(&policy, self.stream.attempt);
                        self.timers.set(Timer::StreamReconnect, now + delay);
                    }
                }
            }
        }
    }
}

pub(super) fn unexpected_response() -> CallFailure {
    CallFailure::Rejected {
        status: 0,
        message: "unexpected response kind".to_owned(),
    }
}
