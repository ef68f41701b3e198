//! The bot platform's side: what the user sees (Notify) and what the Flow hears (Inject),
//! in plain Rust. The Cognigy adapter maps these to its JSON.

use std::fmt;
use std::time::Duration;

use crate::ids::{BotMessageId, EntryId};
use crate::salesforce::{
    FileRef, MessageContent, ParticipantOperation, Role, RoutingFailure, RoutingType, SessionStatus,
};
use crate::time::Timestamp;

/// A message the user sent during the handover.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UserMessage {
    /// The bot platform's message id. Outbound ids derive from it, and a repeated id is
    /// sent once.
    pub id: BotMessageId,
    /// The text (may be empty when there are attachments).
    pub text: String,
    /// Files, by URL.
    pub attachments: Vec<FileRef>,
}

/// One delivery to the bot platform.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BotDelivery {
    /// To the user, without running the Flow (Cognigy Notify).
    Notify(Notification),
    /// Into the Flow (Cognigy Inject).
    Inject(StatusUpdate),
    /// The agent's typing indicator, for channels that show one. Never injected into the
    /// Flow (each inject is a billable Flow run). Not retried.
    Typing {
        /// Typing (`true`) or stopped.
        on: bool,
    },
}

/// Something the user should see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Notification {
    /// A message from the agent, a Salesforce bot or Salesforce's automated messages.
    Agent(AgentMessage),
    /// A notice from the bridge itself (for example "You are now chatting with Jane.").
    Notice {
        /// A stable id for client-side de-duplication.
        key: String,
        /// The text.
        text: String,
    },
}

/// A relayed agent message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AgentMessage {
    /// The Salesforce entry; also the stable message id the user's channel can de-duplicate on.
    pub entry: EntryId,
    /// Agent, Chatbot or System.
    pub role: Role,
    /// The name to show.
    pub sender_name: Option<String>,
    /// What was said.
    pub content: MessageContent,
}

/// A handover status for the Flow, mirroring Cognigy's `input.handover`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StatusUpdate {
    /// A stable id (the same across retries of this update).
    pub key: String,
    /// The status.
    pub status: HandoverStatus,
}

/// Cognigy's handover status vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HandoverStatus {
    /// `queue`: position and wait, or the alternative text.
    Queue(QueueUpdate),
    /// `active`: an agent joined.
    Active {
        /// The agent's name.
        agent_name: Option<String>,
    },
    /// `completed`, `cancelled` or `error`: the one terminal status of the handover.
    Ended(Outcome),
    /// A forwarded provider event (only with "Forward Events to the Flow").
    Event(ProviderEvent),
}

/// A queue update.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QueueUpdate {
    /// Position in the queue.
    pub position: Option<u32>,
    /// Estimated wait.
    pub estimated_wait: Option<Duration>,
    /// Sent instead of the numbers when they exceed the configured maximum.
    pub alternative_text: Option<String>,
}

/// How a handover ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Outcome {
    /// Why.
    pub reason: EndReason,
    /// Details for `error` (never secret).
    pub detail: Option<String>,
    /// User messages that never reached the agent.
    pub undelivered: Vec<BotMessageId>,
    /// A user message that was on its way to Salesforce when the handover ended; whether it
    /// arrived was not known yet.
    pub unconfirmed: Vec<BotMessageId>,
    /// Stretches of Salesforce's conversation the bridge could not list in full: entries in
    /// them may never have reached the user. Empty when nothing is known to be missing.
    #[cfg_attr(feature = "serde", serde(default))]
    pub missed: Vec<MissedEntries>,
}

/// A stretch of server time (`transcriptedTimestamp`, both ends included) whose entries could
/// not all be listed, for example more entries in one millisecond than two pages hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MissedEntries {
    /// The first millisecond of the stretch.
    pub from: Timestamp,
    /// The last millisecond of the stretch.
    pub to: Timestamp,
}

impl Outcome {
    /// The terminal status for the Flow.
    pub fn status(&self) -> TerminalStatus {
        self.reason.status()
    }
}

/// The terminal statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TerminalStatus {
    /// `completed`.
    Completed,
    /// `cancelled`.
    Cancelled,
    /// `error`.
    Error,
}

impl TerminalStatus {
    /// Cognigy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

/// Why a handover ended (scenarios.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EndReason {
    /// The agent ended the messaging session.
    AgentEnded,
    /// The agent left and "End Chat When Agent Leaves" is on.
    AgentLeft,
    /// The conversation was closed from the customer side.
    UserClosed,
    /// The Flow closed the handover.
    ClosedByFlow,
    /// The user cancelled while queued.
    CancelledByUser,
    /// Salesforce could not route the conversation.
    RoutingFailed,
    /// The token expired and could not be renewed in time.
    TokenExpired,
    /// An unrecoverable Salesforce or bot-platform failure.
    ProviderError,
}

impl EndReason {
    /// The wire name (`agent_ended`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentEnded => "agent_ended",
            Self::AgentLeft => "agent_left",
            Self::UserClosed => "user_closed",
            Self::ClosedByFlow => "closed_by_flow",
            Self::CancelledByUser => "cancelled_by_user",
            Self::RoutingFailed => "routing_failed",
            Self::TokenExpired => "token_expired",
            Self::ProviderError => "provider_error",
        }
    }

    /// The terminal status this reason reports.
    pub fn status(self) -> TerminalStatus {
        match self {
            Self::AgentEnded
            | Self::AgentLeft
            | Self::UserClosed
            | Self::ClosedByFlow
            | Self::TokenExpired => TerminalStatus::Completed,
            Self::CancelledByUser => TerminalStatus::Cancelled,
            Self::RoutingFailed | Self::ProviderError => TerminalStatus::Error,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Provider events forwarded to the Flow when "Forward Events to the Flow" is on. Agent
/// replies and the close are never forwarded (the first go to the user, the second ends the
/// handover); typing never is (billing).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ProviderEvent {
    /// A routing result.
    Routing {
        /// Initial or transfer.
        routing_type: RoutingType,
        /// The failure, if routing failed.
        failure: Option<RoutingFailure>,
    },
    /// A participant joined, left or changed.
    Participant {
        /// What happened.
        operation: ParticipantOperation,
        /// Their role.
        role: Role,
        /// Their name.
        name: Option<String>,
    },
    /// The messaging session changed status (not `Ended`, which ends the handover).
    SessionStatus(SessionStatus),
    /// Salesforce delivered one of the user's messages.
    Delivered {
        /// The user's entry.
        entry: Option<EntryId>,
        /// The Flow's id of the message, when the entry is one the bridge sent recently.
        #[cfg_attr(feature = "serde", serde(default))]
        message: Option<BotMessageId>,
    },
    /// The agent read one of the user's messages.
    Read {
        /// The user's entry.
        entry: Option<EntryId>,
        /// The Flow's id of the message, when the entry is one the bridge sent recently.
        #[cfg_attr(feature = "serde", serde(default))]
        message: Option<BotMessageId>,
    },
    /// An identity token was given but Salesforce issued a guest token (the silent fallback).
    VerifiedUserFellBackToGuest,
    /// The access token can no longer be used; the handover ends unless it is renewed.
    TokenUnusable,
    /// Salesforce refused one of the user's messages for good.
    MessageRefused {
        /// The user's message.
        message: BotMessageId,
        /// Why.
        reason: String,
    },
}

/// Why a delivery to the bot platform failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DeliveryFailure {
    /// Timeout, connection failure, 5xx. Retried; later deliveries wait behind it.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A refusal that retrying will not fix (400, 404 unknown URL token).
    #[error("rejected with status {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// What the platform said.
        message: String,
    },
}
