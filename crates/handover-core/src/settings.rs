//! What a handover is asked to do (per-handover settings, with Cognigy's defaults) and how the
//! operator tunes the bridge (per-deployment [`SessionConfig`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::ids::{ConversationId, HandoverId};
use crate::secret::IdentityToken;
use crate::transcript::TranscriptTurn;

/// Salesforce pre-chat values for the conversation ("Conversation Routing Attributes"). Keys
/// are the channel parameter names an admin mapped to Omni-Channel flow variables; values are
/// strings because flow variables are text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoutingAttributes(BTreeMap<String, String>);

impl RoutingAttributes {
    /// The key Salesforce maps to the Messaging User's language.
    pub const LANGUAGE: &'static str = "language";

    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// All attributes, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for RoutingAttributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Real-time queue notifications ("Get Queue Position", "Get Estimated Wait Time",
/// "Alternative Update"). All off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QueueSettings {
    /// Report the queue position.
    pub position: bool,
    /// Report the estimated wait time.
    pub estimated_wait_time: bool,
    /// Above these thresholds, send the alternative text instead of the numbers.
    pub alternative: Option<QueueAlternative>,
}

/// The "Alternative Update" of the queue settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QueueAlternative {
    /// "Maximum Queue Position".
    pub max_position: Option<u32>,
    /// "Maximum Estimated Wait Time".
    pub max_wait: Option<Duration>,
    /// "Alternative Text".
    pub text: String,
}

/// The Salesforce MIAW settings of one handover, named after the Cognigy node settings
/// (cognigy.md §3.2). `Default` gives Cognigy's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HandoverSettings {
    /// "Send Transcript as first message". Default off.
    pub send_transcript: bool,
    /// "Conversation Routing Attributes". A `language` key overrides [`Self::locale`].
    pub routing_attributes: RoutingAttributes,
    /// "Identity Token for Authenticated Users". `None` (the default) makes the user a guest.
    pub identity_token: Option<IdentityToken>,
    /// "Enable User Connects Message". Default on.
    pub user_connected_message: bool,
    /// "Enable User Disconnects Message". Default on.
    pub user_disconnected_message: bool,
    /// "End Chat When Agent Leaves". Default off. Also forced off by the operator switch
    /// [`SessionConfig::disable_end_on_agent_leave`].
    pub end_when_agent_leaves: bool,
    /// "Agent Change Notification": tell the user the new agent's name after a transfer.
    /// Default off.
    pub agent_change_notification: bool,
    /// Queue position and estimated wait time.
    pub queue: QueueSettings,
    /// "Forward Events to the Flow". Default off.
    pub forward_events: bool,
    /// Forward user messages while the handover is still queued (default), or hold them until
    /// an agent joins.
    pub forward_while_queued: bool,
    /// The Flow's locale, sent as the `language` routing attribute unless the attributes carry
    /// one.
    pub locale: Option<String>,
}

impl Default for HandoverSettings {
    fn default() -> Self {
        Self {
            send_transcript: false,
            routing_attributes: RoutingAttributes::new(),
            identity_token: None,
            user_connected_message: true,
            user_disconnected_message: true,
            end_when_agent_leaves: false,
            agent_change_notification: false,
            queue: QueueSettings::default(),
            forward_events: false,
            forward_while_queued: true,
            locale: None,
        }
    }
}

/// Everything needed to start one handover. The ids are chosen by the caller (the core has no
/// randomness): a fresh handover id and a fresh lowercase UUID v4 conversation id.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HandoverRequest {
    /// The bridge's id for this handover.
    pub handover_id: HandoverId,
    /// The MIAW conversation to create.
    pub conversation_id: ConversationId,
    /// The conversation with the bot so far.
    pub transcript: Vec<TranscriptTurn>,
    /// The node settings.
    pub settings: HandoverSettings,
    /// The Agent Copilot link for the agent's console, if Copilot is configured.
    pub copilot_url: Option<CopilotUrl>,
    /// The Salesforce deployment that serves this handover, by the bridge's configured name
    /// (`None`: the default one). The core does not use it; it travels with the session so
    /// that whichever instance resumes the handover uses the same deployment.
    #[cfg_attr(feature = "serde", serde(default))]
    pub deployment: Option<String>,
}

