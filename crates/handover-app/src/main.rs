//! `handover`: the bridge between a Cognigy.AI bot and a Salesforce MIAW agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use handover_app::config::{Config, LogFormat};
use handover_app::service::Lists;
use handover_app::{app, demo};
use handover_core::{HandoverId, Input};
use handover_store::SummaryFilter;

/// Hands a Cognigy.AI conversation over to a Salesforce Messaging for In-App and Web agent.
#[derive(Parser)]
#[command(name = "handover", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the bridge from its configuration (handover.toml, HANDOVER_… variables).
    Serve {
        /// A configuration file instead of ./handover.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs the bridge with an in-process Salesforce sandbox (agent console) and Cognigy
    /// sandbox (webchat); no configuration needed.
    Demo {
        /// The bridge's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo keeps its SQLite database and key.
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
    },
    /// Prints the effective configuration, secrets redacted, or what is wrong with it.
    CheckConfig {
        /// A configuration file instead of ./handover.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Creates or updates the database schema, then exits.
    Migrate {
        /// A configuration file instead of ./handover.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Looks at handovers in the store.
    Sessions {
        /// A configuration file instead of ./handover.toml (before or after the action).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// The newest handovers.
    List {
        /// Only live ones.
        #[arg(long)]
        live: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One handover.
    Show {
        /// Its id.
        id: String,
    },
    /// Closes a handover as the Flow would (its driver applies it).
    Close {
        /// Its id.
        id: String,
    },
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours for a person at a terminal, never into a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What the program says on stdout (URLs, listings): its output, for people and scripts. A
/// reader that went away (a closed pipe) is not a reason to crash.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// SIGTERM or SIGINT, with the handlers registered now (before anything is printed, so
/// that a supervisor's early SIGTERM is a graceful stop, not a kill).
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Each live handover holds a socket: take the hard open-file limit, not the soft one
/// (often 1,024), as servers do.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            init_logs(config.log.format, &config.log.level);
            let keys = app::keyring(&config)?;
            raise_open_file_limit();
            let stop = shutdown_signal()?;
            let bridge = app::App::start(&config, keys).await?;
            out(&format!("api: {}/v1\n", bridge.url()));
            stop.await;
            tracing::info!("stopping: draining drivers and releasing leases");
            bridge.shutdown(Duration::from_secs(20)).await;
        }
        Command::Demo { listen, data_dir } => {
            init_logs(LogFormat::Pretty, "warn,handover_app=info");
            let stop = shutdown_signal()?;
            let running = demo::start(listen, data_dir).await?;
            out(&running.urls());
            out("Open the webchat as the customer and the console as the agent; Ctrl-C stops.\n");
            stop.await;
            running.shutdown(Duration::from_secs(10)).await;
        }
        Command::CheckConfig { config } => {
            let config = Config::load(config.as_deref())?;
            out(&config.redacted());
        }
        Command::Migrate { config } => {
            let config = Config::load(config.as_deref())?;
            init_logs(config.log.format, &config.log.level);
            app::open_store(&config, app::keyring(&config)?).await?;
            out("the store is up to date\n");
        }
        Command::Sessions { config, action } => {
            let config = Config::load(config.as_deref())?;
            init_logs(config.log.format, "warn");
            let lists = app::open_store(&config, app::keyring(&config)?).await?;
            sessions(&lists, action).await?;
        }
    }
    Ok(())
}

async fn sessions(lists: &Lists, action: SessionsAction) -> anyhow::Result<()> {
    let store: &dyn handover_core::ports::SessionStore = match lists {
        Lists::Memory(store) => store.as_ref(),
        Lists::Sql(store) => store.as_ref(),
    };
    match action {
        SessionsAction::List { live, limit } => {
            let filter = SummaryFilter {
                live: live.then_some(true),
                limit,
                ..SummaryFilter::default()
            };
            let summaries = match lists {
                Lists::Memory(store) => store.summaries(&filter)?,
                Lists::Sql(store) => store.summaries(&filter).await?,
            };
            out("HANDOVER  PHASE  OUTCOME  USER/SESSION\n");
            for summary in summaries {
                let outcome = summary.outcome.map_or_else(
                    || "live".to_owned(),
                    |o| format!("{}/{}", o.status().as_str(), o.reason),
                );
                out(&format!(
                    "{}  {}  {}  {}/{}\n",
                    summary.handover_id,
                    summary.phase.as_str(),
                    outcome,
                    printable(&summary.user_id),
                    printable(&summary.session_id)
                ));
            }
        }
        SessionsAction::Show { id } => {
            let id = HandoverId::parse(&id).context("not a handover id")?;
            let stored = store.load(id).await?.context("no such handover")?;
            let pending = store.pending_commands(id).await?.len();
            let inputs = store.pending_inputs(id).await?.len();
            out(&format!(
                "handover: {id}\nconversation: {}\nuser: {}\nsession: {}\nphase: {}\noutcome: {}\nversion: {}\npending commands: {pending}\npending inputs: {inputs}\n",
                stored.session.conversation_id(),
                printable(&stored.address.user_id),
                printable(&stored.address.session_id),
                stored.session.phase().as_str(),
                stored.session.outcome().map_or_else(
                    || "-".to_owned(),
                    |o| format!("{}/{}", o.status().as_str(), o.reason)
                ),
                stored.version.0,
            ));
        }
        SessionsAction::Close { id } => {
            let id = HandoverId::parse(&id).context("not a handover id")?;
            let position = store.append_input(id, &Input::FlowClosed).await?;
            out(&format!(
                "close requested (inbox position {position}); the handover's driver applies it\n"
            ));
        }
    }
    Ok(())
}

/// A client-chosen value for the operator's terminal: control characters (escape sequences
/// among them) are shown escaped, never sent to the terminal.
fn printable(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}
