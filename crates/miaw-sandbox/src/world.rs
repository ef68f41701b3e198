//! The sandbox's state and every rule of the simulated Salesforce. No HTTP here: the HTTP
//! layer parses requests, calls these methods with the current time, and renders the results.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::config::{
    DeploymentConfig, SandboxConfig, ScriptedAgent, TimeBounds, UserEntryIdentifier,
};
use crate::faults::Faults;
use crate::jwt::{Claims, JwtError, Signer};
use crate::payload::{self, AttachmentJson, Participant};

/// An error as Salesforce answers it: a status and a JSON body with a `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub(crate) status: u16,
    /// The `message` of the body.
    pub(crate) message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    fn not_found() -> Self {
        Self::new(404, "The requested resource does not exist.")
    }
}

/// Something the HTTP layer schedules after a call: the scripted agent's next move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Followup {
    /// Accept the conversation after a delay.
    Accept {
        /// The conversation.
        conversation: String,
        /// The agent.
        agent: ScriptedAgent,
    },
    /// Reply to a user message after a delay.
    Reply {
        /// The conversation.
        conversation: String,
        /// The user's text.
        text: String,
        /// The agent.
        agent: ScriptedAgent,
    },
}

/// One event in a subject's log.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// The SSE id.
    pub(crate) id: u64,
    /// The SSE event name.
    pub(crate) name: Cow<'static, str>,
    /// The SSE `data` (the envelope, with `entryPayload` as a JSON string).
    pub(crate) data: String,
    /// How the stream carries it.
    pub(crate) delivery: Delivery,
}

/// How an event travels on the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// As it is.
    Intact,
    /// Not at all; only the entries list has it.
    Withheld,
    /// With its `data` cut in half, so that it is no longer JSON.
    Garbled,
}

/// A subject's event log and the signal that it grew.
#[derive(Debug)]
pub(crate) struct SubjectLog {
    /// Every event, oldest first.
    pub(crate) events: Vec<Event>,
    /// The subject's conversations.
    pub(crate) conversations: Vec<String>,
    /// The number of events, for streams waiting for more.
    pub(crate) grown: watch::Sender<usize>,
}

/// A stored file (uploaded by the user or attached by the agent).
#[derive(Clone, Debug)]
pub(crate) struct StoredFile {
    /// File name.
    pub(crate) name: String,
    /// MIME type.
    pub(crate) mime_type: String,
    /// Content.
    pub(crate) bytes: Vec<u8>,
}

/// One conversation.
#[derive(Clone, Debug)]
pub(crate) struct Conversation {
    /// Its id.
    pub(crate) id: String,
    /// The end user's subject.
    pub(crate) subject: String,
    /// The org.
    pub(crate) org_id: String,
    /// The deployment.
    pub(crate) developer_name: String,
    /// Pre-chat values, as given.
    pub(crate) routing_attributes: Map<String, Value>,
    /// Created, epoch ms.
    pub(crate) started_ms: u64,
    /// Closed, epoch ms.
    pub(crate) closed_ms: Option<u64>,
    /// The messaging session's status: New, Waiting, Active, Inactive, Ended.
    pub(crate) session: &'static str,
    /// The messaging session's id (a new session gets a new one).
    pub(crate) session_id: String,
    /// When the current session started, epoch ms.
    pub(crate) session_started_ms: u64,
    /// ROUTED, NEEDS_ROUTING, INITIAL, TRANSFER.
    pub(crate) routing_status: &'static str,
    /// The agent assigned, if any.
    pub(crate) agent: Option<Participant>,
    /// A Salesforce bot (Einstein or Agentforce) in the conversation, if any.
    pub(crate) bot: Option<Participant>,
    /// Entries, oldest first, with `entryPayload` as an object.
    pub(crate) entries: Vec<Value>,
    /// Client message ids seen (a repeat is a 409).
    pub(crate) message_ids: HashSet<String>,
    /// Inbound message times, for the 22-per-minute limit.
    pub(crate) inbound: VecDeque<u64>,
    /// Faults for this conversation only.
    pub(crate) faults: Faults,
    /// The MessagingSession record id.
    pub(crate) record_id: String,
    /// Replies the scripted agent has sent.
    pub(crate) scripted_replies: u32,
}

impl Conversation {
    fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }
}

/// The whole simulated Salesforce.
#[derive(Debug)]
pub(crate) struct World {
    config: SandboxConfig,
    public_url: String,
    signer: Signer,
    revoked: HashSet<String>,
    /// Tokens of these subjects issued up to this counter value count as expired.
    expired_subjects: HashMap<String, u64>,
    /// Every token issued up to this counter value counts as expired.
    expired_through: u64,
    next_token: u64,
    /// Access tokens minted (continuations not counted), by kind.
    minted: Minted,
    token_requests: HashMap<String, VecDeque<u64>>,
    subjects: HashMap<String, SubjectLog>,
    conversations: BTreeMap<String, Conversation>,
    files: HashMap<String, StoredFile>,
    scripted: HashMap<String, ScriptedAgent>,
    /// Faults for everything.
    pub(crate) faults: Faults,
    next_event: u64,
    next_record: u64,
    last_time: u64,
    /// Entries recorded now share the last one's millisecond (a burst).
    same_millisecond: bool,
    /// When things happened, for benchmarks (`GET /control/timings`).
    timings: Vec<Timing>,
    /// Event streams being served, by stream number (`GET /control/streams`).
    streams: HashMap<u64, OpenStream>,
    next_stream: u64,
}

/// One thing that happened, timed in Unix microseconds, for benchmarks: a conversation
/// created, a user's text received, an agent's text posted.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Timing {
    /// `created`, `user` or `agent`.
    pub(crate) kind: &'static str,
    /// The conversation.
    pub(crate) conversation: String,
    /// The text of a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// When, in Unix microseconds.
    pub(crate) at_us: u64,
}

/// An event stream being served.
#[derive(Clone, Debug)]
pub(crate) struct OpenStream {
    /// Whose.
    pub(crate) subject: String,
    /// Since when, in Unix microseconds.
    pub(crate) opened_us: u64,
}

/// A token response.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IssuedToken {
    /// The JWT.
    pub(crate) access_token: String,
    /// The subject.
    pub(crate) subject: String,
    /// The subject's latest event id.
    pub(crate) last_event_id: String,
    /// Expiry, epoch seconds.
    pub(crate) expires_at: u64,
}

/// Parameters of an entries listing.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntriesQuery {
    /// At most this many (default 20, at most 50).
    pub(crate) limit: Option<u32>,
    /// Entries at or after, epoch ms.
    pub(crate) start_timestamp: Option<u64>,
    /// Entries at or before, epoch ms.
    pub(crate) end_timestamp: Option<u64>,
    /// `FromStart` (oldest first) or `FromEnd` (newest first, the default).
    pub(crate) direction: Option<String>,
    /// Only these entry types.
    pub(crate) entry_type_filter: Option<Vec<String>>,
}

