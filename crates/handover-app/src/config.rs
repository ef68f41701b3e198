//! Configuration: defaults, then `handover.toml`, then the environment (`HANDOVER_…`, with
//! `__` between levels), then Cognigy's own operator variables. Validation names the key and
//! the problem; secrets are never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use handover_cognigy::api::ApiKey;
use handover_cognigy::{CognigyConfig, EndpointRoutes};
use handover_core::SessionConfig;
use handover_salesforce::{AttachmentPolicy, HttpSettings, HttpVersion, MiawConfig};
use serde::{Deserialize, Serialize};

/// A secret from the configuration: kept, never shown.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Everything `handover serve` is told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the API, `/metrics` and the health checks listen.
    pub listen: SocketAddr,
    /// Where the SQLite database lives by default.
    pub data_dir: PathBuf,
    /// `production` refuses to start without encryption keys; `demo` is forgiving.
    pub mode: Mode,
    /// This instance's name in leases (defaults to a random one per start). A fixed name must
    /// be unique among running instances; a restart under it takes its handovers back at once.
    pub instance_id: Option<String>,
    /// The store.
    pub store: StoreSection,
    /// The inbound API.
    pub api: ApiSection,
    /// The Cognigy side.
    pub cognigy: CognigySection,
    /// The Salesforce side.
    pub salesforce: SalesforceSection,
    /// Where user files may be fetched from.
    pub attachments: AttachmentsSection,
    /// Logging.
    pub log: LogSection,
}

/// How strict the bridge is about its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real traffic: encryption keys and API keys are required.
    Production,
    /// The embedded demo: an ephemeral key is generated if none is given.
    Demo,
}

/// `[store]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://…` or `postgres://…`; by default a SQLite file in the data directory.
    pub url: Option<Secret>,
    /// Encryption keys, `id:base64-of-32-bytes`, comma separated, the first current.
    pub keys: Secret,
    /// Ended handovers are purged after this many days (Cognigy keeps sessions 7 days).
    pub retention_days: u64,
    /// How long a lease lasts unless renewed, in seconds.
    pub lease_ttl_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            url: None,
            keys: Secret::default(),
            retention_days: 7,
            lease_ttl_secs: 30,
        }
    }
}

/// One API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A name for logs.
    pub name: String,
    /// The key (at least 16 characters).
    pub key: Secret,
    /// Whether it may list and force-close handovers.
    #[serde(default)]
    pub admin: bool,
}

/// `[api]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// The keys the API accepts.
    pub keys: Vec<ApiKeyEntry>,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// The longest user message, in characters; longer ones get 413.
    pub max_message_chars: usize,
    /// The most handovers this instance drives at once; unset, it follows from the
    /// open-file limit (see [`crate::app::max_live_handovers`]).
    pub max_live_handovers: Option<usize>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_message_chars: handover_cognigy::api::ApiConfig::default().max_message_chars,
            max_live_handovers: None,
        }
    }
}

/// `[cognigy]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CognigySection {
    /// `endpoint` (`{EndpointURL}/notify/{URLToken}`) or `legacy`
    /// (`{legacy_api_base_url}/new/v2.0/endpoint/notify` with `X-API-Key`).
    pub routes: Routes,
    /// The API base of the deprecated routes.
    pub legacy_api_base_url: Option<String>,
    /// The Cognigy API key of the deprecated routes.
    pub legacy_api_key: Secret,
    /// An avatar for human agents' messages.
    pub agent_avatar_url: Option<String>,
    /// Notify and Inject calls give up after this long, in milliseconds.
    pub request_timeout_ms: u64,
    /// Hosts a start's `endpointUrl` may name, where Notify and Inject go: names, addresses,
    /// or `*.` and a domain. A host reached through a wildcard must resolve to public
    /// addresses only; one listed by name may be on a private network.
    pub endpoint_hosts: Vec<String>,
}

