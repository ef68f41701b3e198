//! One-line renderings of inputs and commands for simulation logs.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bot::{BotDelivery, HandoverStatus, Notification, ProviderEvent};
use crate::io::{Command, Input, Observation};
use crate::salesforce::{
    CallFailure, ConversationEntry, EntryPayload, MessageContent, MintKind, OutboundBody,
    ParticipantOperation, Role, SalesforceRequest, SalesforceResponse, StreamClosed, StreamEvent,
    Subject,
};
use crate::time::Timestamp;

use super::salesforce::FakeSalesforce;

pub(super) fn time(epoch: Timestamp, now: Timestamp) -> String {
    let millis = now.saturating_duration_since(epoch).as_millis();
    let (secs, millis) = (millis / 1000, millis % 1000);
    let (mins, secs) = (secs / 60, secs % 60);
    let (hours, mins) = (mins / 60, mins % 60);
    if millis == 0 {
        format!("{hours}:{mins:02}:{secs:02}")
    } else {
        format!("{hours}:{mins:02}:{secs:02}.{millis:03}")
    }
}

fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if duration.subsec_millis() == 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn short(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { '⏎' } else { c })
        .collect();
    if flat.chars().count() > 40 {
        let head: String = flat.chars().take(37).collect();
        format!("{head:?}…({} chars)", text.chars().count())
    } else {
        format!("{flat:?}")
    }
}

fn content(content: &MessageContent) -> String {
    match content {
        MessageContent::Text(text) => short(text),
        MessageContent::Attachments { text, files } => {
            let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
            format!(
                "files {names:?} text {}",
                text.as_deref().map_or("none".to_owned(), short)
            )
        }
        MessageContent::Choices {
            text,
            style,
            options,
        } => {
            let titles: Vec<_> = options.iter().map(|o| o.title.as_str()).collect();
            format!("{style:?} {} {titles:?}", short(text))
        }
        MessageContent::Link { url, .. } => format!("link {url}"),
        MessageContent::Other {
            kind,
            fallback_text,
        } => {
            format!(
                "{kind} {}",
                fallback_text.as_deref().map_or("none".to_owned(), short)
            )
        }
    }
}

fn role(role: &Role) -> String {
    match role {
        Role::Unknown(name) => name.clone(),
        Role::EndUser
        | Role::Agent
        | Role::Chatbot
        | Role::System
        | Role::Router
        | Role::Supervisor => format!("{role:?}"),
    }
}

fn entry(entry: &ConversationEntry) -> String {
    let who = match &entry.sender.display_name {
        Some(name) => format!("{}({name})", role(&entry.sender.role)),
        None => role(&entry.sender.role),
    };
    let what = match &entry.payload {
        EntryPayload::Message(message) => format!("message {}", content(message)),
        EntryPayload::ParticipantChanged(changes) => {
            let parts: Vec<_> = changes
                .iter()
                .map(|c| {
                    let op = match &c.operation {
                        ParticipantOperation::Add => "add".to_owned(),
                        ParticipantOperation::Remove => "remove".to_owned(),
                        ParticipantOperation::Update => "update".to_owned(),
                        ParticipantOperation::Unknown(other) => other.clone(),
                    };
                    format!("{op} {}", role(&c.role))
                })
                .collect();
            format!("participant {}", parts.join(", "))
        }
        EntryPayload::RoutingResult(result) => {
            let mut text = format!("routing {:?}", result.routing_type);
            if let Some(failure) = &result.failure {
                let _ = write!(text, " failed {}", failure.kind);
            }
            if let Some(wait) = result.estimated_wait {
                let _ = write!(text, " wait {}", span(wait));
            }
            text
        }
        EntryPayload::SessionStatusChanged { status, .. } => format!("session {status:?}"),
        EntryPayload::CloseConversation => "close-conversation".to_owned(),
        EntryPayload::TypingStarted => "typing started".to_owned(),
        EntryPayload::TypingStopped => "typing stopped".to_owned(),
        EntryPayload::DeliveryAcknowledged { .. } => "delivered".to_owned(),
        EntryPayload::ReadAcknowledged { .. } => "read".to_owned(),
        EntryPayload::QueuePosition { position } => format!("queue position {position}"),
        EntryPayload::ProgressIndicator { .. } => "progress".to_owned(),
        EntryPayload::Unknown { entry_type } => format!("unknown entry type {entry_type}"),
    };
    format!("{} {who} {what}", entry.identifier)
}

fn failure(failure: &CallFailure) -> String {
    format!("failed: {failure}")
}

