//! Salesforce's REST endpoints (`/iamessage/api/v2/…`) and the file downloads.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Shared, State, StrictJson, bearer, chaos, now_ms, schedule};
use crate::world::{ApiError, EntriesQuery, IssuedToken, UserContent};

const API: &str = "/iamessage/api/v2";

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            &format!("{API}/authorization/unauthenticated/access-token"),
            post(guest_token),
        )
        .route(
            &format!("{API}/authorization/authenticated/access-token"),
            post(verified_token).delete(revoke_token),
        )
        .route(
            &format!("{API}/authorization/continuation-access-token"),
            get(continuation_token),
        )
        .route(&format!("{API}/conversation"), post(create_conversation))
        .route(&format!("{API}/conversation/list"), get(list_conversations))
        .route(
            &format!("{API}/conversation/{{conversation}}"),
            get(routing_status).delete(close_conversation),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/session"),
            axum::routing::delete(end_session),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/entries"),
            get(list_entries),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/message"),
            post(send_message),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/file"),
            // The handler bounds each part itself: a file over the limit gets Salesforce's
            // 413, not the 400 a body limit below the file limit would give.
            post(send_file).layer(DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/entry"),
            post(typing),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/acknowledge-entries"),
            post(acknowledge),
        )
        .route(
            &format!("{API}/conversation/{{conversation}}/transcript"),
            get(transcript),
        )
        .route("/files/{file}", get(download))
}

// ---- tokens -------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenContext {
    #[serde(default)]
    app_name: Option<String>,
    #[serde(default)]
    client_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GuestTokenRequest {
    org_id: String,
    es_developer_name: String,
    capabilities_version: String,
    platform: String,
    #[serde(default)]
    context: Option<TokenContext>,
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VerifiedTokenRequest {
    org_id: String,
    es_developer_name: String,
    capabilities_version: String,
    platform: String,
    authorization_type: String,
    customer_identity_token: String,
    #[serde(default)]
    context: Option<TokenContext>,
    #[serde(default)]
    device_id: Option<String>,
}

fn check_client(capabilities_version: &str, platform: &str) -> Result<(), ApiError> {
    if capabilities_version != "1" {
        return Err(ApiError::new(400, "capabilitiesVersion must be \"1\"."));
    }
    if platform != "Web" && platform != "Mobile" {
        return Err(ApiError::new(
            400,
            "platform must be \"Web\" or \"Mobile\".",
        ));
    }
    Ok(())
}

/// What a token response says beside the token.
struct TokenFacts {
    auth_mode: &'static str,
    /// The `omit_event_ids` fault: no `lastEventId`.
    omit_last_event_id: bool,
}

impl TokenFacts {
    fn of(world: &crate::world::World) -> Self {
        Self {
            auth_mode: world.auth_mode(),
            omit_last_event_id: world.faults_for(None).omit_event_ids,
        }
    }
}

fn token_response(
    issued: &IssuedToken,
    facts: &TokenFacts,
    developer_name: &str,
    device_id: Option<&str>,
    context: Option<&TokenContext>,
) -> Value {
    let _ = context.map(|c| (&c.app_name, &c.client_version));
    let mut response = json!({
        "accessToken": issued.access_token,
        "lastEventId": issued.last_event_id,
        "context": {
            "deviceId": device_id.unwrap_or(""),
            "endUser": { "subject": issued.subject },
            "configuration": {
                "embeddedServiceConfig": {
                    "name": developer_name,
                    "deploymentType": "Web",
                    "embeddedServiceMessagingChannel": {
                        "channelAddressIdentifier": format!("{developer_name}_channel"),
                        "authMode": facts.auth_mode,
                    },
                    "forms": [],
                },
            },
        },
    });
    if facts.omit_last_event_id
        && let Some(fields) = response.as_object_mut()
    {
        fields.remove("lastEventId");
    }
    response
}

async fn guest_token(
    state: State,
    StrictJson(body): StrictJson<GuestTokenRequest>,
) -> Result<Response, ApiError> {
    chaos(&state, None).await?;
    check_client(&body.capabilities_version, &body.platform)?;
    let (issued, facts) = {
        let mut world = state.world();
        let issued = world.mint_token(now_ms(), &body.org_id, &body.es_developer_name, None)?;
        (issued, TokenFacts::of(&world))
    };
    let response = token_response(
        &issued,
        &facts,
        &body.es_developer_name,
        body.device_id.as_deref(),
        body.context.as_ref(),
    );
    Ok(axum::Json(response).into_response())
}

async fn verified_token(
    state: State,
    StrictJson(body): StrictJson<VerifiedTokenRequest>,
) -> Result<Response, ApiError> {
    chaos(&state, None).await?;
    check_client(&body.capabilities_version, &body.platform)?;
    if body.authorization_type != "JWT" {
        return Err(ApiError::new(400, "authorizationType must be \"JWT\"."));
    }
    let (issued, facts) = {
        let mut world = state.world();
        let issued = world.mint_token(
            now_ms(),
            &body.org_id,
            &body.es_developer_name,
            Some(&body.customer_identity_token),
        )?;
        (issued, TokenFacts::of(&world))
    };
    let response = token_response(
        &issued,
        &facts,
        &body.es_developer_name,
        body.device_id.as_deref(),
        body.context.as_ref(),
    );
    Ok(axum::Json(response).into_response())
}

async fn revoke_token(state: State, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    chaos(&state, None).await?;
    let mut world = state.world();
    let claims = world.authorize(now_ms(), bearer(&headers))?;
    world.revoke(&claims)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn continuation_token(state: State, headers: HeaderMap) -> Result<Response, ApiError> {
    chaos(&state, None).await?;
    let mut world = state.world();
    let now = now_ms();
    let claims = world.authorize(now, bearer(&headers))?;
    let issued = world.continuation(now, &claims);
    let mut response =
        json!({ "accessToken": issued.access_token, "lastEventId": issued.last_event_id });
    if TokenFacts::of(&world).omit_last_event_id
        && let Some(fields) = response.as_object_mut()
    {
        fields.remove("lastEventId");
    }
    Ok(axum::Json(response).into_response())
}

// ---- conversations ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateConversation {
    conversation_id: String,
    es_developer_name: String,
    #[serde(default)]
    routing_attributes: Option<Map<String, Value>>,
    #[serde(default)]
    language: Option<String>,
}

async fn create_conversation(
    state: State,
    headers: HeaderMap,
    StrictJson(body): StrictJson<CreateConversation>,
) -> Result<Response, ApiError> {
    chaos(&state, None).await?;
    let followups = {
        let mut world = state.world();
        let now = now_ms();
        let claims = world.authorize(now, bearer(&headers))?;
        let mut attributes = body.routing_attributes.unwrap_or_default();
        if let Some(language) = body.language {
            attributes
                .entry("language")
                .or_insert(Value::String(language));
        }
        world.create_conversation(
            now,
            &claims,
            &body.conversation_id,
            &body.es_developer_name,
            attributes,
        )?
    };
    schedule(&state, followups);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "conversationId": body.conversation_id })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    incl_closed_convs: Option<bool>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_conversations(
    state: State,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    chaos(&state, None).await?;
    let world = state.world();
    let claims = world.authorize(now_ms(), bearer(&headers))?;
    let list = world.list_conversations(
        &claims,
        query.incl_closed_convs.unwrap_or(false),
        query.limit,
    );
    Ok(axum::Json(list).into_response())
}