impl Default for CognigySection {
    fn default() -> Self {
        Self {
            routes: Routes::Endpoint,
            legacy_api_base_url: None,
            legacy_api_key: Secret::default(),
            agent_avatar_url: None,
            request_timeout_ms: 5000,
            endpoint_hosts: handover_cognigy::COGNIGY_SAAS_ENDPOINT_HOSTS
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// Which Cognigy routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routes {
    /// The Endpoint's current routes.
    Endpoint,
    /// The deprecated API routes.
    Legacy,
}

/// One Embedded Service deployment, with the field names of Salesforce's code snippet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Base URL: the snippet's `Url`.
    #[serde(rename = "Url", alias = "url")]
    pub url: String,
    /// Organization ID: the snippet's `OrganizationId`.
    #[serde(
        rename = "OrganizationId",
        alias = "organizationid",
        alias = "organization_id"
    )]
    pub organization_id: String,
    /// Embedded Service Developer Name: the snippet's `DeveloperName`.
    #[serde(
        rename = "DeveloperName",
        alias = "developername",
        alias = "developer_name"
    )]
    pub developer_name: String,
    /// Capabilities Version: always 1.
    #[serde(
        rename = "CapabilitiesVersion",
        alias = "capabilitiesversion",
        alias = "capabilities_version",
        default = "capabilities_version"
    )]
    pub capabilities_version: String,
}

fn capabilities_version() -> String {
    "1".to_owned()
}

/// `[salesforce]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SalesforceSection {
    /// The deployments, by the name a start request may give.
    pub deployments: BTreeMap<String, Deployment>,
    /// The deployment used when a start request names none.
    pub default_deployment: Option<String>,
    /// `SALESFORCE_MIAW_ACCESS_TOKEN_GRACE_PERIOD`, in seconds.
    pub token_grace_secs: u64,
    /// `DISABLE_ABORT_HANDOVER_ON_SALESFORCE_MIAW_PARTICIPANT_CHANGE`.
    pub disable_end_on_agent_leave: bool,
    /// The routing attribute carrying the Agent Copilot URL.
    pub copilot_attribute: String,
    /// The safety poll, in seconds.
    pub safety_poll_secs: u64,
    /// The safety poll while an agent is with the user, in seconds.
    pub safety_poll_with_agent_secs: u64,
    /// How long an entry from the stream may wait for the listing that puts it in order, in
    /// milliseconds (0: relay every entry as it arrives).
    pub stream_hold_ms: u64,
    /// The longest transcript sent to the agent, in characters (the newest turns are kept).
    pub max_transcript_chars: usize,
    /// The stream watchdog, in seconds.
    pub stream_watchdog_secs: u64,
    /// REST calls give up after this long, in milliseconds.
    pub request_timeout_ms: u64,
    /// Token requests per minute and Salesforce org, evenly spaced (Salesforce allows 200 per
    /// org). Instances sharing a PostgreSQL store keep this rate together; on SQLite (one
    /// instance) the process keeps it.
    pub token_requests_per_minute: u32,
    /// `auto` (HTTP/2 where the server offers it over TLS), `http1` or `http2` (required,
    /// over plain `http://` too).
    pub http_version: HttpVersion,
    /// Event streams one HTTP/2 connection carries at most.
    pub streams_per_connection: usize,
}

impl Default for SalesforceSection {
    fn default() -> Self {
        let core = SessionConfig::default();
        Self {
            deployments: BTreeMap::new(),
            default_deployment: None,
            token_grace_secs: core.token_grace.as_secs(),
            disable_end_on_agent_leave: core.disable_end_on_agent_leave,
            copilot_attribute: core.copilot_attribute,
            safety_poll_secs: core.safety_poll_interval.as_secs(),
            safety_poll_with_agent_secs: core.safety_poll_with_agent.as_secs(),
            stream_hold_ms: u64::try_from(core.stream_hold.as_millis()).unwrap_or(u64::MAX),
            max_transcript_chars: core.max_transcript_chars,
            stream_watchdog_secs: core.stream_watchdog.as_secs(),
            request_timeout_ms: 10_000,
            token_requests_per_minute: 180,
            http_version: HttpVersion::Auto,
            streams_per_connection: HttpSettings::default().streams_per_connection,
        }
    }
}

/// `[attachments]`: user files arrive as URLs from the bot side and the bridge downloads them
/// to upload to Salesforce, so where it may download from is a security setting (SSRF).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentsSection {
    /// Hosts files may come from (`files.example.com`, `*.cognigy.ai`). Empty: any host with
    /// a public address.
    pub allowed_hosts: Vec<String>,
    /// Allow loopback, private and link-local addresses (a file server inside your network,
    /// local sandboxes). Off by default; the demo turns it on.
    pub allow_private_addresses: bool,
    /// Redirects followed at most, each checked like the first URL.
    pub max_redirects: usize,
}

impl Default for AttachmentsSection {
    fn default() -> Self {
        let policy = AttachmentPolicy::default();
        Self {
            allowed_hosts: policy.allowed_hosts,
            allow_private_addresses: policy.allow_private_addresses,
            max_redirects: policy.max_redirects,
        }
    }
}

