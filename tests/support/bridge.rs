//! A bridge for tests: the `/v1` API over real sessions (`service.rs`), with both sandboxes.

use cognigy_sandbox::SandboxConfig as CognigyConfig;
use handover_cognigy::api::{self, ApiConfig, ApiKey};
use handover_cognigy::{CognigyClient, CognigyConfig as ClientConfig};
use miaw_sandbox::SandboxConfig;
use serde_json::Value;

use super::Miaw;
use super::service::LocalHandovers;

/// The Flow's API key.
pub const KEY: &str = "bridge-test-key-0123456789";
/// An admin API key.
pub const ADMIN_KEY: &str = "bridge-admin-key-0123456789";

pub struct Bridge {
    pub miaw: Miaw,
    pub cognigy: cognigy_sandbox::Sandbox,
    pub url: String,
    pub http: reqwest::Client,
}

impl Bridge {
    pub async fn start() -> Self {
        let miaw = Miaw::start(SandboxConfig::default()).await;
        let cognigy = cognigy_sandbox::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            CognigyConfig::default(),
        )
        .await
        .unwrap();
        let service = LocalHandovers::new(
            miaw.client.clone(),
            CognigyClient::new(ClientConfig {
                endpoint_hosts: handover_cognigy::endpoint_policy(&["127.0.0.1"]),
                ..ClientConfig::default()
            })
            .unwrap(),
            super::driver::quick_config(),
        );
        let config = ApiConfig {
            keys: vec![
                ApiKey::new("tests", KEY).unwrap(),
                ApiKey::admin("admin", ADMIN_KEY).unwrap(),
            ],
            endpoint_hosts: handover_cognigy::endpoint_policy(&["127.0.0.1"]),
            ..ApiConfig::default()
        };
        let router = api::router(service, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            miaw,
            cognigy,
            url,
            http: reqwest::Client::new(),
        }
    }

    /// `GET {bridge}{path}` with the admin key, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
