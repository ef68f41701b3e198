//! The bridge's `/v1` API in front of real handovers: the core's sessions, driven through the
//! Salesforce adapter against `miaw-sandbox` and the Cognigy adapter against
//! `cognigy-sandbox`. The curl example of the docs runs against it, and the sandbox's webchat
//! Flow hands a user over through it.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use cognigy_sandbox::{BridgeConfig, DEFAULT_URL_TOKEN};
use serde_json::{Value, json};
use support::bridge::{Bridge, KEY};
use support::eventually;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn the_curl_example_starts_a_handover_sends_a_message_and_reads_the_status() {
    let bridge = Bridge::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/curl-handover.sh"
    );
    let url = bridge.url.clone();
    let endpoint = bridge.cognigy.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(script)
            .env("BRIDGE_URL", url)
            .env("BRIDGE_KEY", KEY)
            .env("ENDPOINT_URL", endpoint)
            .env("URL_TOKEN", DEFAULT_URL_TOKEN)
            .env("SESSION_ID", "curl-session")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the script failed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let handover = lines[0].strip_prefix("started: ").expect("a handover id");
    assert_eq!(lines[1], "message: 202");
    assert!(lines[2].starts_with("status: "), "{stdout}");
    assert_eq!(
        lines[3..],
        [
            "wrong key: 401",
            "oversize: 413",
            "bad field: 400 settings.sendTranscript"
        ]
    );
    // The message reached the agent, after the transcript.
    let status = bridge.get(&format!("/v1/handovers/{handover}")).await;
    let conversation = status["conversationId"].as_str().unwrap().to_owned();
    eventually(WAIT, "the agent saw the message", || async {
        bridge
            .miaw
            .user_texts(&conversation)
            .await
            .iter()
            .any(|t| t == "Hello from curl")
    })
    .await;
    let texts = bridge.miaw.user_texts(&conversation).await;
    assert!(
        texts[0].contains("I was charged twice"),
        "the transcript first: {texts:?}"
    );
    assert_eq!(texts.last().map(String::as_str), Some("Hello from curl"));
    assert_eq!(
        bridge.miaw.conversation(&conversation).await["routingAttributes"]["issueType"],
        "Billing"
    );
}

#[tokio::test]
async fn the_webchat_flow_hands_a_user_over_through_the_api_and_back() {
    let bridge = Bridge::start().await;
    bridge.cognigy.set_bridge(Some(BridgeConfig {
        url: bridge.url.clone(),
        api_key: KEY.to_owned(),
    }));
    let http = &bridge.http;
    let webchat = format!("{}/webchat/api/sessions", bridge.cognigy.url());
    let session: Value = http
        .post(&webchat)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_id = session["sessionId"].as_str().unwrap().to_owned();
    let say = |text: &'static str| {
        let url = format!("{webchat}/{session_id}/input");
        async move {
            http.post(url)
                .json(&json!({ "text": text }))
                .send()
                .await
                .unwrap()
        }
    };
    let feed = || {
        let url = format!("{webchat}/{session_id}/outputs");
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    say("hello").await;
    say("agent please").await;
    let handover = feed().await["handover"]["handoverId"]
        .as_str()
        .unwrap()
        .to_owned();
    let conversation = bridge.get(&format!("/v1/handovers/{handover}")).await["conversationId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The agent accepts and writes; the Flow hears `active`, the user reads the agent.
    bridge
        .miaw
        .accept_when_created(&conversation, "Jane", WAIT)
        .await;
    bridge
        .miaw
        .act(
            &conversation,
            "messages",
            json!({ "text": "Hi, Jane here. How can I help?" }),
        )
        .await;
    eventually(WAIT, "the user read the agent", || async {
        feed().await["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["source"] == "agent")
    })
    .await;
    assert_eq!(feed().await["handover"]["status"], "active");
    say("my card was charged twice").await;
    eventually(WAIT, "the agent read the user", || async {
        bridge
            .miaw
            .user_texts(&conversation)
            .await
            .iter()
            .any(|t| t == "my card was charged twice")
    })
    .await;
    // The agent ends; the Flow gets `completed` and the bot is back.
    bridge.miaw.act(&conversation, "end", json!({})).await;
    eventually(WAIT, "the bot is back", || async {
        feed().await["handover"].is_null()
    })
    .await;
    let outputs = feed().await["outputs"].as_array().unwrap().clone();
    let shown: Vec<(String, String)> = outputs
        .iter()
        .map(|o| {
            (
                o["source"].as_str().unwrap().to_owned(),
                o["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        shown.contains(&("system".to_owned(), "Jane joined the chat.".to_owned())),
        "{shown:?}"
    );
    assert!(shown.contains(&(
        "agent".to_owned(),
        "Hi, Jane here. How can I help?".to_owned()
    )));
    assert_eq!(shown.last().unwrap().0, "bot");
    let status = bridge.get(&format!("/v1/handovers/{handover}")).await;
    assert_eq!(status["outcome"]["status"], "completed");
    assert_eq!(status["outcome"]["reason"], "agent_ended");
    let injects: Vec<Value> = {
        let calls: Value = http
            .get(format!(
                "{}/control/calls?kind=inject&sessionId={session_id}",
                bridge.cognigy.url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        calls["calls"].as_array().unwrap().clone()
    };
    let terminal = injects
        .iter()
        .filter(|c| c["body"]["data"]["handover"]["status"] == "completed")
        .count();
    assert_eq!(terminal, 1, "exactly one terminal status");
    // A second handover in the same session works.
    say("agent again").await;
    let second = feed().await["handover"]["handoverId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, handover);
}