impl AttachmentsSection {
    /// The Salesforce adapter's policy.
    pub fn policy(&self) -> AttachmentPolicy {
        AttachmentPolicy {
            allowed_hosts: self.allowed_hosts.clone(),
            allow_private_addresses: self.allow_private_addresses,
            max_redirects: self.max_redirects,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `handover_app=debug,info`).
    pub level: String,
    /// Include message text in debug logs (off: text is redacted).
    pub message_text: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
            message_text: false,
        }
    }
}

/// Log output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            mode: Mode::Production,
            instance_id: None,
            store: StoreSection::default(),
            api: ApiSection::default(),
            cognigy: CognigySection::default(),
            salesforce: SalesforceSection::default(),
            attachments: AttachmentsSection::default(),
            log: LogSection::default(),
        }
    }
}

/// A configuration that cannot work: the key and what is wrong, never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or a value could not be read.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is not acceptable.
    #[error("invalid setting `{key}`: {problem}")]
    Invalid {
        /// The setting, as a path (`salesforce.deployments.main.Url`).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// No file was given, none was found, and what the environment gave is not enough.
    #[error(
        "no handover.toml found in {dir} (pass --config FILE, or set HANDOVER_… variables); \
         without it: {error}"
    )]
    NoFile {
        /// Where it was looked for.
        dir: String,
        /// What the defaults and the environment alone lacked.
        error: Box<Self>,
    },
}

