//! Every entry payload the sandbox emits validates against Salesforce's published schemas
//! (`tests/schemas/outbound-custom-event-payload.yaml`), checked by a small validator for the
//! OpenAPI subset that file uses: `$ref`, `allOf`, `discriminator` (with and without
//! `mapping`), `type`, `properties`, `required`, `additionalProperties`, `enum`, `items`,
//! `minItems`, `maxItems`, `maxLength` and the integer formats.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Map, Value, json};
use support::*;
use yaml_rust2::{Yaml, YamlLoader};

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Hash(hash) => Value::Object(
            hash.iter()
                .map(|(key, value)| {
                    (
                        key.as_str()
                            .map_or_else(|| format!("{key:?}"), str::to_owned),
                        to_json(value),
                    )
                })
                .collect(),
        ),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::String(text) | Yaml::Real(text) => Value::String(text.clone()),
        Yaml::Integer(number) => json!(number),
        Yaml::Boolean(flag) => json!(flag),
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}

struct Schemas {
    schemas: Map<String, Value>,
}

impl Schemas {
    fn load() -> Self {
        let text = include_str!("schemas/outbound-custom-event-payload.yaml");
        let yaml = YamlLoader::load_from_str(text).unwrap();
        let document = to_json(&yaml[0]);
        Self {
            schemas: document["components"]["schemas"]
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    /// Errors of `value` against the named schema; empty if it validates.
    fn check(&self, name: &str, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate_named(name, value, "$", true, &mut errors);
        errors
    }

    fn validate_named(
        &self,
        name: &str,
        value: &Value,
        path: &str,
        dispatch: bool,
        errors: &mut Vec<String>,
    ) {
        match self.schemas.get(name) {
            Some(schema) => self.validate(schema, Some(name), value, path, dispatch, errors),
            None => errors.push(format!("{path}: no schema {name}")),
        }
    }

    fn reference(schema: &Value) -> Option<&str> {
        schema
            .get("$ref")?
            .as_str()?
            .strip_prefix("#/components/schemas/")
    }

    /// `dispatch`: whether a discriminator here chooses the concrete schema. It is off inside
    /// an `allOf`, where the concrete schema is already being validated.
    fn validate(
        &self,
        schema: &Value,
        name: Option<&str>,
        value: &Value,
        path: &str,
        dispatch: bool,
        errors: &mut Vec<String>,
    ) {
        if let Some(target) = Self::reference(schema) {
            self.validate_named(target, value, path, dispatch, errors);
            return;
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.validate(part, None, value, path, false, errors);
            }
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let ok = match expected {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                errors.push(format!("{path}: expected {expected}, got {value}"));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{path}: {value} is not one of {options:?}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("int32")
            && value.as_i64().is_some_and(|n| i32::try_from(n).is_err())
        {
            errors.push(format!("{path}: {value} is not an int32"));
        }
        if let (Some(max), Some(text)) = (
            schema.get("maxLength").and_then(Value::as_u64),
            value.as_str(),
        ) && text.chars().count() as u64 > max
        {
            errors.push(format!("{path}: longer than {max}"));
        }
        if let Some(items) = value.as_array() {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!("{path}: fewer than {min} items"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!("{path}: more than {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    self.validate(
                        item_schema,
                        None,
                        item,
                        &format!("{path}[{index}]"),
                        true,
                        errors,
                    );
                }
            }
        }
        if let Some(object) = value.as_object() {
            self.validate_object(schema, object, path, errors);
        }
        if dispatch && let Some(discriminator) = schema.get("discriminator") {
            self.dispatch(discriminator, name, value, path, errors);
        }
    }

    fn validate_object(
        &self,
        schema: &Value,
        object: &Map<String, Value>,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(key) {
                    errors.push(format!("{path}: missing required {key}"));
                }
            }
        }
        for (key, child) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(child_schema) => self.validate(
                    child_schema,
                    None,
                    child,
                    &format!("{path}.{key}"),
                    true,
                    errors,
                ),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{path}: {key} is not allowed"))
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.validate(extra, None, child, &format!("{path}.{key}"), true, errors)
                    }
                    _ => {}
                },
            }
        }
    }

    fn dispatch(
        &self,
        discriminator: &Value,
        name: Option<&str>,
        value: &Value,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let Some(property) = discriminator.get("propertyName").and_then(Value::as_str) else {
            return;
        };
        let Some(tag) = value.get(property).and_then(Value::as_str) else {
            errors.push(format!("{path}: missing discriminator {property}"));
            return;
        };
        let target = discriminator
            .get("mapping")
            .and_then(|mapping| mapping.get(tag))
            .and_then(Value::as_str)
            .and_then(|reference| reference.strip_prefix("#/components/schemas/"))
            .unwrap_or(tag);
        if Some(target) == name {
            return;
        }
        if !self.schemas.contains_key(target) {
            errors.push(format!("{path}: no schema for {property} = {tag}"));
            return;
        }
        self.validate_named(target, value, path, false, errors);
    }
}

