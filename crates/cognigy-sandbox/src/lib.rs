/*!
A stand-in for Cognigy.AI, for tests and the demo: the Endpoint's Notify and Inject routes
(current and deprecated), which record every call, and a webchat page whose tiny scripted
Flow answers small talk and hands the user over to a human through the bridge, exactly as a
Cognigy Flow's HTTP Request nodes would.

```no_run
# async fn demo() -> anyhow::Result<()> {
use cognigy_sandbox::{Sandbox, SandboxConfig};

let sandbox = Sandbox::start("127.0.0.1:0".parse()?, SandboxConfig::default()).await?;
println!("Endpoint URL: {}, webchat: {}/webchat", sandbox.url(), sandbox.url());
# Ok(())
# }
```

It depends on no crate of the bridge: it is specified by the public APIs it imitates
(Cognigy's Endpoint, and the bridge's `/v1` API as its OpenAPI document describes it). See
`docs/cognigy-sandbox.md`.
*/

mod config;
mod endpoint;
mod flow;
mod http;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{
    BridgeConfig, ConfigError, DEFAULT_API_KEY, DEFAULT_URL_TOKEN, FlowHandover, SandboxConfig,
};
pub use state::Faults;

/// A running sandbox. Dropping it stops it.
#[derive(Debug)]
pub struct Sandbox {
    address: SocketAddr,
    url: String,
    shutdown: watch::Sender<bool>,
    shared: Arc<state::Shared>,
}

impl Sandbox {
    /// Starts serving on `address` (port 0 picks a free one).
    pub async fn start(address: SocketAddr, config: SandboxConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr()?;
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let shared = Arc::new(state::Shared::new(config, url.clone()));
        let router = http::router(shared.clone());
        let (shutdown, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the sandbox stopped serving");
            }
        });
        Ok(Self {
            address,
            url,
            shutdown,
            shared,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL: the Endpoint URL to give the bridge.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of the webchat page.
    pub fn webchat_url(&self) -> String {
        format!("{}/webchat", self.url)
    }

    /// The URL tokens of the Endpoints served.
    pub fn url_tokens(&self) -> Vec<String> {
        self.shared.state().config.url_tokens.clone()
    }

    /// Points the webchat's Flow at a bridge (or at none).
    pub fn set_bridge(&self, bridge: Option<BridgeConfig>) {
        self.shared.state().bridge = bridge;
    }

    /// Stops serving.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}
