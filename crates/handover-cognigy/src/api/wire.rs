//! The JSON of the `/v1` API, as serde types that also describe themselves to OpenAPI.
//!
//! Request bodies refuse unknown fields, so that a misspelt setting is a 400 naming it rather
//! than a default silently taken. Attachments are the exception: they accept Cognigy's own
//! `data.attachments` objects as they are.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

// ---- start ------------------------------------------------------------------------------------

/// Starts a handover. Send it from the Flow's HTTP Request node with `ci.userId`,
/// `ci.sessionId` and `ci.URLToken`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StartBody {
    /// Idempotency key: the same key returns the same handover (for example `ci.inputId`).
    /// Without one, every request is new (a second one while a handover is live still gets
    /// 409).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Cognigy's `userId`. A string; an integer is taken as its decimal digits.
    #[serde(deserialize_with = "opaque_id")]
    #[schema(value_type = String)]
    pub user_id: String,
    /// Cognigy's `sessionId`.
    #[serde(deserialize_with = "opaque_id")]
    #[schema(value_type = String)]
    pub session_id: String,
    /// The Endpoint's URL token (`ci.URLToken`).
    #[serde(rename = "URLToken")]
    pub url_token: String,
    /// The Endpoint's base URL, where `/notify/{URLToken}` and `/inject/{URLToken}` live
    /// (for example `https://endpoint-trial.cognigy.ai`).
    pub endpoint_url: String,
    /// The Salesforce deployment, by its configured name; the default one when absent.
    #[serde(default)]
    pub deployment: Option<String>,
    /// The conversation with the bot so far, oldest first.
    #[serde(default)]
    pub transcript: Vec<TurnBody>,
    /// The Salesforce MIAW node settings.
    #[serde(default)]
    pub settings: SettingsBody,
    /// The Flow's locale (sent as the `language` routing attribute unless the attributes have
    /// one).
    #[serde(default)]
    pub locale: Option<String>,
    /// The Agent Copilot base URL (a host such as `ai-copilot-trial.cognigy.ai`). With it, the
    /// Copilot link goes to Salesforce as a routing attribute.
    #[serde(default)]
    pub copilot_base_url: Option<String>,
}

/// One turn of the bot conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TurnBody {
    /// Who said it.
    pub role: TurnRole,
    /// What was said.
    pub text: String,
}

/// Who said a transcript turn.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TurnRole {
    /// The customer.
    User,
    /// The bot.
    Bot,
}

/// The Salesforce MIAW settings of the Handover to Human Agent node, with Cognigy's defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(crate) struct SettingsBody {
    /// Send Transcript as first message (default off).
    pub send_transcript: bool,
    /// Conversation Routing Attributes: a JSON object. Strings pass as they are; numbers and
    /// booleans become strings. A `language` key overrides the locale.
    #[serde(deserialize_with = "routing_attributes")]
    #[schema(value_type = Object)]
    pub routing_attributes: BTreeMap<String, String>,
    /// Identity Token for Authenticated Users; without one the user is a guest.
    #[schema(value_type = Option<String>)]
    pub identity_token: Option<SecretText>,
    /// Enable User Connects Message (default on).
    pub user_connects_message: bool,
    /// Enable User Disconnects Message (default on).
    pub user_disconnects_message: bool,
    /// End Chat When Agent Leaves (default off).
    pub end_chat_when_agent_leaves: bool,
    /// Agent Change Notification (default off).
    pub agent_change_notification: bool,
    /// Real-time queue notifications.
    pub queue: QueueBody,
    /// Forward Events to the Flow (default off).
    pub forward_events: bool,
    /// Forward user messages while queued (default on), or hold them until an agent joins.
    pub forward_while_queued: bool,
}

impl Default for SettingsBody {
    fn default() -> Self {
        let defaults = handover_core::HandoverSettings::default();
        Self {
            send_transcript: defaults.send_transcript,
            routing_attributes: BTreeMap::new(),
            identity_token: None,
            user_connects_message: defaults.user_connected_message,
            user_disconnects_message: defaults.user_disconnected_message,
            end_chat_when_agent_leaves: defaults.end_when_agent_leaves,
            agent_change_notification: defaults.agent_change_notification,
            queue: QueueBody::default(),
            forward_events: defaults.forward_events,
            forward_while_queued: defaults.forward_while_queued,
        }
    }
}

/// A secret from a request body: its `Debug` never shows it.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct SecretText(pub String);

/// Written only as a marker (OpenAPI writes the settings' defaults, where it is absent).
impl Serialize for SecretText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Get Queue Position, Get Estimated Wait Time, Alternative Update.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(crate) struct QueueBody {
    /// Report the queue position.
    pub position: bool,
    /// Report the estimated wait time.
    pub estimated_wait_time: bool,
    /// Above these thresholds the Flow gets the alternative text instead of the numbers.
    pub alternative: Option<AlternativeBody>,
}

/// The Alternative Update.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AlternativeBody {
    /// Maximum Queue Position.
    #[serde(default)]
    pub max_position: Option<u32>,
    /// Maximum Estimated Wait Time, in milliseconds (as in Cognigy).
    #[serde(default)]
    pub max_estimated_wait_time_ms: Option<u64>,
    /// Alternative Text.
    pub text: String,
}