impl HandoverRequest {
    /// The routing attributes sent with the conversation: the configured ones, plus the locale
    /// as `language` when they have none, plus the Copilot link under `copilot_key`.
    pub fn effective_routing_attributes(&self, copilot_key: &str) -> RoutingAttributes {
        let mut attributes = self.settings.routing_attributes.clone();
        if attributes.get(RoutingAttributes::LANGUAGE).is_none()
            && let Some(locale) = self.settings.locale.as_deref().filter(|l| !l.is_empty())
        {
            attributes.insert(RoutingAttributes::LANGUAGE, locale);
        }
        if let Some(url) = &self.copilot_url {
            attributes.insert(copilot_key, url.as_str());
        }
        attributes
    }
}

/// The Agent Copilot URL handed to the agent's console:
/// `https://{base}/?userId=…&sessionId=…&URLToken=…`.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct CopilotUrl(String);

/// Why a Copilot URL could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopilotUrlError {
    /// The base is empty.
    #[error("the Agent Copilot base URL is empty")]
    EmptyBase,
    /// The base is not a host (with an optional port and path), or not HTTPS.
    #[error(
        "the Agent Copilot base URL must be a host name such as ai-copilot-trial.cognigy.ai (https only): {0}"
    )]
    InvalidBase(&'static str),
    /// The URL is longer than a Salesforce pre-chat parameter can hold.
    #[error("the Agent Copilot URL is {length} characters long; Salesforce accepts at most {max}")]
    TooLong {
        /// The URL's length.
        length: usize,
        /// The limit.
        max: usize,
    },
}