pub(super) fn input(input: &Input, epoch: Timestamp, salesforce: &FakeSalesforce) -> String {
    match input {
        Input::Start => "start".to_owned(),
        Input::UserMessage(message) => {
            let mut text = format!("user says {} ({})", short(&message.text), message.id);
            for file in &message.attachments {
                let _ = write!(text, " + file {}", file.name);
            }
            text
        }
        Input::UserConnected => "user returns".to_owned(),
        Input::UserDisconnected => "user leaves".to_owned(),
        Input::UserTyping { on } => format!("user typing {}", if *on { "on" } else { "off" }),
        Input::UserCancelled => "user cancels".to_owned(),
        Input::Resumed => "resumed after a restart".to_owned(),
        Input::FlowClosed => "flow closes".to_owned(),
        Input::Salesforce { call, result } => {
            let outcome = match result {
                Ok(SalesforceResponse::Done) => "ok".to_owned(),
                Ok(SalesforceResponse::Token(issued)) => {
                    let subject = match &issued.subject {
                        Subject::Verified(_) => "verified",
                        Subject::Anonymous(_) => "guest",
                    };
                    format!(
                        "token {} {subject} expires {}",
                        salesforce.token_label(&issued.token),
                        time(epoch, issued.expires_at)
                    )
                }
                Ok(SalesforceResponse::RoutingStatus(status)) => {
                    format!("routing status {status:?}")
                }
                Ok(SalesforceResponse::Entries(entries)) => format!("{} entries", entries.len()),
                Err(error) => failure(error),
            };
            format!("sf{call} {outcome}")
        }
        Input::Stream { stream, event } => {
            let what = match event {
                StreamEvent::Opened => "opened".to_owned(),
                StreamEvent::Entry { entry: e, .. } => entry(e),
                StreamEvent::Ping => "ping".to_owned(),
                StreamEvent::Unknown { name, .. } => format!("unknown event {name}"),
                StreamEvent::Malformed { reason, .. } => format!("malformed event: {reason}"),
                StreamEvent::Closed(StreamClosed::Dropped) => "dropped".to_owned(),
                StreamEvent::Closed(StreamClosed::Unauthorized) => {
                    "closed: unauthorized".to_owned()
                }
            };
            format!("stream{stream} {what}")
        }
        Input::Bot { call, result } => match result {
            Ok(()) => format!("bot{call} ok"),
            Err(error) => format!("bot{call} failed: {error}"),
        },
        Input::Timeout => "timeout".to_owned(),
    }
}

pub(super) fn command(command: &Command, epoch: Timestamp, salesforce: &FakeSalesforce) -> String {
    match command {
        Command::Salesforce(call) => {
            let token = call
                .credential
                .as_ref()
                .map(|c| format!(" [{}]", salesforce.token_label(&c.token)))
                .unwrap_or_default();
            let what = match &call.request {
                SalesforceRequest::MintToken(MintKind::Guest) => "mint-token guest".to_owned(),
                SalesforceRequest::MintToken(MintKind::Verified(_)) => {
                    "mint-token verified".to_owned()
                }
                SalesforceRequest::RenewToken(MintKind::Guest) => "renew-token guest".to_owned(),
                SalesforceRequest::RenewToken(MintKind::Verified(_)) => {
                    "renew-token verified".to_owned()
                }
                SalesforceRequest::ContinueToken => "continuation-token".to_owned(),
                SalesforceRequest::OpenStream { last_event_id } => format!(
                    "open-stream after {}",
                    last_event_id.as_ref().map_or("-", |id| id.as_str())
                ),
                SalesforceRequest::CloseStream => "close-stream".to_owned(),
                SalesforceRequest::CreateConversation {
                    routing_attributes, ..
                } => {
                    let attributes: Vec<_> = routing_attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!("create-conversation {{{}}}", attributes.join(", "))
                }
                SalesforceRequest::SendMessage {
                    message,
                    new_session,
                    ..
                } => {
                    let id = message.id.to_string();
                    let body = match &message.body {
                        OutboundBody::Text(text) => short(text),
                        OutboundBody::File(file) => format!("file {}", file.name),
                    };
                    let session = if new_session.is_some() {
                        " new-session"
                    } else {
                        ""
                    };
                    format!("send {body} id={}{session}", &id[..8])
                }
                SalesforceRequest::SendTyping { typing, .. } => {
                    format!("typing {}", if *typing { "started" } else { "stopped" })
                }
                SalesforceRequest::Acknowledge {
                    acknowledgements, ..
                } => {
                    let entries: Vec<_> =
                        acknowledgements.iter().map(|a| a.entry.as_str()).collect();
                    format!("acknowledge delivered {}", entries.join(","))
                }
                SalesforceRequest::ListEntries { before, from, .. } => {
                    let mut text = "list-entries".to_owned();
                    if let Some(from) = from {
                        let _ = write!(text, " from={}", time(epoch, *from));
                    }
                    if let Some(before) = before {
                        let _ = write!(text, " through={}", time(epoch, *before));
                    }
                    text
                }
                SalesforceRequest::FetchRoutingStatus { .. } => "routing-status".to_owned(),
                SalesforceRequest::CloseConversation { .. } => "close-conversation".to_owned(),
                SalesforceRequest::RevokeToken => "revoke-token".to_owned(),
            };
            format!("sf{} {what}{token}", call.id)
        }
        Command::Bot(call) => format!("bot{} {}", call.id, delivery(&call.delivery, epoch)),
        Command::Record(observation) => {
            format!("record {}", self::observation(observation, epoch))
        }
    }
}

