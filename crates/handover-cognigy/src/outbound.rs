//! The core's deliveries as Cognigy Endpoint calls: Notify bodies for the user, Inject bodies
//! for the Flow. Pure functions from the core's types to JSON.
//!
//! Notify: `{userId, sessionId, text, data}`. `data.handover` carries a stable `messageId`
//! (the Salesforce entry, or the notice's key) for client-side de-duplication, the sender's
//! role and name; rich content goes into `data._cognigy` (`_default` and `_webchat`), and the
//! agent's avatar into `data._webchat.agentAvatarOverrideUrl`.
//!
//! Inject: `{userId, sessionId, data}` with `data.handover` mirroring Cognigy's
//! `input.handover` (`status`, `eventType`, `error.reason`, `data`), queue numbers also at
//! `data.request` (the other documented path), and a Webchat v3 `queueUpdate` for the banner.

use handover_core::ports::BotAddress;
use handover_core::{
    AgentMessage, BotDelivery, ChoiceStyle, HandoverStatus, MessageContent, Notification, Outcome,
    ParticipantOperation, ProviderEvent, QueueUpdate, Role, RoutingType, SessionStatus,
    StatusUpdate, TerminalStatus,
};
use serde_json::{Map, Value, json};

/// What a delivery becomes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outbound {
    /// `POST …/notify/{URLToken}` with this body.
    Notify(Value),
    /// `POST …/inject/{URLToken}` with this body.
    Inject(Value),
    /// No call: the Endpoint APIs have no channel for it (the agent's typing indicator).
    Nothing,
}

/// A delivery that would show the user nothing; it is refused, never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EmptyMessage;

/// Options of the rendering.
#[derive(Clone, Debug, Default)]
pub(crate) struct Render {
    /// `data._webchat.agentAvatarOverrideUrl` for agent messages.
    pub agent_avatar_url: Option<String>,
}

impl Render {
    pub(crate) fn delivery(
        &self,
        address: &BotAddress,
        delivery: &BotDelivery,
    ) -> Result<Outbound, EmptyMessage> {
        match delivery {
            BotDelivery::Notify(Notification::Agent(message)) => {
                self.agent(address, message).map(Outbound::Notify)
            }
            BotDelivery::Notify(Notification::Notice { key, text }) => {
                if text.trim().is_empty() {
                    return Err(EmptyMessage);
                }
                let data = json!({ "handover": { "messageId": key, "kind": "notice" } });
                Ok(Outbound::Notify(envelope(address, Some(text), data)))
            }
            BotDelivery::Inject(update) => Ok(Outbound::Inject(envelope(
                address,
                None,
                inject_data(update),
            ))),
            BotDelivery::Typing { .. } => Ok(Outbound::Nothing),
        }
    }

    fn agent(&self, address: &BotAddress, message: &AgentMessage) -> Result<Value, EmptyMessage> {
        let mut handover = Map::new();
        handover.insert("messageId".into(), message.entry.as_str().into());
        handover.insert("kind".into(), "agent".into());
        handover.insert("role".into(), role(&message.role).into());
        if let Some(name) = &message.sender_name {
            handover.insert("agentName".into(), name.clone().into());
        }
        let mut data = Map::new();
        data.insert("handover".into(), Value::Object(handover));
        if message.role == Role::Agent
            && let Some(avatar) = &self.agent_avatar_url
        {
            data.insert(
                "_webchat".into(),
                json!({ "agentAvatarOverrideUrl": avatar }),
            );
        }
        let (text, rich) = content(&message.content);
        let text = text.filter(|t| !t.trim().is_empty());
        if text.is_none() && rich.is_none() {
            return Err(EmptyMessage);
        }
        if let Some(rich) = rich {
            data.insert("_cognigy".into(), rich);
        }
        Ok(envelope(address, text.as_deref(), Value::Object(data)))
    }
}

fn envelope(address: &BotAddress, text: Option<&str>, data: Value) -> Value {
    let mut body = Map::new();
    body.insert("userId".into(), address.user_id.clone().into());
    body.insert("sessionId".into(), address.session_id.clone().into());
    if let Some(text) = text {
        body.insert("text".into(), text.into());
    }
    body.insert("data".into(), data);
    Value::Object(body)
}

fn role(role: &Role) -> &str {
    match role {
        Role::EndUser => "EndUser",
        Role::Agent => "Agent",
        Role::Chatbot => "Chatbot",
        Role::System => "System",
        Role::Router => "Router",
        Role::Supervisor => "Supervisor",
        Role::Unknown(other) => other,
    }
}

