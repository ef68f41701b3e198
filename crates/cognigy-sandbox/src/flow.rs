//! The webchat's Flow: a tiny scripted bot that answers small talk and hands over when the
//! user asks for a person. It calls the bridge the way a Cognigy Flow's HTTP Request nodes
//! would, routes the user's inputs to the bridge while a handover is live, and reacts to the
//! statuses the bridge injects.

use std::time::Duration;

use serde_json::{Value, json};

use crate::state::{ChatSession, HandoverState, Shared, State};

/// The Flow's HTTP Request node timeout (Cognigy: 8 s).
const HTTP_NODE_TIMEOUT: Duration = Duration::from_secs(8);

/// Why an input could not be handled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlowError {
    #[error("no such webchat session")]
    UnknownSession,
}

/// What to do after the state was updated, outside the lock.
enum Action {
    None,
    Start(Value),
    Forward {
        handover: String,
        path: String,
        body: Value,
    },
}

fn wants_agent(text: &str) -> bool {
    let text = text.to_lowercase();
    ["agent", "human", "person", "representative"]
        .iter()
        .any(|word| text.contains(word))
}

fn small_talk(text: &str) -> &'static str {
    let text = text.to_lowercase();
    let has = |words: &[&str]| {
        words.iter().any(|w| {
            text.split(|c: char| !c.is_alphanumeric())
                .any(|token| token == *w)
        })
    };
    if has(&["hi", "hello", "hey", "hallo"]) {
        "Hello! What can I do for you? Type \"agent\" to talk to a person."
    } else if has(&["help"]) {
        "I can chat a little. Type \"agent\" and I'll hand you over to a human agent."
    } else if has(&["thanks", "thank", "thx"]) {
        "You're welcome!"
    } else if has(&["bye", "goodbye"]) {
        "Goodbye! Come back any time."
    } else {
        "I'm a very small bot and didn't get that. Type \"agent\" to reach a person."
    }
}

fn start_body(state: &State, session: &ChatSession) -> Value {
    let handover = &state.config.handover;
    let transcript: Vec<Value> = session
        .transcript
        .iter()
        .map(|(role, text)| json!({ "role": role, "text": text }))
        .collect();
    let mut body = json!({
        "requestId": format!("{}-handover-{}", session.session_id, session.handovers),
        "userId": session.user_id,
        "sessionId": session.session_id,
        "URLToken": state.config.url_tokens[0],
        "endpointUrl": state.url,
        "transcript": transcript,
        "settings": {
            "sendTranscript": handover.send_transcript,
            "routingAttributes": handover.routing_attributes,
            "queue": { "position": handover.queue_updates, "estimatedWaitTime": handover.queue_updates },
            "agentChangeNotification": handover.agent_change_notification,
        },
    });
    if let Some(locale) = &handover.locale {
        body["locale"] = json!(locale);
    }
    if let Some(copilot) = &handover.copilot_base_url {
        body["copilotBaseUrl"] = json!(copilot);
    }
    body
}

