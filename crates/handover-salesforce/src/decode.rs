//! Salesforce's JSON into the core's types. Everything here is untrusted input: a decode
//! never panics, unknown event names and entry types become `Unknown` variants, and anything
//! malformed is an error that names what was wrong (never the raw data, which may hold
//! personal data).

use std::time::Duration;

use handover_core::{
    Attachment, ChoiceOption, ChoiceStyle, ConversationEntry, ConversationId, EntryId,
    EntryPayload, EventId, MessageContent, ParticipantChange, ParticipantOperation, Role,
    RoutingFailure, RoutingResult, RoutingType, Sender, SessionStatus, StreamEvent, Timestamp,
};
use serde_json::Value;

/// What was wrong with an event or entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn fail<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
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
    let envelope: Value = serde_json::from_str(data).or_else(|_| fail("data is not JSON"))?;
    let conversation = envelope
        .get("conversationId")
        .and_then(Value::as_str)
        .map_or_else(|| fail("conversationId is missing"), Ok)?;
    let entry = envelope
        .get("conversationEntry")
        .map_or_else(|| fail("conversationEntry is missing"), Ok)?;
    decode_entry(entry, conversation)
}

/// One conversation entry, from the stream (payload as a string) or the entries list
/// (payload as an object).
pub fn decode_entry(entry: &Value, conversation: &str) -> Result<ConversationEntry, DecodeError> {
    let conversation_id = ConversationId::parse(&conversation.to_ascii_lowercase())
        .or_else(|_| fail("conversationId is not a UUID v4"))?;
    let identifier = entry
        .get("identifier")
        .and_then(Value::as_str)
        .and_then(|id| EntryId::new(id).ok())
        .map_or_else(|| fail("identifier is missing or empty"), Ok)?;
    let payload = match entry.get("entryPayload") {
        Some(Value::String(text)) => {
            serde_json::from_str(text).or_else(|_| fail("entryPayload is not JSON"))?
        }
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => return fail("entryPayload is neither a JSON string nor an object"),
        None => return fail("entryPayload is missing"),
    };
    let entry_type = payload
        .get("entryType")
        .or_else(|| entry.get("entryType"))
        .and_then(Value::as_str)
        .map_or_else(|| fail("entryType is missing"), Ok)?;
    let sender = entry.get("sender");
    let sender = Sender {
        role: role(
            sender
                .and_then(|s| s.get("role"))
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        display_name: text(entry, "senderDisplayName"),
        subject: sender.and_then(|s| text(s, "subject")),
    };
    let server_time = entry
        .get("transcriptedTimestamp")
        .and_then(Value::as_u64)
        .map(Timestamp::from_unix_millis);
    let payload = decode_payload(entry_type, &payload, entry)?;
    Ok(ConversationEntry {
        conversation_id,
        identifier,
        sender,
        server_time,
        payload,
    })
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
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
    payload: &Value,
    entry: &Value,
) -> Result<EntryPayload, DecodeError> {
    Ok(match entry_type {
        "Message" => EntryPayload::Message(message(payload)?),
        "ParticipantChanged" => {
            let changes = payload
                .get("entries")
                .and_then(Value::as_array)
                .map_or_else(|| fail("ParticipantChanged has no entries"), Ok)?;
            EntryPayload::ParticipantChanged(
                changes
                    .iter()
                    .map(participant_change)
                    .collect::<Result<_, _>>()?,
            )
        }
        "RoutingResult" => EntryPayload::RoutingResult(routing_result(payload)?),
        "SessionStatusChanged" => EntryPayload::SessionStatusChanged {
            status: session_status(
                payload
                    .get("sessionStatus")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            )?,
            ended_by: payload
                .get("sessionEndedByRole")
                .and_then(Value::as_str)
                .map(role),
        },
        "CloseConversation" => EntryPayload::CloseConversation,
        "TypingStartedIndicator" => EntryPayload::TypingStarted,
        "TypingStoppedIndicator" => EntryPayload::TypingStopped,
        "DeliveryAcknowledgement" => EntryPayload::DeliveryAcknowledged {
            acknowledged: acknowledged(payload, entry),
        },
        "ReadAcknowledgement" => EntryPayload::ReadAcknowledged {
            acknowledged: acknowledged(payload, entry),
        },
        "QueuePosition" => EntryPayload::QueuePosition {
            position: payload
                .get("position")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
                .map_or_else(|| fail("QueuePosition has no position"), Ok)?,
        },
        "ProgressIndicator" => EntryPayload::ProgressIndicator {
            text: payload
                .pointer("/progressIndicator/progressMessage/text")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        other => EntryPayload::Unknown {
            entry_type: other.chars().take(100).collect(),
        },
    })
}

fn acknowledged(payload: &Value, entry: &Value) -> Option<EntryId> {
    payload
        .get("acknowledgedConversationEntryIdentifier")
        .and_then(Value::as_str)
        .or_else(|| entry.pointer("/relatedRecords/0").and_then(Value::as_str))
        .and_then(|id| EntryId::new(id).ok())
}

fn session_status(status: &str) -> Result<SessionStatus, DecodeError> {
    Ok(match status {
        "New" => SessionStatus::New,
        "Waiting" => SessionStatus::Waiting,
        "Active" => SessionStatus::Active,
        "Inactive" => SessionStatus::Inactive,
        "Ended" => SessionStatus::Ended,
        "" => return fail("SessionStatusChanged has no sessionStatus"),
        other => SessionStatus::Other(other.chars().take(50).collect()),
    })
}

fn participant_change(change: &Value) -> Result<ParticipantChange, DecodeError> {
    let operation = match change.get("operation").and_then(Value::as_str) {
        Some("add") => ParticipantOperation::Add,
        Some("remove") => ParticipantOperation::Remove,
        Some("update") => ParticipantOperation::Update,
        Some(other) => ParticipantOperation::Unknown(other.chars().take(50).collect()),
        None => return fail("a participant change has no operation"),
    };
    let participant = change.get("participant");
    Ok(ParticipantChange {
        operation,
        role: role(
            participant
                .and_then(|p| p.get("role"))
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        display_name: text(change, "displayName"),
        subject: participant.and_then(|p| text(p, "subject")),
    })
}

fn routing_result(payload: &Value) -> Result<RoutingResult, DecodeError> {
    let routing_type = match payload.get("routingType").and_then(Value::as_str) {
        Some("Initial") => RoutingType::Initial,
        Some("Transfer") => RoutingType::Transfer,
        Some(other) => RoutingType::Other(other.chars().take(50).collect()),
        None => return fail("RoutingResult has no routingType"),
    };
    let failure = match payload.get("failureType").and_then(Value::as_str) {
        None | Some("None") => None,
        Some(kind) => Some(RoutingFailure {
            kind: kind.chars().take(50).collect(),
            reason: text(payload, "failureReason"),
        }),
    };
    let estimated_wait = payload
        .pointer("/estimatedWaitTime/estimatedWaitTimeInSeconds")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    Ok(RoutingResult {
        routing_type,
        failure,
        estimated_wait,
    })
}

fn message(payload: &Value) -> Result<MessageContent, DecodeError> {
    let message = payload
        .get("abstractMessage")
        .map_or_else(|| fail("Message has no abstractMessage"), Ok)?;
    let message_type = message
        .get("messageType")
        .and_then(Value::as_str)
        .unwrap_or("");
    match message_type {
        "StaticContentMessage" => {
            let content = message
                .get("staticContent")
                .map_or_else(|| fail("StaticContentMessage has no staticContent"), Ok)?;
            static_content(content)
        }
        "ChoicesMessage" => {
            let choices = message
                .get("choices")
                .map_or_else(|| fail("ChoicesMessage has no choices"), Ok)?;
            let style = match choices.get("formatType").and_then(Value::as_str) {
                Some("Buttons") => ChoiceStyle::Buttons,
                Some("QuickReplies") => ChoiceStyle::QuickReplies,
                Some("Carousel") => ChoiceStyle::Carousel,
                other => {
                    return Ok(MessageContent::Other {
                        kind: format!("ChoicesMessage/{}", other.unwrap_or("?")),
                        fallback_text: text(choices, "text"),
                    });
                }
            };
            let options = choices
                .get("optionItems")
                .or_else(|| choices.get("items"))
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| {
                            let title = item
                                .pointer("/titleItem/title")
                                .or_else(|| item.get("title"))
                                .and_then(Value::as_str)?;
                            Some(ChoiceOption {
                                id: text(item, "optionIdentifier"),
                                title: title.to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(MessageContent::Choices {
                text: text(choices, "text").unwrap_or_default(),
                style,
                options,
            })
        }
        other => Ok(MessageContent::Other {
            kind: other.chars().take(50).collect(),
            fallback_text: message
                .pointer("/staticContent/text")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
    }
}

fn static_content(content: &Value) -> Result<MessageContent, DecodeError> {
    let format = content
        .get("formatType")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(match format {
        "Text" => MessageContent::Text(text(content, "text").unwrap_or_default()),
        "Attachments" => MessageContent::Attachments {
            text: text(content, "text"),
            files: content
                .get("attachments")
                .and_then(Value::as_array)
                .map(|files| {
                    files
                        .iter()
                        .filter_map(|file| {
                            Some(Attachment {
                                name: text(file, "name").unwrap_or_else(|| "attachment".to_owned()),
                                url: text(file, "url")?,
                                mime_type: text(file, "mimeType"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        "RichLink" | "WebView" => {
            let url = content
                .pointer("/linkItem/url")
                .or_else(|| content.get("url"))
                .and_then(Value::as_str);
            match url {
                Some(url) => MessageContent::Link {
                    url: url.to_owned(),
                    title: content
                        .pointer("/linkItem/titleItem/title")
                        .or_else(|| content.get("title"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
                None => MessageContent::Other {
                    kind: format.to_owned(),
                    fallback_text: text(content, "text"),
                },
            }
        }
        "" => return fail("staticContent has no formatType"),
        // The v2 API flattens rich content (Lightning types) to text where it can.
        other => MessageContent::Other {
            kind: other.chars().take(50).collect(),
            fallback_text: text(content, "text"),
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
}
