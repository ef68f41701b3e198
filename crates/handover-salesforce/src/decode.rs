//! Salesforce's JSON into the core's types, through the serde shapes of [`crate::wire`].
//! Everything here is untrusted input: a decode never panics, unknown event names and entry
//! types become `Unknown` variants, and anything malformed is an error that names the field
//! that was wrong (never the data, which may hold personal data).

use std::time::Duration;

use handover_core::{
    Attachment, ChoiceOption, ChoiceStyle, ConversationEntry, ConversationId, EntryId,
    EntryPayload, EventId, MessageContent, ParticipantChange, ParticipantOperation, Role,
    RoutingFailure, RoutingResult, RoutingType, Sender, SessionStatus, StreamEvent, Timestamp,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire;

/// What was wrong with an event or entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn fail<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

/// Why serde refused, without the offending value: its messages quote the data ("invalid
/// type: string \"…\""), which may be a customer's words.
fn reason(error: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => "is not valid JSON",
        Category::Data if error.to_string().starts_with("missing field") => "is missing",
        Category::Data => "has the wrong type or value",
    }
}

/// Deserializes `value` into a wire type; an error names the path of the field at fault.
pub(crate) fn shape<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let missing = inner
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        DecodeError(match (path.as_str(), missing) {
            (".", Some(field)) => format!("{what}: {field} is missing"),
            (".", None) => format!("{what} {}", reason(&inner)),
            (path, Some(field)) => format!("{what}: {path}.{field} is missing"),
            (path, None) => format!("{what}: {path} {}", reason(&inner)),
        })
    })
}

/// The SSE event names whose data is a conversation entry. Anything else (except `ping`) is an
/// unknown event: Salesforce adds event types at any time, and some (streaming tokens) must not
/// be mistaken for entries.
const ENTRY_EVENTS: &[&str] = &[
    "CONVERSATION_MESSAGE",
    "CONVERSATION_PARTICIPANT_CHANGED",
    "CONVERSATION_ROUTING_RESULT",
    "CONVERSATION_SESSION_STATUS_CHANGED",
    "CONVERSATION_CLOSE_CONVERSATION",
    "CONVERSATION_TYPING_STARTED_INDICATOR",
    "CONVERSATION_TYPING_STOPPED_INDICATOR",
    "CONVERSATION_DELIVERY_ACKNOWLEDGEMENT",
    "CONVERSATION_READ_ACKNOWLEDGEMENT",
    "CONVERSATION_QUEUE_POSITION",
    "CONVERSATION_PROGRESS_INDICATOR",
];

/// One SSE event as the core sees it.
pub fn decode_stream_event(name: &str, id: &str, data: &str) -> StreamEvent {
    let event_id = EventId::new(id.trim()).ok();
    if name == "ping" {
        return StreamEvent::Ping;
    }
    if !ENTRY_EVENTS.contains(&name) {
        return StreamEvent::Unknown {
            event_id,
            name: name.chars().take(100).collect(),
        };
    }
    match decode_envelope(data) {
        Ok(entry) => StreamEvent::Entry { event_id, entry },
        Err(DecodeError(reason)) => StreamEvent::Malformed {
            event_id,
            reason: format!("{name}: {reason}"),
        },
    }
}

/// The `data` of an SSE event: the envelope around a conversation entry whose `entryPayload`
/// is a JSON string.
pub fn decode_envelope(data: &str) -> Result<ConversationEntry, DecodeError> {
    let value: Value = serde_json::from_str(data).or_else(|_| fail("data is not JSON"))?;
    let envelope: wire::Envelope = shape(value, "the envelope")?;
    entry(envelope.conversation_entry, &envelope.conversation_id)
}

/// One conversation entry of a listing (payload as an object, or a string).
pub fn decode_entry(entry: &Value, conversation: &str) -> Result<ConversationEntry, DecodeError> {
    self::entry(shape(entry.clone(), "the entry")?, conversation)
}

