//! The bridge, assembled from its configuration: store, adapters, runtime, HTTP server, and
//! the background tasks (takeover scan, inbox notifications, retention).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use handover_cognigy::CognigyClient;
use handover_cognigy::api::{self, ApiConfig, ApiKey};
use handover_core::ports::{SalesforcePort, SessionStore};
use handover_salesforce::{MiawClient, MiawConfig, SharedSlots, TokenPacer, Transport};
use handover_store::{Keyring, MemoryStore, SqlBackend, SqlStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::{Parts, Runtime, now};
use crate::service::{AppHandovers, Lists};

/// The store's shared schedule, for token requests.
struct StoreSlots(Arc<SqlStore>);

#[async_trait::async_trait]
impl SharedSlots for StoreSlots {
    async fn reserve(&self, key: &str, interval: Duration) -> Result<Duration, String> {
        self.0
            .reserve_slot(key, interval)
            .await
            .map_err(|error| error.to_string())
    }
}

/// A running bridge.
#[derive(Debug)]
pub struct App {
    address: SocketAddr,
    url: String,
    runtime: Runtime,
    lists: Lists,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the store the configuration names (`memory:` for tests), with `keys`.
pub async fn open_store(config: &Config, keys: Keyring) -> anyhow::Result<Lists> {
    let url = config.store_url();
    if url == "memory:" {
        return Ok(Lists::Memory(Arc::new(MemoryStore::new(keys))));
    }
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
    }
    let store = SqlStore::connect(&url, keys)
        .await
        .context("opening the store (store.url)")?;
    Ok(Lists::Sql(Arc::new(store)))
}

/// The keyring the configuration names.
pub fn keyring(config: &Config) -> anyhow::Result<Keyring> {
    if config.store.keys.expose().trim().is_empty() {
        anyhow::ensure!(
            config.mode == crate::config::Mode::Demo,
            "store.keys: production mode needs encryption keys"
        );
        return Ok(Keyring::ephemeral());
    }
    Keyring::parse(config.store.keys.expose()).context("store.keys")
}

impl App {
    /// Starts serving `config`.
    pub async fn start(config: &Config, keys: Keyring) -> anyhow::Result<Self> {
        let lists = open_store(config, keys).await?;
        let store: Arc<dyn SessionStore> = match &lists {
            Lists::Memory(store) => store.clone(),
            Lists::Sql(store) => store.clone(),
        };
        let http_settings = config.http_settings();
        let streams_per_socket = http_settings.streams_per_socket();
        let transport = Transport::new(http_settings)
            .map_err(|e| anyhow::anyhow!("salesforce.{}: {}", e.field, e.problem))?;
        // Token requests are paced per org (Salesforce counts them per org); on PostgreSQL
        // every instance books its turns in the store, so the rate holds for the fleet.
        let slots: Option<Arc<dyn SharedSlots>> = match &lists {
            Lists::Sql(store) if store.backend() == SqlBackend::Postgres => {
                Some(Arc::new(StoreSlots(store.clone())))
            }
            Lists::Sql(_) | Lists::Memory(_) => None,
        };
        let mut pacers: BTreeMap<&str, Arc<TokenPacer>> = BTreeMap::new();
        let mut deployments: BTreeMap<String, Arc<dyn SalesforcePort>> = BTreeMap::new();
        for (name, deployment) in &config.salesforce.deployments {
            let mut miaw = MiawConfig::new(
                &deployment.url,
                &deployment.organization_id,
                &deployment.developer_name,
            );
            miaw.request_timeout = Duration::from_millis(config.salesforce.request_timeout_ms);
            miaw.attachments = config.attachments.policy();
            miaw.token_requests_per_minute = config.salesforce.token_requests_per_minute;
            let miaw = miaw.validated().map_err(|e| {
                anyhow::anyhow!("salesforce.deployments.{name}: {}: {}", e.field, e.problem)
            })?;
            let per_minute = config.salesforce.token_requests_per_minute;
            let pacer = pacers
                .entry(deployment.organization_id.as_str())
                .or_insert_with(|| {
                    Arc::new(match &slots {
                        Some(slots) => TokenPacer::shared(
                            per_minute,
                            format!("token-requests:{}", deployment.organization_id),
                            slots.clone(),
                        ),
                        None => TokenPacer::local(per_minute),
                    })
                })
                .clone();
            deployments.insert(
                name.clone(),
                Arc::new(MiawClient::with_pacer(miaw, &transport, pacer)),
            );
        }
        let default_deployment = config
            .salesforce
            .default_deployment
            .clone()
            .or_else(|| deployments.keys().next().cloned())
            .context("salesforce.deployments: no deployment is configured")?;
        // Its own pool: its connections go only where `cognigy.endpoint_hosts` allows.
        let bot = Arc::new(
            CognigyClient::new(config.cognigy_config()).context("building the Cognigy client")?,
        );
        let metrics = Metrics::new();
        let lease_ttl = Duration::from_secs(config.store.lease_ttl_secs);
        let owner = instance_name(config)?;
        let max_live = max_live_handovers(
            config.api.max_live_handovers,
            open_file_limit(),
            streams_per_socket,
        );
        metrics
            .max_live
            .set(i64::try_from(max_live).unwrap_or(i64::MAX));
        let runtime = Runtime::new(Parts {
            store: store.clone(),
            deployments,
            default_deployment,
            bot,
            session_config: config.session_config(),
            owner: owner.clone(),
            lease_ttl,
            inbox_poll: Duration::from_secs(10),
            metrics: metrics.clone(),
            log_text: config.log.message_text,
            max_live,
        });
        let mut keys = Vec::new();
        for entry in &config.api.keys {
            keys.push(if entry.admin {
                ApiKey::admin(&entry.name, entry.key.expose())?
            } else {
                ApiKey::new(&entry.name, entry.key.expose())?
            });
        }
        let service = Arc::new(AppHandovers::new(runtime.clone(), lists.clone()));
        let api = api::router(
            service,
            ApiConfig {
                keys,
                max_body_bytes: config.api.max_body_bytes,
                max_message_chars: config.api.max_message_chars,
                endpoint_hosts: config.cognigy_config().endpoint_hosts,
                ..ApiConfig::default()
            },
        );
        let (stop, stopped) = watch::channel(false);
        let router = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    let connections = transport.streams().connections();
                    async move {
                        metrics
                            .stream_connections
                            .set(i64::try_from(connections).unwrap_or(i64::MAX));
                        (
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.render(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get({
                    let runtime = runtime.clone();
                    move || {
                        let runtime = runtime.clone();
                        async move { ready(&runtime).await }
                    }
                }),
            )
            .merge(api);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {} (listen)", config.listen))?;
        let address = listener.local_addr()?;
        let url = format!("http://{address}");
        let mut tasks = Vec::new();
        let mut server_stop = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the HTTP server stopped");
            }
        }));
        // A lasting name means the leases under it are this instance's own, left by its
        // previous run: take them back now rather than after they lapse.
        if config.instance_id.is_some() || config.store_url().starts_with("sqlite") {
            match store.release_leases_of(&owner).await {
                Ok(0) => {}
                Ok(freed) => {
                    tracing::info!(
                        freed,
                        "took back the leases of this instance's previous run"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "could not free this instance's old leases; they lapse by themselves");
                }
            }
        }
        tasks.push(runtime.spawn_scanner(lease_ttl / 2));
        if let Lists::Sql(sql) = &lists
            && sql.backend() == SqlBackend::Postgres
            && let Some(mut listener) = sql.inbox_listener().await?
        {
            let runtime = runtime.clone();
            let mut stop = stopped.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        woken = listener.next() => match woken {
                            Ok(id) => runtime.wake(id),
                            Err(error) => {
                                tracing::warn!(%error, "inbox notifications failed; drivers poll meanwhile");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        },
                        () = crate::runtime::stopped(&mut stop) => return,
                    }
                }
            }));
        }
        let retention = Duration::from_secs(config.store.retention_days * 24 * 3600);
        let purge_store = store.clone();
        let mut purge_stop = stopped;
        tasks.push(tokio::spawn(async move {
            loop {
                let before = now()
                    .as_unix_millis()
                    .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
                match purge_store
                    .purge_ended(handover_core::Timestamp::from_unix_millis(before))
                    .await
                {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged ended handovers past retention"),
                    Err(error) => tracing::warn!(%error, "purging ended handovers failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    () = crate::runtime::stopped(&mut purge_stop) => return,
                }
            }
        }));
        tracing::info!(%url, "the bridge is listening");
        Ok(Self {
            address,
            url,
            runtime,
            lists,
            stop,
            tasks,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its base URL (the API is under `/v1`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The runtime (tests look at what it drives).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The store.
    pub fn lists(&self) -> &Lists {
        &self.lists
    }

    /// Graceful shutdown: stop taking requests, stop the drivers (each releases its lease),
    /// within `limit`.
    pub async fn shutdown(self, limit: Duration) {
        let _ = self.stop.send(true);
        self.runtime.shutdown(limit).await;
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::warn!("a background task did not stop in time");
            }
        }
    }

    /// Stops everything at once, as a crash would: no lease is released.
    pub fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.runtime.abort_all();
    }
}