/// A log filter of levels: `info`, or directives such as `warn,handover_app=debug`. Every
/// directive names a level; tracing would take `verbose` as a target and log nothing.
fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |text: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(text.trim()));
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    for directive in &directives {
        let level = directive
            .rsplit_once('=')
            .map_or(*directive, |(_, level)| level);
        if !is_level(level) {
            return Err(format!(
                "{directive:?} names no level ({}); for example `info` or \
                 `warn,handover_app=debug`",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|error| format!("is not a log filter: {error}"))
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Defaults < `path` (if given, or `handover.toml` if it exists) < `HANDOVER_…` variables
    /// < Cognigy's operator variables; then validated.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let loaded = Self::from_figment(Self::figment(path));
        match loaded {
            Err(error) if path.is_none() && !Path::new("handover.toml").exists() => {
                let dir = std::env::current_dir()
                    .map_or_else(|_| ".".to_owned(), |dir| dir.display().to_string());
                Err(ConfigError::NoFile {
                    dir,
                    error: Box::new(error),
                })
            }
            loaded => loaded,
        }
    }

    /// The layers, before extraction (tests add their own).
    pub fn figment(path: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        match path {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => {
                if Path::new("handover.toml").exists() {
                    figment = figment.merge(Toml::file_exact("handover.toml"));
                }
            }
        }
        figment
            .merge(
                Env::prefixed("HANDOVER_")
                    // Other tools' HANDOVER_… variables (HANDOVER_TEST_DATABASE_URL, …) are not
                    // ours; a misspelt key inside a section still fails.
                    .filter(|key| {
                        let top = key.as_str().split("__").next().unwrap_or("");
                        SECTIONS
                            .iter()
                            .any(|section| section.eq_ignore_ascii_case(top))
                    })
                    .split("__")
                    .map(|key| canonical_key(key.as_str()).into())
                    .lowercase(false),
            )
            .merge(
                Env::raw()
                    .only(&["SALESFORCE_MIAW_ACCESS_TOKEN_GRACE_PERIOD"])
                    .map(|_| "salesforce.token_grace_secs".into()),
            )
            .merge(
                Env::raw()
                    .only(&["DISABLE_ABORT_HANDOVER_ON_SALESFORCE_MIAW_PARTICIPANT_CHANGE"])
                    .map(|_| "salesforce.disable_end_on_agent_leave".into()),
            )
    }

    /// Extracts and validates.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what would make the bridge misbehave; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.salesforce.token_requests_per_minute == 0 {
            return Err(invalid(
                "salesforce.token_requests_per_minute",
                "must be at least 1 (Salesforce allows 200 per org and minute)",
            ));
        }
        // The adapter's own check, named by the key it came from.
        self.http_settings()
            .validated()
            .map_err(|error| invalid(format!("salesforce.{}", error.field), error.problem))?;
        if self.cognigy.endpoint_hosts.is_empty() {
            return Err(invalid(
                "cognigy.endpoint_hosts",
                "must name at least one host: Notify and Inject could go nowhere",
            ));
        }
        for (index, host) in self.cognigy.endpoint_hosts.iter().enumerate() {
            if !handover_egress::is_host_pattern(host) {
                return Err(invalid(
                    format!("cognigy.endpoint_hosts[{index}]"),
                    "must be a host name, an address, or `*.` and a domain (no scheme, port or path)",
                ));
            }
        }
        for (index, host) in self.attachments.allowed_hosts.iter().enumerate() {
            if !handover_egress::is_host_pattern(host) {
                return Err(invalid(
                    format!("attachments.allowed_hosts[{index}]"),
                    "must be a host name, an address, or `*.` and a domain (no scheme, port or path)",
                ));
            }
        }
        if self.mode == Mode::Production {
            if self.store.keys.is_empty() {
                return Err(invalid(
                    "store.keys",
                    "production mode needs encryption keys (`id:base64-of-32-bytes`)",
                ));
            }
            if self.api.keys.is_empty() {
                return Err(invalid(
                    "api.keys",
                    "production mode needs at least one API key",
                ));
            }
        }
        if !self.store.keys.is_empty() {
            handover_store::Keyring::parse(self.store.keys.expose())
                .map_err(|error| invalid("store.keys", error.to_string()))?;
        }
        if let Some(url) = &self.store.url {
            let url = url.expose();
            if !(url.starts_with("sqlite:") || url.starts_with("postgres")) {
                return Err(invalid("store.url", "must start with sqlite: or postgres:"));
            }
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .map(|rest| rest.split_once('?').map_or(rest, |(path, _)| path));
            if path == Some(":memory:")
                || (url.starts_with("sqlite:") && url.contains("mode=memory"))
            {
                return Err(invalid(
                    "store.url",
                    "an in-memory SQLite database would lose every handover at a restart; name a file",
                ));
            }
        }
        check_log_level(&self.log.level).map_err(|problem| invalid("log.level", problem))?;
        if self.store.lease_ttl_secs < 3 {
            return Err(invalid("store.lease_ttl_secs", "must be at least 3"));
        }
        if self.api.max_live_handovers == Some(0) {
            return Err(invalid(
                "api.max_live_handovers",
                "must be at least 1 (leave it out to follow the open-file limit)",
            ));
        }
        for (index, key) in self.api.keys.iter().enumerate() {
            ApiKey::new(&key.name, key.key.expose())
                .map_err(|error| invalid(format!("api.keys[{index}].key"), error.to_string()))?;
        }
        if self.cognigy.routes == Routes::Legacy {
            if self.cognigy.legacy_api_base_url.is_none() {
                return Err(invalid(
                    "cognigy.legacy_api_base_url",
                    "the legacy routes need the Cognigy API base URL",
                ));
            }
            if self.cognigy.legacy_api_key.is_empty() {
                return Err(invalid(
                    "cognigy.legacy_api_key",
                    "the legacy routes need an API key",
                ));
            }
        }
        if self.mode == Mode::Production && self.salesforce.deployments.is_empty() {
            return Err(invalid(
                "salesforce.deployments",
                "at least one deployment (Url, OrganizationId, DeveloperName) is needed",
            ));
        }
        for (name, deployment) in &self.salesforce.deployments {
            let key = |field: &str| format!("salesforce.deployments.{name}.{field}");
            if deployment.capabilities_version != "1" {
                return Err(invalid(key("CapabilitiesVersion"), "must be 1"));
            }
            MiawConfig::new(
                &deployment.url,
                &deployment.organization_id,
                &deployment.developer_name,
            )
            .validated()
            .map_err(|error| {
                let field = match error.field {
                    "base_url" => "Url",
                    "org_id" => "OrganizationId",
                    "developer_name" => "DeveloperName",
                    other => other,
                };
                invalid(key(field), error.problem)
            })?;
        }
        if let Some(default) = &self.salesforce.default_deployment
            && !self.salesforce.deployments.contains_key(default)
        {
            return Err(invalid(
                "salesforce.default_deployment",
                format!("names {default:?}, which is not among salesforce.deployments"),
            ));
        }
        if self.api.max_message_chars == 0 {
            return Err(invalid("api.max_message_chars", "must be at least 1"));
        }
        self.session_config()
            .validate()
            .map_err(|error| invalid(format!("salesforce ({})", error.field), error.problem))?;
        Ok(())
    }

    /// The core's tuning from this configuration.
    pub fn session_config(&self) -> SessionConfig {
        let salesforce = &self.salesforce;
        SessionConfig {
            token_grace: Duration::from_secs(salesforce.token_grace_secs),
            disable_end_on_agent_leave: salesforce.disable_end_on_agent_leave,
            copilot_attribute: salesforce.copilot_attribute.clone(),
            safety_poll_interval: Duration::from_secs(salesforce.safety_poll_secs),
            safety_poll_with_agent: Duration::from_secs(salesforce.safety_poll_with_agent_secs),
            stream_hold: Duration::from_millis(salesforce.stream_hold_ms),
            max_transcript_chars: salesforce.max_transcript_chars,
            stream_watchdog: Duration::from_secs(salesforce.stream_watchdog_secs),
            ..SessionConfig::default()
        }
    }

    /// How the Salesforce adapter connects (every deployment shares its connections).
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            version: self.salesforce.http_version,
            streams_per_connection: self.salesforce.streams_per_connection,
            ..HttpSettings::default()
        }
    }

    /// The Cognigy client's configuration.
    pub fn cognigy_config(&self) -> CognigyConfig {
        CognigyConfig {
            routes: match self.cognigy.routes {
                Routes::Endpoint => EndpointRoutes::Endpoint,
                Routes::Legacy => EndpointRoutes::Legacy {
                    api_base_url: self.cognigy.legacy_api_base_url.clone().unwrap_or_default(),
                    api_key: self.cognigy.legacy_api_key.expose().to_owned(),
                },
            },
            request_timeout: Duration::from_millis(self.cognigy.request_timeout_ms),
            agent_avatar_url: self.cognigy.agent_avatar_url.clone(),
            endpoint_hosts: handover_cognigy::endpoint_policy(&self.cognigy.endpoint_hosts),
        }
    }

    /// The store's URL: the configured one, or a SQLite file in the data directory.
    pub fn store_url(&self) -> String {
        match &self.store.url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("handover.db").display()),
        }
    }

    /// The effective configuration as TOML, secrets redacted (`handover check-config`).
    pub fn redacted(&self) -> String {
        let mut copy = self.clone();
        let redact = |secret: &mut Secret| {
            if !secret.is_empty() {
                *secret = Secret::from("<redacted>");
            }
        };
        redact(&mut copy.store.keys);
        if let Some(url) = copy.store.url.as_mut() {
            // A database URL can carry a password.
            *url = Secret(redact_url(url.expose()));
        }
        for key in &mut copy.api.keys {
            redact(&mut key.key);
        }
        redact(&mut copy.cognigy.legacy_api_key);
        toml_string(&copy)
    }
}

