//! A fake Salesforce MIAW server, faithful to what the session relies on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::ids::{CallId, ClientEntryId, ConversationId, EntryId, EventId};
use crate::salesforce::{
    CallFailure, ConversationEntry, Credential, EntryPayload, IssuedToken, MessageContent,
    MintKind, OutboundMessage, ParticipantChange, ParticipantOperation, Role, RoutingFailure,
    RoutingResult, RoutingStatus, RoutingType, SalesforceRequest, SalesforceResponse, Sender,
    SessionStatus, StreamClosed, StreamEvent, Subject,
};
use crate::secret::AccessToken;
use crate::time::Timestamp;

/// Which requests a scheduled fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Minting a token.
    Mint,
    /// A continuation token.
    Continue,
    /// Creating the conversation.
    Create,
    /// Sending a message or file.
    Send,
    /// Listing entries.
    ListEntries,
    /// Reading the routing status.
    RoutingStatus,
    /// Closing the conversation.
    Close,
    /// Connecting the stream (the connection then closes at once).
    OpenStream,
}

impl Target {
    fn matches(self, request: &SalesforceRequest) -> bool {
        matches!(
            (self, request),
            (
                Self::Mint,
                SalesforceRequest::MintToken(_) | SalesforceRequest::RenewToken(_)
            ) | (Self::Continue, SalesforceRequest::ContinueToken)
                | (Self::Create, SalesforceRequest::CreateConversation { .. })
                | (Self::Send, SalesforceRequest::SendMessage { .. })
                | (Self::ListEntries, SalesforceRequest::ListEntries { .. })
                | (
                    Self::RoutingStatus,
                    SalesforceRequest::FetchRoutingStatus { .. }
                )
                | (Self::Close, SalesforceRequest::CloseConversation { .. })
                | (Self::OpenStream, SalesforceRequest::OpenStream { .. })
        )
    }
}

/// A failure to answer once, instead of handling the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which request.
    pub target: Target,
    /// The failure.
    pub failure: CallFailure,
    /// Whether the request was carried out anyway (a timeout after the server acted).
    pub applied: bool,
}

#[derive(Clone, Debug)]
struct TokenRecord {
    label: String,
    subject: Subject,
    expires_at: Timestamp,
    revoked: bool,
}

/// One event in the server's log for the subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEntry {
    /// Its SSE id.
    pub event_id: EventId,
    /// The entry.
    pub entry: ConversationEntry,
    /// Left off the stream (only the entries list has it).
    pub withheld: bool,
    /// Went out on a live stream when it was appended.
    pub streamed: bool,
}

/// The fake server. It holds one conversation (the session's) and every token it minted.
#[derive(Clone, Debug)]
pub struct FakeSalesforce {
    conversation_id: ConversationId,
    /// How long minted tokens live.
    pub token_lifetime: Duration,
    /// Whether identity tokens verify; if not, Salesforce silently issues a guest token.
    pub identity_accepted: bool,
    /// Whether a message after the session ended needs `isNewMessagingSession` (417).
    pub new_session_required_after_end: bool,
    tokens: BTreeMap<String, TokenRecord>,
    next_token: u32,
    next_event: u64,
    next_entry: u64,
    log: Vec<LoggedEntry>,
    pub(super) stream: Option<CallId>,
    /// The stream is connected but delivers nothing and sends no pings.
    pub silent: bool,
    created: bool,
    closed: bool,
    session: SessionStatus,
    routing_status: RoutingStatus,
    agent: Option<(String, String)>,
    agents_joined: u32,
    accepted: Vec<OutboundMessage>,
    accepted_ids: BTreeSet<ClientEntryId>,
    faults: VecDeque<Fault>,
    /// Every request received, for assertions.
    pub requests: Vec<SalesforceRequest>,
    /// The user's typing indicators as the agent saw them.
    pub typing: Vec<bool>,
    /// Entries acknowledged as delivered.
    pub acknowledged: Vec<EntryId>,
    /// Successful entry listings.
    pub listings: usize,
    /// Reads `startTimestamp` and `endTimestamp` as exclusive bounds (Salesforce does not say
    /// which reading it has; by default they are inclusive).
    pub exclusive_bounds: bool,
    /// Entries appended now share the last entry's millisecond.
    same_millisecond: bool,
}

