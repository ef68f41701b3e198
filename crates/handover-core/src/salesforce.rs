//! Salesforce MIAW facts and requests, in plain Rust. The Salesforce adapter converts its wire
//! JSON to and from these types; the core never sees JSON.

use std::time::Duration;

use crate::ids::{ClientEntryId, ConversationId, EntryId, EventId};
use crate::secret::{AccessToken, IdentityToken};
use crate::settings::RoutingAttributes;
use crate::time::Timestamp;

/// A participant role (`sender.role`, `participant.role`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Role {
    /// The customer (us). Entries from this role are echoes of what the bridge sent.
    EndUser,
    /// A human agent.
    Agent,
    /// A Salesforce bot (Einstein, Agentforce).
    Chatbot,
    /// Salesforce's automated messaging components: welcome, inactivity reminders, surveys.
    System,
    /// The Omni-Channel router.
    Router,
    /// A supervisor.
    Supervisor,
    /// A role this version does not know.
    Unknown(String),
}

impl Role {
    /// Whether messages from this role are relayed to the user (scenarios S15, S18).
    pub fn is_relayed(&self) -> bool {
        match self {
            Self::Agent | Self::Chatbot | Self::System => true,
            Self::EndUser | Self::Router | Self::Supervisor | Self::Unknown(_) => false,
        }
    }
}

/// Who wrote an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Sender {
    /// The role.
    pub role: Role,
    /// `senderDisplayName`, for example the agent's name.
    pub display_name: Option<String>,
    /// `sender.subject`, stable per participant.
    pub subject: Option<String>,
}

/// One conversation entry, from the stream or from the entries list.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConversationEntry {
    /// The conversation it belongs to (one stream carries every conversation of the subject).
    pub conversation_id: ConversationId,
    /// `conversationEntry.identifier`, the de-duplication key.
    pub identifier: EntryId,
    /// Who wrote it.
    pub sender: Sender,
    /// `transcriptedTimestamp`: when Salesforce recorded it.
    pub server_time: Option<Timestamp>,
    /// A message's `abstractMessage.id`: the sender's own id for it. For the customer's
    /// messages, the id the bridge sent (Salesforce may or may not reuse it as `identifier`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub message_id: Option<EntryId>,
    /// What it says.
    pub payload: EntryPayload,
}

/// The parsed `entryPayload`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EntryPayload {
    /// `Message`.
    Message(MessageContent),
    /// `ParticipantChanged`.
    ParticipantChanged(Vec<ParticipantChange>),
    /// `RoutingResult`.
    RoutingResult(RoutingResult),
    /// `SessionStatusChanged`.
    SessionStatusChanged {
        /// `sessionStatus`.
        status: SessionStatus,
        /// `sessionEndedByRole`.
        ended_by: Option<Role>,
    },
    /// `CloseConversation`: the conversation was closed from the customer side.
    CloseConversation,
    /// `TypingStartedIndicator`.
    TypingStarted,
    /// `TypingStoppedIndicator`.
    TypingStopped,
    /// `DeliveryAcknowledgement` of one of the customer's messages.
    DeliveryAcknowledged {
        /// The acknowledged entry.
        acknowledged: Option<EntryId>,
    },
    /// `ReadAcknowledgement` of one of the customer's messages.
    ReadAcknowledged {
        /// The acknowledged entry.
        acknowledged: Option<EntryId>,
    },
    /// `QueuePosition`.
    QueuePosition {
        /// `position`.
        position: u32,
    },
    /// `ProgressIndicator` (an AI agent is working).
    ProgressIndicator {
        /// `progressMessage.text`.
        text: Option<String>,
    },
    /// An entry type this version does not know. Ignored and counted, never an error.
    Unknown {
        /// `entryType`.
        entry_type: String,
    },
}

