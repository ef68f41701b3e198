//! The control API (`/control/…`) that tests and the console use to play the agent, script
//! agents, inject faults and expire tokens; and the console page itself.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Shared, State, StrictJson, now_ms};
use crate::config::ScriptedAgent;
use crate::faults::Faults;
use crate::world::{AgentContent, ApiError, Conversation};

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/console", get(console))
        .route("/control/deployments", get(deployments))
        .route(
            "/control/deployments/{name}/scripted-agent",
            put(set_scripted_agent),
        )
        .route("/control/conversations", get(conversations))
        .route("/control/conversations/{id}", get(conversation))
        .route("/control/conversations/{id}/accept", post(accept))
        .route("/control/conversations/{id}/messages", post(message))
        .route("/control/conversations/{id}/burst", post(burst))
        .route("/control/conversations/{id}/typing", post(typing))
        .route("/control/conversations/{id}/acknowledge", post(acknowledge))
        .route("/control/conversations/{id}/transfer", post(transfer))
        .route("/control/conversations/{id}/inactive", post(inactive))
        .route("/control/conversations/{id}/end", post(end))
        .route("/control/conversations/{id}/leave", post(leave))
        .route(
            "/control/conversations/{id}/routing-failure",
            post(routing_failure),
        )
        .route("/control/conversations/{id}/queue", post(queue))
        .route("/control/conversations/{id}/events", post(raw_event))
        .route(
            "/control/conversations/{id}/faults",
            put(set_conversation_faults),
        )
        .route("/control/faults", put(set_faults).get(faults))
        .route("/control/faults/injected", get(injected))
        .route("/control/tokens/expire", post(expire_tokens))
        .route("/control/tokens", get(tokens))
        .route("/control/timings", get(timings))
        .route("/control/streams", get(streams))
        // An agent's files travel as base64 in JSON: room for a few over the customer's limit.
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
}

/// The largest control request: 32 MiB.
const CONTROL_BODY_LIMIT: usize = 32 * 1024 * 1024;

async fn console() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../assets/console.html"),
    )
        .into_response()
}

async fn deployments(state: State) -> axum::Json<Value> {
    let world = state.world();
    let deployments: Vec<Value> = world
        .deployments()
        .iter()
        .map(|d| json!({ "orgId": d.org_id, "developerName": d.developer_name, "scriptedAgent": d.scripted_agent }))
        .collect();
    axum::Json(json!({ "deployments": deployments }))
}

async fn set_scripted_agent(
    state: State,
    Path(name): Path<String>,
    StrictJson(agent): StrictJson<Option<ScriptedAgent>>,
) -> Result<StatusCode, ApiError> {
    state.world().set_scripted_agent(&name, agent)?;
    Ok(StatusCode::NO_CONTENT)
}

fn summary(conversation: &Conversation) -> Value {
    let last_message = conversation
        .entries
        .iter()
        .rev()
        .find(|e| e["entryType"] == "Message")
        .and_then(|e| e["entryPayload"]["abstractMessage"]["staticContent"]["text"].as_str())
        .map(str::to_owned);
    json!({
        "conversationId": conversation.id,
        "orgId": conversation.org_id,
        "developerName": conversation.developer_name,
        "subject": conversation.subject,
        "sessionStatus": conversation.session,
        "routingStatus": conversation.routing_status,
        "agent": conversation.agent.as_ref().map(|a| a.display_name.clone()),
        "routingAttributes": conversation.routing_attributes,
        "startTimestamp": conversation.started_ms,
        "closed": conversation.closed_ms.is_some(),
        "lastMessage": last_message,
        "faults": conversation.faults,
    })
}

async fn conversations(state: State) -> axum::Json<Value> {
    let world = state.world();
    let all: Vec<Value> = world.conversations().map(summary).collect();
    axum::Json(json!({ "conversations": all }))
}

