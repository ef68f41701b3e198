//! The REST client: one method per MIAW call the bridge makes, and the core's
//! `SalesforcePort` on top of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use handover_core::ports::{EventStream, SalesforcePort};
use handover_core::{
    AccessToken, Acknowledgement, AcknowledgementKind, CallFailure, ClientEntryId,
    ConversationEntry, ConversationId, Credential, EventId, FileRef, IdentityToken, IssuedToken,
    MintKind, OutboundBody, RoutingAttributes, RoutingStatus, SalesforceRequest,
    SalesforceResponse, Subject, Timestamp,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Map, Value, json};

use crate::config::{MiawConfig, MiawConfigError};
use crate::decode;
use crate::error::SalesforceError;
use crate::stream::SseConnection;

const API: &str = "/iamessage/api/v2";

/// A MIAW client for one deployment. Cheap to clone; clones share one HTTP connection pool.
#[derive(Clone)]
pub struct MiawClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: MiawConfig,
    decode_failures: AtomicU64,
}

impl std::fmt::Debug for MiawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiawClient")
            .field("base_url", &self.inner.config.base_url)
            .field("org_id", &self.inner.config.org_id)
            .field("developer_name", &self.inner.config.developer_name)
            .finish_non_exhaustive()
    }
}

/// A delivery or read receipt to send.
pub type Receipt = Acknowledgement;