/// The content of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MessageContent {
    /// `StaticContentMessage` / `Text`.
    Text(String),
    /// `StaticContentMessage` / `Attachments`.
    Attachments {
        /// Text sent with the files.
        text: Option<String>,
        /// The files.
        files: Vec<Attachment>,
    },
    /// `ChoicesMessage` (buttons, quick replies, carousel).
    Choices {
        /// The prompt.
        text: String,
        /// How the options are shown.
        style: ChoiceStyle,
        /// The options.
        options: Vec<ChoiceOption>,
    },
    /// `RichLink`, `WebView`, `Links`: something with a URL.
    Link {
        /// Where it points.
        url: String,
        /// Its title.
        title: Option<String>,
    },
    /// Any other message type, flattened to text where Salesforce supplied some.
    Other {
        /// `messageType` / `formatType`, for the record.
        kind: String,
        /// Text to show instead.
        fallback_text: Option<String>,
    },
}

impl MessageContent {
    /// Whether there is nothing to show: no text, no file, no option, no link. Such events are
    /// never relayed (an empty message crashed channels in the field).
    pub fn is_empty(&self) -> bool {
        let blank = |text: &str| text.trim().is_empty();
        match self {
            Self::Text(text) => blank(text),
            Self::Attachments { text, files } => {
                files.is_empty() && text.as_deref().is_none_or(blank)
            }
            Self::Choices { text, options, .. } => options.is_empty() && blank(text),
            Self::Link { url, .. } => blank(url),
            Self::Other { fallback_text, .. } => fallback_text.as_deref().is_none_or(blank),
        }
    }
}

/// A file attached to an agent message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Attachment {
    /// File name.
    pub name: String,
    /// Where to download it.
    pub url: String,
    /// MIME type.
    pub mime_type: Option<String>,
}

/// How choices are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ChoiceStyle {
    /// `Buttons`.
    Buttons,
    /// `QuickReplies`.
    QuickReplies,
    /// `Carousel`.
    Carousel,
}

/// One choice.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChoiceOption {
    /// `optionIdentifier`.
    pub id: Option<String>,
    /// The label.
    pub title: String,
}

/// One change in a `ParticipantChanged` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ParticipantChange {
    /// `add`, `remove`, `update`.
    pub operation: ParticipantOperation,
    /// The participant's role.
    pub role: Role,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `participant.subject`.
    pub subject: Option<String>,
}

/// `operation` of a participant change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ParticipantOperation {
    /// Joined.
    Add,
    /// Left, or was removed by a transfer.
    Remove,
    /// Changed.
    Update,
    /// Unknown.
    Unknown(String),
}

/// A `RoutingResult` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoutingResult {
    /// `routingType`.
    pub routing_type: RoutingType,
    /// `failureType` other than `None`, with `failureReason`.
    pub failure: Option<RoutingFailure>,
    /// `estimatedWaitTime.estimatedWaitTimeInSeconds`.
    pub estimated_wait: Option<Duration>,
}

/// `routingType`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RoutingType {
    /// The first routing after the conversation was created.
    Initial,
    /// A transfer to another agent or queue.
    Transfer,
    /// Anything else (`Conference`, …).
    Other(String),
}

/// A routing failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoutingFailure {
    /// `failureType`: `Unknown`, `SubmissionError`, `RoutingError`, `Cancelled`, …
    pub kind: String,
    /// `failureReason`.
    pub reason: Option<String>,
}

/// `sessionStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SessionStatus {
    /// `New`.
    New,
    /// `Waiting`: being routed.
    Waiting,
    /// `Active`.
    Active,
    /// `Inactive`: parked by the agent; a customer message re-routes it.
    Inactive,
    /// `Ended`: the messaging session is over.
    Ended,
    /// Any other status (`Consent`, `Error`, `Paused`, …).
    Other(String),
}

/// The conversation's `routingStatus` (GET conversation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RoutingStatus {
    /// `ROUTED`.
    Routed,
    /// `NEEDS_ROUTING`: the agent left for good.
    NeedsRouting,
    /// `INITIAL`.
    Initial,
    /// `TRANSFER`: a transfer is under way.
    Transfer,
    /// Unknown.
    Other(String),
}