/// The user wrote `text` in the webchat.
pub(crate) async fn user_input(
    shared: &Shared,
    session_id: &str,
    text: String,
) -> Result<(), FlowError> {
    let action = {
        let mut state = shared.state();
        let has_bridge = state.bridge.is_some();
        let accepted = state.config.handover.accepted_message.clone();
        let session = state
            .sessions
            .get_mut(session_id)
            .ok_or(FlowError::UnknownSession)?;
        session.inputs += 1;
        let message_id = format!("{}-input-{}", session.session_id, session.inputs);
        session.push("user", Some(text.clone()), Value::Null);
        let live = session.handover.as_ref().map(|h| h.handover_id.clone());
        match live {
            Some(Some(handover)) => Action::Forward {
                path: format!("/v1/handovers/{handover}/messages"),
                handover,
                body: json!({ "messageId": message_id, "text": text }),
            },
            Some(None) => {
                session
                    .system("Still connecting you; please send that again in a moment.".to_owned());
                Action::None
            }
            None => {
                session.transcript.push(("user", text.clone()));
                if !wants_agent(&text) {
                    session.bot_says(small_talk(&text));
                    Action::None
                } else if !has_bridge {
                    session.bot_says(
                        "Sorry, no agent can be reached from this sandbox: it has no bridge configured.",
                    );
                    Action::None
                } else {
                    session.bot_says(&accepted);
                    session.handovers += 1;
                    session.handover = Some(HandoverState {
                        status: "requested".to_owned(),
                        ..HandoverState::default()
                    });
                    let session = &state.sessions[session_id];
                    Action::Start(start_body(&state, session))
                }
            }
        }
    };
    match action {
        Action::None => Ok(()),
        Action::Start(body) => {
            let answer = call_bridge(shared, "/v1/handovers", Some(body)).await;
            let mut state = shared.state();
            let Some(session) = state.sessions.get_mut(session_id) else {
                return Ok(());
            };
            match answer {
                Ok((202, body)) => {
                    if let Some(handover) = session.handover.as_mut() {
                        handover.handover_id = body["handoverId"].as_str().map(str::to_owned);
                    }
                }
                Ok((409, body)) => {
                    // A handover is already live for this session: follow it.
                    if let Some(handover) = session.handover.as_mut() {
                        handover.handover_id =
                            body["error"]["handoverId"].as_str().map(str::to_owned);
                    }
                }
                Ok((status, body)) => {
                    session.handover = None;
                    let message = body["error"]["message"].as_str().unwrap_or("no details");
                    session.bot_says(&format!(
                        "Sorry, I could not reach an agent (the bridge answered {status}: {message})."
                    ));
                }
                Err(error) => {
                    session.handover = None;
                    session.bot_says(&format!("Sorry, I could not reach an agent ({error})."));
                }
            }
            Ok(())
        }
        Action::Forward {
            handover,
            path,
            body,
        } => forward(shared, handover, path, body).await,
    }
}

/// Sends an input of a live handover to the bridge; an ended handover hands back to the bot.
async fn forward(
    shared: &Shared,
    handover: String,
    path: String,
    body: Value,
) -> Result<(), FlowError> {
    let answer = call_bridge(shared, &path, Some(body)).await;
    let mut state = shared.state();
    let Some(session) = state.sessions.values_mut().find(|s| {
        s.handover.as_ref().and_then(|h| h.handover_id.as_deref()) == Some(handover.as_str())
    }) else {
        return Ok(());
    };
    match answer {
        Ok((202, _)) => {}
        Ok((404 | 409, _)) => {
            session.handover = None;
            session.bot_says("The chat with the agent has ended. I'm back; how can I help?");
        }
        Ok((status, body)) => {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            session.system(format!(
                "That did not reach the agent (the bridge answered {status}: {message})."
            ));
        }
        Err(error) => session.system(format!("That did not reach the agent ({error}).")),
    }
    Ok(())
}

/// The user came back (`true`) or left; forwarded while a handover is live.
pub(crate) async fn presence(
    shared: &Shared,
    session_id: &str,
    connected: bool,
) -> Result<(), FlowError> {
    let route = if connected {
        "user-connected"
    } else {
        "user-disconnected"
    };
    live_call(shared, session_id, route, None).await
}

/// The user is typing or stopped; forwarded while a handover is live.
pub(crate) async fn typing(shared: &Shared, session_id: &str, on: bool) -> Result<(), FlowError> {
    live_call(shared, session_id, "typing", Some(json!({ "typing": on }))).await
}

/// The user cancels the handover (the Cancel button).
pub(crate) async fn cancel(shared: &Shared, session_id: &str) -> Result<(), FlowError> {
    live_call(shared, session_id, "cancel", None).await
}

