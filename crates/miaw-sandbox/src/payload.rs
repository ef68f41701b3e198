//! JSON for conversation entries, as Salesforce writes them. The entry payloads validate
//! against Salesforce's published schemas (`tests/schema.rs` checks every kind).

use serde_json::{Value, json};

/// Who wrote an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Participant {
    /// `EndUser`, `Agent`, `Chatbot`, `System`, `Router`, `Supervisor`.
    pub(crate) role: &'static str,
    /// `custom`, `agent`, `chatbot`, `conversation`, `iamessage`, …
    pub(crate) app_type: &'static str,
    /// Stable per participant.
    pub(crate) subject: String,
    /// The display name.
    pub(crate) display_name: String,
}

/// A Salesforce bot's `clientIdentifier` is empty in Salesforce's payload samples; for other
/// participants no sample shows the value, so the sandbox names the role.
fn client_identifier(role: &str) -> String {
    if role == "Chatbot" {
        String::new()
    } else {
        format!("{}-client", role.to_lowercase())
    }
}

impl Participant {
    /// The JSON `Participant` object.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "role": self.role,
            "appType": self.app_type,
            "subject": self.subject,
            "clientIdentifier": client_identifier(self.role),
        })
    }

    /// A Salesforce bot (Einstein or Agentforce): its subject is the bot definition's id.
    pub(crate) fn chatbot(name: &str, subject: &str) -> Self {
        Self {
            role: "Chatbot",
            app_type: "chatbot",
            subject: subject.to_owned(),
            display_name: name.to_owned(),
        }
    }

    /// The bot that speaks when no bot joined (automated bot messages).
    pub(crate) fn sandbox_bot() -> Self {
        Self::chatbot("Sandbox Bot", "0XxSB0000000001")
    }

    /// The end user with this subject.
    pub(crate) fn end_user(subject: &str) -> Self {
        Self {
            role: "EndUser",
            app_type: "iamessage",
            subject: subject.to_owned(),
            display_name: "Guest".to_owned(),
        }
    }

    /// An agent.
    pub(crate) fn agent(name: &str, subject: &str) -> Self {
        Self {
            role: "Agent",
            app_type: "agent",
            subject: subject.to_owned(),
            display_name: name.to_owned(),
        }
    }

    /// Salesforce's automated process (session status, automated messages).
    pub(crate) fn system() -> Self {
        Self {
            role: "System",
            app_type: "conversation",
            subject: "system".to_owned(),
            display_name: "Automated Process".to_owned(),
        }
    }

    /// The Omni-Channel router.
    pub(crate) fn router() -> Self {
        Self {
            role: "Router",
            app_type: "conversation",
            subject: "router".to_owned(),
            display_name: "Omni-Channel".to_owned(),
        }
    }
}

/// The SSE event name for an entry type.
pub(crate) fn event_name(entry_type: &str) -> &'static str {
    match entry_type {
        "Message" => "CONVERSATION_MESSAGE",
        "ParticipantChanged" => "CONVERSATION_PARTICIPANT_CHANGED",
        "RoutingResult" => "CONVERSATION_ROUTING_RESULT",
        "SessionStatusChanged" => "CONVERSATION_SESSION_STATUS_CHANGED",
        "CloseConversation" => "CONVERSATION_CLOSE_CONVERSATION",
        "TypingStartedIndicator" => "CONVERSATION_TYPING_STARTED_INDICATOR",
        "TypingStoppedIndicator" => "CONVERSATION_TYPING_STOPPED_INDICATOR",
        "DeliveryAcknowledgement" => "CONVERSATION_DELIVERY_ACKNOWLEDGEMENT",
        "ReadAcknowledgement" => "CONVERSATION_READ_ACKNOWLEDGEMENT",
        "QueuePosition" => "CONVERSATION_QUEUE_POSITION",
        "ProgressIndicator" => "CONVERSATION_PROGRESS_INDICATOR",
        _ => "CONVERSATION_UNKNOWN",
    }
}

/// A text message (`StaticContentMessage` / `Text`).
pub(crate) fn text_message(
    entry_id: &str,
    message_id: &str,
    text: &str,
    in_reply_to: Option<&str>,
) -> Value {
    let mut message = json!({
        "messageType": "StaticContentMessage",
        "id": message_id,
        "references": [],
        "staticContent": { "formatType": "Text", "text": text },
    });
    if let Some(reply) = in_reply_to {
        message["inReplyToMessageId"] = json!(reply);
    }
    json!({ "entryType": "Message", "id": entry_id, "abstractMessage": message })
}

/// One attachment of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AttachmentJson {
    /// Its id.
    pub(crate) id: String,
    /// File name.
    pub(crate) name: String,
    /// MIME type.
    pub(crate) mime_type: String,
    /// Download URL.
    pub(crate) url: String,
}

/// A message with attachments (`StaticContentMessage` / `Attachments`).
pub(crate) fn attachments_message(
    entry_id: &str,
    message_id: &str,
    text: Option<&str>,
    attachments: &[AttachmentJson],
) -> Value {
    let files: Vec<Value> = attachments
        .iter()
        .map(|a| json!({ "id": a.id, "name": a.name, "mimeType": a.mime_type, "url": a.url }))
        .collect();
    let mut content = json!({ "formatType": "Attachments", "attachments": files });
    if let Some(text) = text {
        content["text"] = json!(text);
    }
    json!({
        "entryType": "Message",
        "id": entry_id,
        "abstractMessage": {
            "messageType": "StaticContentMessage",
            "id": message_id,
            "references": [],
            "staticContent": content,
        },
    })
}