/// Who the token belongs to, from `context.endUser.subject`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Subject {
    /// `v2/iamessage/AUTH/…`: a verified user.
    Verified(String),
    /// `v2/iamessage/ANON/…`: a guest, also what Salesforce silently returns when an identity
    /// token fails verification.
    Anonymous(String),
}

/// A token as Salesforce issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IssuedToken {
    /// The bearer token.
    pub token: AccessToken,
    /// The JWT's `exp`.
    pub expires_at: Timestamp,
    /// Whose token it is.
    pub subject: Subject,
    /// `lastEventId` from the response, the first `Last-Event-Id` of the stream.
    pub last_event_id: Option<EventId>,
}

/// A token together with its expiry, as carried by every command that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Credential {
    /// The bearer token.
    pub token: AccessToken,
    /// When it stops working. Commands are only issued while `now` is safely before this.
    pub expires_at: Timestamp,
}

/// Which access-token flow to use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MintKind {
    /// Unauthenticated (guest) access token.
    Guest,
    /// Authenticated access token for a verified user.
    Verified(IdentityToken),
}

/// A message from the user to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OutboundMessage {
    /// The client message id; stable across retries.
    pub id: ClientEntryId,
    /// What is sent.
    pub body: OutboundBody,
}

/// The body of an outbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum OutboundBody {
    /// A text message.
    Text(String),
    /// A file upload (multipart).
    File(FileRef),
}

/// A file the user sent, by URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FileRef {
    /// Where the adapter downloads it from.
    pub url: String,
    /// File name.
    pub name: String,
    /// MIME type, if known.
    pub mime_type: Option<String>,
    /// Size in bytes, if known (checked against the 5 MB limit before uploading).
    pub size: Option<u64>,
}

/// A delivery or read receipt the bridge sends for an agent entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Acknowledgement {
    /// The receipt's own client id.
    pub id: ClientEntryId,
    /// The acknowledged agent entry.
    pub entry: EntryId,
    /// Delivered or read.
    pub kind: AcknowledgementKind,
}

/// Kind of receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AcknowledgementKind {
    /// `Delivery`.
    Delivered,
    /// `Read`.
    Read,
}

/// One request to Salesforce. The adapter makes exactly one attempt and reports the outcome;
/// retries are the core's decision, so that pacing and ordering see every attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SalesforceRequest {
    /// Mint an access token (no credential).
    MintToken(MintKind),
    /// Mint a new access token for a handover that has one, expiring or refused: the same
    /// request to Salesforce as [`MintToken`](Self::MintToken). The handover is live and may
    /// have an agent waiting, so an adapter that queues token requests (Salesforce limits them
    /// per org) should put this ahead of first tokens.
    RenewToken(MintKind),
    /// Get a continuation token for the same subject (expiry unchanged).
    ContinueToken,
    /// Open, or replace, the event stream of the credential's subject.
    OpenStream {
        /// `Last-Event-Id` to resume from.
        last_event_id: Option<EventId>,
    },
    /// Stop the event stream (local; no credential).
    CloseStream,
    /// Create the conversation.
    CreateConversation {
        /// Its id.
        conversation_id: ConversationId,
        /// Pre-chat values.
        routing_attributes: RoutingAttributes,
    },
    /// Send a message.
    SendMessage {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message: OutboundMessage,
        /// `Some` after a 417: send with `isNewMessagingSession` and these attributes.
        new_session: Option<RoutingAttributes>,
    },
    /// Typing started or stopped.
    SendTyping {
        /// The conversation.
        conversation_id: ConversationId,
        /// The indicator entry's client id.
        id: ClientEntryId,
        /// Started (`true`) or stopped.
        typing: bool,
    },
    /// Delivery or read receipts for agent entries.
    Acknowledge {
        /// The conversation.
        conversation_id: ConversationId,
        /// The receipts.
        acknowledgements: Vec<Acknowledgement>,
    },
    /// List entries (backfill): at most `limit`. Without `from`, the newest ones up to
    /// `before` (`endTimestamp`, `direction=FromEnd`), or the newest of all when `before` is
    /// `None`. With `from`, the oldest ones from that time on (`startTimestamp`,
    /// `direction=FromStart`). Salesforce does not say whether its bounds are inclusive; the
    /// session pages so that either reading loses nothing.
    ListEntries {
        /// The conversation.
        conversation_id: ConversationId,
        /// Only entries up to this time (`endTimestamp`).
        before: Option<Timestamp>,
        /// At most this many (Salesforce allows 50).
        limit: u32,
        /// Only entries from this time on, oldest first (`startTimestamp`, `FromStart`).
        #[cfg_attr(feature = "serde", serde(default))]
        from: Option<Timestamp>,
    },
    /// Read the conversation's routing status.
    FetchRoutingStatus {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// Close the conversation (DELETE).
    CloseConversation {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// Revoke a verified user's token.
    RevokeToken,
}

/// A successful response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SalesforceResponse {
    /// For `MintToken`, `RenewToken` and `ContinueToken`.
    Token(IssuedToken),
    /// For `FetchRoutingStatus`.
    RoutingStatus(RoutingStatus),
    /// For `ListEntries`: the most recent entries, oldest first (the adapter asks for or
    /// reverses into that order; entries that share a timestamp keep it). Entries that fail
    /// to decode are left out by the adapter and counted there.
    Entries(Vec<ConversationEntry>),
    /// Any other request succeeded.
    Done,
}

