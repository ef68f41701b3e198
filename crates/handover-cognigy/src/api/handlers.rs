//! One function per route. Each authenticates first (before the body is read), converts the
//! body into the core's types, calls the service, and renders the answer.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use handover_core::ports::BotAddress;
use handover_core::{
    Admission, BotMessageId, ConversationId, CopilotUrl, FileRef, HandoverId, HandoverRequest,
    HandoverSettings, IdentityToken, Input, QueueAlternative, QueueSettings, RequestId,
    RoutingAttributes, TranscriptTurn, UserMessage,
};
use serde::Deserialize;

use super::error::ApiError;
use super::wire::{
    AcceptedBody, AttachmentBody, ErrorBody, HandoverBody, ListBody, MessageBody,
    MissedEntriesBody, OutcomeBody, SettingsBody, StartBody, StartedBody, TurnBody, TurnRole,
    TypingBody,
};
use super::{ApiState, JsonBody};
use crate::service::{HandoverView, ListFilter, NewHandover};

/// A caller with a valid key. As an extractor it runs before the body is read, so an
/// unauthenticated request learns nothing about its body.
pub(crate) struct Authed;

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state.caller(&parts.headers).map(|_| Self)
    }
}

/// A caller with an admin key.
pub(crate) struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state.admin(&parts.headers).map(|_| Self)
    }
}

/// The `{id}` of a route. Axum's own rejection of an unreadable path segment (bad
/// percent-encoding, not UTF-8) would be plain text; this answers like every other error.
pub(crate) struct HandoverPath(String);

impl<S: Send + Sync> FromRequestParts<S> for HandoverPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|_| ApiError::unreadable_handover())
    }
}

fn handover_id(raw: &str) -> Result<HandoverId, ApiError> {
    HandoverId::parse(raw).map_err(|_| ApiError::unknown_handover(raw))
}

fn random_bytes() -> Result<[u8; 16], ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| {
        ApiError::from(crate::service::ServiceError::Unavailable(
            "no randomness for new ids".to_owned(),
        ))
    })?;
    Ok(bytes)
}

fn accepted() -> (StatusCode, Json<AcceptedBody>) {
    (StatusCode::ACCEPTED, Json(AcceptedBody { accepted: true }))
}

// ---- start ------------------------------------------------------------------------------------