async fn ready(runtime: &Runtime) -> (StatusCode, String) {
    if runtime.is_stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping".to_owned());
    }
    match runtime.store().live_handovers().await {
        Ok(live) => (
            StatusCode::OK,
            format!("ready; {} live handovers", live.len()),
        ),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {error}")),
    }
}

/// Descriptors kept beside the streams for everything else: the store's files and
/// connections, the API's clients, REST calls in flight and the pools' idle connections.
/// The benchmark held 18,000 streams with 2,000 kept and ran the store out of descriptors
/// at 19,000 with 1,000 (docs/benchmarks.md).
pub const DESCRIPTORS_KEPT: u64 = 2_000;

/// This process's open-file limit (the soft one, which is what counts), if it can be read.
pub fn open_file_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// The most handovers to drive at once: `configured` if set, else what `open_files` leaves
/// after [`DESCRIPTORS_KEPT`] (and half of `open_files` when it is small), times the event
/// streams that share a socket for sure (`streams_per_socket`: 1 unless HTTP/2 is required,
/// since each live handover holds its stream). A configured figure above the derived one is
/// kept, with a warning: the store would run out of descriptors before the limit is reached.
pub fn max_live_handovers(
    configured: Option<usize>,
    open_files: Option<u64>,
    streams_per_socket: usize,
) -> usize {
    let derived = open_files.map(|limit| {
        let kept = DESCRIPTORS_KEPT.min(limit / 2);
        usize::try_from(limit - kept)
            .unwrap_or(usize::MAX)
            .saturating_mul(streams_per_socket.max(1))
    });
    match (configured, derived) {
        (Some(configured), Some(derived)) => {
            if configured > derived {
                tracing::warn!(
                    configured,
                    derived,
                    "api.max_live_handovers is above what the open-file limit supports; \
                     raise the limit (ulimit -n) or lower the setting"
                );
            }
            configured
        }
        (Some(configured), None) => configured,
        (None, Some(derived)) => derived,
        (None, None) => {
            tracing::warn!("the open-file limit cannot be read; live handovers are not limited");
            usize::MAX
        }
    }
}