/// Characters left as they are in a query value (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl CopilotUrl {
    /// Salesforce's limit for a pre-chat parameter value.
    pub const MAX_LEN: usize = 255;

    /// Builds the URL from the base (with or without `https://`) and the Cognigy identity.
    pub fn build(
        base: &str,
        user_id: &str,
        session_id: &str,
        url_token: &str,
    ) -> Result<Self, CopilotUrlError> {
        let base = base.trim();
        if base.is_empty() {
            return Err(CopilotUrlError::EmptyBase);
        }
        if base.starts_with("http://") {
            return Err(CopilotUrlError::InvalidBase("plain http is not allowed"));
        }
        let host = base.strip_prefix("https://").unwrap_or(base);
        let host = host.trim_end_matches('/');
        if host.is_empty() {
            return Err(CopilotUrlError::EmptyBase);
        }
        if host.contains("://") {
            return Err(CopilotUrlError::InvalidBase("only https is allowed"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\'))
        {
            return Err(CopilotUrlError::InvalidBase(
                "it must not contain whitespace, '?', '#', '@' or '\\'",
            ));
        }
        let url = format!(
            "https://{host}/?userId={}&sessionId={}&URLToken={}",
            utf8_percent_encode(user_id, QUERY_VALUE),
            utf8_percent_encode(session_id, QUERY_VALUE),
            utf8_percent_encode(url_token, QUERY_VALUE),
        );
        let length = url.chars().count();
        if length > Self::MAX_LEN {
            return Err(CopilotUrlError::TooLong {
                length,
                max: Self::MAX_LEN,
            });
        }
        Ok(Self(url))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CopilotUrl {
    // The URL carries the Endpoint URL token, which lets anyone post into the bot's Endpoint;
    // keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CopilotUrl(<redacted>)")
    }
}

/// Retries of a failing call: exponential backoff with jitter, and a budget after which the
/// failure is final.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RetryPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Attempts in all, the first one included. At least 1.
    pub max_attempts: u32,
}

/// The operator's tuning of the bridge, the same for every handover of a deployment.
/// `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionConfig {
    /// How long after the access token expires the bridge still waits for a renewed token
    /// before it ends the handover (`SALESFORCE_MIAW_ACCESS_TOKEN_GRACE_PERIOD`, default 30 min).
    /// Only a verified user's token can be renewed; see the crate docs on tokens.
    pub token_grace: Duration,
    /// A token is not used within this margin of its expiry, so that no request reaches
    /// Salesforce with an expired token (default 30 s, at most a tenth of the token's life).
    pub token_safety_margin: Duration,
    /// How long before expiry a verified user's token is renewed, and a guest handover whose
    /// token cannot be renewed is closed on both sides (default 2 min, at most a fifth of the
    /// token's life).
    pub token_renew_lead: Duration,
    /// `DISABLE_ABORT_HANDOVER_ON_SALESFORCE_MIAW_PARTICIPANT_CHANGE`: when set, an agent
    /// leaving never ends the handover, whatever the node setting says.
    pub disable_end_on_agent_leave: bool,
    /// The safety poll that backfills entries the stream missed (default 120 s).
    pub safety_poll_interval: Duration,
    /// The safety poll while an agent is with the user (default 30 s), so that an agent
    /// message the stream withheld, with nothing after it, is late by at most this long.
    #[cfg_attr(feature = "serde", serde(default = "default_safety_poll_with_agent"))]
    pub safety_poll_with_agent: Duration,
    /// How long an entry from the stream may wait for the listing that shows whether anything
    /// before it was withheld from the stream (default 5 s). Entries are relayed in server
    /// order once the listing is in; past this bound they are relayed as they are, and what
    /// the listing brings later comes late. Zero relays every entry as it arrives.
    #[cfg_attr(feature = "serde", serde(default = "default_stream_hold"))]
    pub stream_hold: Duration,
    /// A stream without any event or ping for this long is dead (default 90 s).
    pub stream_watchdog: Duration,
    /// How long to wait for the stream before creating the conversation anyway; the replay and
    /// the backfill then cover early events (default 15 s).
    pub stream_connect_timeout: Duration,
    /// Stream reconnect backoff (capped at 30 s by default; never gives up while the handover
    /// lives).
    pub stream_backoff: RetryPolicy,
    /// Messages per conversation toward Salesforce within [`Self::pacing_window`] (22).
    pub pacing_max_messages: u32,
    /// The rolling window of the pacing limit (60 s).
    pub pacing_window: Duration,
    /// Longest text message toward Salesforce, in characters; longer transcripts and user
    /// messages are split (3000).
    pub max_message_chars: usize,
    /// Longest transcript sent to the agent, in characters (16,000: a few messages). A longer
    /// one keeps its newest turns, after a line that says how much was left out.
    #[cfg_attr(feature = "serde", serde(default = "default_max_transcript_chars"))]
    pub max_transcript_chars: usize,
    /// Largest file uploaded to Salesforce; larger ones go as a link (5 MB).
    pub max_file_bytes: u64,
    /// The user's typing indicator stops after this long without typing (5 s).
    pub typing_idle: Duration,
    /// Retries of Salesforce and bot-platform calls.
    pub retry: RetryPolicy,
    /// Retries of a failing token renewal. Slower than [`Self::retry`]: during an identity
    /// provider outage every verified handover retries at once, and token requests share a
    /// limit of 200 per minute per org with every new handover.
    pub renewal_retry: RetryPolicy,
    /// Entry identifiers remembered for de-duplication (1024). Older ones are covered by a
    /// timestamp watermark.
    pub dedupe_capacity: usize,
    /// Entries per backfill page (Salesforce's maximum is 50).
    pub backfill_page_size: u32,
    /// Pages a backfill may go back before it relays what it has (20).
    pub backfill_max_pages: u32,
    /// The routing attribute that carries the Agent Copilot URL (`Copilot_URL`).
    pub copilot_attribute: String,
    /// The text the user gets when another agent takes over, with `{agent}` for the name.
    pub agent_change_text: String,
}

fn default_safety_poll_with_agent() -> Duration {
    Duration::from_secs(30)
}

fn default_max_transcript_chars() -> usize {
    16_000
}

fn default_stream_hold() -> Duration {
    Duration::from_secs(5)
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            token_grace: Duration::from_secs(30 * 60),
            token_safety_margin: Duration::from_secs(30),
            token_renew_lead: Duration::from_secs(120),
            disable_end_on_agent_leave: false,
            safety_poll_interval: Duration::from_secs(120),
            safety_poll_with_agent: default_safety_poll_with_agent(),
            stream_hold: default_stream_hold(),
            stream_watchdog: Duration::from_secs(90),
            stream_connect_timeout: Duration::from_secs(15),
            stream_backoff: RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                max_attempts: u32::MAX,
            },
            pacing_max_messages: 22,
            pacing_window: Duration::from_secs(60),
            max_message_chars: 3000,
            max_transcript_chars: default_max_transcript_chars(),
            max_file_bytes: 5 * 1024 * 1024,
            typing_idle: Duration::from_secs(5),
            retry: RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                max_attempts: 8,
            },
            renewal_retry: RetryPolicy {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(300),
                max_attempts: u32::MAX,
            },
            dedupe_capacity: 1024,
            backfill_page_size: 50,
            backfill_max_pages: 20,
            copilot_attribute: "Copilot_URL".to_owned(),
            agent_change_text: "You are now chatting with {agent}.".to_owned(),
        }
    }
}