async fn live_call(
    shared: &Shared,
    session_id: &str,
    route: &str,
    body: Option<Value>,
) -> Result<(), FlowError> {
    let handover = {
        let state = shared.state();
        let session = state
            .sessions
            .get(session_id)
            .ok_or(FlowError::UnknownSession)?;
        session
            .handover
            .as_ref()
            .and_then(|h| h.handover_id.clone())
    };
    let Some(handover) = handover else {
        return Ok(());
    };
    let path = format!("/v1/handovers/{handover}/{route}");
    let _ = call_bridge(shared, &path, Some(body.unwrap_or(Value::Null))).await;
    Ok(())
}

/// `POST {bridge}{path}` with the bridge's API key, as an HTTP Request node would.
async fn call_bridge(
    shared: &Shared,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let Some(bridge) = shared.state().bridge.clone() else {
        return Err("no bridge is configured".to_owned());
    };
    let mut request = shared
        .http
        .post(format!("{}{path}", bridge.url.trim_end_matches('/')))
        .bearer_auth(&bridge.api_key)
        .timeout(HTTP_NODE_TIMEOUT);
    if let Some(body) = body.filter(|b| !b.is_null()) {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|error| format!("the bridge did not answer: {}", error.without_url()))?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A Notify reached the Endpoint: show it in the session's webchat.
pub(crate) fn on_notify(state: &mut State, body: &Value) {
    let Some(session) = session_of(state, body) else {
        return;
    };
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let source = match data["handover"]["kind"].as_str() {
        Some("agent") => "agent",
        Some("notice") => "system",
        _ => "bot",
    };
    let text = body.get("text").and_then(Value::as_str).map(str::to_owned);
    session.push(source, text, data);
}

/// An Inject reached the Endpoint: the Flow runs on the handover status (the Lookup on
/// Handover Status of a real Flow).
pub(crate) fn on_inject(state: &mut State, body: &Value) {
    let Some(session) = session_of(state, body) else {
        return;
    };
    let handover = &body["data"]["handover"];
    match handover["status"].as_str() {
        Some("queue") => {
            let numbers = &handover["data"];
            let position = numbers["position"].as_u64();
            let wait = numbers["estimatedWaitTime"].as_u64();
            let alternative = numbers["alternativeText"].as_str().map(str::to_owned);
            let banner = match (&alternative, position, wait) {
                (Some(text), _, _) => text.clone(),
                (None, Some(p), Some(w)) => format!(
                    "You are number {p} in the queue (about {} min).",
                    w.div_ceil(60_000)
                ),
                (None, Some(p), None) => format!("You are number {p} in the queue."),
                (None, None, Some(w)) => {
                    format!("About {} min until an agent is free.", w.div_ceil(60_000))
                }
                (None, None, None) => "You are in the queue.".to_owned(),
            };
            if let Some(state) = session.handover.as_mut() {
                state.status = "queue".to_owned();
                state.position = position;
                state.estimated_wait_time = wait;
                state.alternative_text = alternative;
            }
            session.system(banner);
        }
        Some("active") => {
            let name = handover["data"]["agentName"].as_str().map(str::to_owned);
            if let Some(state) = session.handover.as_mut() {
                state.status = "active".to_owned();
                state.agent_name = name.clone();
            }
            session.system(format!(
                "{} joined the chat.",
                name.as_deref().unwrap_or("An agent")
            ));
        }
        Some(status @ ("completed" | "cancelled" | "error")) => {
            session.handover = None;
            let reason = handover["reason"].as_str().unwrap_or("unknown");
            let text = match status {
                "completed" => {
                    "The chat with the agent has ended. I'm back; anything else?".to_owned()
                }
                "cancelled" => "Handover cancelled. How else can I help?".to_owned(),
                _ => format!("Sorry, the handover failed ({reason}). I'm back; how can I help?"),
            };
            session.bot_says(&text);
        }
        // Forwarded provider events and anything newer: recorded, no output.
        _ => {}
    }
}

fn session_of<'a>(state: &'a mut State, body: &Value) -> Option<&'a mut ChatSession> {
    let session_id = body["sessionId"].as_str()?;
    let user_id = body["userId"].as_str()?;
    state
        .sessions
        .get_mut(session_id)
        .filter(|session| session.user_id == user_id)
}
