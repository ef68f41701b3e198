//! The REST client: one method per MIAW call the bridge makes, and the core's
//! `SalesforcePort` on top of them.

use std::collections::BTreeMap;
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
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::attachments::AttachmentRefused;
use crate::config::{MiawConfig, MiawConfigError};
use crate::decode;
use crate::error::SalesforceError;
use crate::http::{HttpSettings, Transport};
use crate::pacing::{TokenPacer, Turn};
use crate::stream::SseConnection;
use crate::wire;

const API: &str = "/iamessage/api/v2";

/// Which entries a listing asks for: `endTimestamp` and `startTimestamp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryWindow {
    /// Up to this time (`endTimestamp`).
    pub before: Option<Timestamp>,
    /// From this time on (`startTimestamp`, listed with `direction=FromStart`).
    pub from: Option<Timestamp>,
}

/// A MIAW client for one deployment. Cheap to clone; clones share one [`Transport`].
#[derive(Clone)]
pub struct MiawClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    mints: Arc<TokenPacer>,
    /// For user files only (see `download`); `None` if it could not be built.
    downloads: Option<reqwest::Client>,
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
    /// A client with its own connections, speaking HTTP/2 where the server offers it.
    pub fn new(config: MiawConfig) -> Result<Self, MiawConfigError> {
        let config = config.validated()?;
        let transport = Transport::new(HttpSettings {
            connect_timeout: config.connect_timeout,
            ..HttpSettings::default()
        })?;
        Ok(Self::with_transport(config, &transport))
    }

    /// A client sharing `transport`'s connections (one transport for every deployment),
    /// pacing its token requests by itself at `config.token_requests_per_minute`. `config`
    /// must come from [`MiawConfig::validated`].
    pub fn with_transport(config: MiawConfig, transport: &Transport) -> Self {
        let mints = Arc::new(TokenPacer::local(config.token_requests_per_minute));
        Self::with_pacer(config, transport, mints)
    }

    /// A client whose token requests wait their turn in `mints`: share one pacer between
    /// the deployments of an org, and give it the shared schedule when several instances run.
    pub fn with_pacer(config: MiawConfig, transport: &Transport, mints: Arc<TokenPacer>) -> Self {
        // A client of its own for user files: it checks every redirect against the policy
        // and resolves names to public addresses only (see `attachments`).
        let downloads = config
            .attachments
            .client(config.connect_timeout)
            .map_err(|_| tracing::error!("the attachment download client could not be built"))
            .ok();
        Self {
            inner: Arc::new(Inner {
                transport: transport.clone(),
                mints,
                downloads,
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
            .transport
            .rest()
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

    /// Sends `request` and reads the answer as `T`; a body of another shape is a decode
    /// error naming the field at fault.
    async fn send_json<T: DeserializeOwned>(
        request: RequestBuilder,
        what: &str,
    ) -> Result<T, SalesforceError> {
        let response = Self::send(request).await?;
        let body = response.bytes().await.map_err(SalesforceError::transport)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| SalesforceError::Decode(format!("{what}: the body is not JSON")))?;
        decode::shape(value, what).map_err(|error| SalesforceError::Decode(error.0))
    }

    // ---- tokens -----------------------------------------------------------------------------

    fn token_body<'a>(&'a self, identity: Option<&'a IdentityToken>) -> wire::TokenRequest<'a> {
        let config = &self.inner.config;
        wire::TokenRequest {
            org_id: &config.org_id,
            es_developer_name: &config.developer_name,
            capabilities_version: "1",
            platform: "Web",
            context: wire::TokenContext {
                app_name: &config.app_name,
                client_version: &config.client_version,
            },
            authorization_type: identity.map(|_| "JWT"),
            customer_identity_token: identity.map(IdentityToken::expose_secret),
        }
    }

    /// An access token for a guest.
    pub async fn mint_guest(&self) -> Result<IssuedToken, SalesforceError> {
        self.mint(None, Turn::First).await
    }

    /// An access token for a verified user. If Salesforce does not accept the identity token
    /// it still answers 200, with a guest token: the returned subject is then
    /// [`Subject::Anonymous`].
    pub async fn mint_verified(
        &self,
        identity: &IdentityToken,
    ) -> Result<IssuedToken, SalesforceError> {
        self.mint(Some(identity), Turn::First).await
    }

    /// A token request, after its turn in the pacer.
    async fn mint(
        &self,
        identity: Option<&IdentityToken>,
        turn: Turn,
    ) -> Result<IssuedToken, SalesforceError> {
        self.inner.mints.wait_turn(turn).await;
        let path = match identity {
            Some(_) => "authenticated",
            None => "unauthenticated",
        };
        let request = self
            .request(
                Method::POST,
                &format!("{API}/authorization/{path}/access-token"),
                None,
            )
            .json(&self.token_body(identity));
        issued_token(Self::send_json(request, "the token response").await?)
    }

    /// A continuation token: the same subject, the same expiry.
    pub async fn continuation(&self, token: &AccessToken) -> Result<IssuedToken, SalesforceError> {
        let request = self.request(
            Method::GET,
            &format!("{API}/authorization/continuation-access-token"),
            Some(token),
        );
        issued_token(Self::send_json(request, "the token response").await?)
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
        let body = wire::CreateConversation {
            conversation_id: conversation.to_string(),
            es_developer_name: &self.inner.config.developer_name,
            routing_attributes: attributes_map(attributes),
        };
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
        let body: wire::ConversationStatus = Self::send_json(request, "the conversation").await?;
        Ok(match body.routing_status.as_str() {
            "ROUTED" => RoutingStatus::Routed,
            "NEEDS_ROUTING" => RoutingStatus::NeedsRouting,
            "INITIAL" => RoutingStatus::Initial,
            "TRANSFER" => RoutingStatus::Transfer,
            other => RoutingStatus::Other(other.chars().take(50).collect()),
        })
    }

    /// A `DELETE` of a conversation resource, naming the deployment.
    async fn delete(&self, token: &AccessToken, path: &str) -> Result<(), SalesforceError> {
        let request = self
            .request(Method::DELETE, path, Some(token))
            .query(&[("esDeveloperName", self.inner.config.developer_name.as_str())]);
        Self::send(request).await.map(drop)
    }

    /// Closes the conversation.
    pub async fn close_conversation(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
    ) -> Result<(), SalesforceError> {
        self.delete(token, &format!("{API}/conversation/{conversation}"))
            .await
    }

    /// Ends the messaging session but keeps the conversation.
    pub async fn end_session(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
    ) -> Result<(), SalesforceError> {
        self.delete(token, &format!("{API}/conversation/{conversation}/session"))
            .await
    }

    /// At most `limit` entries of the window, oldest first: the newest ones up to
    /// `window.before`, or, when the window has a start, the oldest ones from `window.from` on.
    /// The bounds go to Salesforce as they are (it does not say whether they are inclusive;
    /// the core pages for either reading). Entries that cannot be decoded are left out and
    /// counted ([`Self::decode_failures`]).
    pub async fn list_entries(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        window: EntryWindow,
        limit: u32,
    ) -> Result<Vec<ConversationEntry>, SalesforceError> {
        // Newest first unless the window has a start: then the oldest from there on.
        let forward = window.from.is_some();
        let direction = if forward { "FromStart" } else { "FromEnd" };
        let mut query = vec![
            ("limit", limit.clamp(1, 50).to_string()),
            ("direction", direction.to_owned()),
        ];
        if let Some(from) = window.from {
            query.push(("startTimestamp", from.as_unix_millis().to_string()));
        }
        if let Some(before) = window.before {
            query.push(("endTimestamp", before.as_unix_millis().to_string()));
        }
        let request = self
            .request(
                Method::GET,
                &format!("{API}/conversation/{conversation}/entries"),
                Some(token),
            )
            .query(&query);
        let listing: wire::EntryListing = Self::send_json(request, "the entries").await?;
        let listed = listing.conversation_entries;
        let conversation_text = conversation.to_string();
        let mut entries = Vec::with_capacity(listed.len());
        let in_order: Box<dyn Iterator<Item = &Value>> = if forward {
            Box::new(listed.iter())
        } else {
            Box::new(listed.iter().rev())
        };
        for entry in in_order {
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
        let body = wire::SendMessage {
            message: wire::TextMessage {
                id: id.to_string(),
                message_type: "StaticContentMessage",
                static_content: wire::TextContent {
                    format_type: "Text",
                    text,
                },
            },
            es_developer_name: &self.inner.config.developer_name,
            new_session: new_session.map(new_session_fields),
        };
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
        let entry = wire::FileEntry {
            es_developer_name: &self.inner.config.developer_name,
            message: wire::FileMessage {
                id: id.to_string(),
                file_id: id.to_string(),
            },
            new_session: new_session.map(new_session_fields),
        };
        let entry = serde_json::to_string(&entry).map_err(|_| {
            SalesforceError::Request("the file entry could not be written".to_owned())
        })?;
        let mime = file
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let entry_part = reqwest::multipart::Part::text(entry)
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

    /// Fetches the user's file, or `None` if it is larger than `max`. The URL and every
    /// redirect must pass the attachment policy; a refusal is a `Request` error, so the core
    /// sends the agent the link instead.
    async fn download(&self, file: &FileRef, max: u64) -> Result<Option<Vec<u8>>, SalesforceError> {
        let url = reqwest::Url::parse(&file.url)
            .map_err(|_| SalesforceError::Request(AttachmentRefused::Invalid.to_string()))?;
        self.inner
            .config
            .attachments
            .check(&url)
            .map_err(|refused| SalesforceError::Request(refused.to_string()))?;
        let client = self.inner.downloads.as_ref().ok_or_else(|| {
            SalesforceError::Request("the attachment download client is unavailable".to_owned())
        })?;
        let response = client
            .get(url)
            .timeout(self.inner.config.request_timeout)
            .send()
            .await
            .map_err(refused_or_transport)?;
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
            .json(&wire::Indicator {
                entry_type,
                id: id.to_string(),
            });
        Self::send(request).await.map(drop)
    }

    /// Delivery or read receipts of agent entries.
    pub async fn acknowledge(
        &self,
        token: &AccessToken,
        conversation: ConversationId,
        receipts: &[Receipt],
    ) -> Result<(), SalesforceError> {
        let acks = receipts
            .iter()
            .map(|receipt| wire::Ack {
                id: receipt.id.to_string(),
                entry_type: match receipt.kind {
                    AcknowledgementKind::Delivered => "Delivery",
                    AcknowledgementKind::Read => "Read",
                },
                conversation_entry_id: receipt.entry.as_str().to_owned(),
            })
            .collect();
        let request = self
            .request(
                Method::POST,
                &format!("{API}/conversation/{conversation}/acknowledge-entries"),
                Some(token),
            )
            .json(&wire::Acknowledgements { acks });
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
        // A place on a connection of the streams' own (see `http`): over HTTP/2 a stream
        // must not wait behind the server's limit of concurrent streams.
        let (http, mut lease) = self.inner.transport.streams().lease().map_err(|_| {
            SalesforceError::Transport(
                "the event stream's HTTP client could not be built".to_owned(),
            )
        })?;
        let mut request = http
            .get(self.url(&format!("/eventrouter/v1/sse?_ts={}", fastrand::u64(..))))
            .bearer_auth(token.expose_secret())
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("X-Org-Id", &config.org_id);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-Id", id.as_str());
        }
        let response =
            match tokio::time::timeout(config.stream_open_timeout, Self::send(request)).await {
                Ok(response) => response?,
                Err(_) => {
                    lease.saturated();
                    return Err(SalesforceError::Transport(
                        "the event stream did not answer in time".to_owned(),
                    ));
                }
            };
        lease.opened();
        Ok(SseConnection::new(response, lease))
    }
}

fn attributes_map(attributes: &RoutingAttributes) -> BTreeMap<&str, &str> {
    attributes.iter().collect()
}

/// A download error: the policy's refusal (of a redirect, or of a name's addresses) is final
/// and says why; anything else is a transport failure worth retrying.
fn refused_or_transport(error: reqwest::Error) -> SalesforceError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<AttachmentRefused>() {
            return SalesforceError::Request(refused.to_string());
        }
        // A name refused by the resolver, for what it resolved to.
        if let Some(refused) = current.downcast_ref::<handover_egress::Refused>() {
            return SalesforceError::Request(AttachmentRefused::from(refused.clone()).to_string());
        }
        source = current.source();
    }
    if error.is_redirect() {
        return SalesforceError::Request("the attachment's redirects were refused".to_owned());
    }
    SalesforceError::transport(error)
}

fn new_session_fields(attributes: &RoutingAttributes) -> wire::NewSession<'_> {
    wire::NewSession {
        is_new_messaging_session: true,
        routing_attributes: attributes_map(attributes),
    }
}

