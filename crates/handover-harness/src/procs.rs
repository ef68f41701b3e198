//! The processes a run is made of: the two sandboxes and the bridge instances, each a real
//! child process with its output in a log file of the run's folder.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// Where the binaries are (`target/debug` or `target/release`).
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    pub(crate) dir: PathBuf,
}

impl Binaries {
    /// The binaries in `bin_dir`, for a run whose files go to `work_dir`, emptied first.
    pub(crate) fn for_run(bin_dir: &Path, work_dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(work_dir);
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        Ok(Self {
            dir: bin_dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing; build it first (`cargo xtask chaos` does)",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A free port on loopback. The listener is dropped before the process binds, so another
/// process could take it in between; on a test machine that does not happen in practice, and
/// a bind failure shows in the child's log and in `wait_ready`.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("looking for a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A child process with its log.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) log: PathBuf,
    child: Child,
}

impl Process {
    async fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        url: String,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        // The run's processes see only what they are given, not the caller's HANDOVER_*.
        for (key, _) in std::env::vars() {
            if key.starts_with("HANDOVER_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            url,
            log,
            child,
        })
    }

    /// Waits until `path` answers 2xx, or the process exits, or `limit` passes.
    pub(crate) async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        path: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited while starting ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Ok(response) = http.get(format!("{}{path}", self.url)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "{} did not answer {path} within {limit:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown, no lease released, nothing flushed.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts `miaw-sandbox` with the TOML `config`.
async fn miaw_sandbox(binaries: &Binaries, dir: &Path, config: &str) -> anyhow::Result<Process> {
    let port = free_port()?;
    let config_path = dir.join("miaw-sandbox.toml");
    std::fs::write(&config_path, config)?;
    Process::spawn(
        "miaw-sandbox",
        &binaries.path("miaw-sandbox")?,
        &[
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--config".to_owned(),
            config_path.display().to_string(),
        ],
        &[],
        format!("http://127.0.0.1:{port}"),
        dir.join("miaw-sandbox.log"),
    )
    .await
}

/// Starts `cognigy-sandbox`.
async fn cognigy_sandbox(binaries: &Binaries, dir: &Path) -> anyhow::Result<Process> {
    let port = free_port()?;
    Process::spawn(
        "cognigy-sandbox",
        &binaries.path("cognigy-sandbox")?,
        &["--listen".to_owned(), format!("127.0.0.1:{port}")],
        &[],
        format!("http://127.0.0.1:{port}"),
        dir.join("cognigy-sandbox.log"),
    )
    .await
}

/// Starts both sandboxes (`miaw-sandbox` with the TOML `miaw_config`) and waits until each
/// answers.
pub(crate) async fn sandboxes(
    binaries: &Binaries,
    dir: &Path,
    miaw_config: &str,
    http: &reqwest::Client,
) -> anyhow::Result<(Process, Process)> {
    let mut miaw = miaw_sandbox(binaries, dir, miaw_config).await?;
    miaw.wait_ready(http, "/control/deployments", Duration::from_secs(20))
        .await?;
    let mut cognigy = cognigy_sandbox(binaries, dir).await?;
    cognigy
        .wait_ready(http, "/control/faults", Duration::from_secs(20))
        .await?;
    Ok((miaw, cognigy))
}

/// Starts the benchmark's raw floor relay (`handover-harness floor`, this same binary).
pub(crate) async fn floor(
    dir: &Path,
    miaw_url: &str,
    org_id: &str,
    developer_name: &str,
) -> anyhow::Result<Process> {
    let port = free_port()?;
    let program = std::env::current_exe().context("finding the harness binary")?;
    Process::spawn(
        "floor",
        &program,
        &[
            "floor".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--miaw".to_owned(),
            miaw_url.to_owned(),
            "--org".to_owned(),
            org_id.to_owned(),
            "--deployment".to_owned(),
            developer_name.to_owned(),
        ],
        &[],
        format!("http://127.0.0.1:{port}"),
        dir.join("floor.log"),
    )
    .await
}

/// What every bridge instance of a run shares.
#[derive(Clone, Debug)]
pub(crate) struct BridgeSettings {
    pub(crate) store_url: String,
    pub(crate) store_keys: String,
    pub(crate) api_key: String,
    pub(crate) admin_key: String,
    pub(crate) miaw_url: String,
    pub(crate) org_id: String,
    pub(crate) developer_name: String,
    /// Extra `key = value` lines for the `[salesforce]` table.
    pub(crate) salesforce: Vec<(String, String)>,
    pub(crate) lease_ttl_secs: u64,
    /// The `[log] level` filter.
    pub(crate) log_level: String,
}

/// Starts `handover serve` as instance `instance` (a new name per start, as a restarted pod
/// gets), logging JSON at `info` into `{dir}/{instance}.log`.
pub(crate) async fn bridge(
    binaries: &Binaries,
    dir: &Path,
    settings: &BridgeSettings,
    instance: &str,
    port: u16,
) -> anyhow::Result<Process> {
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let mut toml = String::new();
    writeln!(toml, "listen = \"127.0.0.1:{port}\"")?;
    writeln!(toml, "data_dir = {:?}", data_dir.display().to_string())?;
    writeln!(toml, "mode = \"production\"")?;
    writeln!(toml, "instance_id = \"{instance}\"")?;
    writeln!(toml, "[store]")?;
    writeln!(toml, "url = {:?}", settings.store_url)?;
    writeln!(toml, "keys = {:?}", settings.store_keys)?;
    writeln!(toml, "lease_ttl_secs = {}", settings.lease_ttl_secs)?;
    writeln!(toml, "[[api.keys]]")?;
    writeln!(toml, "name = \"flow\"")?;
    writeln!(toml, "key = {:?}", settings.api_key)?;
    writeln!(toml, "[[api.keys]]")?;
    writeln!(toml, "name = \"ops\"")?;
    writeln!(toml, "key = {:?}", settings.admin_key)?;
    writeln!(toml, "admin = true")?;
    // The Cognigy sandbox is on loopback: listed by address, or starts would be refused.
    writeln!(toml, "[cognigy]")?;
    writeln!(toml, "endpoint_hosts = [\"127.0.0.1\"]")?;
    writeln!(toml, "[log]")?;
    writeln!(toml, "format = \"json\"")?;
    writeln!(toml, "level = {:?}", settings.log_level)?;
    writeln!(toml, "[salesforce]")?;
    for (key, value) in &settings.salesforce {
        writeln!(toml, "{key} = {value}")?;
    }
    writeln!(toml, "[salesforce.deployments.sandbox]")?;
    writeln!(toml, "Url = {:?}", settings.miaw_url)?;
    writeln!(toml, "OrganizationId = {:?}", settings.org_id)?;
    writeln!(toml, "DeveloperName = {:?}", settings.developer_name)?;
    let config_path = dir.join(format!("{instance}.toml"));
    std::fs::write(&config_path, toml)?;
    Process::spawn(
        instance,
        &binaries.path("handover")?,
        &[
            "serve".to_owned(),
            "--config".to_owned(),
            config_path.display().to_string(),
        ],
        &[],
        format!("http://127.0.0.1:{port}"),
        dir.join(format!("{instance}.log")),
    )
    .await
}