#[test]
fn the_validator_catches_what_it_should() {
    let schemas = Schemas::load();
    let good = json!({
        "entryType": "Message", "id": "e1",
        "abstractMessage": { "messageType": "StaticContentMessage", "id": "m1", "staticContent": { "formatType": "Text", "text": "hi" } },
    });
    assert_eq!(schemas.check("Message", &good), Vec::<String>::new());
    let mut no_message = good.clone();
    no_message
        .as_object_mut()
        .unwrap()
        .remove("abstractMessage");
    assert!(
        schemas
            .check("Message", &no_message)
            .iter()
            .any(|e| e.contains("missing required abstractMessage"))
    );
    let mut no_text = good.clone();
    no_text["abstractMessage"]["staticContent"]
        .as_object_mut()
        .unwrap()
        .remove("text");
    assert!(
        !schemas.check("Message", &no_text).is_empty(),
        "the discriminator reaches StaticContentText"
    );
    let mut bad_format = good.clone();
    bad_format["abstractMessage"]["staticContent"]["formatType"] = json!("Hologram");
    assert!(!schemas.check("Message", &bad_format).is_empty());
    let attachment = json!({ "entryType": "Message", "id": "e", "abstractMessage": { "messageType": "StaticContentMessage", "id": "m",
        "staticContent": { "formatType": "Attachments", "attachments": [{ "id": "a", "name": "n", "mimeType": "t", "url": "u", "extra": 1 }] } } });
    assert!(
        schemas
            .check("Message", &attachment)
            .iter()
            .any(|e| e.contains("extra is not allowed"))
    );
    assert!(
        !schemas
            .check(
                "QueuePosition",
                &json!({ "entryType": "QueuePosition", "id": "q", "position": "3" })
            )
            .is_empty()
    );
}

/// The entry types whose payloads are not in Salesforce's file (MIAW-only).
const MIAW_ONLY: &[&str] = &["CloseConversation"];

