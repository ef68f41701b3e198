//! `CognigyClient`: the core's bot port over Cognigy's Endpoint Notify and Inject APIs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use handover_core::ports::{BotAddress, BotPort};
use handover_core::{BotDelivery, DeliveryFailure};
use handover_egress::EgressPolicy;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::outbound::{EmptyMessage, Outbound, Render};

/// Which Cognigy routes carry the deliveries.
#[derive(Clone)]
pub enum EndpointRoutes {
    /// `POST {EndpointURL}/notify/{URLToken}` and `…/inject/{URLToken}`: the current routes
    /// on the Endpoint service; the URL token is the credential.
    Endpoint,
    /// The deprecated API-service routes `POST {api_base_url}/new/v2.0/endpoint/notify` and
    /// `…/inject` with an `X-API-Key` header and the URL token in the body (Cognigy deprecated
    /// them in 2026.6). For installations that still need them.
    Legacy {
        /// The API base, such as `https://api-trial.cognigy.ai`.
        api_base_url: String,
        /// A Cognigy user API key.
        api_key: String,
    },
}

impl fmt::Debug for EndpointRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Endpoint => f.write_str("Endpoint"),
            Self::Legacy { api_base_url, .. } => f
                .debug_struct("Legacy")
                .field("api_base_url", api_base_url)
                .field("api_key", &"<redacted>")
                .finish(),
        }
    }
}

/// How the client talks to Cognigy.
#[derive(Clone, Debug)]
pub struct CognigyConfig {
    /// Which routes.
    pub routes: EndpointRoutes,
    /// The longest a call may take (default 5 s).
    pub request_timeout: Duration,
    /// An avatar for human agents' messages (`data._webchat.agentAvatarOverrideUrl`): Notify
    /// outputs otherwise show the bot's avatar.
    pub agent_avatar_url: Option<String>,
    /// Where Notify and Inject may go ([`endpoint_policy`] by default: Cognigy's SaaS
    /// domains, on public addresses). A start's `endpointUrl` is bot-side input; without this
    /// any API-key holder could aim the bridge's POSTs at an internal address.
    pub endpoint_hosts: EgressPolicy,
}

/// Cognigy's SaaS Endpoint domains: `endpoint-<environment>.cognigy.ai` (trial, app, app-us
/// and the regional ones) and `endpoint-<company>.cognigy.cloud` for dedicated SaaS.
pub const COGNIGY_SAAS_ENDPOINT_HOSTS: [&str; 2] = ["*.cognigy.ai", "*.cognigy.cloud"];

/// A Notify/Inject policy for `hosts`: a host must match one of them; a host named exactly
/// (not through a `*.` wildcard) may be on a private address, every other one must resolve to
/// public addresses only.
pub fn endpoint_policy(hosts: &[impl AsRef<str>]) -> EgressPolicy {
    EgressPolicy {
        allowed_hosts: hosts.iter().map(|h| h.as_ref().to_owned()).collect(),
        allow_private_addresses: false,
        trust_listed_hosts: true,
    }
}

impl Default for CognigyConfig {
    fn default() -> Self {
        Self {
            routes: EndpointRoutes::Endpoint,
            request_timeout: Duration::from_secs(5),
            agent_avatar_url: None,
            endpoint_hosts: endpoint_policy(&COGNIGY_SAAS_ENDPOINT_HOSTS),
        }
    }
}

/// Delivers to Cognigy: Notify for the user, Inject for the Flow. Cheap to clone; clones share
/// one connection pool and one set of counters.
#[derive(Clone)]
pub struct CognigyClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: CognigyConfig,
    render: Render,
    typing_skipped: AtomicU64,
}