fn entry(entry: wire::Entry, conversation: &str) -> Result<ConversationEntry, DecodeError> {
    let conversation_id = ConversationId::parse(&conversation.to_ascii_lowercase())
        .or_else(|_| fail("conversationId is not a UUID v4"))?;
    let identifier = EntryId::new(entry.identifier.as_str())
        .or_else(|_| fail("identifier is empty or too long"))?;
    let payload = match entry.entry_payload {
        Value::String(text) => {
            serde_json::from_str(&text).or_else(|_| fail("entryPayload is not JSON"))?
        }
        object @ Value::Object(_) => object,
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) => {
            return fail("entryPayload is neither a JSON string nor an object");
        }
    };
    let declared: wire::PayloadType = shape(payload.clone(), "entryPayload")?;
    let Some(entry_type) = declared.entry_type.or(entry.entry_type) else {
        return fail("entryType is missing");
    };
    let sender = entry.sender.unwrap_or(wire::EntrySender {
        role: None,
        subject: None,
    });
    // Only a message has an `abstractMessage`; its id is the sender's own for it.
    let message_id = payload
        .get("abstractMessage")
        .and_then(|message| message.get("id"))
        .and_then(Value::as_str)
        .and_then(|id| EntryId::new(id).ok());
    let first_related = entry
        .related_records
        .and_then(|records| records.into_iter().next())
        .and_then(|record| record.as_str().map(str::to_owned));
    Ok(ConversationEntry {
        conversation_id,
        identifier,
        sender: Sender {
            role: role(sender.role.as_deref().unwrap_or("")),
            display_name: entry.sender_display_name,
            subject: sender.subject,
        },
        server_time: entry
            .transcripted_timestamp
            .map(Timestamp::from_unix_millis),
        message_id,
        payload: decode_payload(&entry_type, payload, first_related)?,
    })
}

fn role(role: &str) -> Role {
    match role {
        "EndUser" => Role::EndUser,
        "Agent" => Role::Agent,
        "Chatbot" => Role::Chatbot,
        "System" => Role::System,
        "Router" => Role::Router,
        "Supervisor" => Role::Supervisor,
        other => Role::Unknown(other.chars().take(50).collect()),
    }
}

fn decode_payload(
    entry_type: &str,
    payload: Value,
    first_related: Option<String>,
) -> Result<EntryPayload, DecodeError> {
    let acknowledged = |payload: Value, what: &str| -> Result<Option<EntryId>, DecodeError> {
        let ack: wire::AcknowledgementPayload = shape(payload, what)?;
        Ok(ack
            .acknowledged_conversation_entry_identifier
            .or(first_related)
            .and_then(|id| EntryId::new(id).ok()))
    };
    Ok(match entry_type {
        "Message" => EntryPayload::Message(message(shape(payload, "Message")?)?),
        "ParticipantChanged" => {
            let changed: wire::ParticipantChangedPayload = shape(payload, "ParticipantChanged")?;
            EntryPayload::ParticipantChanged(
                changed
                    .entries
                    .into_iter()
                    .map(participant_change)
                    .collect(),
            )
        }
        "RoutingResult" => {
            EntryPayload::RoutingResult(routing_result(shape(payload, "RoutingResult")?)?)
        }
        "SessionStatusChanged" => {
            let changed: wire::SessionStatusPayload = shape(payload, "SessionStatusChanged")?;
            EntryPayload::SessionStatusChanged {
                status: session_status(&changed.session_status)?,
                ended_by: changed.session_ended_by_role.as_deref().map(role),
            }
        }
        "CloseConversation" => EntryPayload::CloseConversation,
        "TypingStartedIndicator" => EntryPayload::TypingStarted,
        "TypingStoppedIndicator" => EntryPayload::TypingStopped,
        "DeliveryAcknowledgement" => EntryPayload::DeliveryAcknowledged {
            acknowledged: acknowledged(payload, "DeliveryAcknowledgement")?,
        },
        "ReadAcknowledgement" => EntryPayload::ReadAcknowledged {
            acknowledged: acknowledged(payload, "ReadAcknowledgement")?,
        },
        "QueuePosition" => {
            let queue: wire::QueuePositionPayload = shape(payload, "QueuePosition")?;
            EntryPayload::QueuePosition {
                position: queue.position,
            }
        }
        "ProgressIndicator" => {
            let progress: wire::ProgressIndicatorPayload = shape(payload, "ProgressIndicator")?;
            EntryPayload::ProgressIndicator {
                text: progress
                    .progress_indicator
                    .and_then(|p| p.progress_message)
                    .and_then(|m| m.text),
            }
        }
        other => EntryPayload::Unknown {
            entry_type: other.chars().take(100).collect(),
        },
    })
}

