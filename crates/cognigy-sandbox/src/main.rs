//! `cognigy-sandbox --listen 127.0.0.1:PORT [--config FILE] [--bridge-url URL --bridge-key KEY]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use cognigy_sandbox::{BridgeConfig, Sandbox, SandboxConfig};

/// A stand-in for Cognigy.AI: Notify/Inject recorder and a webchat with a tiny bot.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// A TOML configuration file (URL tokens, API key, bridge, handover settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The bridge the webchat's Flow calls (overrides the file).
    #[arg(long, requires = "bridge_key")]
    bridge_url: Option<String>,
    /// The bridge's API key.
    #[arg(long, requires = "bridge_url", env = "COGNIGY_SANDBOX_BRIDGE_KEY")]
    bridge_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cognigy_sandbox=info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = SandboxConfig::load(args.config.as_deref())?;
    if let (Some(url), Some(api_key)) = (args.bridge_url, args.bridge_key) {
        config.bridge = Some(BridgeConfig { url, api_key });
    }
    let bridge = config.bridge.as_ref().map(|b| b.url.clone());
    let sandbox = Sandbox::start(args.listen, config).await?;
    let mut out = format!("cognigy-sandbox listening: url: {}\n", sandbox.url());
    for token in sandbox.url_tokens() {
        out.push_str(&format!("endpoint: {}/notify/{token}\n", sandbox.url()));
    }
    out.push_str(&format!("webchat: {}\n", sandbox.webchat_url()));
    out.push_str(&match bridge {
        Some(url) => format!("bridge: {url}\n"),
        None => "bridge: none (PUT /control/bridge or --bridge-url to hand over)\n".to_owned(),
    });
    // The URLs are the program's output, for people and scripts alike.
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
    tokio::signal::ctrl_c().await?;
    sandbox.stop();
    Ok(())
}