/// A message with choices (`ChoicesMessage` / `Buttons` or `QuickReplies`).
pub(crate) fn choices_message(
    entry_id: &str,
    message_id: &str,
    style: &str,
    text: &str,
    options: &[(String, String)],
) -> Value {
    let items: Vec<Value> = options
        .iter()
        .map(|(id, title)| {
            json!({
                "itemType": "TitleOptionItem",
                "optionIdentifier": id,
                "titleItem": { "itemType": "TitleItem", "title": title },
            })
        })
        .collect();
    json!({
        "entryType": "Message",
        "id": entry_id,
        "abstractMessage": {
            "messageType": "ChoicesMessage",
            "id": message_id,
            "references": [],
            "choices": { "formatType": style, "text": text, "optionItems": items },
        },
    })
}

/// A participant joined (`add`) or left (`remove`).
///
/// Salesforce's published schema requires a top-level `participant` next to `entries` (it
/// places `required` one level too high); the sandbox sends both so that its payloads validate
/// and clients that read `entries` work.
pub(crate) fn participant_changed(
    entry_id: &str,
    operation: &str,
    participant: &Participant,
) -> Value {
    json!({
        "entryType": "ParticipantChanged",
        "id": entry_id,
        "participant": participant.to_json(),
        "entries": [{
            "operation": operation,
            "participant": participant.to_json(),
            "displayName": participant.display_name,
        }],
    })
}

/// A routing result.
pub(crate) fn routing_result(
    entry_id: &str,
    routing_type: &str,
    failure: Option<(&str, &str)>,
    estimated_wait_secs: Option<u32>,
    record_id: &str,
) -> Value {
    let (failure_type, failure_reason) = failure.unwrap_or(("None", ""));
    let mut value = json!({
        "entryType": "RoutingResult",
        "id": entry_id,
        "recordId": record_id,
        "errorMessages": if failure.is_some() { vec![failure_reason.to_owned()] } else { Vec::new() },
        "pendingServiceRoutingId": format!("0JR{}", &record_id[3..]),
        "routingType": routing_type,
        "failureType": failure_type,
        "isExternallyRouted": false,
        "estimatedWaitTime": {
            "isEWTRequested": estimated_wait_secs.is_some(),
        },
    });
    if failure.is_some() {
        value["failureReason"] = json!(failure_reason);
    }
    if let Some(seconds) = estimated_wait_secs {
        value["estimatedWaitTime"]["estimatedWaitTimeInSeconds"] = json!(seconds);
    }
    value
}

/// The messaging session changed status.
#[allow(clippy::too_many_arguments)]
pub(crate) fn session_status_changed(
    entry_id: &str,
    conversation_id: &str,
    channel: &str,
    session_id: &str,
    status: &str,
    previous: &str,
    started_ms: u64,
    ended: Option<(u64, &str)>,
) -> Value {
    let mut value = json!({
        "entryType": "SessionStatusChanged",
        "id": entry_id,
        "conversationIdentifier": conversation_id,
        "channelAddressIdentifier": channel,
        "sessionId": session_id,
        "sessionStatus": status,
        "sessionStatusPrev": previous,
        "sessionStartTime": started_ms,
    });
    if let Some((ended_ms, role)) = ended {
        value["sessionEndTime"] = json!(ended_ms);
        value["sessionEndedByRole"] = json!(role);
    }
    value
}

/// The conversation was closed from the customer side. Not in the published schema (MIAW
/// only); shaped like the clients expect.
pub(crate) fn close_conversation(entry_id: &str, conversation_id: &str) -> Value {
    json!({ "entryType": "CloseConversation", "id": entry_id, "conversationIdentifier": conversation_id })
}

/// Typing started or stopped.
pub(crate) fn typing(entry_id: &str, started: bool, timestamp_ms: u64) -> Value {
    let entry_type = if started {
        "TypingStartedIndicator"
    } else {
        "TypingStoppedIndicator"
    };
    json!({ "entryType": entry_type, "id": entry_id, "timestamp": timestamp_ms })
}

/// A delivery or read acknowledgement of `acknowledged` by `recipient`.
pub(crate) fn acknowledgement(
    entry_id: &str,
    read: bool,
    acknowledged: &str,
    recipient: &Participant,
    timestamp_ms: u64,
) -> Value {
    let entry_type = if read {
        "ReadAcknowledgement"
    } else {
        "DeliveryAcknowledgement"
    };
    json!({
        "entryType": entry_type,
        "id": entry_id,
        "recipient": recipient.to_json(),
        "acknowledgedConversationEntryIdentifier": acknowledged,
        "acknowledgementTimestamp": timestamp_ms,
    })
}

/// The customer's position in the queue.
pub(crate) fn queue_position(entry_id: &str, position: u32, record_id: &str) -> Value {
    json!({
        "entryType": "QueuePosition",
        "id": entry_id,
        "pendingServiceRoutingId": format!("0JR{}", &record_id[3..]),
        "workItemId": record_id,
        "position": position,
    })
}