fn session_status(status: &str) -> Result<SessionStatus, DecodeError> {
    Ok(match status {
        "New" => SessionStatus::New,
        "Waiting" => SessionStatus::Waiting,
        "Active" => SessionStatus::Active,
        "Inactive" => SessionStatus::Inactive,
        "Ended" => SessionStatus::Ended,
        "" => return fail("SessionStatusChanged: sessionStatus is empty"),
        other => SessionStatus::Other(other.chars().take(50).collect()),
    })
}

fn participant_change(change: wire::WireParticipantChange) -> ParticipantChange {
    let operation = match change.operation.as_str() {
        "add" => ParticipantOperation::Add,
        "remove" => ParticipantOperation::Remove,
        "update" => ParticipantOperation::Update,
        other => ParticipantOperation::Unknown(other.chars().take(50).collect()),
    };
    let participant = change.participant.unwrap_or(wire::EntrySender {
        role: None,
        subject: None,
    });
    ParticipantChange {
        operation,
        role: role(participant.role.as_deref().unwrap_or("")),
        display_name: change.display_name,
        subject: participant.subject,
    }
}

fn routing_result(result: wire::RoutingResultPayload) -> Result<RoutingResult, DecodeError> {
    let routing_type = match result.routing_type.as_str() {
        "Initial" => RoutingType::Initial,
        "Transfer" => RoutingType::Transfer,
        "" => return fail("RoutingResult: routingType is empty"),
        other => RoutingType::Other(other.chars().take(50).collect()),
    };
    let failure = match result.failure_type.as_deref() {
        None | Some("None") => None,
        Some(kind) => Some(RoutingFailure {
            kind: kind.chars().take(50).collect(),
            reason: result.failure_reason,
        }),
    };
    Ok(RoutingResult {
        routing_type,
        failure,
        estimated_wait: result
            .estimated_wait_time
            .and_then(|wait| wait.estimated_wait_time_in_seconds)
            .map(Duration::from_secs),
    })
}

fn message(payload: wire::MessagePayload) -> Result<MessageContent, DecodeError> {
    let message = payload.abstract_message;
    match message.message_type.as_deref().unwrap_or("") {
        "StaticContentMessage" => {
            let Some(content) = message.static_content else {
                return fail("Message: abstractMessage.staticContent is missing");
            };
            static_content(content)
        }
        "ChoicesMessage" => {
            let Some(choices) = message.choices else {
                return fail("Message: abstractMessage.choices is missing");
            };
            let style = match choices.format_type.as_deref() {
                Some("Buttons") => ChoiceStyle::Buttons,
                Some("QuickReplies") => ChoiceStyle::QuickReplies,
                Some("Carousel") => ChoiceStyle::Carousel,
                other => {
                    return Ok(MessageContent::Other {
                        kind: format!("ChoicesMessage/{}", other.unwrap_or("?")),
                        fallback_text: choices.text,
                    });
                }
            };
            let options = choices
                .option_items
                .unwrap_or_default()
                .into_iter()
                .filter_map(|item| {
                    let title = item.title_item.and_then(|t| t.title).or(item.title)?;
                    Some(ChoiceOption {
                        id: item.option_identifier,
                        title,
                    })
                })
                .collect();
            Ok(MessageContent::Choices {
                text: choices.text.unwrap_or_default(),
                style,
                options,
            })
        }
        other => Ok(MessageContent::Other {
            kind: other.chars().take(50).collect(),
            fallback_text: message.static_content.and_then(|content| content.text),
        }),
    }
}

