/*!
A simulator of Salesforce Messaging for In-App and Web (MIAW, "Enhanced Chat") for tests, demos
and benchmarks: the custom-client REST API and the server-sent-event stream as Salesforce's
public reference describes them (`docs/miaw-sandbox.md` lists the sources and every behaviour
the sandbox had to choose), quirks included, plus what a real org cannot give a test:
a control API to play the agent, scripted agents, fault injection, and a console page for
people.

```no_run
# async fn demo() -> anyhow::Result<()> {
use miaw_sandbox::{Sandbox, SandboxConfig};

let sandbox = Sandbox::start("127.0.0.1:0".parse()?, SandboxConfig::default(), None).await?;
println!("MIAW base URL: {}", sandbox.url());
# Ok(())
# }
```

The sandbox depends on no crate of the bridge: it is specified by the public API it imitates.
See `docs/miaw-sandbox.md` for the control API and the fault switches.
*/

mod config;
mod faults;
mod http;
mod jwt;
mod payload;
mod pdf;
mod tls;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{
    ConfigError, DEFAULT_DEVELOPER_NAME, DEFAULT_ORG_ID, DeploymentConfig, IdentityKey, Replay,
    SandboxConfig, ScriptedAgent, TimeBounds, UserEntryIdentifier,
};
pub use faults::Faults;
pub use tls::Identity;

/// A running sandbox. Dropping it stops the server.
#[derive(Debug)]
pub struct Sandbox {
    address: SocketAddr,
    url: String,
    shutdown: watch::Sender<bool>,
    shared: Arc<http::Shared>,
}

impl Sandbox {
    /// Starts serving on `address` (port 0 picks a free one), over TLS if `tls` is given.
    pub async fn start(
        address: SocketAddr,
        config: SandboxConfig,
        tls: Option<Identity>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{address}"));
        let config_streams = config.http2_max_concurrent_streams;
        let shared = http::Shared::new(world::World::new(config, url.clone()));
        let router = http::router(shared.clone());
        let (shutdown, mut stopped) = watch::channel(false);
        match (tls, config_streams) {
            (None, None) => {
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
            }
            (tls, streams) => {
                let acceptor = match tls {
                    Some(identity) => {
                        Some(tokio_rustls::TlsAcceptor::from(identity.server_config()?))
                    }
                    None => None,
                };
                tokio::spawn(serve_connections(
                    listener, acceptor, router, stopped, streams,
                ));
            }
        }
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

    /// The base URL, the MIAW "Url" of the deployment's code snippet.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The deployments served.
    pub fn deployments(&self) -> Vec<DeploymentConfig> {
        self.shared.world().deployments().to_vec()
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

/// Serves each connection with hyper's automatic HTTP/1.1-or-HTTP/2 builder: over TLS (ALPN
/// picks), or in plain text with a set HTTP/2 stream limit.
async fn serve_connections(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
    http2_max_concurrent_streams: Option<u32>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let mut builder = Builder::new(TokioExecutor::new());
    if let Some(streams) = http2_max_concurrent_streams {
        builder.http2().max_concurrent_streams(streams);
    }
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}