async fn routing_status(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
) -> Result<Response, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let world = state.world();
    let claims = world.authorize(now_ms(), bearer(&headers))?;
    Ok(axum::Json(world.routing_status(&claims, &conversation)?).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentQuery {
    #[serde(default)]
    es_developer_name: Option<String>,
}

async fn close_conversation(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    Query(query): Query<DeploymentQuery>,
) -> Result<StatusCode, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let mut world = state.world();
    let now = now_ms();
    let claims = world.authorize(now, bearer(&headers))?;
    world.close_conversation(
        now,
        &claims,
        &conversation,
        query.es_developer_name.as_deref(),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

async fn end_session(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    Query(query): Query<DeploymentQuery>,
) -> Result<StatusCode, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let mut world = state.world();
    let now = now_ms();
    let claims = world.authorize(now, bearer(&headers))?;
    world.end_messaging_session(
        now,
        &claims,
        &conversation,
        query.es_developer_name.as_deref(),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntriesParams {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    start_timestamp: Option<u64>,
    #[serde(default)]
    end_timestamp: Option<u64>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    entry_type_filter: Option<String>,
}

async fn list_entries(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    Query(params): Query<EntriesParams>,
) -> Result<Response, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    if let Some(direction) = params.direction.as_deref()
        && direction != "FromStart"
        && direction != "FromEnd"
    {
        return Err(ApiError::new(
            400,
            "direction must be FromStart or FromEnd.",
        ));
    }
    let query = EntriesQuery {
        limit: params.limit,
        start_timestamp: params.start_timestamp,
        end_timestamp: params.end_timestamp,
        direction: params.direction,
        entry_type_filter: params.entry_type_filter.map(|filter| {
            filter
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        }),
    };
    let world = state.world();
    let claims = world.authorize(now_ms(), bearer(&headers))?;
    Ok(axum::Json(world.list_entries(&claims, &conversation, &query)?).into_response())
}

// ---- messages -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StaticContent {
    format_type: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MessageBody {
    id: String,
    message_type: String,
    #[serde(default)]
    static_content: Option<StaticContent>,
    #[serde(default)]
    in_reply_to_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendMessage {
    message: MessageBody,
    es_developer_name: String,
    #[serde(default)]
    is_new_messaging_session: Option<bool>,
    #[serde(default)]
    routing_attributes: Option<Map<String, Value>>,
    #[serde(default)]
    language: Option<String>,
}

fn new_session(
    flag: Option<bool>,
    attributes: Option<Map<String, Value>>,
    language: Option<String>,
) -> Option<Option<Map<String, Value>>> {
    if flag != Some(true) {
        return None;
    }
    Some(attributes.map(|mut attributes| {
        if let Some(language) = language {
            attributes
                .entry("language")
                .or_insert(Value::String(language));
        }
        attributes
    }))
}

async fn send_message(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    StrictJson(body): StrictJson<SendMessage>,
) -> Result<Response, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    if body.message.message_type != "StaticContentMessage" {
        return Err(ApiError::new(
            400,
            "Only messageType StaticContentMessage is supported for text messages.",
        ));
    }
    let content = match body.message.static_content {
        Some(StaticContent { format_type, text }) if format_type == "Text" => UserContent::Text {
            text,
            in_reply_to: body.message.in_reply_to_message_id,
        },
        Some(_) => return Err(ApiError::new(400, "staticContent.formatType must be Text.")),
        None => return Err(ApiError::new(400, "message.staticContent is required.")),
    };
    let session = new_session(
        body.is_new_messaging_session,
        body.routing_attributes,
        body.language,
    );
    let message = (&body.es_developer_name[..], &body.message.id[..]);
    accept_user_message(&state, &headers, &conversation, message, content, session)
}

/// Hands a user message (text or file) to the world and schedules the scripted agent.
fn accept_user_message(
    state: &Arc<Shared>,
    headers: &HeaderMap,
    conversation: &str,
    (developer_name, message_id): (&str, &str),
    content: UserContent,
    session: Option<Option<Map<String, Value>>>,
) -> Result<Response, ApiError> {
    let (response, followups) = {
        let mut world = state.world();
        let now = now_ms();
        let claims = world.authorize(now, bearer(headers))?;
        world.send_message(
            now,
            &claims,
            conversation,
            developer_name,
            message_id,
            content,
            session,
        )?
    };
    schedule(state, followups);
    Ok((StatusCode::ACCEPTED, axum::Json(response)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileMessage {
    id: String,
    file_id: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    in_reply_to_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileEntry {
    es_developer_name: String,
    message: FileMessage,
    #[serde(default)]
    is_new_messaging_session: Option<bool>,
    #[serde(default)]
    routing_attributes: Option<Map<String, Value>>,
    #[serde(default)]
    language: Option<String>,
}

async fn send_file(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let (max_bytes, allowed) = {
        let world = state.world();
        (
            world.config().max_file_bytes,
            world.config().allowed_file_types.clone(),
        )
    };
    let mut entry: Option<FileEntry> = None;
    let mut file: Option<(String, String, Vec<u8>)> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|error| ApiError::new(400, format!("Invalid multipart body: {error}")))?
    {
        match field.name() {
            Some("messageEntry") => {
                let bytes = read_part(&mut field, MAX_ENTRY_PART_BYTES)
                    .await
                    .map_err(|error| match error {
                        PartError::TooLarge => ApiError::new(400, "The messageEntry is too large."),
                        PartError::Read(error) => {
                            ApiError::new(400, format!("Invalid messageEntry: {error}"))
                        }
                    })?;
                let parsed = serde_json::from_slice(&bytes).map_err(|error| {
                    ApiError::new(400, format!("Invalid messageEntry: {error}"))
                })?;
                entry = Some(parsed);
            }
            Some("fileData") => {
                let name = field.file_name().unwrap_or("file").to_owned();
                let mime_type = field
                    .content_type()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "application/octet-stream".to_owned());
                let bytes =
                    read_part(&mut field, max_bytes)
                        .await
                        .map_err(|error| match error {
                            PartError::TooLarge => {
                                ApiError::new(413, "The maximum size of each file is 5 MB.")
                            }
                            PartError::Read(error) => {
                                ApiError::new(400, format!("Invalid fileData: {error}"))
                            }
                        })?;
                file = Some((name, mime_type, bytes));
            }
            Some(other) => {
                return Err(ApiError::new(
                    400,
                    format!("Unexpected multipart part {other}."),
                ));
            }
            None => return Err(ApiError::new(400, "A multipart part has no name.")),
        }
    }
    let entry = entry.ok_or_else(|| ApiError::new(400, "The messageEntry part is required."))?;
    let (name, mime_type, bytes) =
        file.ok_or_else(|| ApiError::new(400, "The fileData part is required."))?;
    // The part's own type wins; a generic one falls back to the file name's extension.
    let mime_type = if mime_type == "application/octet-stream" {
        guess_mime(&name).unwrap_or(mime_type)
    } else {
        mime_type
    };
    if !allowed.contains(&mime_type) {
        return Err(ApiError::new(
            415,
            format!("Unsupported file type {mime_type}."),
        ));
    }
    let _ = entry.message.in_reply_to_message_id;
    let content = UserContent::File {
        file_id: entry.message.file_id,
        name,
        mime_type,
        bytes,
        text: entry.message.text,
    };
    let session = new_session(
        entry.is_new_messaging_session,
        entry.routing_attributes,
        entry.language,
    );
    let message = (&entry.es_developer_name[..], &entry.message.id[..]);
    accept_user_message(&state, &headers, &conversation, message, content, session)
}

/// The largest `messageEntry` part: a JSON object of a few fields.
const MAX_ENTRY_PART_BYTES: u64 = 64 * 1024;

enum PartError {
    TooLarge,
    Read(axum::extract::multipart::MultipartError),
}

/// Reads a multipart part, refusing it as soon as it grows past `max` bytes (the rest is
/// never read).
async fn read_part(
    field: &mut axum::extract::multipart::Field<'_>,
    max: u64,
) -> Result<Vec<u8>, PartError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(PartError::Read)? {
        if (bytes.len() + chunk.len()) as u64 > max {
            return Err(PartError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn guess_mime(name: &str) -> Option<String> {
    mime_guess::from_path(name).first_raw().map(str::to_owned)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TypingEntry {
    entry_type: String,
    id: String,
}

async fn typing(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    StrictJson(body): StrictJson<TypingEntry>,
) -> Result<StatusCode, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let started = match body.entry_type.as_str() {
        "TypingStartedIndicator" => true,
        "TypingStoppedIndicator" => false,
        _ => {
            return Err(ApiError::new(
                400,
                "entryType must be TypingStartedIndicator or TypingStoppedIndicator.",
            ));
        }
    };
    let mut world = state.world();
    let now = now_ms();
    let claims = world.authorize(now, bearer(&headers))?;
    world.user_typing(now, &claims, &conversation, started, &body.id)?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Ack {
    /// The acknowledgement's own id; Salesforce's sample sends one, other clients do not.
    #[serde(default)]
    id: Option<String>,
    entry_type: String,
    conversation_entry_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Acks {
    acks: Vec<Ack>,
}

async fn acknowledge(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    StrictJson(body): StrictJson<Acks>,
) -> Result<StatusCode, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let mut acks = Vec::new();
    for ack in body.acks {
        let read = match ack.entry_type.as_str() {
            "Delivery" => false,
            "Read" => true,
            _ => {
                return Err(ApiError::new(
                    400,
                    "acks[].entryType must be Delivery or Read.",
                ));
            }
        };
        let id = ack.id.unwrap_or_else(crate::world::random_uuid);
        acks.push((id, read, ack.conversation_entry_id));
    }
    let mut world = state.world();
    let now = now_ms();
    let claims = world.authorize(now, bearer(&headers))?;
    world.user_acknowledges(now, &claims, &conversation, &acks)?;
    Ok(StatusCode::OK)
}

async fn transcript(
    state: State,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    Query(query): Query<DeploymentQuery>,
) -> Result<Response, ApiError> {
    chaos(&state, Some(&conversation)).await?;
    let world = state.world();
    let claims = world.authorize(now_ms(), bearer(&headers))?;
    let pdf = world.transcript(&claims, &conversation, query.es_developer_name.as_deref())?;
    Ok(([(header::CONTENT_TYPE, "application/pdf")], pdf).into_response())
}

async fn download(state: State, Path(file): Path<String>) -> Result<Response, ApiError> {
    let world = state.world();
    let stored = world
        .file(&file)
        .ok_or_else(|| ApiError::new(404, "No such file."))?;
    let disposition = format!("attachment; filename=\"{}\"", stored.name.replace('"', ""));
    Ok((
        [
            (header::CONTENT_TYPE, stored.mime_type.clone()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        stored.bytes.clone(),
    )
        .into_response())
}