/// The handover was accepted (202).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartedBody {
    /// The handover's id, for the other routes.
    pub handover_id: String,
    /// Whether this request repeated an earlier one with the same `requestId` (S07).
    pub duplicate: bool,
}

// ---- inputs -----------------------------------------------------------------------------------

/// A message the user wrote while the handover is live.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MessageBody {
    /// The bot platform's id for this message (for example `ci.inputId`). A repeated id is
    /// sent to the agent once.
    pub message_id: String,
    /// The text; may be empty when there are attachments.
    #[serde(default)]
    pub text: String,
    /// Files by URL. Cognigy's `data.attachments` objects are accepted as they are.
    #[serde(default)]
    pub attachments: Vec<AttachmentBody>,
}

/// A file the user sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttachmentBody {
    /// Where the bridge can download it (http or https).
    pub url: String,
    /// The file name (`fileName` in Cognigy's attachments).
    #[serde(default, alias = "fileName")]
    pub name: Option<String>,
    /// The MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// The size in bytes, if known.
    #[serde(default)]
    pub size: Option<u64>,
}

/// The user's typing indicator.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TypingBody {
    /// Typing (`true`) or stopped.
    pub typing: bool,
}

/// The input was taken (202): it is stored and the handover will act on it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AcceptedBody {
    /// Always true.
    pub accepted: bool,
}

// ---- views ------------------------------------------------------------------------------------

/// One handover.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HandoverBody {
    /// The bridge's id.
    pub handover_id: String,
    /// The MIAW conversation id.
    pub conversation_id: String,
    /// Cognigy's user id.
    pub user_id: String,
    /// Cognigy's session id.
    pub session_id: String,
    /// Where it stands: `requested`, `minting_token`, `opening_stream`,
    /// `creating_conversation`, `queued`, `with_agent`, `transferring`, `agent_left`,
    /// `inactive`, `ending` or `ended`.
    pub phase: String,
    /// Whether it is still live.
    pub live: bool,
    /// How it ended, once it has.
    pub outcome: Option<OutcomeBody>,
}

/// How a handover ended.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutcomeBody {
    /// `completed`, `cancelled` or `error`.
    pub status: String,
    /// `agent_ended`, `agent_left`, `user_closed`, `closed_by_flow`, `cancelled_by_user`,
    /// `routing_failed`, `token_expired` or `provider_error`.
    pub reason: String,
    /// Details of an error.
    pub detail: Option<String>,
    /// User messages that never reached the agent.
    pub undelivered_message_ids: Vec<String>,
    /// User messages in flight at the end, not known to have arrived.
    pub unconfirmed_message_ids: Vec<String>,
    /// Stretches of Salesforce's conversation that could not be listed in full: agent
    /// messages in them may not have reached the user. Empty when nothing is known missing.
    pub missed_entries: Vec<MissedEntriesBody>,
}

/// A stretch of server time (`transcriptedTimestamp`, both ends included).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MissedEntriesBody {
    /// Its first millisecond, since the Unix epoch.
    pub from_ms: u64,
    /// Its last millisecond, since the Unix epoch.
    pub to_ms: u64,
}

/// Handovers, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ListBody {
    /// The handovers.
    pub handovers: Vec<HandoverBody>,
}

/// Every error has this shape.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorDetail {
    /// A stable code: `unauthorized`, `forbidden`, `payload_too_large`, `invalid_json`,
    /// `invalid_field`, `not_found`, `no_route`, `conflict`, `ended`, `unavailable`.
    pub code: String,
    /// For people.
    pub message: String,
    /// The field at fault, as a path such as `settings.routingAttributes.issueType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The live handover a conflicting start ran into (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handover_id: Option<String>,
}

// ---- field rules ------------------------------------------------------------------------------

/// Cognigy ids are strings. An integer is accepted as its digits, because Flows sometimes
/// send numeric user ids; anything a JSON number cannot carry exactly is refused rather than
/// rounded (Cognigy 2025.17 fixed exactly this loss of digits).
fn opaque_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) if !text.is_empty() => Ok(text),
        Value::String(_) => Err(D::Error::custom("must not be empty")),
        Value::Number(number) if number.is_u64() || number.is_i64() => Ok(number.to_string()),
        Value::Number(_) => Err(D::Error::custom(
            "must be a string (this number cannot be carried exactly; quote it)",
        )),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => {
            Err(D::Error::custom("must be a string"))
        }
    }
}

/// Routing attributes must be an object; its values strings, numbers or booleans, which
/// become strings (Omni-Channel flow variables are text). `null` values are left out.
fn routing_attributes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let Value::Object(map) = Value::deserialize(deserializer)? else {
        return Err(D::Error::custom(
            "must be a JSON object of strings, numbers or booleans",
        ));
    };
    let mut attributes = BTreeMap::new();
    for (key, value) in map {
        let text = match value {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => {
                return Err(D::Error::custom(format!(
                    "{key} must be a string, number or boolean"
                )));
            }
        };
        attributes.insert(key, text);
    }
    Ok(attributes)
}