fn static_content(content: wire::StaticContent) -> Result<MessageContent, DecodeError> {
    let format = content.format_type.unwrap_or_default();
    Ok(match format.as_str() {
        "Text" => MessageContent::Text(content.text.unwrap_or_default()),
        "Attachments" => MessageContent::Attachments {
            text: content.text,
            files: content
                .attachments
                .unwrap_or_default()
                .into_iter()
                .filter_map(|file| {
                    Some(Attachment {
                        url: file.url?,
                        name: file.name.unwrap_or_else(|| "attachment".to_owned()),
                        mime_type: file.mime_type,
                    })
                })
                .collect(),
        },
        "RichLink" | "WebView" => {
            let (link_url, link_title) = content
                .link_item
                .map(|link| (link.url, link.title_item.and_then(|t| t.title)))
                .unwrap_or_default();
            match link_url.or(content.url) {
                Some(url) => MessageContent::Link {
                    url,
                    title: link_title.or(content.title),
                },
                None => MessageContent::Other {
                    kind: format,
                    fallback_text: content.text,
                },
            }
        }
        "" => return fail("Message: abstractMessage.staticContent.formatType is missing"),
        // The v2 API flattens rich content (Lightning types) to text where it can.
        other => MessageContent::Other {
            kind: other.chars().take(50).collect(),
            fallback_text: content.text,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONVERSATION: &str = "3b6f0c52-8d1e-4a7b-9c2d-5e6f7a8b9c0d";

    fn envelope(entry_type: &str, payload: &Value, as_string: bool) -> String {
        json!({
            "channelType": "embedded_messaging",
            "conversationId": CONVERSATION,
            "conversationEntry": {
                "identifier": "entry-1",
                "entryType": entry_type,
                "entryPayload": if as_string { Value::String(payload.to_string()) } else { payload.clone() },
                "sender": { "role": "Agent", "subject": "005x", "appType": "agent" },
                "senderDisplayName": "Jane Doe",
                "transcriptedTimestamp": 1_700_000_000_123u64,
            },
        })
        .to_string()
    }

    #[test]
    fn a_message_decodes_whether_the_payload_is_a_string_or_an_object() {
        let payload = json!({ "entryType": "Message", "id": "x", "abstractMessage": {
            "messageType": "StaticContentMessage", "id": "m", "staticContent": { "formatType": "Text", "text": "Hi" } } });
        for as_string in [true, false] {
            let entry =
                decode_envelope(&envelope("Message", &payload, as_string)).expect("decodes");
            assert_eq!(
                entry.payload,
                EntryPayload::Message(MessageContent::Text("Hi".to_owned()))
            );
            assert_eq!(entry.sender.role, Role::Agent);
            assert_eq!(entry.sender.display_name.as_deref(), Some("Jane Doe"));
            assert_eq!(
                entry.server_time,
                Some(Timestamp::from_unix_millis(1_700_000_000_123))
            );
        }
    }

    #[test]
    fn unknown_events_and_entry_types_are_not_errors() {
        assert!(matches!(
            decode_stream_event("CONVERSATION_STREAMING_TOKEN", "7", "{}"),
            StreamEvent::Unknown { name, .. } if name == "CONVERSATION_STREAMING_TOKEN"
        ));
        let payload = json!({ "entryType": "FlagRaise", "id": "x" });
        let event = decode_stream_event(
            "CONVERSATION_MESSAGE",
            "8",
            &envelope("FlagRaise", &payload, true),
        );
        let StreamEvent::Entry { event_id, entry } = event else {
            panic!("an entry of an unknown type is still an entry");
        };
        assert_eq!(
            event_id.map(|id| id.as_str().to_owned()),
            Some("8".to_owned())
        );
        assert_eq!(
            entry.payload,
            EntryPayload::Unknown {
                entry_type: "FlagRaise".to_owned()
            }
        );
    }

    #[test]
    fn malformed_data_names_what_is_wrong() {
        let malformed = |data: &str| match decode_stream_event("CONVERSATION_MESSAGE", "", data) {
            StreamEvent::Malformed { reason, event_id } => {
                assert_eq!(event_id, None, "an empty id is no id");
                reason
            }
            other => panic!("expected malformed, got {other:?}"),
        };
        assert!(malformed("not json").contains("data is not JSON"));
        assert!(
            malformed(&json!({ "conversationId": CONVERSATION }).to_string())
                .contains("conversationEntry is missing")
        );
        let bad_payload = json!({ "conversationId": CONVERSATION, "conversationEntry": { "identifier": "e", "entryPayload": "{oops" } });
        assert!(malformed(&bad_payload.to_string()).contains("entryPayload is not JSON"));
        let wrong_type = json!({ "conversationId": CONVERSATION, "conversationEntry": { "identifier": "e", "entryPayload": 42 } });
        assert!(malformed(&wrong_type.to_string()).contains("neither a JSON string nor an object"));
        let bad_id = json!({ "conversationId": "nope", "conversationEntry": { "identifier": "e", "entryPayload": {} } });
        assert!(malformed(&bad_id.to_string()).contains("conversationId"));
    }

    #[test]
    fn routing_participants_and_session_status_decode() {
        let routing = json!({ "entryType": "RoutingResult", "id": "r", "routingType": "Initial", "failureType": "RoutingError",
            "failureReason": "No agents", "errorMessages": [], "estimatedWaitTime": { "estimatedWaitTimeInSeconds": 90 } });
        let entry = decode_envelope(&envelope("RoutingResult", &routing, true)).expect("decodes");
        assert_eq!(
            entry.payload,
            EntryPayload::RoutingResult(RoutingResult {
                routing_type: RoutingType::Initial,
                failure: Some(RoutingFailure {
                    kind: "RoutingError".to_owned(),
                    reason: Some("No agents".to_owned())
                }),
                estimated_wait: Some(Duration::from_secs(90)),
            })
        );
        let change = json!({ "entryType": "ParticipantChanged", "id": "p", "entries": [
            { "operation": "remove", "participant": { "role": "Agent", "subject": "005a" }, "displayName": "Jane" } ] });
        let entry =
            decode_envelope(&envelope("ParticipantChanged", &change, true)).expect("decodes");
        let EntryPayload::ParticipantChanged(changes) = entry.payload else {
            panic!("participant change")
        };
        assert_eq!(changes[0].operation, ParticipantOperation::Remove);
        assert_eq!(changes[0].subject.as_deref(), Some("005a"));
        let ended = json!({ "entryType": "SessionStatusChanged", "id": "s", "sessionStatus": "Ended", "sessionEndedByRole": "Agent" });
        let entry =
            decode_envelope(&envelope("SessionStatusChanged", &ended, false)).expect("decodes");
        assert_eq!(
            entry.payload,
            EntryPayload::SessionStatusChanged {
                status: SessionStatus::Ended,
                ended_by: Some(Role::Agent)
            }
        );
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_named_by_its_path_and_the_data_is_not_quoted() {
        let message = json!({ "entryType": "Message", "abstractMessage": {
            "messageType": "StaticContentMessage", "staticContent": { "formatType": "Text", "text": ["my card is 4111"] } } });
        let error = decode_envelope(&envelope("Message", &message, true)).unwrap_err();
        assert_eq!(
            error.0,
            "Message: abstractMessage.staticContent.text has the wrong type or value"
        );
        let queue = json!({ "entryType": "QueuePosition", "position": "my secret" });
        let error = decode_envelope(&envelope("QueuePosition", &queue, false)).unwrap_err();
        assert_eq!(
            error.0,
            "QueuePosition: position has the wrong type or value"
        );
        let routing = json!({ "entryType": "RoutingResult", "failureType": "None" });
        let error = decode_envelope(&envelope("RoutingResult", &routing, true)).unwrap_err();
        assert_eq!(error.0, "RoutingResult: routingType is missing");
        let no_payload =
            json!({ "conversationId": CONVERSATION, "conversationEntry": { "identifier": "e" } });
        let error = decode_envelope(&no_payload.to_string()).unwrap_err();
        assert_eq!(
            error.0,
            "the envelope: conversationEntry.entryPayload is missing"
        );
    }
}