impl FakeSalesforce {
    /// Whether a stream is connected.
    pub fn stream_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// A server for `conversation_id`.
    pub fn new(conversation_id: ConversationId) -> Self {
        Self {
            conversation_id,
            token_lifetime: Duration::from_secs(6 * 3600),
            identity_accepted: true,
            new_session_required_after_end: true,
            tokens: BTreeMap::new(),
            next_token: 1,
            next_event: 1,
            next_entry: 1,
            log: Vec::new(),
            stream: None,
            silent: false,
            created: false,
            closed: false,
            session: SessionStatus::New,
            routing_status: RoutingStatus::Initial,
            agent: None,
            agents_joined: 0,
            accepted: Vec::new(),
            accepted_ids: BTreeSet::new(),
            faults: VecDeque::new(),
            requests: Vec::new(),
            typing: Vec::new(),
            acknowledged: Vec::new(),
            listings: 0,
            exclusive_bounds: false,
            same_millisecond: false,
        }
    }

    /// Fails the next request of `target` with `failure`.
    pub fn fail_next(&mut self, target: Target, failure: CallFailure) {
        self.faults.push_back(Fault {
            target,
            failure,
            applied: false,
        });
    }

    /// Carries out the next request of `target`, then answers with `failure` anyway (a
    /// timeout after the server acted).
    pub fn fail_next_after_applying(&mut self, target: Target, failure: CallFailure) {
        self.faults.push_back(Fault {
            target,
            failure,
            applied: true,
        });
    }

    /// Messages the agent received, in order, each once.
    pub fn accepted(&self) -> &[OutboundMessage] {
        &self.accepted
    }

    /// The server's log.
    pub fn log(&self) -> &[LoggedEntry] {
        &self.log
    }

    /// Whether the conversation was created.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Whether the conversation was closed.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The label ("t1", "t2", …) of a token this server minted.
    pub fn token_label(&self, token: &AccessToken) -> String {
        self.tokens
            .get(token.expose_secret())
            .map_or_else(|| "unknown-token".to_owned(), |record| record.label.clone())
    }

    /// Makes every token refused before its expiry (as after a server-side revocation).
    pub fn revoke_all_tokens(&mut self) {
        for record in self.tokens.values_mut() {
            record.revoked = true;
        }
    }

    // ---- requests ---------------------------------------------------------------------------

    /// Handles a request; stream requests produce stream events instead of a response.
    pub(super) fn handle(
        &mut self,
        now: Timestamp,
        call: CallId,
        credential: Option<&Credential>,
        request: &SalesforceRequest,
        stream_events: &mut Vec<StreamEvent>,
    ) -> Option<Result<SalesforceResponse, CallFailure>> {
        self.requests.push(request.clone());
        if let Some(index) = self.faults.iter().position(|f| f.target.matches(request)) {
            let fault = self.faults.remove(index)?;
            if let SalesforceRequest::OpenStream { .. } = request {
                stream_events.push(StreamEvent::Closed(
                    if fault.failure == CallFailure::Unauthorized {
                        StreamClosed::Unauthorized
                    } else {
                        StreamClosed::Dropped
                    },
                ));
                return None;
            }
            if !fault.applied {
                return Some(Err(fault.failure));
            }
            let _ = self.handle_valid(now, call, credential, request, stream_events);
            return Some(Err(fault.failure));
        }
        self.handle_valid(now, call, credential, request, stream_events)
    }

    fn authorize(
        &self,
        now: Timestamp,
        credential: Option<&Credential>,
    ) -> Result<Subject, CallFailure> {
        let record = credential
            .and_then(|c| self.tokens.get(c.token.expose_secret()))
            .ok_or(CallFailure::Unauthorized)?;
        if record.revoked || now >= record.expires_at {
            return Err(CallFailure::Unauthorized);
        }
        Ok(record.subject.clone())
    }

    fn mint(
        &mut self,
        now: Timestamp,
        subject: Subject,
        expires_at: Option<Timestamp>,
    ) -> IssuedToken {
        let label = format!("t{}", self.next_token);
        self.next_token += 1;
        let secret = format!("sim-access-token-{label}");
        let expires_at = expires_at.unwrap_or(now + self.token_lifetime);
        self.tokens.insert(
            secret.clone(),
            TokenRecord {
                label,
                subject: subject.clone(),
                expires_at,
                revoked: false,
            },
        );
        IssuedToken {
            token: AccessToken::new(secret),
            expires_at,
            subject,
            last_event_id: Some(self.log.last().map_or_else(
                || EventId::new("0").expect("not empty"),
                |e| e.event_id.clone(),
            )),
        }
    }