async fn conversation(state: State, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let world = state.world();
    let conversation = world.conversation(&id)?;
    let mut value = summary(conversation);
    value["entries"] = Value::Array(conversation.entries.clone());
    Ok(axum::Json(value))
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Accept {
    agent: String,
    /// `Agent` (a person, the default) or `Chatbot` (a Salesforce bot).
    role: Role,
}

impl Default for Accept {
    fn default() -> Self {
        Self {
            agent: "Sandbox Agent".to_owned(),
            role: Role::Agent,
        }
    }
}

/// Who acts on the agent's side.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
enum Role {
    #[default]
    Agent,
    Chatbot,
}

async fn accept(
    state: State,
    Path(id): Path<String>,
    body: Option<StrictJson<Accept>>,
) -> Result<StatusCode, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let bot = body.role == Role::Chatbot;
    state
        .world()
        .agent_accepts(now_ms(), &id, &body.agent, bot)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    name: String,
    #[serde(rename = "mimeType")]
    mime_type: String,
    /// Base64 content; defaults to a few bytes of text.
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChoicesSpec {
    style: String,
    text: String,
    options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attachments: Option<Vec<FileSpec>>,
    #[serde(default)]
    choices: Option<ChoicesSpec>,
    /// Agent (default), Chatbot or System.
    #[serde(default)]
    role: Option<String>,
    /// Keep this entry off the stream (only the entries list has it).
    #[serde(default)]
    withheld: bool,
}

async fn message(
    state: State,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<Message>,
) -> Result<axum::Json<Value>, ApiError> {
    let content = match (body.text, body.attachments, body.choices) {
        (text, Some(files), None) => {
            let mut decoded = Vec::new();
            for file in files {
                let bytes = match file.content {
                    Some(content) => base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .map_err(|_| ApiError::new(400, "attachments[].content must be base64."))?,
                    None => format!("sandbox file {}", file.name).into_bytes(),
                };
                decoded.push((file.name, file.mime_type, bytes));
            }
            AgentContent::Attachments {
                text,
                files: decoded,
            }
        }
        (None, None, Some(choices)) => AgentContent::Choices {
            style: choices.style,
            text: choices.text,
            options: choices.options,
        },
        (Some(text), None, None) => AgentContent::Text(text),
        _ => {
            return Err(ApiError::new(
                400,
                "Send text, attachments (with optional text), or choices.",
            ));
        }
    };
    let role = body.role.as_deref().unwrap_or("Agent");
    if !matches!(role, "Agent" | "Chatbot" | "System") {
        return Err(ApiError::new(400, "role must be Agent, Chatbot or System."));
    }
    let mut world = state.world();
    if body.withheld {
        world.withhold_next(&id)?;
    }
    let entry = world.agent_sends(now_ms(), &id, content, role)?;
    Ok(axum::Json(json!({ "identifier": entry })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Burst {
    texts: Vec<String>,
    /// Indexes of `texts` kept off the stream.
    #[serde(default)]
    withheld: Vec<usize>,
}

/// The agent writes several texts recorded in one millisecond.
async fn burst(
    state: State,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<Burst>,
) -> Result<axum::Json<Value>, ApiError> {
    if body.texts.is_empty() || body.texts.len() > 500 {
        return Err(ApiError::new(400, "texts must hold 1 to 500 texts."));
    }
    let ids = state
        .world()
        .agent_burst(now_ms(), &id, body.texts, &body.withheld)?;
    Ok(axum::Json(json!({ "identifiers": ids })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typing {
    on: bool,
    #[serde(default)]
    role: Role,
}

async fn typing(
    state: State,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<Typing>,
) -> Result<StatusCode, ApiError> {
    let bot = body.role == Role::Chatbot;
    state.world().agent_typing(now_ms(), &id, body.on, bot)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Acknowledge {
    entry_id: String,
    #[serde(default)]
    read: bool,
}

async fn acknowledge(
    state: State,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<Acknowledge>,
) -> Result<StatusCode, ApiError> {
    state
        .world()
        .agent_acknowledges(now_ms(), &id, &body.entry_id, body.read)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Transfer {
    to: Option<String>,
}

async fn transfer(
    state: State,
    Path(id): Path<String>,
    body: Option<StrictJson<Transfer>>,
) -> Result<StatusCode, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    state.world().transfer(now_ms(), &id, body.to.as_deref())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn inactive(state: State, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.world().mark_inactive(now_ms(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn end(state: State, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.world().agent_ends(now_ms(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn leave(state: State, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.world().agent_leaves(now_ms(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RoutingFailure {
    reason: Option<String>,
}

async fn routing_failure(
    state: State,
    Path(id): Path<String>,
    body: Option<StrictJson<RoutingFailure>>,
) -> Result<StatusCode, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    state
        .world()
        .routing_fails(now_ms(), &id, body.reason.as_deref())?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Queue {
    position: u32,
    #[serde(default)]
    estimated_wait_seconds: Option<u32>,
}

async fn queue(
    state: State,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<Queue>,
) -> Result<StatusCode, ApiError> {
    state
        .world()
        .queue_update(now_ms(), &id, body.position, body.estimated_wait_seconds)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    event: String,
    #[serde(default)]
    data: Value,
    /// Send a string `data` as it is (not JSON-encoded): junk that is not JSON, or with line
    /// breaks of its own, for robustness tests.
    #[serde(default)]
    raw: bool,
}

/// Emits an event of any name on the subject's stream: what a newer Salesforce release might
/// send. It is not an entry, so `/entries` never lists it.
async fn raw_event(
    state: State,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<RawEvent>,
) -> Result<StatusCode, ApiError> {
    let valid = !body.event.is_empty()
        && body
            .event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !valid {
        return Err(ApiError::new(
            400,
            "event must be a non-empty name of letters, digits, '_', '-' or '.'.",
        ));
    }
    let data = match (body.raw, body.data) {
        (true, Value::String(text)) => text,
        (true, _) => return Err(ApiError::new(400, "raw needs data to be a string.")),
        (false, data) => data.to_string(),
    };
    state.world().emit_raw(&id, body.event, data)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_conversation_faults(
    state: State,
    Path(id): Path<String>,
    StrictJson(faults): StrictJson<Faults>,
) -> Result<StatusCode, ApiError> {
    state.world().set_conversation_faults(&id, faults)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_faults(state: State, StrictJson(faults): StrictJson<Faults>) -> StatusCode {
    state.world().faults = faults;
    StatusCode::NO_CONTENT
}

async fn faults(state: State) -> axum::Json<Faults> {
    axum::Json(state.world().faults.clone())
}

/// How many REST calls the faults failed so far.
async fn injected(state: State) -> axum::Json<Value> {
    let (unavailable, too_many) = state.0.injected();
    axum::Json(json!({ "503": unavailable, "429": too_many }))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Expire {
    subject: Option<String>,
}

/// How many access tokens were minted (continuations not counted).
async fn tokens(state: State) -> axum::Json<Value> {
    let minted = state.world().minted();
    axum::Json(json!({
        "minted": minted.total(),
        "guest": minted.guest,
        "verified": minted.verified,
        "fallback": minted.fallback,
    }))
}

async fn expire_tokens(state: State, body: Option<StrictJson<Expire>>) -> StatusCode {
    let body = body.map(|b| b.0).unwrap_or_default();
    state.world().expire_tokens(body.subject.as_deref());
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingsQuery {
    #[serde(default)]
    from: usize,
}

/// When conversations were created and texts were received or posted, in Unix microseconds,
/// from position `from` on: what a benchmark measures latency against.
async fn timings(state: State, Query(query): Query<TimingsQuery>) -> axum::Json<Value> {
    let world = state.world();
    let timings = world.timings(query.from);
    axum::Json(json!({ "timings": timings, "next": query.from + timings.len() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StreamsQuery {
    #[serde(default)]
    opened_after_us: u64,
}

/// The event streams being served: how many, for how many subjects, and how many subjects
/// have one opened at or after `openedAfterUs` (a benchmark's restart moment).
async fn streams(state: State, Query(query): Query<StreamsQuery>) -> axum::Json<Value> {
    let world = state.world();
    let mut subjects = HashSet::new();
    let mut recent = HashSet::new();
    let mut open = 0usize;
    for stream in world.open_streams() {
        open += 1;
        subjects.insert(stream.subject.as_str());
        if stream.opened_us >= query.opened_after_us {
            recent.insert(stream.subject.as_str());
        }
    }
    axum::Json(json!({
        "open": open,
        "subjects": subjects.len(),
        "subjectsOpenedAfter": recent.len(),
    }))
}