/// The text to send and the `_cognigy` payload, if the content has a richer form.
fn content(content: &MessageContent) -> (Option<String>, Option<Value>) {
    match content {
        MessageContent::Text(text) => (Some(text.clone()), None),
        MessageContent::Attachments { text, files } => {
            let single_image = match files.as_slice() {
                [file]
                    if file
                        .mime_type
                        .as_deref()
                        .is_some_and(|m| m.starts_with("image/")) =>
                {
                    Some(file)
                }
                _ => None,
            };
            if let Some(image) = single_image {
                let rich = json!({
                    "_default": { "_image": {
                        "type": "image", "imageUrl": image.url, "imageAltText": image.name,
                        "fallbackText": format!("{}: {}", image.name, image.url),
                    } },
                    "_webchat": { "message": { "attachment": {
                        "type": "image", "payload": { "url": image.url },
                    } } },
                });
                return (text.clone(), Some(rich));
            }
            // Files without a rich form in Cognigy: a link per file, after the text.
            let mut lines: Vec<String> = text.iter().cloned().collect();
            lines.extend(
                files
                    .iter()
                    .map(|file| format!("{}: {}", file.name, file.url)),
            );
            (Some(lines.join("\n")), None)
        }
        MessageContent::Choices {
            text,
            style,
            options,
        } => {
            let fallback = if text.trim().is_empty() {
                options
                    .iter()
                    .map(|o| o.title.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            } else {
                text.clone()
            };
            if options.is_empty() {
                return (Some(fallback), None);
            }
            let rich = match style {
                ChoiceStyle::Buttons => json!({
                    "_default": { "_buttons": {
                        "type": "buttons", "text": fallback, "fallbackText": fallback,
                        "buttons": options.iter().map(|o| json!({
                            "title": o.title, "type": "postback", "payload": o.title,
                        })).collect::<Vec<_>>(),
                    } },
                    "_webchat": { "message": { "attachment": { "type": "template", "payload": {
                        "template_type": "button", "text": fallback,
                        "buttons": options.iter().map(|o| json!({
                            "type": "postback", "title": o.title, "payload": o.title,
                        })).collect::<Vec<_>>(),
                    } } } },
                }),
                ChoiceStyle::QuickReplies | ChoiceStyle::Carousel => json!({
                    "_default": { "_quickReplies": {
                        "type": "quick_replies", "text": fallback, "fallbackText": fallback,
                        "quickReplies": options.iter().enumerate().map(|(i, o)| json!({
                            "id": o.id.clone().unwrap_or_else(|| i.to_string()),
                            "title": o.title, "payload": o.title, "contentType": "postback",
                        })).collect::<Vec<_>>(),
                    } },
                    "_webchat": { "message": {
                        "text": fallback,
                        "quick_replies": options.iter().map(|o| json!({
                            "content_type": "text", "title": o.title, "payload": o.title,
                        })).collect::<Vec<_>>(),
                    } },
                }),
            };
            (Some(fallback), Some(rich))
        }
        MessageContent::Link { url, title } => (
            Some(match title {
                Some(title) if !title.trim().is_empty() => format!("{title}: {url}"),
                _ => url.clone(),
            }),
            None,
        ),
        MessageContent::Other { fallback_text, .. } => (fallback_text.clone(), None),
    }
}

fn inject_data(update: &StatusUpdate) -> Value {
    let mut handover = Map::new();
    handover.insert("updateId".into(), update.key.clone().into());
    let mut data = Map::new();
    match &update.status {
        HandoverStatus::Queue(queue) => {
            handover.insert("status".into(), "queue".into());
            handover.insert("eventType".into(), "queueUpdate".into());
            let numbers = queue_numbers(queue);
            handover.insert("data".into(), numbers.clone());
            data.insert("request".into(), numbers.clone());
            data.insert(
                "_cognigy".into(),
                json!({ "_webchat3": { "type": "queueUpdate", "payload": numbers } }),
            );
        }
        HandoverStatus::Active { agent_name } => {
            handover.insert("status".into(), "active".into());
            handover.insert("data".into(), json!({ "agentName": agent_name }));
        }
        HandoverStatus::Ended(outcome) => ended(&mut handover, outcome),
        HandoverStatus::Event(event) => {
            handover.insert("status".into(), "agentInject".into());
            handover.insert("event".into(), provider_event(event));
        }
    }
    data.insert("handover".into(), Value::Object(handover));
    Value::Object(data)
}

fn queue_numbers(queue: &QueueUpdate) -> Value {
    json!({
        "position": queue.position,
        // Cognigy's unit is milliseconds.
        "estimatedWaitTime": queue.estimated_wait.map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        "alternativeText": queue.alternative_text,
    })
}

fn ended(handover: &mut Map<String, Value>, outcome: &Outcome) {
    let status = outcome.status();
    handover.insert("status".into(), status.as_str().into());
    handover.insert("reason".into(), outcome.reason.as_str().into());
    if status == TerminalStatus::Error {
        let message = outcome
            .detail
            .clone()
            .unwrap_or_else(|| outcome.reason.as_str().to_owned());
        handover.insert(
            "error".into(),
            json!({ "reason": "error", "message": message }),
        );
    }
    let ids = |ids: &[handover_core::BotMessageId]| {
        ids.iter()
            .map(|id| Value::String(id.to_string()))
            .collect::<Vec<_>>()
    };
    handover.insert(
        "data".into(),
        json!({
            "reason": outcome.reason.as_str(),
            "detail": outcome.detail,
            "undeliveredMessageIds": ids(&outcome.undelivered),
            "unconfirmedMessageIds": ids(&outcome.unconfirmed),
            "missedEntries": outcome
                .missed
                .iter()
                .map(|missed| json!({
                    "fromMs": missed.from.as_unix_millis(),
                    "toMs": missed.to.as_unix_millis(),
                }))
                .collect::<Vec<_>>(),
        }),
    );
}

fn provider_event(event: &ProviderEvent) -> Value {
    match event {
        ProviderEvent::Routing {
            routing_type,
            failure,
        } => json!({
            "type": "routing",
            "routingType": match routing_type {
                RoutingType::Initial => "Initial",
                RoutingType::Transfer => "Transfer",
                RoutingType::Other(other) => other,
            },
            "failure": failure.as_ref().map(|f| json!({ "kind": f.kind, "reason": f.reason })),
        }),
        ProviderEvent::Participant {
            operation,
            role: who,
            name,
        } => json!({
            "type": "participant",
            "operation": match operation {
                ParticipantOperation::Add => "add",
                ParticipantOperation::Remove => "remove",
                ParticipantOperation::Update => "update",
                ParticipantOperation::Unknown(other) => other,
            },
            "role": role(who),
            "name": name,
        }),
        ProviderEvent::SessionStatus(status) => json!({
            "type": "sessionStatus",
            "status": match status {
                SessionStatus::New => "New",
                SessionStatus::Waiting => "Waiting",
                SessionStatus::Active => "Active",
                SessionStatus::Inactive => "Inactive",
                SessionStatus::Ended => "Ended",
                SessionStatus::Other(other) => other,
            },
        }),
        ProviderEvent::Delivered { entry, message } => json!({
            "type": "delivered",
            "entryId": entry.as_ref().map(|e| e.as_str()),
            "messageId": message.as_ref().map(|m| m.as_str()),
        }),
        ProviderEvent::Read { entry, message } => json!({
            "type": "read",
            "entryId": entry.as_ref().map(|e| e.as_str()),
            "messageId": message.as_ref().map(|m| m.as_str()),
        }),
        ProviderEvent::VerifiedUserFellBackToGuest => {
            json!({ "type": "verifiedUserFellBackToGuest" })
        }
        ProviderEvent::TokenUnusable => json!({ "type": "tokenUnusable" }),
        ProviderEvent::MessageRefused { message, reason } => json!({
            "type": "messageRefused", "messageId": message.as_str(), "reason": reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use handover_core::{Attachment, BotMessageId, ChoiceOption, EndReason, EntryId};

    use super::*;

    fn address() -> BotAddress {
        BotAddress {
            endpoint_url: "https://endpoint.example".to_owned(),
            url_token: "token".to_owned(),
            user_id: "123456789012345678901234567890".to_owned(),
            session_id: "s-1".to_owned(),
        }
    }

    fn agent(content: MessageContent) -> BotDelivery {
        BotDelivery::Notify(Notification::Agent(AgentMessage {
            entry: EntryId::new("entry-7").unwrap(),
            role: Role::Agent,
            sender_name: Some("Jane".to_owned()),
            content,
        }))
    }

    fn render(delivery: &BotDelivery) -> Result<Outbound, EmptyMessage> {
        Render {
            agent_avatar_url: Some("https://cdn.example/jane.png".to_owned()),
        }
        .delivery(&address(), delivery)
    }

    #[test]
    fn an_agent_text_carries_a_stable_id_the_name_and_the_avatar() {
        let Ok(Outbound::Notify(body)) = render(&agent(MessageContent::Text("Hi".to_owned())))
        else {
            panic!("a notify");
        };
        assert_eq!(
            body,
            json!({
                "userId": "123456789012345678901234567890", "sessionId": "s-1", "text": "Hi",
                "data": {
                    "handover": { "messageId": "entry-7", "kind": "agent", "role": "Agent", "agentName": "Jane" },
                    "_webchat": { "agentAvatarOverrideUrl": "https://cdn.example/jane.png" },
                },
            })
        );
    }

    #[test]
    fn images_choices_and_files_use_cognigys_formats() {
        let image = agent(MessageContent::Attachments {
            text: None,
            files: vec![Attachment {
                name: "photo.png".to_owned(),
                url: "https://files.example/photo.png".to_owned(),
                mime_type: Some("image/png".to_owned()),
            }],
        });
        let Ok(Outbound::Notify(body)) = render(&image) else {
            panic!("a notify")
        };
        assert_eq!(body.get("text"), None, "data only");
        assert_eq!(
            body["data"]["_cognigy"]["_default"]["_image"]["imageUrl"],
            "https://files.example/photo.png"
        );
        let files = agent(MessageContent::Attachments {
            text: Some("Here you go".to_owned()),
            files: vec![
                Attachment {
                    name: "a.pdf".to_owned(),
                    url: "https://f/a.pdf".to_owned(),
                    mime_type: None,
                },
                Attachment {
                    name: "b.png".to_owned(),
                    url: "https://f/b.png".to_owned(),
                    mime_type: Some("image/png".to_owned()),
                },
            ],
        });
        let Ok(Outbound::Notify(body)) = render(&files) else {
            panic!("a notify")
        };
        assert_eq!(
            body["text"],
            "Here you go\na.pdf: https://f/a.pdf\nb.png: https://f/b.png"
        );
        let choices = agent(MessageContent::Choices {
            text: "Pick one".to_owned(),
            style: ChoiceStyle::QuickReplies,
            options: vec![ChoiceOption {
                id: Some("o1".to_owned()),
                title: "Yes".to_owned(),
            }],
        });
        let Ok(Outbound::Notify(body)) = render(&choices) else {
            panic!("a notify")
        };
        let quick = &body["data"]["_cognigy"]["_default"]["_quickReplies"];
        assert_eq!(quick["quickReplies"][0]["title"], "Yes");
        assert_eq!(quick["quickReplies"][0]["id"], "o1");
        assert_eq!(body["text"], "Pick one");
    }

    #[test]
    fn nothing_empty_is_ever_sent_and_typing_makes_no_call() {
        for empty in [
            MessageContent::Text("  ".to_owned()),
            MessageContent::Other {
                kind: "X".to_owned(),
                fallback_text: None,
            },
            MessageContent::Attachments {
                text: None,
                files: Vec::new(),
            },
        ] {
            assert_eq!(render(&agent(empty)), Err(EmptyMessage));
        }
        let notice = BotDelivery::Notify(Notification::Notice {
            key: "k".to_owned(),
            text: String::new(),
        });
        assert_eq!(render(&notice), Err(EmptyMessage));
        assert_eq!(
            render(&BotDelivery::Typing { on: true }),
            Ok(Outbound::Nothing)
        );
    }

    #[test]
    fn statuses_mirror_input_handover_with_queue_data_at_both_paths() {
        let queue = BotDelivery::Inject(StatusUpdate {
            key: "q1".to_owned(),
            status: HandoverStatus::Queue(QueueUpdate {
                position: Some(3),
                estimated_wait: Some(Duration::from_secs(120)),
                alternative_text: None,
            }),
        });
        let Ok(Outbound::Inject(body)) = render(&queue) else {
            panic!("an inject")
        };
        assert_eq!(body.get("text"), None);
        let data = &body["data"];
        assert_eq!(data["handover"]["status"], "queue");
        assert_eq!(data["handover"]["eventType"], "queueUpdate");
        assert_eq!(data["handover"]["data"]["estimatedWaitTime"], 120_000);
        assert_eq!(data["request"]["position"], 3);
        assert_eq!(data["_cognigy"]["_webchat3"]["type"], "queueUpdate");
        let error = BotDelivery::Inject(StatusUpdate {
            key: "end".to_owned(),
            status: HandoverStatus::Ended(Outcome {
                reason: EndReason::RoutingFailed,
                detail: Some("No agents".to_owned()),
                undelivered: vec![BotMessageId::new("m1").unwrap()],
                unconfirmed: Vec::new(),
                missed: vec![handover_core::MissedEntries {
                    from: handover_core::Timestamp::from_unix_millis(1_700_000_000_123),
                    to: handover_core::Timestamp::from_unix_millis(1_700_000_000_123),
                }],
            }),
        });
        let Ok(Outbound::Inject(body)) = render(&error) else {
            panic!("an inject")
        };
        let handover = &body["data"]["handover"];
        assert_eq!(handover["status"], "error");
        assert_eq!(handover["reason"], "routing_failed");
        assert_eq!(
            handover["error"],
            json!({ "reason": "error", "message": "No agents" })
        );
        assert_eq!(handover["data"]["undeliveredMessageIds"], json!(["m1"]));
        assert_eq!(
            handover["data"]["missedEntries"],
            json!([{ "fromMs": 1_700_000_000_123_u64, "toMs": 1_700_000_000_123_u64 }])
        );
    }
}
