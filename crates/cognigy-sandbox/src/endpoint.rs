//! Cognigy's Endpoint routes: `POST /notify/{URLToken}` and `POST /inject/{URLToken}`, and the
//! deprecated `POST /new/v2.0/endpoint/notify|inject` with `X-API-Key`. Every call is
//! recorded with the status it got; faults apply here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::flow;
use crate::state::{Call, Shared, now_ms, now_us};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/notify/{token}", post(notify))
        .route("/inject/{token}", post(inject))
        .route("/new/v2.0/endpoint/notify", post(legacy_notify))
        .route("/new/v2.0/endpoint/inject", post(legacy_inject))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Notify,
    Inject,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::Inject => "inject",
        }
    }
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn notify(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    receive(&shared, Kind::Notify, "endpoint", Some(token), &body).await
}

async fn inject(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    receive(&shared, Kind::Inject, "endpoint", Some(token), &body).await
}

#[derive(Deserialize)]
struct ApiKeyQuery {
    api_key: Option<String>,
}

fn legacy_authorized(shared: &Shared, headers: &HeaderMap, query: &ApiKeyQuery) -> bool {
    let expected = shared.state().config.api_key.clone();
    let presented = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.api_key.clone());
    presented.is_some_and(|key| key == expected)
}

async fn legacy_notify(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ApiKeyQuery>,
    body: Bytes,
) -> Response {
    if !legacy_authorized(&shared, &headers, &query) {
        return answer(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    receive(&shared, Kind::Notify, "legacy", None, &body).await
}

async fn legacy_inject(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ApiKeyQuery>,
    body: Bytes,
) -> Response {
    if !legacy_authorized(&shared, &headers, &query) {
        return answer(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    receive(&shared, Kind::Inject, "legacy", None, &body).await
}

/// Checks a call like Cognigy does, applies the faults, records it, and hands a successful
/// one to the webchat's Flow.
async fn receive(
    shared: &Shared,
    kind: Kind,
    route: &'static str,
    token: Option<String>,
    bytes: &[u8],
) -> Response {
    let arrived_us = now_us();
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let (status, message) = check(shared, route, token.as_deref(), &body);
    let latency = shared.state().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let status = if status == StatusCode::OK {
        injected_failure(shared).unwrap_or(StatusCode::OK)
    } else {
        status
    };
    {
        let mut state = shared.state();
        let seq = state.calls.len() as u64 + 1;
        state.calls.push(Call {
            seq,
            kind: kind.as_str(),
            route,
            body: body.clone(),
            status: status.as_u16(),
            at_ms: now_ms(),
            at_us: arrived_us,
        });
        if status == StatusCode::OK {
            match kind {
                Kind::Notify => flow::on_notify(&mut state, &body),
                Kind::Inject => flow::on_inject(&mut state, &body),
            }
        }
    }
    if status != StatusCode::OK {
        let message = message.unwrap_or("Service unavailable (injected fault).");
        return answer(status, message);
    }
    match (route, kind) {
        ("legacy", Kind::Notify) => "Sucessfully sent message to user".into_response(),
        ("legacy", Kind::Inject) => "Message was sent to AI for Flow processing".into_response(),
        _ => axum::Json(json!({})).into_response(),
    }
}

/// Cognigy's checks: a known URL token (404), a JSON object with `userId` and `sessionId`
/// (400), and `text` or `data` (400).
fn check(
    shared: &Shared,
    route: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Option<&'static str>) {
    let Some(object) = body.as_object() else {
        return (
            StatusCode::BAD_REQUEST,
            Some("The body must be a JSON object."),
        );
    };
    let token = match token {
        Some(token) => Some(token.to_owned()),
        None => object
            .get("URLToken")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let Some(token) = token else {
        return (StatusCode::BAD_REQUEST, Some("URLToken is required."));
    };
    if !shared.state().config.url_tokens.contains(&token) {
        return (
            StatusCode::NOT_FOUND,
            Some("No Endpoint was found for this URL token."),
        );
    }
    let present = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if !present("userId") {
        return (StatusCode::BAD_REQUEST, Some("userId is required."));
    }
    if !present("sessionId") {
        return (StatusCode::BAD_REQUEST, Some("sessionId is required."));
    }
    let has_text = object.get("text").and_then(Value::as_str).is_some();
    let has_data = object.get("data").is_some_and(|d| !d.is_null());
    if !has_text && !has_data {
        return (StatusCode::BAD_REQUEST, Some("text or data is required."));
    }
    if route == "legacy" && !(has_text && has_data) {
        // The deprecated routes mark both as required.
        return (StatusCode::BAD_REQUEST, Some("text and data are required."));
    }
    (StatusCode::OK, None)
}

fn injected_failure(shared: &Shared) -> Option<StatusCode> {
    let mut state = shared.state();
    let faults = &mut state.faults;
    if faults.fail_next > 0 {
        faults.fail_next -= 1;
        let status = faults.fail_status.unwrap_or(503);
        return StatusCode::from_u16(status).ok();
    }
    if faults.error_rate_5xx > 0.0 && fastrand::f64() < faults.error_rate_5xx {
        return Some(StatusCode::SERVICE_UNAVAILABLE);
    }
    None
}