impl MiawClient {
    /// A client with its own connection pool.
    pub fn new(config: MiawConfig) -> Result<Self, MiawConfigError> {
        let config = config.validated()?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("handover-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| MiawConfigError {
                field: "base_url",
                problem: "the HTTP client could not be built",
            })?;
        Ok(Self::with_http(config, http))
    }

    /// A client sharing `http`'s connection pool (one pool for every deployment). `config`
    /// must come from [`MiawConfig::validated`].
    pub fn with_http(config: MiawConfig, http: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                config,
                decode_failures: AtomicU64::new(0),
            }),
        }
    }

    /// The deployment this client talks to.
    pub fn config(&self) -> &MiawConfig {
        &self.inner.config
    }

    /// Entries from listings that could not be decoded and were left out (a metric).
    pub fn decode_failures(&self) -> u64 {
        self.inner.decode_failures.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.config.base_url)
    }

    fn request(&self, method: Method, path: &str, token: Option<&AccessToken>) -> RequestBuilder {
        let mut request = self
            .inner
            .http
            .request(method, self.url(path))
            .timeout(self.inner.config.request_timeout);
        if let Some(token) = token {
            request = request.bearer_auth(token.expose_secret());
        }
        request
    }

    /// Sends `request`; a non-2xx answer becomes an error with Salesforce's `message`.
    async fn send(request: RequestBuilder) -> Result<reqwest::Response, SalesforceError> {
        let response = request.send().await.map_err(SalesforceError::transport)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|json| {
                json.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        Err(SalesforceError::Status { status, message })
    }

    async fn send_json(request: RequestBuilder) -> Result<Value, SalesforceError> {
        let response = Self::send(request).await?;
        response.json().await.map_err(|error| {
            SalesforceError::Decode(format!("the body is not JSON: {}", error.without_url()))
        })
    }

    // ---- tokens -----------------------------------------------------------------------------

    fn token_body(&self) -> Value {
        let config = &self.inner.config;
        json!({
            "orgId": config.org_id,
            "esDeveloperName": config.developer_name,
            "capabilitiesVersion": "1",
            "platform": "Web",
            "context": { "appName": config.app_name, "clientVersion": config.client_version },
        })
    }

    /// An access token for a guest.
    pub async fn mint_guest(&self) -> Result<IssuedToken, SalesforceError> {
        let request = self
            .request(
                Method::POST,
                &format!("{API}/authorization/unauthenticated/access-token"),
                None,
            )
            .json(&self.token_body());
        issued_token(&Self::send_json(request).await?)
    }

    /// An access token for a verified user. If Salesforce does not accept the identity token
    /// it still answers 200, with a guest token: the returned subject is then
    /// [`Subject::Anonymous`].
    pub async fn mint_verified(
        &self,
        identity: &IdentityToken,
    ) -> Result<IssuedToken, SalesforceError> {
        let mut body = self.token_body();
        body["authorizationType"] = json!("JWT");
        body["customerIdentityToken"] = json!(identity.expose_secret());
        let request = self
            .request(
                Method::POST,
                &format!("{API}/authorization/authenticated/access-token"),
                None,
            )
            .json(&body);
        issued_token(&Self::send_json(request).await?)
    }

    /// A continuation token: the same subject, the same expiry.
    pub async fn continuation(&self, token: &AccessToken) -> Result<IssuedToken, SalesforceError> {
        let request = self.request(
            Method::GET,
            &format!("{API}/authorization/continuation-access-token"),
            Some(token),
        );
        issued_token(&Self::send_json(request).await?)
    }

    /// Revokes a verified user's token.
    pub async fn revoke(&self, token: &AccessToken) -> Result<(), SalesforceError> {
        let request = self.request(
            Method::DELETE,
            &format!("{API}/authorization/authenticated/access-token"),
            Some(token),
        );
        Self::send(request).await.map(drop)
    }

    // ---- conversations ----------------------------------------------------------------------

    /// Creates the conversation with its routing attributes (pre-chat values).
    pub async fn create_conversation(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        attributes: &RoutingAttributes,
    ) -> Result<(), SalesforceError> {
        let body = json!({
            "conversationId": conversation.to_string(),
            "esDeveloperName": self.inner.config.developer_name,
            "routingAttributes": attributes_json(attributes),
        });
        let request = self
            .request(Method::POST, &format!("{API}/conversation"), Some(token))
            .json(&body);
        Self::send(request).await.map(drop)
    }

    /// The conversation's routing status.
    pub async fn routing_status(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
    ) -> Result<RoutingStatus, SalesforceError> {
        let request = self.request(
            Method::GET,
            &format!("{API}/conversation/{conversation}"),
            Some(token),
        );
        let body = Self::send_json(request).await?;
        Ok(match body.get("routingStatus").and_then(Value::as_str) {
            Some("ROUTED") => RoutingStatus::Routed,
            Some("NEEDS_ROUTING") => RoutingStatus::NeedsRouting,
            Some("INITIAL") => RoutingStatus::Initial,
            Some("TRANSFER") => RoutingStatus::Transfer,
            Some(other) => RoutingStatus::Other(other.chars().take(50).collect()),
            None => {
                return Err(SalesforceError::Decode(
                    "routingStatus is missing".to_owned(),
                ));
            }
        })
    }

    fn deployment_query(&self) -> [(&'static str, &str); 1] {
        [("esDeveloperName", self.inner.config.developer_name.as_str())]
    }

    /// Closes the conversation.
    pub async fn close_conversation(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
    ) -> Result<(), SalesforceError> {
        let request = self
            .request(
                Method::DELETE,
                &format!("{API}/conversation/{conversation}"),
                Some(token),
            )
            .query(&self.deployment_query());
        Self::send(request).await.map(drop)
    }

    /// Ends the messaging session but keeps the conversation.
    pub async fn end_session(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
    ) -> Result<(), SalesforceError> {
        let request = self
            .request(
                Method::DELETE,
                &format!("{API}/conversation/{conversation}/session"),
                Some(token),
            )
            .query(&self.deployment_query());
        Self::send(request).await.map(drop)
    }

    /// The newest `limit` entries at or before `before`, oldest first. Entries that cannot be
    /// decoded are left out and counted ([`Self::decode_failures`]).
    pub async fn list_entries(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<ConversationEntry>, SalesforceError> {
        let mut query = vec![
            ("limit", limit.clamp(1, 50).to_string()),
            ("direction", "FromEnd".to_owned()),
        ];
        if let Some(before) = before {
            query.push(("endTimestamp", before.as_unix_millis().to_string()));
        }
        let request = self
            .request(
                Method::GET,
                &format!("{API}/conversation/{conversation}/entries"),
                Some(token),
            )
            .query(&query);
        let body = Self::send_json(request).await?;
        let listed = body
            .get("conversationEntries")
            .and_then(Value::as_array)
            .ok_or_else(|| SalesforceError::Decode("conversationEntries is missing".to_owned()))?;
        let conversation_text = conversation.to_string();
        let mut entries = Vec::with_capacity(listed.len());
        for entry in listed.iter().rev() {
            match decode::decode_entry(entry, &conversation_text) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    self.inner.decode_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "an entry of the listing could not be decoded and was left out");
                }
            }
        }
        Ok(entries)
    }

    // ---- messages ---------------------------------------------------------------------------

    /// Sends a text message with the caller's message id. `new_session` resends after a 417
    /// with `isNewMessagingSession` and the routing attributes.
    pub async fn send_text(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        id: ClientEntryId,
        text: &str,
        new_session: Option<&RoutingAttributes>,
    ) -> Result<(), SalesforceError> {
        let mut body = json!({
            "message": {
                "id": id.to_string(),
                "messageType": "StaticContentMessage",
                "staticContent": { "formatType": "Text", "text": text },
            },
            "esDeveloperName": self.inner.config.developer_name,
        });
        if let Some(attributes) = new_session {
            body["isNewMessagingSession"] = json!(true);
            body["routingAttributes"] = attributes_json(attributes);
        }
        let request = self
            .request(
                Method::POST,
                &format!("{API}/conversation/{conversation}/message"),
                Some(token),
            )
            .json(&body);
        Self::send(request).await.map(drop)
    }

    /// Uploads a file the user sent (by URL). A file over the limit is refused with 413
    /// before anything is uploaded; the core then sends the link instead.
    pub async fn send_file(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        id: ClientEntryId,
        file: &FileRef,
        new_session: Option<&RoutingAttributes>,
    ) -> Result<(), SalesforceError> {
        let max = self.inner.config.max_file_bytes;
        let too_large = || SalesforceError::Status {
            status: 413,
            message: format!("the file is larger than {max} bytes (checked before upload)"),
        };
        if file.size.is_some_and(|size| size > max) {
            return Err(too_large());
        }
        let bytes = self.download(file, max).await?.ok_or_else(too_large)?;
        let mut entry = json!({
            "esDeveloperName": self.inner.config.developer_name,
            "message": { "id": id.to_string(), "fileId": id.to_string() },
        });
        if let Some(attributes) = new_session {
            entry["isNewMessagingSession"] = json!(true);
            entry["routingAttributes"] = attributes_json(attributes);
        }
        let mime = file
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let entry_part = reqwest::multipart::Part::text(entry.to_string())
            .mime_str("application/json")
            .map_err(|e| SalesforceError::Request(e.to_string()))?;
        let file_part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file.name.clone())
            .mime_str(&mime)
            .map_err(|_| SalesforceError::Request(format!("invalid MIME type {mime}")))?;
        let form = reqwest::multipart::Form::new()
            .part("messageEntry", entry_part)
            .part("fileData", file_part);
        let request = self
            .request(
                Method::POST,
                &format!("{API}/conversation/{conversation}/file"),
                Some(token),
            )
            .multipart(form);
        Self::send(request).await.map(drop)
    }

    /// Fetches the user's file, or `None` if it is larger than `max`.
    async fn download(&self, file: &FileRef, max: u64) -> Result<Option<Vec<u8>>, SalesforceError> {
        let response = self
            .inner
            .http
            .get(&file.url)
            .timeout(self.inner.config.request_timeout)
            .send()
            .await
            .map_err(SalesforceError::transport)?;
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(SalesforceError::Transport(format!(
                "the attachment's host answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(SalesforceError::Request(format!(
                "could not download the attachment: {status}"
            )));
        }
        if response.content_length().is_some_and(|length| length > max) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(SalesforceError::transport)?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > max {
                return Ok(None);
            }
        }
        Ok(Some(bytes))
    }

    /// Typing started or stopped.
    pub async fn typing(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        id: ClientEntryId,
        started: bool,
    ) -> Result<(), SalesforceError> {
        let entry_type = if started {
            "TypingStartedIndicator"
        } else {
            "TypingStoppedIndicator"
        };
        let request = self
            .request(
                Method::POST,
                &format!("{API}/conversation/{conversation}/entry"),
                Some(token),
            )
            .json(&json!({ "entryType": entry_type, "id": id.to_string() }));
        Self::send(request).await.map(drop)
    }

    /// Delivery or read receipts of agent entries.
    pub async fn acknowledge(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        receipts: &[Receipt],
    ) -> Result<(), SalesforceError> {
        let acks: Vec<Value> = receipts
            .iter()
            .map(|receipt| {
                let kind = match receipt.kind {
                    AcknowledgementKind::Delivered => "Delivery",
                    AcknowledgementKind::Read => "Read",
                };
                json!({ "id": receipt.id.to_string(), "entryType": kind, "conversationEntryId": receipt.entry.as_str() })
            })
            .collect();
        let request = self
            .request(
                Method::POST,
                &format!("{API}/conversation/{conversation}/acknowledge-entries"),
                Some(token),
            )
            .json(&json!({ "acks": acks }));
        Self::send(request).await.map(drop)
    }

    // ---- the stream -------------------------------------------------------------------------

    /// Connects the event stream of the token's subject, resuming after `last_event_id`.
    pub async fn connect(
        &self,
        token: &AccessToken,
        last_event_id: Option<&EventId>,
    ) -> Result<SseConnection, SalesforceError> {
        let config = &self.inner.config;
        // A fresh cache-busting parameter per attempt, as Salesforce's own client does: some
        // proxies replay a cached event stream otherwise.
        let mut request = self
            .inner
            .http
            .get(self.url(&format!("/eventrouter/v1/sse?_ts={}", fastrand::u64(..))))
            .bearer_auth(token.expose_secret())
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("X-Org-Id", &config.org_id);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-Id", id.as_str());
        }
        let response = tokio::time::timeout(config.stream_open_timeout, Self::send(request))
            .await
            .map_err(|_| {
                SalesforceError::Transport("the event stream did not answer in time".to_owned())
            })??;
        Ok(SseConnection::new(response))
    }
}