    fn handle_valid(
        &mut self,
        now: Timestamp,
        call: CallId,
        credential: Option<&Credential>,
        request: &SalesforceRequest,
        stream_events: &mut Vec<StreamEvent>,
    ) -> Option<Result<SalesforceResponse, CallFailure>> {
        let done = Some(Ok(SalesforceResponse::Done));
        match request {
            SalesforceRequest::MintToken(kind) | SalesforceRequest::RenewToken(kind) => {
                let subject = match kind {
                    MintKind::Verified(_) if self.identity_accepted => {
                        Subject::Verified("v2/iamessage/AUTH/keyset/uid:customer-1".to_owned())
                    }
                    MintKind::Verified(_) | MintKind::Guest => {
                        Subject::Anonymous(format!("v2/iamessage/ANON/{}", self.next_token))
                    }
                };
                Some(Ok(SalesforceResponse::Token(self.mint(now, subject, None))))
            }
            SalesforceRequest::ContinueToken => {
                let subject = match self.authorize(now, credential) {
                    Ok(subject) => subject,
                    Err(failure) => return Some(Err(failure)),
                };
                let expires_at = credential
                    .and_then(|c| self.tokens.get(c.token.expose_secret()))
                    .map(|record| record.expires_at);
                Some(Ok(SalesforceResponse::Token(
                    self.mint(now, subject, expires_at),
                )))
            }
            SalesforceRequest::OpenStream { last_event_id } => {
                if self.authorize(now, credential).is_err() {
                    stream_events.push(StreamEvent::Closed(StreamClosed::Unauthorized));
                    return None;
                }
                self.stream = Some(call);
                self.silent = false;
                stream_events.push(StreamEvent::Opened);
                let start = last_event_id
                    .as_ref()
                    .and_then(|id| self.log.iter().position(|e| &e.event_id == id))
                    .map_or(0, |index| index + 1);
                for logged in &self.log[start..] {
                    if !logged.withheld {
                        stream_events.push(StreamEvent::Entry {
                            event_id: Some(logged.event_id.clone()),
                            entry: logged.entry.clone(),
                        });
                    }
                }
                None
            }
            SalesforceRequest::CloseStream => {
                self.stream = None;
                done
            }
            request @ (SalesforceRequest::CreateConversation { .. }
            | SalesforceRequest::SendMessage { .. }
            | SalesforceRequest::SendTyping { .. }
            | SalesforceRequest::Acknowledge { .. }
            | SalesforceRequest::ListEntries { .. }
            | SalesforceRequest::FetchRoutingStatus { .. }
            | SalesforceRequest::CloseConversation { .. }
            | SalesforceRequest::RevokeToken) => {
                if let Err(failure) = self.authorize(now, credential) {
                    return Some(Err(failure));
                }
                Some(self.handle_authorized(now, request, stream_events))
            }
        }
    }