/// This instance's name in leases: the configured one; on SQLite (one instance by
/// definition) one generated at the first start and kept in the data directory, so that a
/// restart takes its handovers back at once; on PostgreSQL, without a configured name, a new
/// one per start (instances may share a data directory; two under one name would take each
/// other's handovers).
fn instance_name(config: &Config) -> anyhow::Result<String> {
    if let Some(name) = &config.instance_id {
        return Ok(name.clone());
    }
    if !config.store_url().starts_with("sqlite") {
        return Ok(format!("instance-{}", random_hex()));
    }
    let path = config.data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(kept) if !kept.trim().is_empty() => return Ok(kept.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", path.display()));
        }
    }
    let name = format!("instance-{}", random_hex());
    std::fs::write(&path, format!("{name}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}

/// 16 random hex digits.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return "0000000000000000".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_handover_limit_follows_the_open_file_limit_unless_configured() {
        // What the descriptors leave after the store's share.
        assert_eq!(max_live_handovers(None, Some(20_000), 1), 18_000);
        assert_eq!(max_live_handovers(None, Some(1_048_576), 1), 1_046_576);
        // A small limit (a shell's default 1,024) keeps half for the rest.
        assert_eq!(max_live_handovers(None, Some(1_024), 1), 512);
        assert_eq!(max_live_handovers(None, Some(0), 1), 0);
        // A configured figure wins, above the derived one too (with a warning).
        assert_eq!(max_live_handovers(Some(50), Some(20_000), 1), 50);
        assert_eq!(max_live_handovers(Some(30_000), Some(20_000), 1), 30_000);
        assert_eq!(max_live_handovers(Some(7), None, 1), 7);
        // Unknown limit, nothing configured: no limit.
        assert_eq!(max_live_handovers(None, None, 1), usize::MAX);
        // With HTTP/2 required, a socket carries that many streams.
        assert_eq!(max_live_handovers(None, Some(20_000), 100), 1_800_000);
        assert_eq!(max_live_handovers(None, Some(1_024), 100), 51_200);
        assert_eq!(max_live_handovers(Some(25_000), Some(20_000), 100), 25_000);
        assert_eq!(max_live_handovers(None, Some(u64::MAX), 100), usize::MAX);
    }
}