fn attributes_json(attributes: &RoutingAttributes) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect::<Map<_, _>>(),
    )
}

/// A token response into the core's `IssuedToken`: the expiry from the JWT's `exp`, the
/// subject from `context.endUser.subject` (or the JWT's `sub`).
fn issued_token(body: &Value) -> Result<IssuedToken, SalesforceError> {
    let token = body
        .get("accessToken")
        .and_then(Value::as_str)
        .ok_or_else(|| SalesforceError::Decode("accessToken is missing".to_owned()))?;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|payload| serde_json::from_slice::<Value>(&payload).ok())
        .ok_or_else(|| SalesforceError::Decode("accessToken is not a JWT".to_owned()))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| SalesforceError::Decode("the access token has no exp claim".to_owned()))?;
    let subject = body
        .pointer("/context/endUser/subject")
        .and_then(Value::as_str)
        .or_else(|| claims.get("sub").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let subject = if subject.contains("/AUTH/") {
        Subject::Verified(subject)
    } else {
        Subject::Anonymous(subject)
    };
    let last_event_id = match body.get("lastEventId") {
        Some(Value::String(id)) => EventId::new(id.as_str()).ok(),
        Some(Value::Number(id)) => EventId::new(id.to_string()).ok(),
        _ => None,
    };
    Ok(IssuedToken {
        token: AccessToken::new(token),
        expires_at: Timestamp::from_unix_secs(exp),
        subject,
        last_event_id,
    })
}

