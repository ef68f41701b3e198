//! The sandbox's configuration: the Endpoint's URL tokens, the API key of the deprecated
//! routes, the bridge its Flow calls, and what that Flow sends. Defaults, then a TOML file.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The URL token of the default Endpoint.
pub const DEFAULT_URL_TOKEN: &str = "sandbox-url-token";
/// The API key the deprecated `/new/v2.0/endpoint/*` routes accept by default.
pub const DEFAULT_API_KEY: &str = "sandbox-api-key";

/// Everything the sandbox can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// URL tokens of the Endpoints served; any other gets 404.
    pub url_tokens: Vec<String>,
    /// The user API key of the deprecated routes (`X-API-Key` or `?api_key=`).
    pub api_key: String,
    /// The bridge the webchat's Flow calls. Without one, asking for an agent gets an apology.
    pub bridge: Option<BridgeConfig>,
    /// What the Flow sends with a handover.
    pub handover: FlowHandover,
    /// The base URL the sandbox gives the bridge as the Endpoint URL. Defaults to the address
    /// it listens on.
    pub public_url: Option<String>,
}

/// Where the bridge is, and the key the Flow's HTTP Request nodes carry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The bridge's base URL (its `/v1` API lives below it).
    pub url: String,
    /// An API key of the bridge.
    pub api_key: String,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// The handover the webchat's Flow asks for: the node settings it passes to the bridge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowHandover {
    /// Send Transcript as first message.
    pub send_transcript: bool,
    /// Conversation Routing Attributes.
    pub routing_attributes: BTreeMap<String, String>,
    /// The Flow's locale.
    pub locale: Option<String>,
    /// Get Queue Position and Get Estimated Wait Time.
    pub queue_updates: bool,
    /// Agent Change Notification: the user is told the new agent's name after a transfer.
    pub agent_change_notification: bool,
    /// The Agent Copilot base URL, if the Endpoint has Copilot.
    pub copilot_base_url: Option<String>,
    /// The Handover Accepted Message.
    pub accepted_message: String,
}

impl Default for FlowHandover {
    fn default() -> Self {
        Self {
            send_transcript: true,
            routing_attributes: BTreeMap::from([("issueType".to_owned(), "Sandbox".to_owned())]),
            locale: Some("en_US".to_owned()),
            queue_updates: true,
            agent_change_notification: true,
            copilot_base_url: None,
            accepted_message: "Connecting you with an agent…".to_owned(),
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            url_tokens: vec![DEFAULT_URL_TOKEN.to_owned()],
            api_key: DEFAULT_API_KEY.to_owned(),
            bridge: None,
            handover: FlowHandover::default(),
            public_url: None,
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
        if self.url_tokens.is_empty() {
            return Err(invalid("url_tokens", "at least one URL token is needed"));
        }
        if let Some(index) = self.url_tokens.iter().position(|t| t.trim().is_empty()) {
            return Err(invalid(
                &format!("url_tokens[{index}]"),
                "must not be empty",
            ));
        }
        if self.api_key.trim().is_empty() {
            return Err(invalid("api_key", "must not be empty"));
        }
        if let Some(bridge) = &self.bridge
            && !(bridge.url.starts_with("http://") || bridge.url.starts_with("https://"))
        {
            return Err(invalid("bridge.url", "must be an http(s) URL"));
        }
        Ok(())
    }
}