#[tokio::test]
async fn every_payload_the_sandbox_emits_validates() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    // Drive every path that emits an entry.
    let id = harness
        .create(&token, json!({ "issueType": "Billing" }))
        .await;
    harness
        .control(
            &format!("{id}/queue"),
            json!({ "position": 2, "estimatedWaitSeconds": 60 }),
        )
        .await;
    harness
        .control(&format!("{id}/accept"), json!({ "agent": "Jane" }))
        .await;
    harness
        .control(&format!("{id}/typing"), json!({ "on": true }))
        .await;
    harness
        .control(&format!("{id}/typing"), json!({ "on": false }))
        .await;
    let text: Value = harness
        .control(&format!("{id}/messages"), json!({ "text": "Hello" }))
        .await
        .json()
        .await
        .unwrap();
    harness
        .control(
            &format!("{id}/messages"),
            json!({ "attachments": [{ "name": "a.pdf", "mimeType": "application/pdf" }] }),
        )
        .await;
    harness
        .control(
            &format!("{id}/messages"),
            json!({ "choices": { "style": "Buttons", "text": "Pick", "options": ["x"] } }),
        )
        .await;
    harness
        .control(
            &format!("{id}/messages"),
            json!({ "choices": { "style": "QuickReplies", "text": "Pick", "options": ["y"] } }),
        )
        .await;
    harness
        .control(
            &format!("{id}/messages"),
            json!({ "text": "Welcome", "role": "System" }),
        )
        .await;
    harness
        .control(
            &format!("{id}/messages"),
            json!({ "text": "Beep", "role": "Chatbot" }),
        )
        .await;
    harness.send(&token, &id, "hi").await;
    let agent_entry = text["identifier"].as_str().unwrap();
    let acks = json!({ "acks": [{ "id": new_conversation_id(), "entryType": "Read", "conversationEntryId": agent_entry }] });
    harness
        .call(
            Method::POST,
            &format!("{API}/conversation/{id}/acknowledge-entries"),
            Some(&token),
            Some(acks),
        )
        .await;
    let typing = json!({ "entryType": "TypingStartedIndicator", "id": new_conversation_id() });
    harness
        .call(
            Method::POST,
            &format!("{API}/conversation/{id}/entry"),
            Some(&token),
            Some(typing),
        )
        .await;
    harness
        .control(&format!("{id}/transfer"), json!({ "to": "Raj" }))
        .await;
    harness.control(&format!("{id}/inactive"), json!({})).await;
    harness.send(&token, &id, "back").await;
    harness
        .control(&format!("{id}/accept"), json!({ "agent": "Ana" }))
        .await;
    harness.control(&format!("{id}/end"), json!({})).await;
    let second = harness.create(&token, json!({})).await;
    harness
        .control(&format!("{second}/routing-failure"), json!({}))
        .await;
    let close = format!(
        "{API}/conversation/{second}?esDeveloperName={}",
        miaw_sandbox::DEFAULT_DEVELOPER_NAME
    );
    harness
        .call(Method::DELETE, &close, Some(&token), None)
        .await;

    // A Salesforce bot joins, types and speaks, then hands over to a person.
    let third = harness.create(&token, json!({})).await;
    harness
        .control(
            &format!("{third}/accept"),
            json!({ "agent": "Einstein", "role": "Chatbot" }),
        )
        .await;
    harness
        .control(
            &format!("{third}/typing"),
            json!({ "on": true, "role": "Chatbot" }),
        )
        .await;
    harness
        .control(
            &format!("{third}/messages"),
            json!({ "text": "How can I help?", "role": "Chatbot" }),
        )
        .await;
    harness
        .control(&format!("{third}/accept"), json!({ "agent": "Jane" }))
        .await;

    // Every payload, from the entries list (objects) and the stream (strings).
    let schemas = Schemas::load();
    let mut payloads = Vec::new();
    for conversation in [&id, &second, &third] {
        let entries = harness.entries(&token, conversation, "limit=50").await;
        payloads.extend(entries.iter().map(|e| e["entryPayload"].clone()));
    }
    let mut stream = harness.stream(&token, Some("0")).await;
    for _ in 0..payloads.len() {
        payloads.push(payload(&stream.next_entry().await));
    }
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for value in &payloads {
        let entry_type = value["entryType"].as_str().unwrap().to_owned();
        if MIAW_ONLY.contains(&entry_type.as_str()) {
            assert!(
                value["id"].is_string() && value["conversationIdentifier"].is_string(),
                "{value}"
            );
        } else {
            let errors = schemas.check(&entry_type, value);
            if !errors.is_empty() {
                failures.push(format!("{entry_type}: {errors:?}\n{value}"));
            }
            let errors = schemas.check("AbstractEntry", value);
            if !errors.is_empty() {
                failures.push(format!("{entry_type} as AbstractEntry: {errors:?}"));
            }
        }
        seen.insert(entry_type);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let bot_changes = payloads
        .iter()
        .filter(|p| p["entries"][0]["participant"]["role"] == "Chatbot")
        .count();
    assert!(
        bot_changes >= 2,
        "the bot's join and leave were among the payloads checked"
    );
    let expected = [
        "CloseConversation",
        "DeliveryAcknowledgement",
        "Message",
        "ParticipantChanged",
        "QueuePosition",
        "ReadAcknowledgement",
        "RoutingResult",
        "SessionStatusChanged",
        "TypingStartedIndicator",
        "TypingStoppedIndicator",
    ];
    assert_eq!(
        seen,
        expected.iter().map(|s| (*s).to_owned()).collect(),
        "every entry type the sandbox can emit was checked"
    );
}