/// A [`SessionConfig`] value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{field}`: {problem}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl SessionConfig {
    /// Checks the values that would make a session misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, problem| Err(ConfigError { field, problem });
        if self.pacing_max_messages == 0 {
            return fail("pacing_max_messages", "must be at least 1");
        }
        if self.pacing_window.is_zero() {
            return fail("pacing_window", "must be longer than zero");
        }
        if self.max_message_chars == 0 {
            return fail("max_message_chars", "must be at least 1");
        }
        if self.max_transcript_chars < 100 {
            return fail("max_transcript_chars", "must be at least 100");
        }
        if self.safety_poll_interval.is_zero() {
            return fail("safety_poll_interval", "must be longer than zero");
        }
        if self.safety_poll_with_agent.is_zero() {
            return fail("safety_poll_with_agent", "must be longer than zero");
        }
        if self.stream_watchdog.is_zero() {
            return fail("stream_watchdog", "must be longer than zero");
        }
        if self.dedupe_capacity == 0 {
            return fail("dedupe_capacity", "must be at least 1");
        }
        if self.backfill_page_size == 0 || self.backfill_max_pages == 0 {
            return fail(
                "backfill_page_size",
                "pages and their size must be at least 1",
            );
        }
        let reach = u64::from(self.backfill_page_size) * u64::from(self.backfill_max_pages);
        if reach >= self.dedupe_capacity as u64 {
            return fail(
                "dedupe_capacity",
                "must exceed backfill_page_size × backfill_max_pages, or a deep backfill could relay an entry twice",
            );
        }
        for (field, policy) in [
            ("retry", &self.retry),
            ("renewal_retry", &self.renewal_retry),
            ("stream_backoff", &self.stream_backoff),
        ] {
            if policy.max_attempts == 0 {
                return fail(field, "max_attempts must be at least 1");
            }
            if policy.initial.is_zero() || policy.max < policy.initial {
                return fail(field, "initial must be above zero and at most max");
            }
        }
        if self.copilot_attribute.trim().is_empty() {
            return fail("copilot_attribute", "must not be empty");
        }
        Ok(())
    }

    /// Whether an agent leaving ends the handover, given the node setting.
    pub fn ends_when_agent_leaves(&self, settings: &HandoverSettings) -> bool {
        settings.end_when_agent_leaves && !self.disable_end_on_agent_leave
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copilot_url_is_encoded_and_bounded() {
        let url = CopilotUrl::build(
            "https://ai-copilot-trial.cognigy.ai/",
            "u 1",
            "s&2",
            "tok/3",
        )
        .map(|u| u.as_str().to_owned());
        assert_eq!(
            url.as_deref(),
            Ok(
                "https://ai-copilot-trial.cognigy.ai/?userId=u%201&sessionId=s%262&URLToken=tok%2F3"
            )
        );
        assert!(matches!(
            CopilotUrl::build("copilot.example", &"u".repeat(300), "s", "t"),
            Err(CopilotUrlError::TooLong { max: 255, .. })
        ));
        assert_eq!(
            CopilotUrl::build(" ", "u", "s", "t"),
            Err(CopilotUrlError::EmptyBase)
        );
        assert!(matches!(
            CopilotUrl::build("http://copilot.example", "u", "s", "t"),
            Err(CopilotUrlError::InvalidBase(_))
        ));
        assert!(
            format!(
                "{:?}",
                CopilotUrl::build("c.example", "u", "s", "secret-token")
            )
            .contains("redacted")
        );
    }

    #[test]
    fn default_config_is_valid_and_broken_values_name_the_field() {
        assert_eq!(SessionConfig::default().validate(), Ok(()));
        let config = SessionConfig {
            pacing_max_messages: 0,
            ..SessionConfig::default()
        };
        assert_eq!(
            config.validate().map_err(|e| e.to_string()),
            Err("invalid setting `pacing_max_messages`: must be at least 1".to_owned())
        );
    }
}