    fn handle_authorized(
        &mut self,
        now: Timestamp,
        request: &SalesforceRequest,
        stream_events: &mut Vec<StreamEvent>,
    ) -> Result<SalesforceResponse, CallFailure> {
        match request {
            SalesforceRequest::CreateConversation { .. } => {
                if self.created {
                    return Err(CallFailure::Conflict);
                }
                self.created = true;
                self.session = SessionStatus::Waiting;
                self.append(
                    now,
                    Role::Router,
                    None,
                    routing(RoutingType::Initial, None),
                    stream_events,
                );
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::SendMessage {
                message,
                new_session,
                ..
            } => {
                if !self.created || self.closed {
                    return Err(CallFailure::NotFound);
                }
                if self.accepted_ids.contains(&message.id) {
                    return Err(CallFailure::Conflict);
                }
                if self.session == SessionStatus::Ended {
                    if new_session.is_none() && self.new_session_required_after_end {
                        return Err(CallFailure::NoMessagingSession);
                    }
                    self.session = SessionStatus::Waiting;
                    self.routing_status = RoutingStatus::NeedsRouting;
                    self.append(
                        now,
                        Role::Router,
                        None,
                        routing(RoutingType::Initial, None),
                        stream_events,
                    );
                }
                self.accepted_ids.insert(message.id);
                self.accepted.push(message.clone());
                let text = match &message.body {
                    crate::salesforce::OutboundBody::Text(text) => text.clone(),
                    crate::salesforce::OutboundBody::File(file) => file.name.clone(),
                };
                let echo = self.append(
                    now,
                    Role::EndUser,
                    Some("Guest"),
                    EntryPayload::Message(MessageContent::Text(text)),
                    stream_events,
                );
                self.append(
                    now,
                    Role::Agent,
                    None,
                    EntryPayload::DeliveryAcknowledged {
                        acknowledged: Some(echo),
                    },
                    stream_events,
                );
                if self.session == SessionStatus::Inactive {
                    self.session = SessionStatus::Waiting;
                    self.append(
                        now,
                        Role::System,
                        None,
                        session_status(SessionStatus::Waiting),
                        stream_events,
                    );
                }
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::SendTyping { typing, .. } => {
                self.typing.push(*typing);
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::Acknowledge {
                acknowledgements, ..
            } => {
                self.acknowledged
                    .extend(acknowledgements.iter().map(|a| a.entry.clone()));
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::ListEntries {
                before,
                limit,
                from,
                ..
            } => {
                // Withheld entries included, in the log's order. Without `from`, the newest
                // `limit` up to `before`; with it, the oldest `limit` from `from` on.
                let exclusive = self.exclusive_bounds;
                let within = |time: Timestamp| {
                    let after_start =
                        from.is_none_or(|from| if exclusive { time > from } else { time >= from });
                    let before_end = before.is_none_or(|before| {
                        if exclusive {
                            time < before
                        } else {
                            time <= before
                        }
                    });
                    after_start && before_end
                };
                let eligible: Vec<_> = self
                    .log
                    .iter()
                    .filter(|logged| logged.entry.server_time.is_some_and(within))
                    .collect();
                let limit = *limit as usize;
                let page = if from.is_some() {
                    &eligible[..limit.min(eligible.len())]
                } else {
                    &eligible[eligible.len().saturating_sub(limit)..]
                };
                let entries = page.iter().map(|logged| logged.entry.clone()).collect();
                self.listings += 1;
                Ok(SalesforceResponse::Entries(entries))
            }
            SalesforceRequest::FetchRoutingStatus { .. } => Ok(SalesforceResponse::RoutingStatus(
                self.routing_status.clone(),
            )),
            SalesforceRequest::CloseConversation { .. } => {
                if !self.created {
                    return Err(CallFailure::NotFound);
                }
                if !self.closed {
                    self.closed = true;
                    self.append(
                        now,
                        Role::EndUser,
                        None,
                        EntryPayload::CloseConversation,
                        stream_events,
                    );
                }
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::RevokeToken => {
                // Only the presented token is revoked; the caller's credential was checked.
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::MintToken(_)
            | SalesforceRequest::RenewToken(_)
            | SalesforceRequest::ContinueToken
            | SalesforceRequest::OpenStream { .. }
            | SalesforceRequest::CloseStream => Err(CallFailure::Rejected {
                status: 400,
                message: "not handled here".to_owned(),
            }),
        }
    }

    // ---- the agent's side -------------------------------------------------------------------

    /// Appends an entry to the log; streams it if the stream is open and not silent.
    fn append(
        &mut self,
        now: Timestamp,
        role: Role,
        display_name: Option<&str>,
        payload: EntryPayload,
        stream_events: &mut Vec<StreamEvent>,
    ) -> EntryId {
        self.append_entry(now, role, display_name, payload, false, stream_events)
    }

    fn append_entry(
        &mut self,
        now: Timestamp,
        role: Role,
        display_name: Option<&str>,
        payload: EntryPayload,
        withheld: bool,
        stream_events: &mut Vec<StreamEvent>,
    ) -> EntryId {
        let identifier =
            EntryId::new(format!("e{}", self.next_entry)).expect("generated ids are not empty");
        self.next_entry += 1;
        let event_id =
            EventId::new(self.next_event.to_string()).expect("generated ids are not empty");
        self.next_event += 1;
        // Salesforce's transcript timestamps have millisecond resolution; two entries recorded
        // in the same instant of simulated time still get distinct, increasing ones, unless a
        // burst shares one millisecond on purpose.
        let last_time = self.log.last().and_then(|last| last.entry.server_time);
        let server_time = match last_time {
            Some(last) if self.same_millisecond => last,
            Some(last) => now.max(last + Duration::from_millis(1)),
            None => now,
        };
        let entry = ConversationEntry {
            conversation_id: self.conversation_id,
            identifier: identifier.clone(),
            sender: Sender {
                role,
                display_name: display_name.map(str::to_owned),
                subject: None,
            },
            server_time: Some(server_time),
            // The sim's echoes carry neither the bridge's id nor its `abstractMessage.id`.
            message_id: None,
            payload,
        };
        let streamed = !withheld && self.stream.is_some() && !self.silent;
        if streamed {
            stream_events.push(StreamEvent::Entry {
                event_id: Some(event_id.clone()),
                entry: entry.clone(),
            });
        }
        self.log.push(LoggedEntry {
            event_id,
            entry,
            withheld,
            streamed,
        });
        identifier
    }

    fn agent_entry(
        &mut self,
        now: Timestamp,
        payload: EntryPayload,
        withheld: bool,
        out: &mut Vec<StreamEvent>,
    ) -> EntryId {
        let name = self.agent.as_ref().map(|(_, name)| name.clone());
        self.append_entry(now, Role::Agent, name.as_deref(), payload, withheld, out)
    }

    pub(super) fn agent_joins(&mut self, now: Timestamp, name: &str, out: &mut Vec<StreamEvent>) {
        self.join(now, name, false, out);
        if self.session != SessionStatus::Active {
            self.session = SessionStatus::Active;
            self.append(
                now,
                Role::System,
                None,
                session_status(SessionStatus::Active),
                out,
            );
        }
    }

    /// An agent is assigned; the join goes on the stream unless `withheld`.
    fn join(&mut self, now: Timestamp, name: &str, withheld: bool, out: &mut Vec<StreamEvent>) {
        self.agents_joined += 1;
        let subject = format!("005agent{}", self.agents_joined);
        self.agent = Some((subject.clone(), name.to_owned()));
        self.routing_status = RoutingStatus::Routed;
        let change = ParticipantChange {
            operation: ParticipantOperation::Add,
            role: Role::Agent,
            display_name: Some(name.to_owned()),
            subject: Some(subject),
        };
        let payload = EntryPayload::ParticipantChanged(vec![change]);
        self.append_entry(now, Role::Agent, Some(name), payload, withheld, out);
    }

    fn agent_removed(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        if let Some((subject, name)) = self.agent.take() {
            let change = ParticipantChange {
                operation: ParticipantOperation::Remove,
                role: Role::Agent,
                display_name: Some(name.clone()),
                subject: Some(subject),
            };
            self.append(
                now,
                Role::Agent,
                Some(&name),
                EntryPayload::ParticipantChanged(vec![change]),
                out,
            );
        }
    }

    pub(super) fn agent_says(
        &mut self,
        now: Timestamp,
        content: MessageContent,
        withheld: bool,
        out: &mut Vec<StreamEvent>,
    ) -> EntryId {
        self.agent_entry(now, EntryPayload::Message(content), withheld, out)
    }

    /// `count` agent messages recorded in one millisecond; every `withhold_every`-th of them
    /// (if not zero) is left off the stream.
    pub(super) fn agent_burst(
        &mut self,
        now: Timestamp,
        count: usize,
        withhold_every: usize,
        out: &mut Vec<StreamEvent>,
    ) -> Vec<EntryId> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let content = MessageContent::Text(format!("burst {}", n + 1));
            let withheld = withhold_every > 0 && (n + 1) % withhold_every == 0;
            ids.push(self.agent_says(now, content, withheld, out));
            self.same_millisecond = true;
        }
        self.same_millisecond = false;
        ids
    }

    /// The agent joins, and the stream withholds the join (only the entries list has it).
    pub(super) fn agent_joins_withheld(
        &mut self,
        now: Timestamp,
        name: &str,
        out: &mut Vec<StreamEvent>,
    ) {
        self.join(now, name, true, out);
        self.session = SessionStatus::Active;
    }

    /// The agent ends the session, and the stream withholds the status change.
    pub(super) fn agent_ends_withheld(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        self.end_session(now, true, out);
    }

    pub(super) fn system_says(
        &mut self,
        now: Timestamp,
        text: &str,
        out: &mut Vec<StreamEvent>,
    ) -> EntryId {
        let payload = EntryPayload::Message(MessageContent::Text(text.to_owned()));
        self.append(now, Role::System, Some("Automated Process"), payload, out)
    }

    pub(super) fn agent_typing(&mut self, now: Timestamp, on: bool, out: &mut Vec<StreamEvent>) {
        let payload = if on {
            EntryPayload::TypingStarted
        } else {
            EntryPayload::TypingStopped
        };
        self.agent_entry(now, payload, false, out);
    }

    pub(super) fn transfer(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        self.routing_status = RoutingStatus::Transfer;
        self.agent_removed(now, out);
        self.append(
            now,
            Role::Router,
            None,
            routing(RoutingType::Transfer, None),
            out,
        );
    }

    pub(super) fn agent_leaves(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        self.routing_status = RoutingStatus::NeedsRouting;
        self.agent_removed(now, out);
    }

    pub(super) fn agent_ends(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        self.end_session(now, false, out);
    }

    /// The agent is removed and ends the session; the status change goes on the stream unless
    /// `withheld`.
    fn end_session(&mut self, now: Timestamp, withheld: bool, out: &mut Vec<StreamEvent>) {
        self.routing_status = RoutingStatus::NeedsRouting;
        self.agent_removed(now, out);
        self.session = SessionStatus::Ended;
        let payload = EntryPayload::SessionStatusChanged {
            status: SessionStatus::Ended,
            ended_by: Some(Role::Agent),
        };
        self.append_entry(now, Role::System, None, payload, withheld, out);
    }

    pub(super) fn mark_inactive(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        self.session = SessionStatus::Inactive;
        self.routing_status = RoutingStatus::NeedsRouting;
        self.append(
            now,
            Role::System,
            None,
            session_status(SessionStatus::Inactive),
            out,
        );
        self.agent_removed(now, out);
    }

    pub(super) fn customer_side_close(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        self.closed = true;
        self.append(
            now,
            Role::EndUser,
            None,
            EntryPayload::CloseConversation,
            out,
        );
    }

    pub(super) fn routing_fails(&mut self, now: Timestamp, out: &mut Vec<StreamEvent>) {
        let failure = RoutingFailure {
            kind: "RoutingError".to_owned(),
            reason: Some("No agent is available".to_owned()),
        };
        self.append(
            now,
            Role::Router,
            None,
            routing(RoutingType::Initial, Some(failure)),
            out,
        );
    }

    pub(super) fn queue_position(
        &mut self,
        now: Timestamp,
        position: u32,
        out: &mut Vec<StreamEvent>,
    ) {
        self.append(
            now,
            Role::Router,
            None,
            EntryPayload::QueuePosition { position },
            out,
        );
    }

    pub(super) fn wait_estimate(
        &mut self,
        now: Timestamp,
        wait: Duration,
        out: &mut Vec<StreamEvent>,
    ) {
        let mut payload = routing(RoutingType::Initial, None);
        if let EntryPayload::RoutingResult(result) = &mut payload {
            result.estimated_wait = Some(wait);
        }
        self.append(now, Role::Router, None, payload, out);
    }

    /// The last `count` entries that went out on a live stream, for a duplicate replay.
    pub(super) fn recent_streamed(&self, count: usize) -> Vec<LoggedEntry> {
        let streamed: Vec<_> = self.log.iter().filter(|e| e.streamed).cloned().collect();
        let skip = streamed.len().saturating_sub(count);
        streamed.into_iter().skip(skip).collect()
    }
}

fn routing(routing_type: RoutingType, failure: Option<RoutingFailure>) -> EntryPayload {
    EntryPayload::RoutingResult(RoutingResult {
        routing_type,
        failure,
        estimated_wait: None,
    })
}

fn session_status(status: SessionStatus) -> EntryPayload {
    EntryPayload::SessionStatusChanged {
        status,
        ended_by: None,
    }
}
