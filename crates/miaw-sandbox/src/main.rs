//! `miaw-sandbox --listen 127.0.0.1:PORT [--tls] [--config FILE]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use miaw_sandbox::{Identity, Sandbox, SandboxConfig};

/// A simulator of Salesforce Messaging for In-App and Web, with an agent console.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Serve https with a self-signed certificate (or --cert and --key).
    #[arg(long)]
    tls: bool,
    /// A PEM certificate chain for --tls.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// A TOML configuration file (deployments, token lifetimes, limits, scripted agents).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "miaw_sandbox=info".into()),
        )
        .init();
    let args = Args::parse();
    let config = SandboxConfig::load(args.config.as_deref())?;
    let tls = match (args.tls || args.cert.is_some(), args.cert, args.key) {
        (false, _, _) => None,
        (true, Some(cert), Some(key)) => Some(Identity::from_files(&cert, &key)?),
        (true, _, _) => Some(Identity::self_signed()?),
    };
    let sandbox = Sandbox::start(args.listen, config, tls).await?;
    let mut out = format!("miaw-sandbox listening: url: {}\n", sandbox.url());
    for deployment in sandbox.deployments() {
        out.push_str(&format!(
            "deployment: orgId={} developerName={}{}\n",
            deployment.org_id,
            deployment.developer_name,
            if deployment.scripted_agent.is_some() {
                " (scripted agent)"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!("console: {}/console\n", sandbox.url()));
    // The URLs are the program's output, for people and scripts alike.
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
    tokio::signal::ctrl_c().await?;
    sandbox.stop();
    Ok(())
}
