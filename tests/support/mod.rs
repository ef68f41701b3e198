//! Shared helpers of the workspace-level integration tests: a sandbox with a MIAW client
//! pointed at it, and a small driver that runs a core `Session` through the real adapter.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm
)]

pub mod bridge;
pub mod driver;
pub mod service;

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use handover_core::{AccessToken, ConversationId, RoutingAttributes};
use handover_salesforce::{MiawClient, MiawConfig};
use miaw_sandbox::{DEFAULT_DEVELOPER_NAME, DEFAULT_ORG_ID, Sandbox, SandboxConfig};
use serde_json::{Value, json};

pub struct Miaw {
    pub sandbox: Sandbox,
    pub client: MiawClient,
    pub http: reqwest::Client,
}

impl Miaw {
    pub async fn start(config: SandboxConfig) -> Self {
        Self::start_with(config, |_| {}).await
    }

    pub async fn start_with(config: SandboxConfig, adjust: impl FnOnce(&mut MiawConfig)) -> Self {
        let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), config, None)
            .await
            .unwrap();
        let mut miaw = MiawConfig::new(sandbox.url(), DEFAULT_ORG_ID, DEFAULT_DEVELOPER_NAME);
        miaw.request_timeout = Duration::from_secs(5);
        // The sandbox's file server is on loopback.
        miaw.attachments.allow_private_addresses = true;
        adjust(&mut miaw);
        let client = MiawClient::new(miaw).unwrap();
        Self {
            sandbox,
            client,
            http: reqwest::Client::new(),
        }
    }

    /// Calls the sandbox's control API and checks it succeeded.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}/control/{path}", self.sandbox.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "control {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn act(
        &self,
        conversation: impl std::fmt::Display,
        action: &str,
        body: Value,
    ) -> Value {
        self.control(
            reqwest::Method::POST,
            &format!("conversations/{conversation}/{action}"),
            body,
        )
        .await
    }

    pub async fn faults(&self, body: Value) {
        self.control(reqwest::Method::PUT, "faults", body).await;
    }

    pub async fn conversation(&self, conversation: impl std::fmt::Display) -> Value {
        let response = self
            .http
            .get(format!(
                "{}/control/conversations/{conversation}",
                self.sandbox.url()
            ))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    /// Has an agent accept `conversation` as soon as it exists at the sandbox (the bridge
    /// creates it asynchronously).
    pub async fn accept_when_created(
        &self,
        conversation: impl std::fmt::Display,
        agent: &str,
        limit: Duration,
    ) {
        let url = format!(
            "{}/control/conversations/{conversation}/accept",
            self.sandbox.url()
        );
        let body = json!({ "agent": agent });
        eventually(limit, "the agent accepted", || async {
            let response = self.http.post(&url).json(&body).send().await.unwrap();
            response.status().is_success()
        })
        .await;
    }

    /// A guest token and a new conversation created with it.
    pub async fn guest_conversation(
        &self,
        attributes: &RoutingAttributes,
    ) -> (AccessToken, ConversationId) {
        let token = self.client.mint_guest().await.unwrap().token;
        let conversation = ConversationId::from_random_bytes(fastrand::u128(..).to_le_bytes());
        self.client
            .create_conversation(&token, conversation, attributes)
            .await
            .unwrap();
        (token, conversation)
    }

    /// Hosts a file on the sandbox's file server (the agent sends it), as if it had been
    /// uploaded somewhere the bridge can fetch it from; returns its URL.
    pub async fn host_file(
        &self,
        conversation: ConversationId,
        name: &str,
        mime: &str,
        bytes: &[u8],
    ) -> String {
        let content = base64::engine::general_purpose::STANDARD.encode(bytes);
        let body =
            json!({ "attachments": [{ "name": name, "mimeType": mime, "content": content }] });
        let entry = self.act(conversation, "messages", body).await;
        let details = self.conversation(conversation).await;
        let hosted = details["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["identifier"] == entry["identifier"])
            .unwrap()
            .clone();
        hosted["entryPayload"]["abstractMessage"]["staticContent"]["attachments"][0]["url"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The texts of the user messages the agent received, in order (none while the
    /// conversation does not exist yet).
    pub async fn user_texts(&self, conversation: impl std::fmt::Display) -> Vec<String> {
        let details = self.conversation(conversation).await;
        let Some(entries) = details["entries"].as_array() else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|e| e["entryType"] == "Message" && e["sender"]["role"] == "EndUser")
            .map(|e| {
                let content = &e["entryPayload"]["abstractMessage"]["staticContent"];
                content["text"].as_str().map_or_else(
                    || {
                        format!(
                            "file:{}",
                            content["attachments"][0]["name"].as_str().unwrap_or("?")
                        )
                    },
                    str::to_owned,
                )
            })
            .collect()
    }
}

/// Waits until `condition` holds, checking every 20 ms, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