/// The top-level keys of the configuration: what a `HANDOVER_…` variable may set.
const SECTIONS: &[&str] = &[
    "listen",
    "data_dir",
    "mode",
    "instance_id",
    "store",
    "api",
    "cognigy",
    "salesforce",
    "log",
];

/// Environment keys are case-insensitive; Salesforce's field names are not. The names a
/// deployment takes from the code snippet are spelled as in the file, so that a variable
/// overrides the file's value instead of adding a second spelling of it.
fn canonical_key(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('.').collect();
    if let ["salesforce", "deployments", name, field] = parts.as_slice() {
        let field = match field.to_ascii_lowercase().replace('_', "").as_str() {
            "url" => "Url".to_owned(),
            "organizationid" => "OrganizationId".to_owned(),
            "developername" => "DeveloperName".to_owned(),
            "capabilitiesversion" => "CapabilitiesVersion".to_owned(),
            _ => (*field).to_owned(),
        };
        return format!("salesforce.deployments.{name}.{field}");
    }
    lower
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<redacted>@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn toml_string(config: &Config) -> String {
    match serde_json::to_value(config) {
        Ok(value) => {
            let mut out = String::new();
            render(&mut out, "", &value);
            out
        }
        Err(error) => format!("# the configuration could not be rendered: {error}\n"),
    }
}

/// A small TOML renderer for the effective configuration: tables after plain keys.
fn render(out: &mut String, prefix: &str, value: &serde_json::Value) {
    let Some(map) = value.as_object() else {
        return;
    };
    let mut tables = Vec::new();
    for (key, value) in map {
        match value {
            serde_json::Value::Object(_) => tables.push((key, value)),
            serde_json::Value::Null => {}
            other @ (serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::String(_)
            | serde_json::Value::Array(_)) => {
                out.push_str(&format!("{key} = {}\n", inline(other)));
            }
        }
    }
    for (key, value) in tables {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        out.push_str(&format!("\n[{path}]\n"));
        render(out, &path, value);
    }
}

fn inline(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => format!("{text:?}"),
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        serde_json::Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other @ (serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)) => other.to_string(),
    }
}