/// What an agent sends.
#[derive(Clone, Debug)]
pub(crate) enum AgentContent {
    /// Text.
    Text(String),
    /// Files (stored by the sandbox and served at `/files/{id}`), with optional text.
    Attachments {
        /// The text.
        text: Option<String>,
        /// Name, MIME type and content of each file.
        files: Vec<(String, String, Vec<u8>)>,
    },
    /// Choices.
    Choices {
        /// `Buttons` or `QuickReplies`.
        style: String,
        /// The prompt.
        text: String,
        /// The option titles.
        options: Vec<String>,
    },
}

/// Access tokens minted, by what was asked for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Minted {
    /// Guest tokens (no identity token presented).
    pub(crate) guest: u64,
    /// Verified tokens (an identity token that verified).
    pub(crate) verified: u64,
    /// Guest tokens handed out for an identity token that did not verify (Salesforce's silent
    /// fallback).
    pub(crate) fallback: u64,
}

impl Minted {
    pub(crate) fn total(self) -> u64 {
        self.guest + self.verified + self.fallback
    }
}

/// A 15-character Salesforce record id with this key prefix (`005` a user, `0Xx` a bot).
fn salesforce_id(prefix: &str) -> String {
    format!("{prefix}{:012}", fastrand::u64(..1_000_000_000_000))
}

pub(crate) fn random_uuid() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Whether `value` is a lowercase, hyphenated UUID v4, as Salesforce requires.
pub(crate) fn is_lowercase_uuid_v4(value: &str) -> bool {
    uuid::Uuid::try_parse(value).is_ok_and(|uuid| {
        uuid.hyphenated().to_string() == value
            && uuid.get_version_num() == 4
            && uuid.get_variant() == uuid::Variant::RFC4122
    })
}

/// Salesforce's answer to a conversation id that is not a lowercase UUID v4.
/// The current time in Unix microseconds.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(crate) const UUID_MESSAGE: &str = "Specify the conversationId in UUID format.";

