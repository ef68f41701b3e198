//! The raw floor of the benchmark: the least a relay between MIAW and Cognigy can do. No core,
//! no store, no checks, no retries, no pacing: mint a guest token, create the conversation,
//! read the event stream and POST every agent text straight to Notify; forward every user text
//! straight to MIAW. It serves the same two API calls the benchmark makes of the bridge, so the
//! load generator drives both the same way, and runs in its own process like the bridge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

const API: &str = "/iamessage/api/v2";

/// Where the floor relay listens and what it relays between.
#[derive(clap::Args, Debug)]
pub(crate) struct FloorArgs {
    /// Address to serve the two API calls on.
    #[arg(long)]
    listen: SocketAddr,
    /// The MIAW base URL.
    #[arg(long)]
    miaw: String,
    /// The 15-character org id.
    #[arg(long)]
    org: String,
    /// The deployment's developer name.
    #[arg(long)]
    deployment: String,
}

struct Relay {
    http: reqwest::Client,
    miaw: String,
    org: String,
    deployment: String,
    /// Access token by conversation id.
    tokens: Mutex<HashMap<String, String>>,
}

type Shared = State<Arc<Relay>>;

pub(crate) async fn floor(args: FloorArgs) -> anyhow::Result<()> {
    let relay = Arc::new(Relay {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()?,
        miaw: args.miaw,
        org: args.org,
        deployment: args.deployment,
        tokens: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/readyz", axum::routing::get(|| async { "ok" }))
        .route("/v1/handovers", post(start))
        .route("/v1/handovers/{id}/messages", post(message))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    axum::serve(listener, router).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    user_id: String,
    session_id: String,
    #[serde(rename = "URLToken")]
    url_token: String,
    endpoint_url: String,
}

fn failed(error: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_GATEWAY, error.to_string())
}

/// A lowercase UUID v4, as MIAW wants for conversation and message ids.
pub(crate) fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

async fn start(
    State(relay): Shared,
    Json(start): Json<Start>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let token: Value = relay
        .http
        .post(format!(
            "{}{API}/authorization/unauthenticated/access-token",
            relay.miaw
        ))
        .json(&json!({
            "orgId": relay.org,
            "esDeveloperName": relay.deployment,
            "capabilitiesVersion": "1",
            "platform": "Web",
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?
        .json()
        .await
        .map_err(failed)?;
    let token = token["accessToken"]
        .as_str()
        .ok_or_else(|| failed("no accessToken"))?
        .to_owned();
    let conversation = uuid_v4();
    relay
        .http
        .post(format!("{}{API}/conversation", relay.miaw))
        .bearer_auth(&token)
        .json(&json!({
            "conversationId": conversation,
            "esDeveloperName": relay.deployment,
            "routingAttributes": {},
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    let stream = relay
        .http
        .get(format!("{}/eventrouter/v1/sse", relay.miaw))
        .bearer_auth(&token)
        .header("X-Org-Id", &relay.org)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    relay
        .tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(conversation.clone(), token);
    let notify = format!(
        "{}/notify/{}",
        start.endpoint_url.trim_end_matches('/'),
        start.url_token
    );
    tokio::spawn(read_stream(
        relay.http.clone(),
        stream,
        notify,
        start.user_id,
        start.session_id,
    ));
    Ok(Json(
        json!({ "handoverId": conversation, "conversationId": conversation }),
    ))
}

/// Reads the event stream and POSTs each agent text to Notify, in order, one at a time.
async fn read_stream(
    http: reqwest::Client,
    response: reqwest::Response,
    notify: String,
    user_id: String,
    session_id: String,
) {
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            let Some(text) = agent_text(&frame) else {
                continue;
            };
            let sent = http
                .post(&notify)
                .json(&json!({ "userId": user_id, "sessionId": session_id, "text": text }))
                .send()
                .await;
            if let Err(error) = sent {
                eprintln!("floor: notify failed: {error}");
            }
        }
    }
}

/// The text of an agent's (or bot's) message frame, if that is what the frame is.
fn agent_text(frame: &[u8]) -> Option<String> {
    let frame = std::str::from_utf8(frame).ok()?;
    let mut event = "";
    let mut data = "";
    for line in frame.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            event = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            data = value.trim_start();
        }
    }
    if event != "CONVERSATION_MESSAGE" {
        return None;
    }
    let envelope: Value = serde_json::from_str(data).ok()?;
    let entry = &envelope["conversationEntry"];
    if entry["sender"]["role"] == "EndUser" {
        return None;
    }
    let payload: Value = serde_json::from_str(entry["entryPayload"].as_str()?).ok()?;
    payload["abstractMessage"]["staticContent"]["text"]
        .as_str()
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct Message {
    text: String,
}

async fn message(
    State(relay): Shared,
    Path(conversation): Path<String>,
    Json(message): Json<Message>,
) -> Result<StatusCode, (StatusCode, String)> {
    let token = relay
        .tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&conversation)
        .cloned()
        .ok_or((StatusCode::NOT_FOUND, "no such handover".to_owned()))?;
    relay
        .http
        .post(format!(
            "{}{API}/conversation/{conversation}/message",
            relay.miaw
        ))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .json(&json!({
            "message": {
                "id": uuid_v4(),
                "messageType": "StaticContentMessage",
                "staticContent": { "formatType": "Text", "text": message.text },
            },
            "esDeveloperName": relay.deployment,
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_frame_gives_its_text_and_others_give_none() {
        let payload =
            json!({ "abstractMessage": { "staticContent": { "text": "hi" } } }).to_string();
        let frame = |role: &str, event: &str| {
            let data = json!({ "conversationEntry": { "sender": { "role": role }, "entryPayload": payload } });
            format!("id: 1\nevent: {event}\ndata: {data}\n\n").into_bytes()
        };
        assert_eq!(
            agent_text(&frame("Agent", "CONVERSATION_MESSAGE")).as_deref(),
            Some("hi")
        );
        assert_eq!(agent_text(&frame("EndUser", "CONVERSATION_MESSAGE")), None);
        assert_eq!(
            agent_text(&frame("Agent", "CONVERSATION_ROUTING_RESULT")),
            None
        );
        assert_eq!(agent_text(b"event: ping\ndata: 0\n\n"), None);
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}