/// Start a handover
///
/// Opens a Salesforce MIAW conversation for this Cognigy session and relays until it ends.
/// Answers at once; the Flow hears how it goes through Inject (`queue`, `active`, then one of
/// `completed`, `cancelled`, `error`).
#[utoipa::path(
    post,
    path = "/v1/handovers",
    tag = "handovers",
    request_body = StartBody,
    responses(
        (status = 202, description = "Accepted (or a repeat of an earlier request)", body = StartedBody),
        (status = 400, description = "A field is wrong", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 409, description = "The session already has a live handover", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 503, description = "The bridge cannot take work now", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn start(
    State(state): State<ApiState>,
    _: Authed,
    JsonBody(body): JsonBody<StartBody>,
) -> Result<(StatusCode, Json<StartedBody>), ApiError> {
    let handover = new_handover(body)?;
    allowed_endpoint(&state, &handover.address.endpoint_url).await?;
    match state.service.start(handover).await? {
        Admission::Started(id) => Ok((
            StatusCode::ACCEPTED,
            Json(StartedBody {
                handover_id: id.to_string(),
                duplicate: false,
            }),
        )),
        Admission::Duplicate(id) => Ok((
            StatusCode::ACCEPTED,
            Json(StartedBody {
                handover_id: id.to_string(),
                duplicate: true,
            }),
        )),
        Admission::Conflict(live) => Err(ApiError::conflict(live)),
    }
}

fn new_handover(body: StartBody) -> Result<NewHandover, ApiError> {
    let request_id = match body.request_id {
        Some(id) => RequestId::new(id).map_err(|e| ApiError::field("requestId", e.to_string()))?,
        None => RequestId::new(format!(
            "generated-{}",
            HandoverId::from_random_bytes(random_bytes()?)
        ))
        .map_err(|e| ApiError::field("requestId", e.to_string()))?,
    };
    let endpoint_url = endpoint_url(&body.endpoint_url)?;
    if body.url_token.trim().is_empty() {
        return Err(ApiError::field("URLToken", "URLToken must not be empty"));
    }
    let copilot_url = body
        .copilot_base_url
        .as_deref()
        .filter(|base| !base.trim().is_empty())
        .map(|base| CopilotUrl::build(base, &body.user_id, &body.session_id, &body.url_token))
        .transpose()
        .map_err(|e| ApiError::field("copilotBaseUrl", e.to_string()))?;
    let transcript = body.transcript.into_iter().map(turn).collect();
    let settings = settings(body.settings, body.locale)?;
    Ok(NewHandover {
        request_id,
        address: BotAddress {
            endpoint_url,
            url_token: body.url_token,
            user_id: body.user_id,
            session_id: body.session_id,
        },
        request: HandoverRequest {
            handover_id: HandoverId::from_random_bytes(random_bytes()?),
            conversation_id: ConversationId::from_random_bytes(random_bytes()?),
            transcript,
            settings,
            copilot_url,
            deployment: body.deployment.filter(|name| !name.is_empty()),
        },
    })
}

/// The Endpoint's base URL: http(s), no query or fragment; a trailing slash is dropped.
fn endpoint_url(raw: &str) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::field("endpointUrl", format!("endpointUrl {why}"));
    let url = reqwest::Url::parse(raw.trim()).map_err(|_| invalid("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Refuses an Endpoint URL that Notify and Inject could not be sent to: a host off
/// `cognigy.endpoint_hosts`, or one on a non-public address that is not listed by name.
async fn allowed_endpoint(state: &ApiState, endpoint_url: &str) -> Result<(), ApiError> {
    let url = reqwest::Url::parse(endpoint_url)
        .map_err(|_| ApiError::field("endpointUrl", "endpointUrl is not a URL"))?;
    state
        .config
        .endpoint_hosts
        .resolve_checked(&url)
        .await
        .map_err(|refused| {
            ApiError::field(
                "endpointUrl",
                format!("endpointUrl is not allowed: {refused} (see cognigy.endpoint_hosts)"),
            )
        })
}

fn turn(turn: TurnBody) -> TranscriptTurn {
    match turn.role {
        TurnRole::User => TranscriptTurn::user(turn.text),
        TurnRole::Bot => TranscriptTurn::bot(turn.text),
    }
}

fn settings(body: SettingsBody, locale: Option<String>) -> Result<HandoverSettings, ApiError> {
    let alternative = match body.queue.alternative {
        Some(alternative) if alternative.text.trim().is_empty() => {
            return Err(ApiError::field(
                "settings.queue.alternative.text",
                "settings.queue.alternative.text must not be empty",
            ));
        }
        Some(alternative) => Some(QueueAlternative {
            max_position: alternative.max_position,
            max_wait: alternative
                .max_estimated_wait_time_ms
                .map(Duration::from_millis),
            text: alternative.text,
        }),
        None => None,
    };
    Ok(HandoverSettings {
        send_transcript: body.send_transcript,
        routing_attributes: body
            .routing_attributes
            .into_iter()
            .collect::<RoutingAttributes>(),
        identity_token: body
            .identity_token
            .map(|token| token.0)
            .filter(|token| !token.trim().is_empty())
            .map(IdentityToken::new),
        user_connected_message: body.user_connects_message,
        user_disconnected_message: body.user_disconnects_message,
        end_when_agent_leaves: body.end_chat_when_agent_leaves,
        agent_change_notification: body.agent_change_notification,
        queue: QueueSettings {
            position: body.queue.position,
            estimated_wait_time: body.queue.estimated_wait_time,
            alternative,
        },
        forward_events: body.forward_events,
        forward_while_queued: body.forward_while_queued,
        locale: locale.filter(|l| !l.trim().is_empty()),
    })
}

// ---- read -------------------------------------------------------------------------------------

fn view(view: HandoverView) -> HandoverBody {
    HandoverBody {
        handover_id: view.handover_id.to_string(),
        conversation_id: view.conversation_id.to_string(),
        user_id: view.user_id,
        session_id: view.session_id,
        phase: view.phase.as_str().to_owned(),
        live: view.outcome.is_none(),
        outcome: view.outcome.map(|outcome| OutcomeBody {
            status: outcome.status().as_str().to_owned(),
            reason: outcome.reason.as_str().to_owned(),
            detail: outcome.detail,
            undelivered_message_ids: outcome
                .undelivered
                .iter()
                .map(ToString::to_string)
                .collect(),
            unconfirmed_message_ids: outcome
                .unconfirmed
                .iter()
                .map(ToString::to_string)
                .collect(),
            missed_entries: outcome
                .missed
                .iter()
                .map(|missed| MissedEntriesBody {
                    from_ms: missed.from.as_unix_millis(),
                    to_ms: missed.to.as_unix_millis(),
                })
                .collect(),
        }),
    }
}

/// Get a handover's status
#[utoipa::path(
    get,
    path = "/v1/handovers/{id}",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    responses(
        (status = 200, description = "The handover", body = HandoverBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
) -> Result<Json<HandoverBody>, ApiError> {
    let id = handover_id(&id)?;
    Ok(Json(view(state.service.get(id).await?)))
}

/// Which handovers to list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only live (`true`) or only ended (`false`) handovers.
    live: Option<bool>,
    /// Only this Cognigy user.
    user_id: Option<String>,
    /// Only this Cognigy session.
    session_id: Option<String>,
    /// At most this many (capped by the bridge's configuration).
    limit: Option<usize>,
}

/// List handovers (admin)
#[utoipa::path(
    get,
    path = "/v1/handovers",
    tag = "admin",
    params(
        ("live" = Option<bool>, Query, description = "Only live (`true`) or only ended (`false`) handovers"),
        ("userId" = Option<String>, Query, description = "Only this Cognigy user"),
        ("sessionId" = Option<String>, Query, description = "Only this Cognigy session"),
        ("limit" = Option<usize>, Query, description = "At most this many (capped by the configuration)"),
    ),
    responses(
        (status = 200, description = "Handovers, newest first", body = ListBody),
        (status = 400, description = "A query parameter is wrong", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    _: Admin,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListBody>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let max = state.config.max_list;
    let filter = ListFilter {
        live: query.live,
        user_id: query.user_id,
        session_id: query.session_id,
        limit: query.limit.unwrap_or(max).min(max),
    };
    let handovers = state.service.list(filter).await?;
    Ok(Json(ListBody {
        handovers: handovers.into_iter().map(view).collect(),
    }))
}

// ---- inputs -----------------------------------------------------------------------------------

async fn submit(state: &ApiState, id: &str, input: Input) -> Result<(), ApiError> {
    let id = handover_id(id)?;
    state.service.input(id, input).await?;
    Ok(())
}

/// Forward a user message
///
/// Sent to the agent in order, at most 22 a minute, once per `messageId`. Attachments over
/// 5 MB or of a type Salesforce refuses reach the agent as links.
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/messages",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    request_body = MessageBody,
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 400, description = "A field is wrong", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
        (status = 413, description = "The body is too large, or `text` is longer than `api.max_message_chars` (code `text_too_long`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn message(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    let message_id = BotMessageId::new(body.message_id)
        .map_err(|e| ApiError::field("messageId", e.to_string()))?;
    if body.text.trim().is_empty() && body.attachments.is_empty() {
        return Err(ApiError::field(
            "text",
            "text must not be empty unless there are attachments",
        ));
    }
    let limit = state.config.max_message_chars;
    if body.text.chars().nth(limit).is_some() {
        return Err(ApiError::text_too_long(limit));
    }
    let attachments = body
        .attachments
        .into_iter()
        .enumerate()
        .map(|(i, file)| attachment(i, file))
        .collect::<Result<Vec<_>, _>>()?;
    let input = Input::UserMessage(UserMessage {
        id: message_id,
        text: body.text,
        attachments,
    });
    submit(&state, &id, input).await?;
    Ok(accepted())
}

fn attachment(index: usize, file: AttachmentBody) -> Result<FileRef, ApiError> {
    let field = format!("attachments[{index}].url");
    let url = reqwest::Url::parse(file.url.trim())
        .map_err(|_| ApiError::field(&field, format!("{field} is not a URL")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::field(
            &field,
            format!("{field} must be http or https"),
        ));
    }
    let name = file
        .name
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            url.path_segments()
                .and_then(|mut segments| segments.next_back())
                .filter(|last| !last.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "attachment".to_owned());
    Ok(FileRef {
        url: url.to_string(),
        name,
        mime_type: file.mime_type.filter(|mime| !mime.trim().is_empty()),
        size: file.size,
    })
}

/// The user came back to the chat
///
/// The agent sees "User joined the conversation" (unless the handover turned that off).
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/user-connected",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn user_connected(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    submit(&state, &id, Input::UserConnected).await?;
    Ok(accepted())
}

/// The user left the chat
///
/// The agent sees "User left the conversation" (unless the handover turned that off).
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/user-disconnected",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn user_disconnected(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    submit(&state, &id, Input::UserDisconnected).await?;
    Ok(accepted())
}

/// The user is typing, or stopped
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/typing",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    request_body = TypingBody,
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 400, description = "A field is wrong", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn typing(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
    JsonBody(body): JsonBody<TypingBody>,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    submit(&state, &id, Input::UserTyping { on: body.typing }).await?;
    Ok(accepted())
}

/// The user cancelled
///
/// While queued the Flow gets `cancelled`; once an agent has joined, `completed`
/// (`user_closed`). Either way the conversation is closed at Salesforce.
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/cancel",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    submit(&state, &id, Input::UserCancelled).await?;
    Ok(accepted())
}

/// The Flow closes the handover
///
/// What the Close Handover node does: the conversation is closed at Salesforce and the Flow
/// gets `completed` (`closed_by_flow`).
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/close",
    tag = "handovers",
    params(("id" = String, Path, description = "The handover id")),
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn close(
    State(state): State<ApiState>,
    _: Authed,
    HandoverPath(id): HandoverPath,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    submit(&state, &id, Input::FlowClosed).await?;
    Ok(accepted())
}

/// Force-close a handover (admin)
///
/// For an operator: ends the handover like the Flow's close (`completed`, `closed_by_flow`).
#[utoipa::path(
    post,
    path = "/v1/handovers/{id}/force-close",
    tag = "admin",
    params(("id" = String, Path, description = "The handover id")),
    responses(
        (status = 202, description = "Taken", body = AcceptedBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such handover", body = ErrorBody),
        (status = 409, description = "The handover has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn force_close(
    State(state): State<ApiState>,
    _: Admin,
    HandoverPath(id): HandoverPath,
) -> Result<(StatusCode, Json<AcceptedBody>), ApiError> {
    submit(&state, &id, Input::FlowClosed).await?;
    Ok(accepted())
}