impl World {
    /// A world for `config`, telling clients about `public_url`.
    pub(crate) fn new(config: SandboxConfig, public_url: String) -> Self {
        let scripted = config
            .deployments
            .iter()
            .filter_map(|d| {
                d.scripted_agent
                    .clone()
                    .map(|agent| (d.developer_name.clone(), agent))
            })
            .collect();
        Self {
            config,
            public_url,
            signer: Signer::random(),
            revoked: HashSet::new(),
            expired_subjects: HashMap::new(),
            expired_through: 0,
            next_token: 0,
            minted: Minted::default(),
            token_requests: HashMap::new(),
            subjects: HashMap::new(),
            conversations: BTreeMap::new(),
            files: HashMap::new(),
            scripted,
            faults: Faults::default(),
            next_event: 1,
            next_record: 1,
            last_time: 0,
            same_millisecond: false,
            timings: Vec::new(),
            streams: HashMap::new(),
            next_stream: 1,
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The deployments served.
    pub(crate) fn deployments(&self) -> &[DeploymentConfig] {
        &self.config.deployments
    }

    /// The channel's `authMode` in token responses: `Auth` when the sandbox verifies users
    /// (identity keys are configured), `UnAuth` otherwise. It describes the deployment, so a
    /// guest token and a verified token of one sandbox report the same value.
    pub(crate) fn auth_mode(&self) -> &'static str {
        if self.config.identity_keys.is_empty() {
            "UnAuth"
        } else {
            "Auth"
        }
    }

    // ---- tokens -----------------------------------------------------------------------------

    /// Mints an access token. `identity` is the customer identity token of the authenticated
    /// flow; one that does not verify silently yields a guest token, as Salesforce does.
    pub(crate) fn mint_token(
        &mut self,
        now_ms: u64,
        org_id: &str,
        developer_name: &str,
        identity: Option<&str>,
    ) -> Result<IssuedToken, ApiError> {
        // Salesforce keys everything on the 15-character org id.
        let org_id = org_id.get(..15).unwrap_or(org_id);
        if self.config.deployment(org_id, developer_name).is_none() {
            return Err(ApiError::bad_request(
                "Invalid deployment: no Embedded Service deployment with this orgId and esDeveloperName.",
            ));
        }
        let window = self.token_requests.entry(org_id.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|at| now_ms.saturating_sub(*at) >= 60_000)
        {
            window.pop_front();
        }
        if window.len() >= self.config.token_requests_per_minute as usize {
            return Err(ApiError::new(
                429,
                "Too many requests: the access-token limit for this org was reached.",
            ));
        }
        window.push_back(now_ms);
        let verified = identity.and_then(|token| {
            crate::jwt::verify_identity(
                token,
                &self.config.identity_keys,
                self.config.identity_issuer.as_deref(),
                now_ms / 1000,
            )
        });
        let was_verified = verified.is_some();
        let (subject, lifetime) = match verified {
            Some(user) => (
                format!("v2/iamessage/AUTH/SandboxKeyset/uid:{user}"),
                self.config.verified_token_lifetime_secs,
            ),
            None => (
                format!("v2/iamessage/ANON/{}", random_uuid()),
                self.config.guest_token_lifetime_secs,
            ),
        };
        let expires_at = now_ms / 1000 + lifetime;
        match (identity.is_some(), was_verified) {
            (false, _) => self.minted.guest += 1,
            (true, true) => self.minted.verified += 1,
            (true, false) => self.minted.fallback += 1,
        }
        Ok(self.issue(now_ms, org_id, developer_name, subject, expires_at))
    }

    /// How many access tokens were minted so far (continuations not counted).
    pub(crate) fn minted(&self) -> Minted {
        self.minted
    }

    fn issue(
        &mut self,
        now_ms: u64,
        org_id: &str,
        developer_name: &str,
        subject: String,
        expires_at: u64,
    ) -> IssuedToken {
        let claims = Claims {
            sub: subject.clone(),
            org_id: org_id.to_owned(),
            developer_name: developer_name.to_owned(),
            client_id: random_uuid(),
            jti: random_uuid(),
            iat: now_ms / 1000,
            seq: {
                self.next_token += 1;
                self.next_token
            },
            exp: expires_at,
        };
        let log = self.subject_log(&subject);
        let last_event_id = log.events.last().map_or(0, |event| event.id).to_string();
        IssuedToken {
            access_token: self.signer.sign(&claims),
            subject,
            last_event_id,
            expires_at,
        }
    }

    /// The claims of a bearer token, or 401.
    pub(crate) fn authorize(&self, now_ms: u64, bearer: Option<&str>) -> Result<Claims, ApiError> {
        let unauthorized = |message: &str| ApiError::new(401, message);
        let token = bearer.ok_or_else(|| unauthorized("Missing bearer token."))?;
        let claims = self
            .signer
            .verify(token, now_ms / 1000)
            .map_err(|error| match error {
                JwtError::Expired => unauthorized("Jwt is expired"),
                JwtError::Malformed | JwtError::BadSignature => unauthorized("Invalid token."),
            })?;
        let force_expired = claims.seq <= self.expired_through
            || self
                .expired_subjects
                .get(&claims.sub)
                .is_some_and(|through| claims.seq <= *through);
        if force_expired {
            return Err(unauthorized("Jwt is expired"));
        }
        if self.revoked.contains(&claims.jti) {
            return Err(unauthorized("The token was revoked."));
        }
        Ok(claims)
    }

    /// A continuation token: same subject, same expiry, a new client id.
    pub(crate) fn continuation(&mut self, now_ms: u64, claims: &Claims) -> IssuedToken {
        self.issue(
            now_ms,
            &claims.org_id.clone(),
            &claims.developer_name.clone(),
            claims.sub.clone(),
            claims.exp,
        )
    }

    /// Revokes a verified user's token.
    pub(crate) fn revoke(&mut self, claims: &Claims) -> Result<(), ApiError> {
        if !claims.sub.contains("/AUTH/") {
            return Err(ApiError::bad_request(
                "Only tokens of verified users can be revoked.",
            ));
        }
        self.revoked.insert(claims.jti.clone());
        Ok(())
    }

    /// Makes tokens expire now: every token, or those of one subject (fault injection).
    /// Tokens issued after this moment work again.
    pub(crate) fn expire_tokens(&mut self, subject: Option<&str>) {
        match subject {
            Some(subject) => {
                self.expired_subjects
                    .insert(subject.to_owned(), self.next_token);
            }
            None => self.expired_through = self.next_token,
        }
    }

    // ---- conversations ----------------------------------------------------------------------

    fn deployment_check(claims: &Claims, developer_name: Option<&str>) -> Result<(), ApiError> {
        match developer_name {
            None => Err(ApiError::bad_request("esDeveloperName is required.")),
            Some(name) if name != claims.developer_name => Err(ApiError::bad_request(
                "The esDeveloperName does not match the access token's deployment.",
            )),
            Some(_) => Ok(()),
        }
    }

    /// Creates a conversation; routing starts at once.
    pub(crate) fn create_conversation(
        &mut self,
        now_ms: u64,
        claims: &Claims,
        conversation_id: &str,
        developer_name: &str,
        routing_attributes: Map<String, Value>,
    ) -> Result<Vec<Followup>, ApiError> {
        if !is_lowercase_uuid_v4(conversation_id) {
            return Err(ApiError::bad_request(UUID_MESSAGE));
        }
        Self::deployment_check(claims, Some(developer_name))?;
        if let Some((key, _)) = routing_attributes
            .iter()
            .find(|(_, value)| !value.is_string())
        {
            return Err(ApiError::bad_request(format!(
                "routingAttributes.{key} must be a string: pre-chat values map to text flow variables."
            )));
        }
        if self.conversations.contains_key(conversation_id) {
            return Err(ApiError::new(
                409,
                "A conversation with this conversationId already exists.",
            ));
        }
        let record_id = self.next_record_id();
        let conversation = Conversation {
            id: conversation_id.to_owned(),
            subject: claims.sub.clone(),
            org_id: claims.org_id.clone(),
            developer_name: developer_name.to_owned(),
            routing_attributes,
            started_ms: now_ms,
            closed_ms: None,
            session: "New",
            session_id: record_id.clone(),
            session_started_ms: now_ms,
            routing_status: "INITIAL",
            agent: None,
            bot: None,
            entries: Vec::new(),
            message_ids: HashSet::new(),
            inbound: VecDeque::new(),
            faults: Faults::default(),
            record_id,
            scripted_replies: 0,
        };
        self.conversations
            .insert(conversation_id.to_owned(), conversation);
        self.subject_log(&claims.sub)
            .conversations
            .push(conversation_id.to_owned());
        self.set_session(now_ms, conversation_id, "Waiting", None);
        let record_id = self.conversation(conversation_id)?.record_id.clone();
        let entry_id = random_uuid();
        let routing = payload::routing_result(&entry_id, "Initial", None, None, &record_id);
        self.append(
            now_ms,
            conversation_id,
            &Participant::router(),
            routing,
            vec![record_id],
        );
        if self.config.queue_notifications {
            let waiting = self
                .conversations
                .values()
                .filter(|c| {
                    c.developer_name == developer_name
                        && c.is_open()
                        && c.session == "Waiting"
                        && c.agent.is_none()
                })
                .count();
            let position = u32::try_from(waiting).unwrap_or(u32::MAX);
            self.queue_update(
                now_ms,
                conversation_id,
                position,
                Some(position.saturating_mul(60)),
            )?;
        }
        self.time("created", conversation_id, None);
        Ok(self.scripted_accept(conversation_id))
    }

    fn next_record_id(&mut self) -> String {
        let id = format!("0Mw{:012}", self.next_record);
        self.next_record += 1;
        id
    }

    fn scripted_accept(&self, conversation_id: &str) -> Vec<Followup> {
        self.conversations
            .get(conversation_id)
            .and_then(|c| self.scripted.get(&c.developer_name))
            .map(|agent| Followup::Accept {
                conversation: conversation_id.to_owned(),
                agent: agent.clone(),
            })
            .into_iter()
            .collect()
    }

    /// The conversation, if it exists.
    pub(crate) fn conversation(&self, conversation_id: &str) -> Result<&Conversation, ApiError> {
        self.conversations
            .get(conversation_id)
            .ok_or_else(ApiError::not_found)
    }

    fn owned_conversation(
        &self,
        claims: &Claims,
        conversation_id: &str,
    ) -> Result<&Conversation, ApiError> {
        if !is_lowercase_uuid_v4(conversation_id) {
            return Err(ApiError::bad_request(UUID_MESSAGE));
        }
        self.conversations
            .get(conversation_id)
            .filter(|c| c.subject == claims.sub)
            .ok_or_else(ApiError::not_found)
    }

    /// The end user's conversations.
    pub(crate) fn list_conversations(
        &self,
        claims: &Claims,
        include_closed: bool,
        limit: Option<u32>,
    ) -> Value {
        let mine: Vec<&Conversation> = self
            .conversations
            .values()
            .filter(|c| c.subject == claims.sub)
            .collect();
        let open = mine.iter().filter(|c| c.is_open()).count();
        let closed = mine.len() - open;
        let limit = limit.unwrap_or(20).clamp(1, 50) as usize;
        let mut listed: Vec<&&Conversation> = mine
            .iter()
            .filter(|c| include_closed || c.is_open())
            .collect();
        listed.sort_by_key(|c| c.started_ms);
        let conversations: Vec<Value> = listed
            .into_iter()
            .take(limit)
            .map(|c| {
                json!({
                    "conversationId": c.id,
                    "startTimestamp": c.started_ms,
                    "endTimestamp": c.closed_ms.unwrap_or(0),
                })
            })
            .collect();
        json!({
            "openConversationsFound": open,
            "closedConversationsFound": closed,
            "conversations": conversations,
        })
    }

    /// The routing status of a conversation.
    pub(crate) fn routing_status(
        &self,
        claims: &Claims,
        conversation_id: &str,
    ) -> Result<Value, ApiError> {
        let conversation = self.owned_conversation(claims, conversation_id)?;
        Ok(
            json!({ "conversationId": conversation.id, "routingStatus": conversation.routing_status }),
        )
    }

    /// Closes a conversation from the customer side: `CloseConversation`, then the session
    /// ends.
    pub(crate) fn close_conversation(
        &mut self,
        now_ms: u64,
        claims: &Claims,
        conversation_id: &str,
        developer_name: Option<&str>,
    ) -> Result<(), ApiError> {
        Self::deployment_check(claims, developer_name)?;
        let conversation = self.owned_conversation(claims, conversation_id)?;
        if !conversation.is_open() {
            return Ok(());
        }
        let subject = conversation.subject.clone();
        let entry_id = random_uuid();
        let close = payload::close_conversation(&entry_id, conversation_id);
        self.append(
            now_ms,
            conversation_id,
            &Participant::end_user(&subject),
            close,
            Vec::new(),
        );
        // A session that already ended has no status change left to report.
        if self.conversation(conversation_id)?.session != "Ended" {
            self.end_session(now_ms, conversation_id, "EndUser");
        }
        if let Some(conversation) = self.conversations.get_mut(conversation_id) {
            conversation.closed_ms = Some(now_ms);
            conversation.agent = None;
            conversation.bot = None;
        }
        Ok(())
    }

    /// Ends the messaging session but keeps the conversation; the next message needs
    /// `isNewMessagingSession`.
    pub(crate) fn end_messaging_session(
        &mut self,
        now_ms: u64,
        claims: &Claims,
        conversation_id: &str,
        developer_name: Option<&str>,
    ) -> Result<(), ApiError> {
        Self::deployment_check(claims, developer_name)?;
        let conversation = self.owned_conversation(claims, conversation_id)?;
        if !conversation.is_open() {
            return Err(ApiError::not_found());
        }
        if conversation.session != "Ended" {
            self.remove_agent(now_ms, conversation_id, "NEEDS_ROUTING");
            self.end_session(now_ms, conversation_id, "EndUser");
        }
        Ok(())
    }

    /// Lists entries with `entryPayload` as an object.
    pub(crate) fn list_entries(
        &self,
        claims: &Claims,
        conversation_id: &str,
        query: &EntriesQuery,
    ) -> Result<Value, ApiError> {
        let conversation = self.owned_conversation(claims, conversation_id)?;
        let limit = query.limit.unwrap_or(20).clamp(1, 50) as usize;
        let exclusive = self.config.entry_time_bounds == TimeBounds::Exclusive;
        let matches = |entry: &&Value| {
            let time = entry["transcriptedTimestamp"].as_u64().unwrap_or(0);
            let entry_type = entry["entryType"].as_str().unwrap_or("");
            let after_start = |start: u64| {
                if exclusive {
                    time > start
                } else {
                    time >= start
                }
            };
            let before_end = |end: u64| if exclusive { time < end } else { time <= end };
            query.start_timestamp.is_none_or(after_start)
                && query.end_timestamp.is_none_or(before_end)
                && query
                    .entry_type_filter
                    .as_ref()
                    .is_none_or(|types| types.iter().any(|t| t == entry_type))
        };
        let selected: Vec<&Value> = conversation.entries.iter().filter(matches).collect();
        let entries: Vec<Value> = match query.direction.as_deref() {
            Some("FromStart") => selected.into_iter().take(limit).cloned().collect(),
            // Newest first.
            Some(_) | None => selected.into_iter().rev().take(limit).cloned().collect(),
        };
        Ok(json!({ "conversationEntries": entries }))
    }

    /// A user message. Returns the scripted agent's reply, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_message(
        &mut self,
        now_ms: u64,
        claims: &Claims,
        conversation_id: &str,
        developer_name: &str,
        message_id: &str,
        content: UserContent,
        new_session: Option<Option<Map<String, Value>>>,
    ) -> Result<(Value, Vec<Followup>), ApiError> {
        Self::deployment_check(claims, Some(developer_name))?;
        if uuid::Uuid::try_parse(message_id).is_err() {
            return Err(ApiError::bad_request(
                "Specify the message id in UUID format.",
            ));
        }
        let conversation = self.owned_conversation(claims, conversation_id)?;
        if !conversation.is_open() {
            return Err(ApiError::not_found());
        }
        if conversation.message_ids.contains(message_id) {
            return Err(ApiError::new(
                409,
                "A message with this id was already sent.",
            ));
        }
        let limit = self.config.messages_per_conversation_per_minute as usize;
        let recent = conversation
            .inbound
            .iter()
            .filter(|at| now_ms.saturating_sub(**at) < 60_000)
            .count();
        if recent >= limit {
            return Err(ApiError::new(
                429,
                "Too many requests: at most 22 messages per conversation per minute.",
            ));
        }
        let session_ended = conversation.session == "Ended";
        if session_ended && new_session.is_none() {
            return Err(ApiError::new(
                417,
                "No messaging session exists. Send the message with isNewMessagingSession.",
            ));
        }
        if matches!(new_session, Some(None)) {
            return Err(ApiError::bad_request(
                "routingAttributes are required with isNewMessagingSession.",
            ));
        }
        if let Some(Some(attributes)) = &new_session
            && let Some((key, _)) = attributes.iter().find(|(_, value)| !value.is_string())
        {
            return Err(ApiError::bad_request(format!(
                "routingAttributes.{key} must be a string."
            )));
        }
        let subject = conversation.subject.clone();
        let previous_session = conversation.session;
        if let Some(conversation) = self.conversations.get_mut(conversation_id) {
            conversation.message_ids.insert(message_id.to_owned());
            conversation.inbound.push_back(now_ms);
            while conversation.inbound.len() > limit {
                conversation.inbound.pop_front();
            }
        }
        let mut followups = Vec::new();
        if let Some(Some(attributes)) = new_session
            && session_ended
        {
            // A new session on the same conversation: routed again with these values.
            let record_id = self.next_record_id();
            if let Some(conversation) = self.conversations.get_mut(conversation_id) {
                conversation.routing_attributes = attributes;
                conversation.session_id = record_id.clone();
                conversation.session_started_ms = now_ms;
                conversation.routing_status = "INITIAL";
                conversation.record_id = record_id.clone();
                conversation.scripted_replies = 0;
            }
            self.set_session(now_ms, conversation_id, "Waiting", None);
            let entry_id = random_uuid();
            let routing = payload::routing_result(&entry_id, "Initial", None, None, &record_id);
            self.append(
                now_ms,
                conversation_id,
                &Participant::router(),
                routing,
                vec![record_id],
            );
            followups.extend(self.scripted_accept(conversation_id));
        }
        let user = Participant::end_user(&subject);
        let entry_id = match self.config.user_entry_identifier {
            UserEntryIdentifier::MessageId => message_id.to_owned(),
            UserEntryIdentifier::Generated => random_uuid(),
        };
        let (entry, text) = match content {
            UserContent::Text { text, in_reply_to } => (
                payload::text_message(&entry_id, message_id, &text, in_reply_to.as_deref()),
                text,
            ),
            UserContent::File {
                file_id,
                name,
                mime_type,
                bytes,
                text,
            } => {
                let url = format!("{}/files/{file_id}", self.public_url);
                self.files.insert(
                    file_id.clone(),
                    StoredFile {
                        name: name.clone(),
                        mime_type: mime_type.clone(),
                        bytes,
                    },
                );
                let attachment = AttachmentJson {
                    id: file_id,
                    name: name.clone(),
                    mime_type,
                    url,
                };
                (
                    payload::attachments_message(
                        &entry_id,
                        message_id,
                        text.as_deref(),
                        &[attachment],
                    ),
                    name,
                )
            }
        };
        self.append(now_ms, conversation_id, &user, entry, Vec::new());
        self.time("user", conversation_id, Some(text.clone()));
        if previous_session == "Inactive" {
            // A customer message after Inactive moves the session to Waiting; it is routed again.
            self.set_session(now_ms, conversation_id, "Waiting", None);
            if let Some(conversation) = self.conversations.get_mut(conversation_id) {
                conversation.routing_status = "NEEDS_ROUTING";
            }
            followups.extend(self.scripted_accept(conversation_id));
        }
        let recipient = self
            .conversations
            .get(conversation_id)
            .and_then(|c| c.agent.clone())
            .unwrap_or_else(Participant::system);
        let ack_id = random_uuid();
        let delivered = payload::acknowledgement(&ack_id, false, &entry_id, &recipient, now_ms);
        self.append(
            now_ms,
            conversation_id,
            &recipient,
            delivered,
            vec![entry_id],
        );
        if let Some(conversation) = self.conversations.get(conversation_id)
            && let Some(agent) = self.scripted.get(&conversation.developer_name)
        {
            if conversation.agent.is_some() {
                followups.push(Followup::Reply {
                    conversation: conversation_id.to_owned(),
                    text,
                    agent: agent.clone(),
                });
            } else {
                // Say so: a benchmark waiting for the reply must be able to tell why none came.
                tracing::info!(
                    conversation = conversation_id,
                    session = conversation.session,
                    "no agent assigned yet: no scripted reply to this message"
                );
            }
        }
        let response =
            json!({ "conversationEntries": [{ "id": message_id, "clientTimestamp": now_ms }] });
        Ok((response, followups))
    }

