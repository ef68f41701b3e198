//! The router: the Endpoint routes, the webchat page and its small API, and the control API
//! that tests use to read the recorded calls, switch faults and point the Flow at a bridge.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::BridgeConfig;
use crate::endpoint;
use crate::flow::{self, FlowError};
use crate::state::{ChatSession, Faults, Shared};

type SharedState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(endpoint::routes())
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/webchat") }),
        )
        .route("/webchat", get(page))
        .route("/webchat/api/sessions", post(new_session))
        .route("/webchat/api/sessions/{id}/input", post(input))
        .route("/webchat/api/sessions/{id}/presence", post(presence))
        .route("/webchat/api/sessions/{id}/typing", post(typing))
        .route("/webchat/api/sessions/{id}/cancel", post(cancel))
        .route("/webchat/api/sessions/{id}/outputs", get(outputs))
        .route("/control/calls", get(calls).delete(clear_calls))
        .route("/control/faults", put(set_faults).get(faults))
        .route("/control/bridge", put(set_bridge))
        .with_state(shared)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn flow_error(failure: FlowError) -> Response {
    match failure {
        FlowError::UnknownSession => error(StatusCode::NOT_FOUND, "No such webchat session."),
    }
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Html(include_str!("../assets/webchat.html")),
    )
        .into_response()
}

/// A body parsed strictly, with serde's message naming the field.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("Invalid body: {e}"))
}

// ---- the webchat's API ------------------------------------------------------------------------

async fn new_session(State(shared): SharedState) -> Response {
    let user_id = format!("user-{:016x}", fastrand::u64(..));
    let session_id = format!("session-{:016x}", fastrand::u64(..));
    let mut session = ChatSession::new(user_id.clone(), session_id.clone());
    session.bot_says(
        "Hi! I'm the sandbox bot. Ask me something, or type \"agent\" to talk to a person.",
    );
    shared.state().sessions.insert(session_id.clone(), session);
    (
        StatusCode::CREATED,
        Json(json!({ "userId": user_id, "sessionId": session_id })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody {
    text: String,
}

async fn input(
    State(shared): SharedState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: InputBody = match parse(&body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if body.text.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "text must not be empty.");
    }
    match flow::user_input(&shared, &id, body.text).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody {
    connected: bool,
}

async fn presence(
    State(shared): SharedState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: PresenceBody = match parse(&body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match flow::presence(&shared, &id, body.connected).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    typing: bool,
}

async fn typing(
    State(shared): SharedState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: TypingBody = match parse(&body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match flow::typing(&shared, &id, body.typing).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

async fn cancel(State(shared): SharedState, Path(id): Path<String>) -> Response {
    match flow::cancel(&shared, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

/// The session's feed after `after`, and its handover state.
async fn outputs(
    State(shared): SharedState,
    Path(id): Path<String>,
    Query(after): Query<After>,
) -> Response {
    let state = shared.state();
    let Some(session) = state.sessions.get(&id) else {
        return error(StatusCode::NOT_FOUND, "No such webchat session.");
    };
    let outputs: Vec<_> = session
        .outputs
        .iter()
        .filter(|o| o.seq > after.after)
        .cloned()
        .collect();
    Json(json!({ "outputs": outputs, "handover": session.handover })).into_response()
}

// ---- control ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallFilter {
    kind: Option<String>,
    session_id: Option<String>,
    /// Only calls after this sequence number (for readers that poll incrementally).
    after: Option<u64>,
}

async fn calls(State(shared): SharedState, Query(filter): Query<CallFilter>) -> Response {
    let state = shared.state();
    // Calls are kept in arrival order, so `after` is a cut, not a scan.
    let start = filter
        .after
        .map_or(0, |after| state.calls.partition_point(|c| c.seq <= after));
    let calls: Vec<_> = state.calls[start..]
        .iter()
        .filter(|c| filter.kind.as_deref().is_none_or(|k| k == c.kind))
        .filter(|c| {
            filter
                .session_id
                .as_deref()
                .is_none_or(|s| c.body["sessionId"].as_str() == Some(s))
        })
        .cloned()
        .collect();
    Json(json!({ "calls": calls })).into_response()
}

async fn clear_calls(State(shared): SharedState) -> StatusCode {
    shared.state().calls.clear();
    StatusCode::NO_CONTENT
}

async fn set_faults(State(shared): SharedState, body: axum::body::Bytes) -> Response {
    let faults: Faults = match parse(&body) {
        Ok(faults) => faults,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if !(0.0..=1.0).contains(&faults.error_rate_5xx) {
        return error(
            StatusCode::BAD_REQUEST,
            "error_rate_5xx must be between 0 and 1.",
        );
    }
    if let Some(status) = faults.fail_status
        && !(400..=599).contains(&status)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "fail_status must be an HTTP error status.",
        );
    }
    shared.state().faults = faults;
    StatusCode::NO_CONTENT.into_response()
}

async fn faults(State(shared): SharedState) -> Json<Faults> {
    Json(shared.state().faults.clone())
}

async fn set_bridge(State(shared): SharedState, body: axum::body::Bytes) -> Response {
    let bridge: Option<BridgeConfig> = match parse::<Value>(&body) {
        Ok(Value::Null) => None,
        Ok(value) => match serde_json::from_value(value) {
            Ok(bridge) => Some(bridge),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("Invalid body: {e}")),
        },
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if let Some(bridge) = &bridge
        && !(bridge.url.starts_with("http://") || bridge.url.starts_with("https://"))
    {
        return error(StatusCode::BAD_REQUEST, "url must be an http(s) URL.");
    }
    shared.state().bridge = bridge;
    StatusCode::NO_CONTENT.into_response()
}