pub(super) fn delivery(delivery: &BotDelivery, epoch: Timestamp) -> String {
    match delivery {
        BotDelivery::Notify(Notification::Agent(message)) => format!(
            "notify {} from {}{}",
            content(&message.content),
            role(&message.role),
            message
                .sender_name
                .as_ref()
                .map(|name| format!("({name})"))
                .unwrap_or_default()
        ),
        BotDelivery::Notify(Notification::Notice { text, .. }) => {
            format!("notify notice {}", short(text))
        }
        BotDelivery::Inject(update) => match &update.status {
            HandoverStatus::Queue(queue) => {
                let mut text = "inject queue".to_owned();
                if let Some(position) = queue.position {
                    let _ = write!(text, " position={position}");
                }
                if let Some(wait) = queue.estimated_wait {
                    let _ = write!(text, " wait={}", span(wait));
                }
                if let Some(alternative) = &queue.alternative_text {
                    let _ = write!(text, " text={}", short(alternative));
                }
                text
            }
            HandoverStatus::Active { agent_name } => {
                format!(
                    "inject active agent={}",
                    agent_name.as_deref().unwrap_or("-")
                )
            }
            HandoverStatus::Ended(outcome) => {
                let mut text = format!("inject {}/{}", outcome.status().as_str(), outcome.reason);
                if !outcome.undelivered.is_empty() {
                    let ids: Vec<_> = outcome.undelivered.iter().map(|id| id.as_str()).collect();
                    let _ = write!(text, " undelivered={}", ids.join(","));
                }
                for missed in &outcome.missed {
                    let (from, to) = (time(epoch, missed.from), time(epoch, missed.to));
                    let _ = write!(text, " missed={from}..{to}");
                }
                text
            }
            HandoverStatus::Event(event) => format!("inject event {}", provider_event(event)),
        },
        BotDelivery::Typing { on } => format!("typing {}", if *on { "on" } else { "off" }),
    }
}

fn provider_event(event: &ProviderEvent) -> String {
    match event {
        ProviderEvent::Routing {
            routing_type,
            failure,
        } => match failure {
            Some(failure) => format!("routing {routing_type:?} failed {}", failure.kind),
            None => format!("routing {routing_type:?}"),
        },
        ProviderEvent::Participant {
            operation, role: r, ..
        } => format!("participant {operation:?} {}", role(r)),
        ProviderEvent::SessionStatus(status) => format!("session {status:?}"),
        ProviderEvent::Delivered { .. } => "delivered".to_owned(),
        ProviderEvent::Read { .. } => "read".to_owned(),
        ProviderEvent::VerifiedUserFellBackToGuest => "verified-user-fell-back-to-guest".to_owned(),
        ProviderEvent::TokenUnusable => "token-unusable".to_owned(),
        ProviderEvent::MessageRefused { message, .. } => format!("message-refused {message}"),
    }
}

fn observation(observation: &Observation, epoch: Timestamp) -> String {
    match observation {
        Observation::DuplicateEntry => "duplicate-entry".to_owned(),
        Observation::DuplicateUserMessage => "duplicate-user-message".to_owned(),
        Observation::UnknownEvent { name } => format!("unknown-event {name}"),
        Observation::UnknownEntryType { entry_type } => format!("unknown-entry-type {entry_type}"),
        Observation::MalformedEvent { .. } => "malformed-event".to_owned(),
        Observation::EmptyAgentMessage => "empty-agent-message".to_owned(),
        Observation::ForeignConversation => "foreign-conversation".to_owned(),
        Observation::IgnoredAfterEnd => "ignored-after-end".to_owned(),
        Observation::StaleResult => "stale-result".to_owned(),
        Observation::VerifiedFallbackToGuest => "verified-fallback-to-guest".to_owned(),
        Observation::StreamReconnect { reason } => format!("stream-reconnect {reason:?}"),
        Observation::Backfilled { new_entries } => format!("backfilled {new_entries}"),
        Observation::BackfillIncomplete => "backfill-incomplete".to_owned(),
        Observation::HoldReleased { entries } => format!("hold-released {entries}"),
        Observation::EntriesMissed { missed } => format!(
            "entries-missed {}..{}",
            time(epoch, missed.from),
            time(epoch, missed.to)
        ),
        Observation::Resumed => "resumed".to_owned(),
        Observation::TokenRenewed => "token-renewed".to_owned(),
        Observation::TokenContinued => "token-continued".to_owned(),
        Observation::TokenUnusable => "token-unusable".to_owned(),
        Observation::PacingDelay => "pacing-delay".to_owned(),
        Observation::MessageRefused { message } => format!("message-refused {message}"),
        Observation::FileSentAsLink => "file-sent-as-link".to_owned(),
        Observation::BotDeliveryFailed { will_retry } => {
            format!(
                "bot-delivery-failed{}",
                if *will_retry {
                    " will-retry"
                } else {
                    " gave-up"
                }
            )
        }
        Observation::BestEffortFailed => "best-effort-failed".to_owned(),
        Observation::CloseSkipped => "close-skipped".to_owned(),
        Observation::OwnEcho { by } => format!("own-echo by {by:?}"),
        Observation::Ignored { what } => format!("ignored {what}"),
    }
}