    /// A user typing indicator.
    pub(crate) fn user_typing(
        &mut self,
        now_ms: u64,
        claims: &Claims,
        conversation_id: &str,
        started: bool,
        entry_id: &str,
    ) -> Result<(), ApiError> {
        let conversation = self.owned_conversation(claims, conversation_id)?;
        if !conversation.is_open() {
            return Err(ApiError::not_found());
        }
        let user = Participant::end_user(&conversation.subject.clone());
        let entry = payload::typing(entry_id, started, now_ms);
        self.append(now_ms, conversation_id, &user, entry, Vec::new());
        Ok(())
    }

    /// The user's delivery or read receipts of agent entries.
    pub(crate) fn user_acknowledges(
        &mut self,
        now_ms: u64,
        claims: &Claims,
        conversation_id: &str,
        acks: &[(String, bool, String)],
    ) -> Result<(), ApiError> {
        let conversation = self.owned_conversation(claims, conversation_id)?;
        let user = Participant::end_user(&conversation.subject.clone());
        let known: HashSet<String> = conversation
            .entries
            .iter()
            .filter_map(|e| e["identifier"].as_str().map(str::to_owned))
            .collect();
        if let Some((_, _, missing)) = acks.iter().find(|(_, _, entry)| !known.contains(entry)) {
            return Err(ApiError::bad_request(format!(
                "Unknown conversationEntryId {missing}."
            )));
        }
        for (ack_id, read, entry) in acks {
            let value = payload::acknowledgement(ack_id, *read, entry, &user, now_ms);
            self.append(now_ms, conversation_id, &user, value, vec![entry.clone()]);
        }
        Ok(())
    }

