//! `handover demo`: the bridge on SQLite in a local data directory, with an in-process
//! `miaw-sandbox` (its agent console) and `cognigy-sandbox` (its webchat), wired together. No
//! configuration and no credentials: the API key is made up at start, the encryption key is
//! kept in the data directory so that a restarted demo reads its own data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;

use crate::app::{App, random_hex};
use crate::config::{ApiKeyEntry, Config, Deployment, Mode, Secret};

/// The demo, running.
#[derive(Debug)]
pub struct Demo {
    /// The bridge.
    pub app: App,
    /// The Salesforce stand-in.
    pub miaw: miaw_sandbox::Sandbox,
    /// The Cognigy stand-in.
    pub cognigy: cognigy_sandbox::Sandbox,
}

impl Demo {
    /// The lines `handover demo` prints, one URL each, for people and scripts.
    pub fn urls(&self) -> String {
        format!(
            "webchat: {}\nconsole: {}/console\napi: {}/v1\n",
            self.cognigy.webchat_url(),
            self.miaw.url(),
            self.app.url()
        )
    }

    /// Stops the bridge, then the sandboxes.
    pub async fn shutdown(self, limit: Duration) {
        self.app.shutdown(limit).await;
        self.miaw.stop();
        self.cognigy.stop();
    }
}

/// The demo's encryption key: read from `dir/demo.key`, or made and written there.
fn demo_key(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("demo.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no randomness for the demo key: {e}"))?;
    let spec = format!(
        "demo:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    std::fs::write(&path, &spec).with_context(|| format!("writing {}", path.display()))?;
    Ok(spec)
}

/// Starts the demo: the bridge on `listen`, the sandboxes on free ports.
pub async fn start(listen: SocketAddr, data_dir: PathBuf) -> anyhow::Result<Demo> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let miaw_config = miaw_sandbox::SandboxConfig {
        // The customer sees where they are in the queue.
        queue_notifications: true,
        ..miaw_sandbox::SandboxConfig::default()
    };
    let miaw = miaw_sandbox::Sandbox::start(loopback, miaw_config, None)
        .await
        .context("starting the MIAW sandbox")?;
    let api_key = format!("demo-{}{}", random_hex(), random_hex());
    let config = Config {
        listen,
        data_dir: data_dir.clone(),
        mode: Mode::Demo,
        store: crate::config::StoreSection {
            keys: Secret::from(demo_key(&data_dir)?.as_str()),
            ..crate::config::StoreSection::default()
        },
        api: crate::config::ApiSection {
            keys: vec![ApiKeyEntry {
                name: "demo-webchat".to_owned(),
                key: Secret::from(api_key.as_str()),
                admin: true,
            }],
            ..crate::config::ApiSection::default()
        },
        salesforce: crate::config::SalesforceSection {
            deployments: BTreeMap::from([(
                "sandbox".to_owned(),
                Deployment {
                    url: miaw.url().to_owned(),
                    organization_id: miaw_sandbox::DEFAULT_ORG_ID.to_owned(),
                    developer_name: miaw_sandbox::DEFAULT_DEVELOPER_NAME.to_owned(),
                    capabilities_version: "1".to_owned(),
                },
            )]),
            default_deployment: Some("sandbox".to_owned()),
            ..crate::config::SalesforceSection::default()
        },
        // The demo's files live on the sandboxes, on loopback.
        attachments: crate::config::AttachmentsSection {
            allow_private_addresses: true,
            ..crate::config::AttachmentsSection::default()
        },
        // Its Cognigy is the sandbox, on loopback: listed by address.
        cognigy: crate::config::CognigySection {
            endpoint_hosts: vec!["127.0.0.1".to_owned()],
            ..crate::config::CognigySection::default()
        },
        ..Config::default()
    };
    config.validate().context("the demo's configuration")?;
    let keys = crate::app::keyring(&config)?;
    let app = App::start(&config, keys).await?;
    let cognigy = cognigy_sandbox::Sandbox::start(
        loopback,
        cognigy_sandbox::SandboxConfig {
            bridge: Some(cognigy_sandbox::BridgeConfig {
                url: app.url().to_owned(),
                api_key,
            }),
            ..cognigy_sandbox::SandboxConfig::default()
        },
    )
    .await
    .context("starting the Cognigy sandbox")?;
    Ok(Demo { app, miaw, cognigy })
}