#[async_trait]
impl SalesforcePort for MiawClient {
    async fn execute(
        &self,
        credential: Option<&Credential>,
        request: &SalesforceRequest,
    ) -> Result<SalesforceResponse, CallFailure> {
        let token = || {
            credential.map(|c| &c.token).ok_or(CallFailure::Rejected {
                status: 0,
                message: "this call needs a token".to_owned(),
            })
        };
        let done = |result: Result<(), SalesforceError>| {
            result
                .map(|()| SalesforceResponse::Done)
                .map_err(CallFailure::from)
        };
        match request {
            SalesforceRequest::MintToken(MintKind::Guest) => {
                Ok(SalesforceResponse::Token(self.mint_guest().await?))
            }
            SalesforceRequest::MintToken(MintKind::Verified(identity)) => Ok(
                SalesforceResponse::Token(self.mint_verified(identity).await?),
            ),
            SalesforceRequest::ContinueToken => Ok(SalesforceResponse::Token(
                self.continuation(token()?).await?,
            )),
            SalesforceRequest::CreateConversation {
                conversation_id,
                routing_attributes,
            } => done(
                self.create_conversation(token()?, *conversation_id, routing_attributes)
                    .await,
            ),
            SalesforceRequest::SendMessage {
                conversation_id,
                message,
                new_session,
            } => match &message.body {
                OutboundBody::Text(text) => done(
                    self.send_text(
                        token()?,
                        *conversation_id,
                        message.id,
                        text,
                        new_session.as_ref(),
                    )
                    .await,
                ),
                OutboundBody::File(file) => done(
                    self.send_file(
                        token()?,
                        *conversation_id,
                        message.id,
                        file,
                        new_session.as_ref(),
                    )
                    .await,
                ),
            },
            SalesforceRequest::SendTyping {
                conversation_id,
                id,
                typing,
            } => done(self.typing(token()?, *conversation_id, *id, *typing).await),
            SalesforceRequest::Acknowledge {
                conversation_id,
                acknowledgements,
            } => done(
                self.acknowledge(token()?, *conversation_id, acknowledgements)
                    .await,
            ),
            SalesforceRequest::ListEntries {
                conversation_id,
                before,
                limit,
            } => Ok(SalesforceResponse::Entries(
                self.list_entries(token()?, *conversation_id, *before, *limit)
                    .await?,
            )),
            SalesforceRequest::FetchRoutingStatus { conversation_id } => {
                Ok(SalesforceResponse::RoutingStatus(
                    self.routing_status(token()?, *conversation_id).await?,
                ))
            }
            SalesforceRequest::CloseConversation { conversation_id } => {
                done(self.close_conversation(token()?, *conversation_id).await)
            }
            SalesforceRequest::RevokeToken => done(self.revoke(token()?).await),
            SalesforceRequest::OpenStream { .. } | SalesforceRequest::CloseStream => {
                Err(CallFailure::Rejected {
                    status: 0,
                    message: "streams are opened with open_stream and closed by dropping them"
                        .to_owned(),
                })
            }
        }
    }

    async fn open_stream(
        &self,
        credential: &Credential,
        last_event_id: Option<&EventId>,
    ) -> Result<Box<dyn EventStream>, CallFailure> {
        let connection = self.connect(&credential.token, last_event_id).await?;
        Ok(Box::new(connection))
    }
}