    /// A stored file.
    pub(crate) fn file(&self, file_id: &str) -> Option<&StoredFile> {
        self.files.get(file_id)
    }

    /// The conversation's transcript as a minimal PDF.
    pub(crate) fn transcript(
        &self,
        claims: &Claims,
        conversation_id: &str,
        developer_name: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        Self::deployment_check(claims, developer_name)?;
        let conversation = self.owned_conversation(claims, conversation_id)?;
        let lines: Vec<String> = conversation
            .entries
            .iter()
            .filter(|e| e["entryType"] == "Message")
            .map(|e| {
                let who = e["senderDisplayName"].as_str().unwrap_or("?");
                let text = e["entryPayload"]["abstractMessage"]["staticContent"]["text"]
                    .as_str()
                    .unwrap_or("(attachment)");
                format!("{who}: {text}")
            })
            .collect();
        Ok(crate::pdf::transcript(&lines))
    }

    // ---- the agent's side (control API) -----------------------------------------------------

    fn open_conversation_mut(
        &mut self,
        conversation_id: &str,
    ) -> Result<&mut Conversation, ApiError> {
        self.conversations
            .get_mut(conversation_id)
            .filter(|c| c.is_open())
            .ok_or_else(ApiError::not_found)
    }

    /// An agent accepts the work: participant added, session Active. A Salesforce bot
    /// (`bot`) joins the same way; a human agent accepting after a bot takes over from it
    /// (the bot is removed first).
    pub(crate) fn agent_accepts(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        name: &str,
        bot: bool,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        if conversation.session == "Ended" {
            return Err(ApiError::bad_request("The messaging session has ended."));
        }
        if conversation.agent.is_some() {
            return Err(ApiError::new(409, "An agent is already assigned."));
        }
        if bot && conversation.bot.is_some() {
            return Err(ApiError::new(409, "A bot is already in the conversation."));
        }
        let joining = if bot {
            Participant::chatbot(name, &salesforce_id("0Xx"))
        } else {
            Participant::agent(name, &salesforce_id("005"))
        };
        let replaced_bot = if bot {
            conversation.bot = Some(joining.clone());
            None
        } else {
            conversation.agent = Some(joining.clone());
            conversation.bot.take()
        };
        conversation.routing_status = "ROUTED";
        let was_active = conversation.session == "Active";
        if let Some(replaced) = replaced_bot {
            let change = payload::participant_changed(&random_uuid(), "remove", &replaced);
            self.append(now_ms, conversation_id, &replaced, change, Vec::new());
        }
        let entry_id = random_uuid();
        let change = payload::participant_changed(&entry_id, "add", &joining);
        self.append(now_ms, conversation_id, &joining, change, Vec::new());
        if !was_active {
            self.set_session(now_ms, conversation_id, "Active", None);
        }
        Ok(())
    }