/// Why a Salesforce call failed, grouped by what the core does about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CallFailure {
    /// A timeout, a connection failure or a 5xx. Retried with the same ids.
    #[error("transient failure: {0}")]
    Transient(String),
    /// 429. Retried after a backoff.
    #[error("rate limited")]
    RateLimited,
    /// 401: the token is expired or unusable.
    #[error("unauthorized")]
    Unauthorized,
    /// 417: no messaging session; resend with `isNewMessagingSession`.
    #[error("no messaging session")]
    NoMessagingSession,
    /// 413: the file is too large.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: the file type is not accepted.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 404.
    #[error("not found")]
    NotFound,
    /// 409.
    #[error("conflict")]
    Conflict,
    /// Any other refusal; retrying will not help.
    #[error("rejected with status {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Salesforce's `message`.
        message: String,
    },
}

impl CallFailure {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transient(_) | Self::RateLimited => true,
            Self::Unauthorized
            | Self::NoMessagingSession
            | Self::PayloadTooLarge
            | Self::UnsupportedMediaType
            | Self::NotFound
            | Self::Conflict
            | Self::Rejected { .. } => false,
        }
    }
}

/// Something that happened on the event stream opened by an `OpenStream` call.
// Entries are nearly every event, and an event is handed on once, never stored in bulk:
// boxing the entry would add an allocation per event to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StreamEvent {
    /// The stream is connected.
    Opened,
    /// A conversation entry.
    Entry {
        /// The SSE `id:`, if the frame had one.
        event_id: Option<EventId>,
        /// The entry.
        entry: ConversationEntry,
    },
    /// A keep-alive.
    Ping,
    /// An event name this version does not know. Ignored and counted.
    Unknown {
        /// The SSE `id:`.
        event_id: Option<EventId>,
        /// The SSE `event:`.
        name: String,
    },
    /// An event that could not be decoded. Skipped and counted; the backfill recovers the
    /// entry if it was real.
    Malformed {
        /// The SSE `id:`.
        event_id: Option<EventId>,
        /// What was wrong (never contains the raw data, which may hold personal data).
        reason: String,
    },
    /// The stream ended.
    Closed(StreamClosed),
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StreamClosed {
    /// The connection dropped or could not be made.
    Dropped,
    /// Salesforce answered 401.
    Unauthorized,
}