/// A token response into the core's `IssuedToken`: the expiry from the JWT's `exp`, the
/// subject from `context.endUser.subject` (or the JWT's `sub`).
fn issued_token(body: wire::TokenResponse) -> Result<IssuedToken, SalesforceError> {
    let claims = body
        .access_token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .ok_or_else(|| SalesforceError::Decode("accessToken is not a JWT".to_owned()))?;
    let claims: wire::TokenClaims = serde_json::from_slice(&claims).map_err(|_| {
        SalesforceError::Decode("the access token's claims have no numeric exp".to_owned())
    })?;
    let subject = body
        .context
        .and_then(|context| context.end_user)
        .and_then(|user| user.subject)
        .or(claims.sub)
        .unwrap_or_default();
    let subject = if subject.contains("/AUTH/") {
        Subject::Verified(subject)
    } else {
        Subject::Anonymous(subject)
    };
    let last_event_id = match body.last_event_id {
        Some(wire::EventIdValue::Text(id)) => EventId::new(id).ok(),
        Some(wire::EventIdValue::Number(id)) => EventId::new(id.to_string()).ok(),
        None => None,
    };
    Ok(IssuedToken {
        token: AccessToken::new(body.access_token),
        expires_at: Timestamp::from_unix_secs(claims.exp),
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
            SalesforceRequest::RenewToken(kind) => {
                let identity = match kind {
                    MintKind::Guest => None,
                    MintKind::Verified(identity) => Some(identity),
                };
                Ok(SalesforceResponse::Token(
                    self.mint(identity, Turn::Renewal).await?,
                ))
            }
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
                from,
            } => {
                let window = EntryWindow {
                    before: *before,
                    from: *from,
                };
                Ok(SalesforceResponse::Entries(
                    self.list_entries(token()?, *conversation_id, window, *limit)
                        .await?,
                ))
            }
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