    /// The agent (or a Salesforce bot, or an automated message) writes.
    pub(crate) fn agent_sends(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        content: AgentContent,
        role: &str,
    ) -> Result<String, ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        let sender = match role {
            "System" => Participant::system(),
            // The bot in the conversation, or (for an automated bot message without a join)
            // the sandbox's own.
            "Chatbot" => conversation
                .bot
                .clone()
                .unwrap_or_else(Participant::sandbox_bot),
            _ => conversation.agent.clone().ok_or_else(|| {
                ApiError::bad_request("No agent is assigned; accept the conversation first.")
            })?,
        };
        let entry_id = random_uuid();
        let message_id = random_uuid();
        let entry = match content {
            AgentContent::Text(text) => {
                let entry = payload::text_message(&entry_id, &message_id, &text, None);
                self.time("agent", conversation_id, Some(text));
                entry
            }
            AgentContent::Attachments { text, files } => {
                let mut attachments = Vec::new();
                for (name, mime_type, bytes) in files {
                    let id = random_uuid();
                    let url = format!("{}/files/{id}", self.public_url);
                    self.files.insert(
                        id.clone(),
                        StoredFile {
                            name: name.clone(),
                            mime_type: mime_type.clone(),
                            bytes,
                        },
                    );
                    attachments.push(AttachmentJson {
                        id,
                        name,
                        mime_type,
                        url,
                    });
                }
                if attachments.is_empty() {
                    return Err(ApiError::bad_request(
                        "An attachments message needs at least one file.",
                    ));
                }
                payload::attachments_message(&entry_id, &message_id, text.as_deref(), &attachments)
            }
            AgentContent::Choices {
                style,
                text,
                options,
            } => {
                if style != "Buttons" && style != "QuickReplies" {
                    return Err(ApiError::bad_request(
                        "style must be Buttons or QuickReplies.",
                    ));
                }
                if options.is_empty() {
                    return Err(ApiError::bad_request("choices need at least one option."));
                }
                let options: Vec<(String, String)> = options
                    .into_iter()
                    .map(|title| (random_uuid(), title))
                    .collect();
                payload::choices_message(&entry_id, &message_id, &style, &text, &options)
            }
        };
        self.append(now_ms, conversation_id, &sender, entry, Vec::new());
        Ok(entry_id)
    }

    /// The agent (or the bot in the conversation) types, or stops.
    pub(crate) fn agent_typing(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        started: bool,
        bot: bool,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        let agent = if bot {
            conversation
                .bot
                .clone()
                .ok_or_else(|| ApiError::bad_request("No bot is in the conversation."))?
        } else {
            conversation
                .agent
                .clone()
                .ok_or_else(|| ApiError::bad_request("No agent is assigned."))?
        };
        let entry = payload::typing(&random_uuid(), started, now_ms);
        self.append(now_ms, conversation_id, &agent, entry, Vec::new());
        Ok(())
    }

    /// The agent's console received or read one of the user's entries.
    pub(crate) fn agent_acknowledges(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        entry: &str,
        read: bool,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        let agent = conversation
            .agent
            .clone()
            .ok_or_else(|| ApiError::bad_request("No agent is assigned."))?;
        if !conversation
            .entries
            .iter()
            .any(|e| e["identifier"] == entry)
        {
            return Err(ApiError::bad_request("Unknown entry."));
        }
        let value = payload::acknowledgement(&random_uuid(), read, entry, &agent, now_ms);
        self.append(
            now_ms,
            conversation_id,
            &agent,
            value,
            vec![entry.to_owned()],
        );
        Ok(())
    }

    /// A transfer: the agent is removed, a Transfer routing result follows, the routing status
    /// is TRANSFER. With `to`, the new agent accepts at once.
    pub(crate) fn transfer(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        to: Option<&str>,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        if conversation.agent.is_none() && conversation.bot.is_none() {
            return Err(ApiError::bad_request("No agent is assigned."));
        }
        self.remove_agent(now_ms, conversation_id, "TRANSFER");
        let record_id = self.conversation(conversation_id)?.record_id.clone();
        let routing = payload::routing_result(&random_uuid(), "Transfer", None, None, &record_id);
        self.append(
            now_ms,
            conversation_id,
            &Participant::router(),
            routing,
            vec![record_id],
        );
        if let Some(to) = to {
            self.agent_accepts(now_ms, conversation_id, to, false)?;
        }
        Ok(())
    }

    /// The agent leaves without ending the session: removed, routing status NEEDS_ROUTING.
    pub(crate) fn agent_leaves(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        if conversation.agent.is_none() && conversation.bot.is_none() {
            return Err(ApiError::bad_request("No agent is assigned."));
        }
        self.remove_agent(now_ms, conversation_id, "NEEDS_ROUTING");
        Ok(())
    }

    /// The agent marks the customer inactive: session Inactive, agent removed. A later user
    /// message moves it to Waiting.
    pub(crate) fn mark_inactive(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        if conversation.session != "Active" {
            return Err(ApiError::bad_request(
                "Only an active session can be marked inactive.",
            ));
        }
        self.set_session(now_ms, conversation_id, "Inactive", None);
        self.remove_agent(now_ms, conversation_id, "NEEDS_ROUTING");
        Ok(())
    }

    /// The agent ends the messaging session: agent removed, session Ended, and no
    /// `CloseConversation` (only the customer side closes conversations).
    pub(crate) fn agent_ends(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
    ) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        if conversation.session == "Ended" {
            return Err(ApiError::bad_request(
                "The messaging session has already ended.",
            ));
        }
        self.remove_agent(now_ms, conversation_id, "NEEDS_ROUTING");
        self.end_session(now_ms, conversation_id, "Agent");
        Ok(())
    }

    /// Initial routing fails (failureType RoutingError).
    pub(crate) fn routing_fails(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        reason: Option<&str>,
    ) -> Result<(), ApiError> {
        let record_id = self
            .open_conversation_mut(conversation_id)?
            .record_id
            .clone();
        let reason = reason.unwrap_or("No agent or queue is available for this conversation.");
        let routing = payload::routing_result(
            &random_uuid(),
            "Initial",
            Some(("RoutingError", reason)),
            None,
            &record_id,
        );
        self.append(
            now_ms,
            conversation_id,
            &Participant::router(),
            routing,
            vec![record_id],
        );
        Ok(())
    }

    /// A queue position update, with an optional wait estimate (a routing result).
    pub(crate) fn queue_update(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        position: u32,
        wait_secs: Option<u32>,
    ) -> Result<(), ApiError> {
        let record_id = self
            .open_conversation_mut(conversation_id)?
            .record_id
            .clone();
        let entry = payload::queue_position(&random_uuid(), position, &record_id);
        self.append(
            now_ms,
            conversation_id,
            &Participant::router(),
            entry,
            Vec::new(),
        );
        if let Some(wait) = wait_secs {
            let routing =
                payload::routing_result(&random_uuid(), "Initial", None, Some(wait), &record_id);
            self.append(
                now_ms,
                conversation_id,
                &Participant::router(),
                routing,
                vec![record_id],
            );
        }
        Ok(())
    }

    /// Counts a scripted reply; returns whether the scripted agent should now end the session.
    pub(crate) fn scripted_reply_sent(
        &mut self,
        conversation_id: &str,
        agent: &ScriptedAgent,
    ) -> bool {
        let Some(conversation) = self.conversations.get_mut(conversation_id) else {
            return false;
        };
        conversation.scripted_replies += 1;
        agent
            .end_after_messages
            .is_some_and(|n| conversation.scripted_replies >= n)
    }

    /// Sets or clears the scripted agent of a deployment.
    pub(crate) fn set_scripted_agent(
        &mut self,
        developer_name: &str,
        agent: Option<ScriptedAgent>,
    ) -> Result<(), ApiError> {
        if !self
            .config
            .deployments
            .iter()
            .any(|d| d.developer_name == developer_name)
        {
            return Err(ApiError::not_found());
        }
        match agent {
            Some(agent) => self.scripted.insert(developer_name.to_owned(), agent),
            None => self.scripted.remove(developer_name),
        };
        Ok(())
    }

    /// Faults for one conversation.
    pub(crate) fn set_conversation_faults(
        &mut self,
        conversation_id: &str,
        faults: Faults,
    ) -> Result<(), ApiError> {
        self.conversations
            .get_mut(conversation_id)
            .ok_or_else(ApiError::not_found)?
            .faults = faults;
        Ok(())
    }

    /// The faults in effect for a conversation (its own combined with the global ones).
    pub(crate) fn faults_for(&self, conversation_id: Option<&str>) -> Faults {
        match conversation_id.and_then(|id| self.conversations.get(id)) {
            Some(conversation) => self.faults.combine(&conversation.faults),
            None => self.faults.clone(),
        }
    }

    /// Every conversation, for the console and tests.
    pub(crate) fn conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.conversations.values()
    }

    // ---- benchmark records -------------------------------------------------------------------

    /// Records when something happened (see [`Timing`]).
    fn time(&mut self, kind: &'static str, conversation: &str, text: Option<String>) {
        self.timings.push(Timing {
            kind,
            conversation: conversation.to_owned(),
            text,
            at_us: now_us(),
        });
    }

    /// The id of the newest event on any stream (0 before the first).
    pub(crate) fn latest_event_id(&self) -> u64 {
        self.next_event.saturating_sub(1)
    }

    /// The timings recorded from position `from` on.
    pub(crate) fn timings(&self, from: usize) -> &[Timing] {
        self.timings.get(from..).unwrap_or_default()
    }

    /// A stream of `subject` starts; its number, to pass to [`Self::stream_closed`].
    pub(crate) fn stream_opened(&mut self, subject: &str) -> u64 {
        let number = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(
            number,
            OpenStream {
                subject: subject.to_owned(),
                opened_us: now_us(),
            },
        );
        number
    }

    /// A stream ended.
    pub(crate) fn stream_closed(&mut self, number: u64) {
        self.streams.remove(&number);
    }

    /// The streams being served.
    pub(crate) fn open_streams(&self) -> impl Iterator<Item = &OpenStream> {
        self.streams.values()
    }

    // ---- events -----------------------------------------------------------------------------

    fn subject_log(&mut self, subject: &str) -> &mut SubjectLog {
        self.subjects
            .entry(subject.to_owned())
            .or_insert_with(|| SubjectLog {
                events: Vec::new(),
                conversations: Vec::new(),
                grown: watch::channel(0).0,
            })
    }

    /// The subject's log, for a stream (created empty if the subject has no events yet).
    pub(crate) fn subscribe(&mut self, subject: &str) -> watch::Receiver<usize> {
        self.subject_log(subject).grown.subscribe()
    }

    /// Events of `subject` after the event id `after`, and whether `after` was found.
    pub(crate) fn events_after(&self, subject: &str, after: u64) -> Vec<Event> {
        self.subjects
            .get(subject)
            .map(|log| {
                // Ids grow along the log.
                let start = log.events.partition_point(|event| event.id <= after);
                log.events[start..].to_vec()
            })
            .unwrap_or_default()
    }

    /// The faults that apply to the stream of `subject`: the global ones combined with those
    /// of each of the subject's conversations.
    pub(crate) fn stream_faults(&self, subject: &str) -> Faults {
        let mut faults = self.faults.clone();
        if let Some(log) = self.subjects.get(subject) {
            for conversation in log
                .conversations
                .iter()
                .filter_map(|id| self.conversations.get(id))
            {
                faults = faults.combine(&conversation.faults);
            }
        }
        faults
    }

    /// Transcript timestamps are strictly increasing, as Salesforce's are.
    fn server_time(&mut self, now_ms: u64) -> u64 {
        if !self.same_millisecond {
            self.last_time = now_ms.max(self.last_time + 1);
        }
        self.last_time
    }

    /// The next entry of the conversation goes to the entries list only, not to the stream.
    pub(crate) fn withhold_next(&mut self, conversation_id: &str) -> Result<(), ApiError> {
        let conversation = self.open_conversation_mut(conversation_id)?;
        conversation.faults.withhold_next_events += 1;
        Ok(())
    }

    /// The agent writes `texts` in one millisecond (as a busy Salesforce pod may record
    /// them); those whose index is in `withheld` go to the entries list only. Returns the
    /// entry ids, in order.
    pub(crate) fn agent_burst(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        texts: Vec<String>,
        withheld: &[usize],
    ) -> Result<Vec<String>, ApiError> {
        self.open_conversation_mut(conversation_id)?;
        let mut ids = Vec::with_capacity(texts.len());
        for (index, text) in texts.into_iter().enumerate() {
            if withheld.contains(&index) {
                self.withhold_next(conversation_id)?;
            }
            let sent = self.agent_sends(now_ms, conversation_id, AgentContent::Text(text), "Agent");
            // The first entry takes a new millisecond; the rest share it.
            self.same_millisecond = true;
            match sent {
                Ok(id) => ids.push(id),
                Err(error) => {
                    self.same_millisecond = false;
                    return Err(error);
                }
            }
        }
        self.same_millisecond = false;
        Ok(ids)
    }

    fn set_session(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        status: &'static str,
        ended_by: Option<&str>,
    ) {
        let Some(conversation) = self.conversations.get_mut(conversation_id) else {
            return;
        };
        let previous = std::mem::replace(&mut conversation.session, status);
        let channel = format!("{}_channel", conversation.developer_name);
        let value = payload::session_status_changed(
            &random_uuid(),
            conversation_id,
            &channel,
            &conversation.session_id.clone(),
            status,
            previous,
            conversation.session_started_ms,
            ended_by.map(|role| (now_ms, role)),
        );
        let record = conversation.record_id.clone();
        self.append(
            now_ms,
            conversation_id,
            &Participant::system(),
            value,
            vec![record],
        );
    }

    fn end_session(&mut self, now_ms: u64, conversation_id: &str, ended_by: &str) {
        self.set_session(now_ms, conversation_id, "Ended", Some(ended_by));
    }

    fn remove_agent(&mut self, now_ms: u64, conversation_id: &str, routing_status: &'static str) {
        let Some(conversation) = self.conversations.get_mut(conversation_id) else {
            return;
        };
        conversation.routing_status = routing_status;
        let leaving: Vec<Participant> = [conversation.agent.take(), conversation.bot.take()]
            .into_iter()
            .flatten()
            .collect();
        for participant in leaving {
            let change = payload::participant_changed(&random_uuid(), "remove", &participant);
            self.append(now_ms, conversation_id, &participant, change, Vec::new());
        }
    }

    /// Records an entry: in the conversation (payload as an object) and in the subject's
    /// event log (payload as a JSON string inside the envelope), then wakes the streams.
    fn append(
        &mut self,
        now_ms: u64,
        conversation_id: &str,
        sender: &Participant,
        entry_payload: Value,
        related: Vec<String>,
    ) {
        let time = self.server_time(now_ms);
        let Some(conversation) = self.conversations.get_mut(conversation_id) else {
            return;
        };
        let entry_type = entry_payload["entryType"]
            .as_str()
            .unwrap_or("Unknown")
            .to_owned();
        let identifier = entry_payload["id"]
            .as_str()
            .map_or_else(random_uuid, str::to_owned);
        let sender_json = sender.to_json();
        let mut entry = json!({
            "entryType": entry_type,
            "identifier": identifier,
            "entryPayload": entry_payload,
            "sender": sender_json,
            "senderDisplayName": sender.display_name,
            "clientTimestamp": time,
            "transcriptedTimestamp": time,
            "clientDuration": 0,
            "relatedRecords": related,
        });
        conversation.entries.push(entry.clone());
        let delivery = if take_one(&mut conversation.faults.withhold_next_events)
            || take_one(&mut self.faults.withhold_next_events)
        {
            Delivery::Withheld
        } else if take_one(&mut conversation.faults.garble_next_events)
            || take_one(&mut self.faults.garble_next_events)
        {
            Delivery::Garbled
        } else {
            Delivery::Intact
        };
        let subject = conversation.subject.clone();
        let channel = format!("{}_channel", conversation.developer_name);
        // On the stream, the payload travels as a JSON string.
        entry["entryPayload"] = Value::String(entry["entryPayload"].to_string());
        let envelope = json!({
            "channelPlatformKey": "sandbox",
            "channelType": "embedded_messaging",
            "channelAddressIdentifier": channel,
            "conversationId": conversation_id,
            "conversationEntry": entry,
        });
        let id = self.next_event;
        self.next_event += 1;
        let log = self.subject_log(&subject);
        log.events.push(Event {
            id,
            name: Cow::Borrowed(payload::event_name(&entry_type)),
            data: envelope.to_string(),
            delivery,
        });
        let length = log.events.len();
        log.grown.send_replace(length);
    }

    /// Emits an event that is not a conversation entry, with any name and data, on the
    /// stream of the conversation's subject: what a newer Salesforce release might send.
    pub(crate) fn emit_raw(
        &mut self,
        conversation_id: &str,
        name: String,
        data: String,
    ) -> Result<(), ApiError> {
        let conversation = self
            .conversations
            .get(conversation_id)
            .ok_or_else(ApiError::not_found)?;
        let subject = conversation.subject.clone();
        // A JSON object gets the conversation id it would carry; anything else goes as it is.
        let data = match serde_json::from_str::<Value>(&data) {
            Ok(Value::Object(mut object)) => {
                object
                    .entry("conversationId")
                    .or_insert_with(|| Value::String(conversation_id.to_owned()));
                Value::Object(object).to_string()
            }
            _ => data,
        };
        let id = self.next_event;
        self.next_event += 1;
        let log = self.subject_log(&subject);
        log.events.push(Event {
            id,
            name: Cow::Owned(name),
            data,
            delivery: Delivery::Intact,
        });
        let length = log.events.len();
        log.grown.send_replace(length);
        Ok(())
    }
}

/// Takes one from a fault's countdown; false when it is at zero.
fn take_one(count: &mut u32) -> bool {
    let Some(less) = count.checked_sub(1) else {
        return false;
    };
    *count = less;
    true
}

/// What the user sends.
#[derive(Clone, Debug)]
pub(crate) enum UserContent {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// The message replied to.
        in_reply_to: Option<String>,
    },
    /// A file.
    File {
        /// Its id.
        file_id: String,
        /// Name.
        name: String,
        /// MIME type.
        mime_type: String,
        /// Content.
        bytes: Vec<u8>,
        /// Caption.
        text: Option<String>,
    },
}
