//! The two enums of the driving contract: [`Input`] (facts, in) and [`Command`] (orders, out).

use crate::bot::{BotDelivery, DeliveryFailure, UserMessage};
use crate::ids::{BotMessageId, CallId};
use crate::salesforce::{
    CallFailure, Credential, SalesforceRequest, SalesforceResponse, StreamEvent,
};

/// Something that happened: a request from the bot side, the result of a command, a stream
/// event, or the passing of time. Variants are past-tense facts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Input {
    /// The handover was accepted; begin. Sent once, first.
    Start,
    /// The user wrote.
    UserMessage(UserMessage),
    /// The user came back to the chat.
    UserConnected,
    /// The user left the chat (closed the tab, navigated away).
    UserDisconnected,
    /// The user is typing (`true`) or stopped.
    UserTyping {
        /// Typing or stopped.
        on: bool,
    },
    /// The user cancelled the handover (cancel intent or button).
    UserCancelled,
    /// The Flow closed the handover (Close Handover node).
    FlowClosed,
    /// A [`SalesforceCall`] finished.
    Salesforce {
        /// The call.
        call: CallId,
        /// Its outcome.
        result: Result<SalesforceResponse, CallFailure>,
    },
    /// Something happened on the stream opened by the `OpenStream` call `stream`.
    Stream {
        /// The `OpenStream` call that opened it.
        stream: CallId,
        /// What happened.
        event: StreamEvent,
    },
    /// A [`BotCall`] finished.
    Bot {
        /// The call.
        call: CallId,
        /// Its outcome.
        result: Result<(), DeliveryFailure>,
    },
    /// The deadline from [`Session::poll_timeout`](crate::Session::poll_timeout) passed.
    /// Calling early is harmless: nothing that is not due fires.
    Timeout,
    /// The session was restored from storage in a new process (a restart, or a takeover by
    /// another instance). Connections of the old process are gone: the session reopens its
    /// event stream from the last event id and backfills. Calls in flight keep waiting for
    /// their results: re-run their commands from the outbox (they carry the same idempotency
    /// ids), except `OpenStream` and `CloseStream`, which are about the old connection.
    Resumed,
}

/// Something to do. Variants are imperatives. Execute every command returned by one
/// [`Session::handle`](crate::Session::handle) call in order; results come back as inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Command {
    /// Call Salesforce.
    Salesforce(SalesforceCall),
    /// Deliver to the bot platform.
    Bot(BotCall),
    /// Count this (a metric, and a log line in the app). Needs no result. Never stored:
    /// serializing it is an error, so a store keeps only the commands that act.
    #[cfg_attr(feature = "serde", serde(skip))]
    Record(Observation),
}

/// One Salesforce call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SalesforceCall {
    /// Echo this in [`Input::Salesforce`] or [`Input::Stream`].
    pub id: CallId,
    /// The token to use; `None` for calls that need none (minting, closing the stream).
    pub credential: Option<Credential>,
    /// What to do.
    pub request: SalesforceRequest,
}

/// One delivery to the bot platform.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BotCall {
    /// Echo this in [`Input::Bot`].
    pub id: CallId,
    /// What to deliver.
    pub delivery: BotDelivery,
}

/// A fact worth counting. The app turns these into metrics and log lines; none needs an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// An entry arrived again (stream replay, backfill) and was suppressed.
    DuplicateEntry,
    /// A user message with an id already seen was ignored.
    DuplicateUserMessage,
    /// An SSE event name this version does not know.
    UnknownEvent {
        /// The event name.
        name: String,
    },
    /// An entry type this version does not know.
    UnknownEntryType {
        /// The entry type.
        entry_type: String,
    },
    /// An event that could not be decoded; a backfill was scheduled.
    MalformedEvent {
        /// What was wrong.
        reason: String,
    },
    /// An agent event with no text and no content was not relayed.
    EmptyAgentMessage,
    /// An entry of another conversation of the same subject was ignored.
    ForeignConversation,
    /// Input that arrived after the handover ended was ignored.
    IgnoredAfterEnd,
    /// A result for a call the session does not wait for (already answered, or from before a
    /// restart) was ignored.
    StaleResult,
    /// An identity token was given, but Salesforce issued a guest token.
    VerifiedFallbackToGuest,
    /// The stream is being reopened.
    StreamReconnect {
        /// Why.
        reason: ReconnectReason,
    },
    /// A backfill could not reach back to the previous one within its page limit; entries
    /// in between may be missing.
    BackfillIncomplete,
    /// Entries from the stream were relayed without the listing that would have put them in
    /// order: it took longer than the hold bound, or it failed. Anything it brings later is
    /// relayed late.
    HoldReleased {
        /// How many entries were released.
        entries: usize,
    },
    /// A stretch of the conversation could not be listed in full (more entries in one
    /// millisecond than the entries list can page through); entries in it may be missing.
    /// It is reported in the outcome.
    EntriesMissed {
        /// The stretch.
        missed: crate::bot::MissedEntries,
    },
    /// A backfill returned entries the stream had not delivered.
    Backfilled {
        /// How many were new.
        new_entries: usize,
    },
    /// The session was restored from storage in a new process.
    Resumed,
    /// A verified user's token was renewed.
    TokenRenewed,
    /// A continuation token replaced a rejected token.
    TokenContinued,
    /// The token can no longer be used.
    TokenUnusable,
    /// A user message waited for the pacing window.
    PacingDelay,
    /// Salesforce refused a user message for good.
    MessageRefused {
        /// The user's message.
        message: BotMessageId,
    },
    /// A file was sent as a link instead (too large, or refused with 413/415).
    FileSentAsLink,
    /// Salesforce's record of a message the bridge sent came back, recognised by its
    /// `identifier` or by its `abstractMessage.id`.
    OwnEcho {
        /// Which of the two named it.
        by: EchoMatch,
    },
    /// A delivery to the bot platform failed.
    BotDeliveryFailed {
        /// Whether it will be retried.
        will_retry: bool,
    },
    /// A best-effort call (typing, receipt) failed and was not retried.
    BestEffortFailed,
    /// The conversation could not be closed at Salesforce because no usable token was left.
    CloseSkipped,
    /// A request that does not apply in the current phase was ignored (for example a second
    /// `Start`).
    Ignored {
        /// What was ignored.
        what: &'static str,
    },
}

/// How the bridge's own message was recognised in Salesforce's record of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoMatch {
    /// The entry's `identifier` is the id the bridge sent.
    Identifier,
    /// Only `abstractMessage.id` is (Salesforce gave the entry an identifier of its own).
    MessageId,
}

/// Why the stream is reopened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconnectReason {
    /// It dropped.
    Dropped,
    /// It was silent for the watchdog window.
    Silent,
    /// It was rejected with 401 and a new token is in hand.
    Unauthorized,
    /// The token was renewed.
    NewToken,
    /// The session was restored in a new process.
    Resumed,
}
