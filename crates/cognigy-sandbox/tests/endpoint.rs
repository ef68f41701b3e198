//! The sandbox over real HTTP: Cognigy's Endpoint checks, the deprecated routes, faults and
//! the record of calls; and the webchat's Flow against a stand-in bridge that records what it
//! is sent.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use cognigy_sandbox::{BridgeConfig, DEFAULT_API_KEY, DEFAULT_URL_TOKEN, Sandbox, SandboxConfig};
use serde_json::{Value, json};

async fn sandbox() -> (Sandbox, reqwest::Client) {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    (sandbox, reqwest::Client::new())
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, String) {
    let response = http.post(url).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn calls(http: &reqwest::Client, sandbox: &Sandbox, query: &str) -> Vec<Value> {
    let answer: Value = http
        .get(format!("{}/control/calls{query}", sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["calls"].as_array().unwrap().clone()
}

#[tokio::test]
async fn notify_and_inject_check_like_cognigy_and_record_every_call() {
    let (sandbox, http) = sandbox().await;
    let url = |kind: &str, token: &str| format!("{}/{kind}/{token}", sandbox.url());
    let good = json!({ "userId": "u", "sessionId": "s", "text": "Hi", "data": { "handover": {} } });
    assert_eq!(
        post(&http, url("notify", DEFAULT_URL_TOKEN), good.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            &http,
            url("inject", DEFAULT_URL_TOKEN),
            json!({ "userId": "u", "sessionId": "s", "data": {} })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post(&http, url("notify", "unknown-token"), good.clone())
            .await
            .0,
        404
    );
    let (status, text) = post(
        &http,
        url("notify", DEFAULT_URL_TOKEN),
        json!({ "userId": "u", "text": "Hi" }),
    )
    .await;
    assert_eq!((status, text.contains("sessionId")), (400, true));
    assert_eq!(
        post(
            &http,
            url("notify", DEFAULT_URL_TOKEN),
            json!({ "userId": "u", "sessionId": "s" })
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(&http, url("notify", DEFAULT_URL_TOKEN), json!("just text"))
            .await
            .0,
        400
    );
    let recorded = calls(&http, &sandbox, "").await;
    let statuses: Vec<u64> = recorded
        .iter()
        .map(|c| c["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 404, 400, 400, 400]);
    assert_eq!(recorded[0]["kind"], "notify");
    assert_eq!(recorded[0]["body"], good);
    assert_eq!(recorded[1]["kind"], "inject");
    let notifies = calls(&http, &sandbox, "?kind=inject").await;
    assert_eq!(notifies.len(), 1);
    http.delete(format!("{}/control/calls", sandbox.url()))
        .send()
        .await
        .unwrap();
    assert!(calls(&http, &sandbox, "").await.is_empty());
}

#[tokio::test]
async fn the_deprecated_routes_want_the_api_key_and_the_url_token_in_the_body() {
    let (sandbox, http) = sandbox().await;
    let body = json!({ "userId": "u", "sessionId": "s", "URLToken": DEFAULT_URL_TOKEN, "text": "Hi", "data": {} });
    let route = |kind: &str| format!("{}/new/v2.0/endpoint/{kind}", sandbox.url());
    let no_key = http.post(route("notify")).json(&body).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let notified = http
        .post(route("notify"))
        .header("X-API-Key", DEFAULT_API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(notified.status(), StatusCode::OK);
    assert_eq!(
        notified.text().await.unwrap(),
        "Sucessfully sent message to user"
    );
    let injected = http
        .post(format!("{}?api_key={DEFAULT_API_KEY}", route("inject")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        injected.text().await.unwrap(),
        "Message was sent to AI for Flow processing"
    );
    let mut no_token = body.clone();
    no_token.as_object_mut().unwrap().remove("URLToken");
    let refused = http
        .post(route("notify"))
        .header("X-API-Key", DEFAULT_API_KEY)
        .json(&no_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let recorded = calls(&http, &sandbox, "").await;
    assert!(recorded.iter().take(2).all(|c| c["route"] == "legacy"));
}

#[tokio::test]
async fn faults_fail_a_burst_then_recover_and_add_latency() {
    let (sandbox, http) = sandbox().await;
    let faults = format!("{}/control/faults", sandbox.url());
    let set = http
        .put(&faults)
        .json(&json!({ "fail_next": 2, "fail_status": 502 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let url = format!("{}/notify/{DEFAULT_URL_TOKEN}", sandbox.url());
    let body = json!({ "userId": "u", "sessionId": "s", "text": "Hi" });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(&http, url.clone(), body.clone()).await.0);
    }
    assert_eq!(statuses, [502, 502, 200]);
    http.put(&faults)
        .json(&json!({ "latency_ms": 300 }))
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(post(&http, url.clone(), body.clone()).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let bad = http
        .put(&faults)
        .json(&json!({ "error_rate_5xx": 2.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unknown = http
        .put(&faults)
        .json(&json!({ "explode": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
}

/// A request the stand-in bridge got: path, `Authorization`, body.
type Request = (String, Option<String>, Value);

/// A stand-in for the bridge: answers like the `/v1` API and records every request.
#[derive(Clone, Default)]
struct Bridge {
    requests: Arc<Mutex<Vec<Request>>>,
}

async fn bridge_handler(
    State(bridge): State<Bridge>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    bridge
        .requests
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), auth, body));
    if uri.path() == "/v1/handovers" {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "handoverId": "h-1", "duplicate": false })),
        )
    } else {
        (StatusCode::ACCEPTED, Json(json!({ "accepted": true })))
    }
}

async fn start_bridge() -> (Bridge, String) {
    let bridge = Bridge::default();
    let router = axum::Router::new()
        .fallback(bridge_handler)
        .with_state(bridge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (bridge, url)
}

struct Chat<'a> {
    sandbox: &'a Sandbox,
    http: &'a reqwest::Client,
    user: String,
    session: String,
}

impl<'a> Chat<'a> {
    async fn open(sandbox: &'a Sandbox, http: &'a reqwest::Client) -> Self {
        let created: Value = http
            .post(format!("{}/webchat/api/sessions", sandbox.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            sandbox,
            http,
            user: created["userId"].as_str().unwrap().to_owned(),
            session: created["sessionId"].as_str().unwrap().to_owned(),
        }
    }

    async fn say(&self, text: &str) {
        let url = format!(
            "{}/webchat/api/sessions/{}/input",
            self.sandbox.url(),
            self.session
        );
        let response = self
            .http
            .post(url)
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    async fn feed(&self) -> Value {
        let url = format!(
            "{}/webchat/api/sessions/{}/outputs",
            self.sandbox.url(),
            self.session
        );
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn texts(&self) -> Vec<(String, String)> {
        self.feed().await["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["source"].as_str().unwrap().to_owned(),
                    o["text"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    async fn endpoint(&self, kind: &str, text: Option<&str>, data: Value) {
        let mut body = json!({ "userId": self.user, "sessionId": self.session, "data": data });
        if let Some(text) = text {
            body["text"] = json!(text);
        }
        let url = format!("{}/{kind}/{DEFAULT_URL_TOKEN}", self.sandbox.url());
        assert_eq!(post(self.http, url, body).await.0, 200);
    }
}

#[tokio::test]
async fn the_webchat_flow_talks_small_and_apologises_without_a_bridge() {
    let (sandbox, http) = sandbox().await;
    let chat = Chat::open(&sandbox, &http).await;
    chat.say("hello there").await;
    chat.say("I want an agent").await;
    let texts = chat.texts().await;
    assert_eq!(texts[1], ("user".to_owned(), "hello there".to_owned()));
    assert!(
        texts[2].1.starts_with("Hello! What can I do for you?"),
        "{texts:?}"
    );
    assert!(texts[4].1.contains("no bridge configured"), "{texts:?}");
    assert_eq!(chat.feed().await["handover"], Value::Null);
}

#[tokio::test]
async fn the_webchat_flow_hands_over_like_a_cognigy_flow_and_follows_the_injected_statuses() {
    let (sandbox, http) = sandbox().await;
    let (bridge, bridge_url) = start_bridge().await;
    sandbox.set_bridge(Some(BridgeConfig {
        url: bridge_url,
        api_key: "bridge-key-0123456789".to_owned(),
    }));
    let chat = Chat::open(&sandbox, &http).await;
    chat.say("hi").await;
    chat.say("can I talk to a human?").await;
    let requests = bridge.requests.lock().unwrap().clone();
    let (path, auth, start) = &requests[0];
    assert_eq!(path, "/v1/handovers");
    assert_eq!(auth.as_deref(), Some("Bearer bridge-key-0123456789"));
    assert_eq!(start["userId"], chat.user.as_str());
    assert_eq!(start["sessionId"], chat.session.as_str());
    assert_eq!(start["URLToken"], DEFAULT_URL_TOKEN);
    assert_eq!(start["endpointUrl"], sandbox.url());
    assert_eq!(start["settings"]["sendTranscript"], true);
    let transcript: Vec<&str> = start["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        transcript[..2],
        [
            "Hi! I'm the sandbox bot. Ask me something, or type \"agent\" to talk to a person.",
            "hi"
        ]
    );
    assert_eq!(chat.feed().await["handover"]["handoverId"], "h-1");

    // The bridge injects a queue update, then active; notifies an agent message.
    chat.endpoint(
        "inject",
        None,
        json!({ "handover": { "status": "queue", "eventType": "queueUpdate",
        "data": { "position": 2, "estimatedWaitTime": 90000, "alternativeText": null } } }),
    )
    .await;
    assert_eq!(chat.feed().await["handover"]["position"], 2);
    chat.endpoint(
        "inject",
        None,
        json!({ "handover": { "status": "active", "data": { "agentName": "Jane" } } }),
    )
    .await;
    chat.endpoint(
        "notify",
        Some("Hi, Jane here"),
        json!({ "handover": { "kind": "agent", "messageId": "e1", "agentName": "Jane" } }),
    )
    .await;
    // While live, the user's words go to the bridge, not to the bot.
    chat.say("my card was charged twice").await;
    let requests = bridge.requests.lock().unwrap().clone();
    let (path, _, message) = requests.last().unwrap();
    assert_eq!(path, "/v1/handovers/h-1/messages");
    assert_eq!(message["text"], "my card was charged twice");
    assert!(
        message["messageId"]
            .as_str()
            .unwrap()
            .starts_with(&chat.session)
    );
    // The end hands back to the bot.
    chat.endpoint(
        "inject",
        None,
        json!({ "handover": { "status": "completed", "reason": "agent_ended" } }),
    )
    .await;
    chat.say("thanks").await;
    let texts = chat.texts().await;
    let shown: Vec<(&str, &str)> = texts
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .collect();
    assert!(
        shown.contains(&("system", "You are number 2 in the queue (about 2 min).")),
        "{shown:?}"
    );
    assert!(shown.contains(&("system", "Jane joined the chat.")));
    assert!(shown.contains(&("agent", "Hi, Jane here")));
    assert!(shown.contains(&(
        "bot",
        "The chat with the agent has ended. I'm back; anything else?"
    )));
    assert_eq!(shown.last(), Some(&("bot", "You're welcome!")));
    assert_eq!(
        bridge.requests.lock().unwrap().len(),
        2,
        "after the end, the bot answers again"
    );
}