impl fmt::Debug for CognigyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CognigyClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CognigyClient {
    /// A client with its own connection pool, which connects only to addresses the
    /// configuration's `endpoint_hosts` allow (checked on the addresses actually resolved).
    pub fn new(config: CognigyConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("handover-bridge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(config.endpoint_hosts.resolver(true))
            .build()?;
        Ok(Self::with_http(config, http))
    }

    /// A client sharing `http`'s connection pool. URLs are still checked against
    /// `endpoint_hosts`, but the addresses a name resolves to only by a client from
    /// [`Self::new`].
    pub fn with_http(config: CognigyConfig, http: reqwest::Client) -> Self {
        let render = Render {
            agent_avatar_url: config.agent_avatar_url.clone(),
        };
        Self {
            inner: Arc::new(Inner {
                http,
                config,
                render,
                typing_skipped: AtomicU64::new(0),
            }),
        }
    }

    /// Agent typing indicators that were not relayed: Notify and Inject have no channel for
    /// them, and injecting them would run (and bill) the Flow.
    pub fn typing_skipped(&self) -> u64 {
        self.inner.typing_skipped.load(Ordering::Relaxed)
    }

    /// The URL of a call, with the URL token as an escaped path segment.
    fn url(&self, address: &BotAddress, kind: &str) -> Result<Url, DeliveryFailure> {
        let invalid = |what: &str| DeliveryFailure::Rejected {
            status: 0,
            message: format!("the {what} is not a usable URL"),
        };
        match &self.inner.config.routes {
            EndpointRoutes::Endpoint => {
                let mut url =
                    Url::parse(&address.endpoint_url).map_err(|_| invalid("Endpoint URL"))?;
                self.inner
                    .config
                    .endpoint_hosts
                    .check(&url)
                    .map_err(|refused| DeliveryFailure::Rejected {
                        status: 0,
                        message: format!("the Endpoint URL is not allowed: {refused}"),
                    })?;
                url.path_segments_mut()
                    .map_err(|()| invalid("Endpoint URL"))?
                    .pop_if_empty()
                    .push(kind)
                    .push(&address.url_token);
                Ok(url)
            }
            EndpointRoutes::Legacy { api_base_url, .. } => {
                let mut url =
                    Url::parse(api_base_url).map_err(|_| invalid("Cognigy API base URL"))?;
                url.path_segments_mut()
                    .map_err(|()| invalid("Cognigy API base URL"))?
                    .pop_if_empty()
                    .extend(["new", "v2.0", "endpoint", kind]);
                Ok(url)
            }
        }
    }

    async fn post(
        &self,
        address: &BotAddress,
        kind: &str,
        mut body: Value,
    ) -> Result<(), DeliveryFailure> {
        let url = self.url(address, kind)?;
        let mut request = self
            .inner
            .http
            .post(url)
            .timeout(self.inner.config.request_timeout);
        if let EndpointRoutes::Legacy { api_key, .. } = &self.inner.config.routes {
            request = request.header("X-API-Key", api_key);
            if let Some(object) = body.as_object_mut() {
                object.insert("URLToken".to_owned(), address.url_token.clone().into());
                // The deprecated routes require `text` even when `data` carries everything
                // (an Inject of a status). An empty text there is not a message to the user.
                object.entry("text").or_insert_with(|| "".into());
            }
        }
        let response = request.json(&body).send().await.map_err(|error| {
            let kind = if error.is_timeout() {
                "timed out"
            } else if error.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            // Without the URL: it holds the Endpoint's URL token.
            DeliveryFailure::Transient(format!("Cognigy {kind}: {}", error.without_url()))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let message: String = text.chars().take(200).collect();
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Err(DeliveryFailure::Transient(format!(
                "Cognigy answered {}: {message}",
                status.as_u16()
            )));
        }
        Err(DeliveryFailure::Rejected {
            status: status.as_u16(),
            message,
        })
    }
}

#[async_trait]
impl BotPort for CognigyClient {
    async fn deliver(
        &self,
        address: &BotAddress,
        delivery: &BotDelivery,
    ) -> Result<(), DeliveryFailure> {
        match self.inner.render.delivery(address, delivery) {
            Ok(Outbound::Notify(body)) => self.post(address, "notify", body).await,
            Ok(Outbound::Inject(body)) => self.post(address, "inject", body).await,
            Ok(Outbound::Nothing) => {
                self.inner.typing_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "agent typing not relayed: Cognigy's Endpoint APIs cannot carry it"
                );
                Ok(())
            }
            Err(EmptyMessage) => Err(DeliveryFailure::Rejected {
                status: 0,
                message: "an empty message is never sent to the user".to_owned(),
            }),
        }
    }
}
