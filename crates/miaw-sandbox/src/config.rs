//! The sandbox's configuration: deployments, token lifetimes, limits, identity keys, and the
//! scripted agent. Loaded from defaults, then an optional TOML file.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything the sandbox can be told. `Default` is the out-of-the-box sandbox: one deployment,
/// Salesforce's default token lifetimes, Salesforce's rate limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The Embedded Service deployments served.
    pub deployments: Vec<DeploymentConfig>,
    /// Lifetime of guest (unauthenticated) access tokens, in seconds. Salesforce: 360 min.
    pub guest_token_lifetime_secs: u64,
    /// Lifetime of verified-user access tokens, in seconds. Salesforce: 60 min.
    pub verified_token_lifetime_secs: u64,
    /// Interval of `ping` keep-alives on the event stream, in milliseconds.
    pub ping_interval_ms: u64,
    /// Access-token requests per org per minute (Salesforce: 200).
    pub token_requests_per_minute: u32,
    /// Inbound messages per conversation per minute (Salesforce: 22).
    pub messages_per_conversation_per_minute: u32,
    /// Largest file accepted, in bytes (Salesforce: 5 MB).
    pub max_file_bytes: u64,
    /// MIME types accepted for uploads; anything else gets 415.
    pub allowed_file_types: Vec<String>,
    /// Keys that verify customer identity tokens (JWK: `RSA` for RS256, `oct` for HS256).
    pub identity_keys: Vec<IdentityKey>,
    /// The `iss` identity tokens must carry, if set.
    pub identity_issuer: Option<String>,
    /// The base URL the sandbox tells clients about (attachment URLs). Defaults to the address it
    /// listens on.
    pub public_url: Option<String>,
    /// Send a queue position (and a wait estimate of a minute per place) when a conversation
    /// starts waiting, as an org with "Queue Wait Time and Position" notifications does.
    pub queue_notifications: bool,
    /// The HTTP/2 limit of concurrent streams on a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`)
    /// the sandbox announces; hyper's 200 when not set. Lower it to see a client cope with a
    /// server that takes fewer streams than it wants to put on a connection.
    pub http2_max_concurrent_streams: Option<u32>,
    /// How `GET …/entries` reads `startTimestamp` and `endTimestamp`. Salesforce does not say;
    /// `inclusive` (the default) keeps entries at the bound, `exclusive` leaves them out, so
    /// a client can be tried against both.
    pub entry_time_bounds: TimeBounds,
    /// What a stream opened without `Last-Event-Id` (or with one that is not an event id)
    /// starts with. Salesforce does not say; `new` (the default) sends only events from the
    /// connect on, the harder reading for a client; `all` replays the subject's history.
    pub replay_without_last_event_id: Replay,
    /// The `identifier` of the entry a user's message becomes. Salesforce's data model
    /// replicates the client's `message.id` (the default, `message_id`); `generated` gives
    /// the entry an identifier of its own, so that only `abstractMessage.id` carries the
    /// client's, to try a client against both.
    pub user_entry_identifier: UserEntryIdentifier,
}

/// Where a stream without a usable `Last-Event-Id` starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replay {
    /// Only the events after the connect.
    #[default]
    New,
    /// Every event of the subject, from the first.
    All,
}

/// The identifier of a user message's entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserEntryIdentifier {
    /// The client's `message.id`.
    #[default]
    MessageId,
    /// A new identifier; `abstractMessage.id` still carries the client's.
    Generated,
}

/// Whether the entries list's time bounds include entries at the bound itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeBounds {
    /// `startTimestamp <= t <= endTimestamp`.
    #[default]
    Inclusive,
    /// `startTimestamp < t < endTimestamp`.
    Exclusive,
}

/// One Embedded Service deployment of type Custom Client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// The 15-character org id (`00D…`).
    pub org_id: String,
    /// The deployment's API name (`esDeveloperName`).
    pub developer_name: String,
    /// An agent that plays itself, for benchmarks and demos.
    #[serde(default)]
    pub scripted_agent: Option<ScriptedAgent>,
}

/// A scripted agent: accepts after a delay, answers every user message from a template, and
/// ends the session after a number of replies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptedAgent {
    /// The agent's display name.
    pub name: String,
    /// Delay before accepting a new conversation, in milliseconds.
    pub accept_after_ms: u64,
    /// Delay before each reply, in milliseconds.
    pub reply_after_ms: u64,
    /// The reply; `{text}` is replaced by the user's message.
    pub reply_template: String,
    /// End the messaging session after this many replies.
    pub end_after_messages: Option<u32>,
}

