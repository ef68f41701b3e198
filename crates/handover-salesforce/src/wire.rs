//! The MIAW wire format: request bodies the bridge sends and the shapes it reads, as serde
//! types named and spelled after Salesforce's API (`docs/miaw-api` §2–3, and the
//! conversation-entry schemas of `outbound-custom-event-payload.yaml`).
//!
//! Reading is lenient where Salesforce is known to vary and strict where the bridge depends
//! on a field: unknown fields are ignored (Salesforce adds them), optional ones default, and
//! a field the bridge needs that has the wrong shape fails the entry with the field's path.
//! Conversion into the core's types happens in [`crate::decode`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---- requests ---------------------------------------------------------------------------------

/// The body of both access-token calls.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenRequest<'a> {
    pub org_id: &'a str,
    pub es_developer_name: &'a str,
    pub capabilities_version: &'static str,
    pub platform: &'static str,
    pub context: TokenContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_identity_token: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenContext<'a> {
    pub app_name: &'a str,
    pub client_version: &'a str,
}

/// `POST /conversation`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateConversation<'a> {
    pub conversation_id: String,
    pub es_developer_name: &'a str,
    pub routing_attributes: BTreeMap<&'a str, &'a str>,
}

/// `POST /conversation/{id}/message`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SendMessage<'a> {
    pub message: TextMessage<'a>,
    pub es_developer_name: &'a str,
    #[serde(flatten)]
    pub new_session: Option<NewSession<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TextMessage<'a> {
    pub id: String,
    pub message_type: &'static str,
    pub static_content: TextContent<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TextContent<'a> {
    pub format_type: &'static str,
    pub text: &'a str,
}

/// What a resend after a 417 adds: a new messaging session, routed with the pre-chat values.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewSession<'a> {
    pub is_new_messaging_session: bool,
    pub routing_attributes: BTreeMap<&'a str, &'a str>,
}

/// The `messageEntry` part of `POST /conversation/{id}/file`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileEntry<'a> {
    pub es_developer_name: &'a str,
    pub message: FileMessage,
    #[serde(flatten)]
    pub new_session: Option<NewSession<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileMessage {
    pub id: String,
    pub file_id: String,
}

/// `POST /conversation/{id}/entry` (typing indicators).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Indicator {
    pub entry_type: &'static str,
    pub id: String,
}

/// `POST /conversation/{id}/acknowledge-entries`.
#[derive(Serialize)]
pub(crate) struct Acknowledgements {
    pub acks: Vec<Ack>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ack {
    pub id: String,
    pub entry_type: &'static str,
    pub conversation_entry_id: String,
}

// ---- responses --------------------------------------------------------------------------------

/// The answer of the three token calls.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub last_event_id: Option<EventIdValue>,
    #[serde(default)]
    pub context: Option<ResponseContext>,
}

/// `lastEventId` comes as a string, and in some answers as a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum EventIdValue {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResponseContext {
    #[serde(default)]
    pub end_user: Option<EndUser>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndUser {
    #[serde(default)]
    pub subject: Option<String>,
}

/// The claims of an access token the bridge reads (it does not verify them: Salesforce does).
#[derive(Deserialize)]
pub(crate) struct TokenClaims {
    pub exp: u64,
    #[serde(default)]
    pub sub: Option<String>,
}

/// `GET /conversation/{id}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConversationStatus {
    pub routing_status: String,
}

/// `GET /conversation/{id}/entries`. The entries stay raw so that one bad entry is counted
/// and skipped instead of failing the listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryListing {
    pub conversation_entries: Vec<Value>,
}

/// An SSE event's `data`: the envelope around a conversation entry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope {
    pub conversation_id: String,
    pub conversation_entry: Entry,
}

/// A conversation entry, from the stream or a listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    pub identifier: String,
    #[serde(default)]
    pub entry_type: Option<String>,
    /// A JSON string on the stream, an object in listings.
    pub entry_payload: Value,
    #[serde(default)]
    pub sender: Option<EntrySender>,
    #[serde(default)]
    pub sender_display_name: Option<String>,
    #[serde(default)]
    pub transcripted_timestamp: Option<u64>,
    #[serde(default)]
    pub related_records: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntrySender {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
}

/// Only the type of an entry payload, read first: an unknown type is not an error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PayloadType {
    #[serde(default)]
    pub entry_type: Option<String>,
}

/// `entryPayload` of a `Message`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessagePayload {
    pub abstract_message: AbstractMessage,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AbstractMessage {
    #[serde(default)]
    pub message_type: Option<String>,
    #[serde(default)]
    pub static_content: Option<StaticContent>,
    #[serde(default)]
    pub choices: Option<Choices>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StaticContent {
    #[serde(default)]
    pub format_type: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub attachments: Option<Vec<WireAttachment>>,
    #[serde(default)]
    pub link_item: Option<LinkItem>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireAttachment {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LinkItem {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub title_item: Option<TitleItem>,
}

#[derive(Deserialize)]
pub(crate) struct TitleItem {
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Choices {
    #[serde(default)]
    pub format_type: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// `optionItems` in the schema; some payloads call them `items`.
    #[serde(default, alias = "items")]
    pub option_items: Option<Vec<ChoiceItem>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChoiceItem {
    #[serde(default)]
    pub option_identifier: Option<String>,
    #[serde(default)]
    pub title_item: Option<TitleItem>,
    #[serde(default)]
    pub title: Option<String>,
}

/// `entryPayload` of a `ParticipantChanged`.
#[derive(Deserialize)]
pub(crate) struct ParticipantChangedPayload {
    pub entries: Vec<WireParticipantChange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireParticipantChange {
    pub operation: String,
    #[serde(default)]
    pub participant: Option<EntrySender>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `entryPayload` of a `RoutingResult`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutingResultPayload {
    pub routing_type: String,
    #[serde(default)]
    pub failure_type: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub estimated_wait_time: Option<EstimatedWait>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EstimatedWait {
    #[serde(default)]
    pub estimated_wait_time_in_seconds: Option<u64>,
}

/// `entryPayload` of a `SessionStatusChanged`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionStatusPayload {
    pub session_status: String,
    #[serde(default)]
    pub session_ended_by_role: Option<String>,
}

/// `entryPayload` of a delivery or read acknowledgement.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AcknowledgementPayload {
    #[serde(default)]
    pub acknowledged_conversation_entry_identifier: Option<String>,
}

/// `entryPayload` of a `QueuePosition`.
#[derive(Deserialize)]
pub(crate) struct QueuePositionPayload {
    pub position: u32,
}

/// `entryPayload` of a `ProgressIndicator`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProgressIndicatorPayload {
    #[serde(default)]
    pub progress_indicator: Option<ProgressIndicator>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProgressIndicator {
    #[serde(default)]
    pub progress_message: Option<TitleText>,
}

#[derive(Deserialize)]
pub(crate) struct TitleText {
    #[serde(default)]
    pub text: Option<String>,
}
