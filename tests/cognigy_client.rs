//! The Cognigy adapter over real HTTP against `cognigy-sandbox`: what Notify and Inject carry,
//! the deprecated routes, error mapping; and, with the core's `Session` driving it against the
//! MIAW sandbox, retries of a failing Notify, order under concurrency, and no empty message.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cognigy_sandbox::{DEFAULT_API_KEY, DEFAULT_URL_TOKEN, SandboxConfig as CognigyConfig};
use handover_cognigy::{CognigyClient, CognigyConfig as ClientConfig, EndpointRoutes};
use handover_core::ports::{BotAddress, BotPort};
use handover_core::*;
use miaw_sandbox::SandboxConfig;
use serde_json::{Value, json};
use support::driver::{self, Running};
use support::{Miaw, eventually};

const WAIT: Duration = Duration::from_secs(15);

struct Stack {
    miaw: Miaw,
    cognigy: cognigy_sandbox::Sandbox,
    http: reqwest::Client,
}

impl Stack {
    async fn start() -> Self {
        let miaw = Miaw::start(SandboxConfig::default()).await;
        let cognigy = cognigy_sandbox::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            CognigyConfig::default(),
        )
        .await
        .unwrap();
        Self {
            miaw,
            cognigy,
            http: reqwest::Client::new(),
        }
    }

    fn client(&self) -> CognigyClient {
        CognigyClient::new(ClientConfig {
            agent_avatar_url: Some("https://cdn.example/agent.png".to_owned()),
            request_timeout: Duration::from_secs(2),
            // The sandbox is on loopback: listed by address.
            endpoint_hosts: handover_cognigy::endpoint_policy(&["127.0.0.1"]),
            ..ClientConfig::default()
        })
        .unwrap()
    }

    fn address(&self, session: &str) -> BotAddress {
        BotAddress {
            endpoint_url: self.cognigy.url().to_owned(),
            url_token: DEFAULT_URL_TOKEN.to_owned(),
            user_id: format!("user-of-{session}"),
            session_id: session.to_owned(),
        }
    }

    async fn faults(&self, faults: Value) {
        let response = self
            .http
            .put(format!("{}/control/faults", self.cognigy.url()))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Every call Cognigy received for `session`, in order of arrival.
    async fn calls(&self, session: &str) -> Vec<Value> {
        let answer: Value = self
            .http
            .get(format!(
                "{}/control/calls?sessionId={session}",
                self.cognigy.url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["calls"].as_array().unwrap().clone()
    }

    /// Texts of the notifies Cognigy accepted for `session`.
    async fn delivered_texts(&self, session: &str) -> Vec<String> {
        self.calls(session)
            .await
            .iter()
            .filter(|c| c["kind"] == "notify" && c["status"] == 200)
            .filter(|c| c["body"]["data"]["handover"]["kind"] == "agent")
            .map(|c| c["body"]["text"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Starts a handover that delivers to the Cognigy sandbox, and has the agent accept.
    async fn handover(&self, session: &str, config: SessionConfig) -> Running<CognigyClient> {
        let running = driver::start_with(
            self.miaw.client.clone(),
            Arc::new(self.client()),
            self.address(session),
            driver::request(HandoverSettings::default()),
            config,
        );
        self.miaw
            .accept_when_created(running.conversation, "Jane", WAIT)
            .await;
        eventually(WAIT, "the Flow got `active`", || async {
            self.calls(session).await.iter().any(|c| {
                c["kind"] == "inject" && c["body"]["data"]["handover"]["status"] == "active"
            })
        })
        .await;
        running
    }
}

fn retrying() -> SessionConfig {
    let mut config = driver::quick_config();
    config.retry.max_attempts = 30;
    config
}

/// No call Cognigy received is an empty message.
fn assert_nothing_empty(calls: &[Value]) {
    for call in calls.iter().filter(|c| c["kind"] == "notify") {
        let text = call["body"]["text"].as_str().unwrap_or("");
        let rich = &call["body"]["data"]["_cognigy"];
        assert!(
            !text.trim().is_empty() || rich.is_object(),
            "an empty notify: {call}"
        );
    }
}

#[tokio::test]
async fn s15_s16_s17_agent_text_files_and_choices_reach_the_user_in_cognigys_formats() {
    let stack = Stack::start().await;
    let running = stack.handover("formats", driver::quick_config()).await;
    let act = |body: Value| stack.miaw.act(running.conversation, "messages", body);
    act(json!({ "text": "Hi, Jane here" })).await;
    let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG fake image");
    act(json!({ "attachments": [{ "name": "photo.png", "mimeType": "image/png", "content": png }] })).await;
    act(json!({ "choices": { "style": "QuickReplies", "text": "Which card?", "options": ["Visa", "Amex"] } })).await;
    eventually(WAIT, "three agent messages arrived", || async {
        stack.delivered_texts("formats").await.len()
            + stack
                .calls("formats")
                .await
                .iter()
                .filter(|c| c["body"]["data"]["_cognigy"]["_default"]["_image"].is_object())
                .count()
            >= 3
    })
    .await;
    let calls = stack.calls("formats").await;
    let agent: Vec<&Value> = calls
        .iter()
        .filter(|c| c["body"]["data"]["handover"]["kind"] == "agent")
        .map(|c| &c["body"])
        .collect();
    assert_eq!(agent.len(), 3);
    // S15: text, the agent's name and avatar, and a stable id (the Salesforce entry).
    assert_eq!(agent[0]["text"], "Hi, Jane here");
    assert_eq!(agent[0]["data"]["handover"]["agentName"], "Jane");
    assert_eq!(
        agent[0]["data"]["_webchat"]["agentAvatarOverrideUrl"],
        "https://cdn.example/agent.png"
    );
    let entries = stack.miaw.conversation(running.conversation).await["entries"].clone();
    let ids: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"]["role"] == "Agent" && e["entryType"] == "Message")
        .map(|e| e["identifier"].as_str().unwrap())
        .collect();
    let relayed: Vec<&str> = agent
        .iter()
        .map(|b| b["data"]["handover"]["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(relayed, ids);
    // S16: the image as a Cognigy image payload, with a URL the user can open.
    let image_url = agent[1]["data"]["_cognigy"]["_default"]["_image"]["imageUrl"]
        .as_str()
        .unwrap();
    let image = stack.http.get(image_url).send().await.unwrap();
    assert!(image.status().is_success());
    assert_eq!(image.bytes().await.unwrap().as_ref(), b"\x89PNG fake image");
    // S17: quick replies whose payload is the option's text, which the user's pick sends back.
    let quick = &agent[2]["data"]["_cognigy"]["_default"]["_quickReplies"];
    let titles: Vec<&str> = quick["quickReplies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["payload"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Visa", "Amex"]);
    assert_eq!(agent[2]["text"], "Which card?");
    assert_nothing_empty(&calls);
}

#[tokio::test]
async fn s41_a_burst_of_5xx_from_cognigy_is_retried_and_later_messages_wait_in_order() {
    let stack = Stack::start().await;
    let running = stack.handover("burst", retrying()).await;
    stack
        .faults(json!({ "fail_next": 4, "fail_status": 503 }))
        .await;
    let sent: Vec<String> = (0..6).map(|i| format!("agent message {i}")).collect();
    for text in &sent {
        stack
            .miaw
            .act(running.conversation, "messages", json!({ "text": text }))
            .await;
    }
    eventually(WAIT, "all six delivered", || async {
        stack.delivered_texts("burst").await.len() >= sent.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.delivered_texts("burst").await,
        sent,
        "each once, in order"
    );
    let calls = stack.calls("burst").await;
    let failed = calls.iter().filter(|c| c["status"] == 503).count();
    assert_eq!(failed, 4, "the burst hit");
    // While one delivery failed, nothing behind it was sent: the attempts are in order.
    let attempts: Vec<&str> = calls
        .iter()
        .filter(|c| c["body"]["data"]["handover"]["kind"] == "agent")
        .map(|c| c["body"]["text"].as_str().unwrap())
        .collect();
    let mut sorted = attempts.clone();
    sorted.sort_by_key(|t| sent.iter().position(|s| s == t));
    assert_eq!(attempts, sorted, "no attempt overtook a failing one");
    assert_nothing_empty(&calls);
}

#[tokio::test]
async fn deliveries_of_many_sessions_at_once_keep_each_sessions_order() {
    const SESSIONS: usize = 12;
    const MESSAGES: usize = 8;
    let stack = Stack::start().await;
    let mut handovers = Vec::new();
    for i in 0..SESSIONS {
        handovers.push(stack.handover(&format!("many-{i}"), retrying()).await);
    }
    stack
        .faults(json!({ "error_rate_5xx": 0.25, "latency_ms": 5 }))
        .await;
    let sends = handovers.iter().map(|running| async {
        for m in 0..MESSAGES {
            stack
                .miaw
                .act(
                    running.conversation,
                    "messages",
                    json!({ "text": format!("m{m}") }),
                )
                .await;
        }
    });
    futures_util::future::join_all(sends).await;
    let expected: Vec<String> = (0..MESSAGES).map(|m| format!("m{m}")).collect();
    for i in 0..SESSIONS {
        let session = format!("many-{i}");
        eventually(WAIT, "every message arrived", || async {
            stack.delivered_texts(&session).await.len() >= MESSAGES
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut retried = 0;
    for i in 0..SESSIONS {
        let session = format!("many-{i}");
        assert_eq!(
            stack.delivered_texts(&session).await,
            expected,
            "{session}: once each, in order"
        );
        retried += stack
            .calls(&session)
            .await
            .iter()
            .filter(|c| c["status"] == 503)
            .count();
    }
    assert!(retried > 0, "the faults fired");
}

#[tokio::test]
async fn nothing_empty_is_sent_and_typing_makes_no_call() {
    let stack = Stack::start().await;
    let client = stack.client();
    let address = stack.address("empty");
    let empty = BotDelivery::Notify(Notification::Agent(AgentMessage {
        entry: EntryId::new("e-1").unwrap(),
        role: Role::Agent,
        sender_name: None,
        content: MessageContent::Text("   ".to_owned()),
    }));
    let failure = client.deliver(&address, &empty).await.unwrap_err();
    assert!(
        matches!(failure, DeliveryFailure::Rejected { .. }),
        "{failure:?}"
    );
    client
        .deliver(&address, &BotDelivery::Typing { on: true })
        .await
        .unwrap();
    assert_eq!(client.typing_skipped(), 1);
    assert!(
        stack.calls("empty").await.is_empty(),
        "no call reached Cognigy"
    );
}

#[tokio::test]
async fn failures_map_to_retry_or_refusal_and_never_name_the_url_token() {
    let stack = Stack::start().await;
    let client = stack.client();
    let notice = BotDelivery::Notify(Notification::Notice {
        key: "n-1".to_owned(),
        text: "You are now chatting with Jane.".to_owned(),
    });
    let mut unknown = stack.address("errors");
    unknown.url_token = "secret-unknown-token".to_owned();
    match client.deliver(&unknown, &notice).await.unwrap_err() {
        DeliveryFailure::Rejected { status, message } => {
            assert_eq!(status, 404);
            assert!(!message.contains("secret-unknown-token"));
        }
        other => panic!("{other:?}"),
    }
    stack
        .faults(json!({ "fail_next": 1, "fail_status": 502 }))
        .await;
    let failure = client
        .deliver(&stack.address("errors"), &notice)
        .await
        .unwrap_err();
    assert!(
        matches!(&failure, DeliveryFailure::Transient(m) if m.contains("502")),
        "{failure:?}"
    );
    stack.faults(json!({ "latency_ms": 3000 })).await;
    let failure = client
        .deliver(&stack.address("errors"), &notice)
        .await
        .unwrap_err();
    assert!(
        matches!(&failure, DeliveryFailure::Transient(m) if m.contains("timed out")),
        "{failure:?}"
    );
    let mut gone = stack.address("errors");
    gone.endpoint_url = "http://127.0.0.1:9".to_owned();
    gone.url_token = "secret-token-2".to_owned();
    let failure = client.deliver(&gone, &notice).await.unwrap_err();
    assert!(
        matches!(&failure, DeliveryFailure::Transient(m) if !m.contains("secret-token-2")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn the_deprecated_routes_carry_the_api_key_and_the_url_token_in_the_body() {
    let stack = Stack::start().await;
    let client = CognigyClient::new(ClientConfig {
        routes: EndpointRoutes::Legacy {
            api_base_url: stack.cognigy.url().to_owned(),
            api_key: DEFAULT_API_KEY.to_owned(),
        },
        ..ClientConfig::default()
    })
    .unwrap();
    assert!(
        !format!("{client:?}").contains(DEFAULT_API_KEY),
        "the key never shows in Debug"
    );
    let address = stack.address("legacy");
    let notice = BotDelivery::Notify(Notification::Notice {
        key: "n-1".to_owned(),
        text: "Hello".to_owned(),
    });
    client.deliver(&address, &notice).await.unwrap();
    let status = BotDelivery::Inject(StatusUpdate {
        key: "s-1".to_owned(),
        status: HandoverStatus::Active {
            agent_name: Some("Jane".to_owned()),
        },
    });
    client.deliver(&address, &status).await.unwrap();
    let calls = stack.calls("legacy").await;
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c["route"] == "legacy"
        && c["status"] == 200
        && c["body"]["URLToken"] == DEFAULT_URL_TOKEN));
    assert_eq!(calls[1]["body"]["data"]["handover"]["status"], "active");
    let wrong = CognigyClient::new(ClientConfig {
        routes: EndpointRoutes::Legacy {
            api_base_url: stack.cognigy.url().to_owned(),
            api_key: "wrong".to_owned(),
        },
        ..ClientConfig::default()
    })
    .unwrap();
    let failure = wrong.deliver(&address, &notice).await.unwrap_err();
    assert!(
        matches!(failure, DeliveryFailure::Rejected { status: 401, .. }),
        "{failure:?}"
    );
}