impl Default for ScriptedAgent {
    fn default() -> Self {
        Self {
            name: "Sandbox Agent".to_owned(),
            accept_after_ms: 1000,
            reply_after_ms: 500,
            reply_template: "You said: {text}".to_owned(),
            end_after_messages: None,
        }
    }
}

/// A JSON Web Key that verifies identity tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kty", deny_unknown_fields)]
pub enum IdentityKey {
    /// An RSA public key (RS256), as base64url modulus and exponent.
    #[serde(rename = "RSA")]
    Rsa {
        /// Key id.
        #[serde(default)]
        kid: Option<String>,
        /// Modulus, base64url.
        n: String,
        /// Exponent, base64url.
        e: String,
    },
    /// A shared secret (HS256), base64url.
    #[serde(rename = "oct")]
    Oct {
        /// Key id.
        #[serde(default)]
        kid: Option<String>,
        /// The secret, base64url.
        k: String,
    },
}

/// The org id of the default deployment.
pub const DEFAULT_ORG_ID: &str = "00D5e000000SBOX";
/// The developer name of the default deployment.
pub const DEFAULT_DEVELOPER_NAME: &str = "Handover_Sandbox";

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            deployments: vec![DeploymentConfig {
                org_id: DEFAULT_ORG_ID.to_owned(),
                developer_name: DEFAULT_DEVELOPER_NAME.to_owned(),
                scripted_agent: None,
            }],
            guest_token_lifetime_secs: 360 * 60,
            verified_token_lifetime_secs: 60 * 60,
            ping_interval_ms: 15_000,
            token_requests_per_minute: 200,
            messages_per_conversation_per_minute: 22,
            max_file_bytes: 5 * 1024 * 1024,
            // What Salesforce's mobile SDKs offer to send (their MIME lists), plus a generic
            // binary type; an org can narrow or widen it.
            allowed_file_types: [
                "image/png",
                "image/jpeg",
                "image/gif",
                "image/bmp",
                "image/tiff",
                "application/pdf",
                "application/msword",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.ms-excel",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/xml",
                "text/xml",
                "text/plain",
                "text/csv",
                "application/octet-stream",
            ]
            .map(str::to_owned)
            .to_vec(),
            identity_keys: Vec::new(),
            identity_issuer: None,
            public_url: None,
            queue_notifications: false,
            http2_max_concurrent_streams: None,
            entry_time_bounds: TimeBounds::Inclusive,
            replay_without_last_event_id: Replay::New,
            user_entry_identifier: UserEntryIdentifier::MessageId,
        }
    }
}

/// A configuration that cannot work, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range.
    #[error("invalid setting `{key}`: {problem}")]
    Invalid {
        /// The setting.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl SandboxConfig {
    /// Defaults, overlaid with the TOML file at `path` if given, then validated.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Self = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that would make the sandbox misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            key: key.to_owned(),
            problem: problem.to_owned(),
        };
        if self.deployments.is_empty() {
            return Err(invalid("deployments", "at least one deployment is needed"));
        }
        for (index, deployment) in self.deployments.iter().enumerate() {
            if deployment.org_id.len() != 15 || !deployment.org_id.starts_with("00D") {
                return Err(invalid(
                    &format!("deployments[{index}].org_id"),
                    "must be a 15-character org id starting with 00D",
                ));
            }
            if deployment.developer_name.trim().is_empty() {
                return Err(invalid(
                    &format!("deployments[{index}].developer_name"),
                    "must not be empty",
                ));
            }
        }
        if self.guest_token_lifetime_secs == 0 || self.verified_token_lifetime_secs == 0 {
            return Err(invalid(
                "guest_token_lifetime_secs",
                "token lifetimes must be at least 1 s",
            ));
        }
        if self.allowed_file_types.is_empty() {
            return Err(invalid("allowed_file_types", "at least one type is needed"));
        }
        if let Some(bad) = self
            .allowed_file_types
            .iter()
            .find(|t| t.parse::<mime_guess::mime::Mime>().is_err())
        {
            return Err(invalid(
                "allowed_file_types",
                &format!("{bad:?} is not a MIME type"),
            ));
        }
        if self.ping_interval_ms == 0 {
            return Err(invalid("ping_interval_ms", "must be at least 1 ms"));
        }
        if self.http2_max_concurrent_streams == Some(0) {
            return Err(invalid(
                "http2_max_concurrent_streams",
                "must be at least 1 (or left out for hyper's 200)",
            ));
        }
        Ok(())
    }

    /// The ping interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// The deployment named `developer_name` in org `org_id`.
    pub fn deployment(&self, org_id: &str, developer_name: &str) -> Option<&DeploymentConfig> {
        self.deployments
            .iter()
            .find(|d| d.org_id == org_id && d.developer_name == developer_name)
    }
}
