//! End to end: the real bridge (`handover_app::App`, on SQLite) between `miaw-sandbox` and
//! `cognigy-sandbox` over loopback. The Flow is played through the bridge's `/v1` API, the
//! agent through the MIAW sandbox's control API; what the user and the Flow got is read from
//! the Cognigy sandbox's record of Notify and Inject calls. Named after the scenarios.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use cognigy_sandbox::{DEFAULT_URL_TOKEN, SandboxConfig as CognigyConfig};
use handover_app::app::App;
use handover_app::config::{ApiKeyEntry, Config, Deployment, Mode, Secret};
use handover_core::HandoverId;
use handover_store::Keyring;
use miaw_sandbox::SandboxConfig;
use serde_json::{Value, json};
use support::{Miaw, eventually};

const KEY: &str = "e2e-flow-key-0123456789";
const ADMIN: &str = "e2e-admin-key-0123456789";
const WAIT: Duration = Duration::from_secs(20);

fn keys_spec() -> String {
    format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([11u8; 32])
    )
}

struct E2e {
    miaw: Miaw,
    cognigy: cognigy_sandbox::Sandbox,
    app: Option<App>,
    config: Config,
    http: reqwest::Client,
    dir: PathBuf,
}

fn config(miaw: &Miaw, dir: &std::path::Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        mode: Mode::Production,
        ..Config::default()
    };
    config.store.keys = Secret::from(keys_spec().as_str());
    config.store.lease_ttl_secs = 3;
    config.api.keys = vec![
        ApiKeyEntry {
            name: "flow".to_owned(),
            key: Secret::from(KEY),
            admin: false,
        },
        ApiKeyEntry {
            name: "ops".to_owned(),
            key: Secret::from(ADMIN),
            admin: true,
        },
    ];
    config.salesforce.deployments = BTreeMap::from([(
        "sandbox".to_owned(),
        Deployment {
            url: miaw.sandbox.url().to_owned(),
            organization_id: miaw_sandbox::DEFAULT_ORG_ID.to_owned(),
            developer_name: miaw_sandbox::DEFAULT_DEVELOPER_NAME.to_owned(),
            capabilities_version: "1".to_owned(),
        },
    )]);
    config.salesforce.safety_poll_secs = 2;
    // The sandboxes' files are on loopback, which production refuses by default.
    config.attachments.allow_private_addresses = true;
    // So is the Cognigy sandbox: listed by address.
    config.cognigy.endpoint_hosts = vec!["127.0.0.1".to_owned()];
    config.salesforce.stream_watchdog_secs = 5;
    config.validate().unwrap();
    config
}

impl E2e {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Started with `edit` applied to the test configuration.
    async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_sandbox(SandboxConfig::default(), edit).await
    }

    /// Started on a MIAW sandbox configured as `sandbox`, with `edit` applied to the test
    /// configuration.
    async fn start_with_sandbox(sandbox: SandboxConfig, edit: impl FnOnce(&mut Config)) -> Self {
        let miaw = Miaw::start(sandbox).await;
        let cognigy = cognigy_sandbox::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            CognigyConfig::default(),
        )
        .await
        .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "e2e-{}",
            HandoverId::from_random_bytes(random_bytes())
        ));
        let mut config = config(&miaw, &dir);
        edit(&mut config);
        let app = App::start(&config, Keyring::parse(&keys_spec()).unwrap())
            .await
            .unwrap();
        Self {
            miaw,
            cognigy,
            app: Some(app),
            config,
            http: reqwest::Client::new(),
            dir,
        }
    }

    fn url(&self) -> String {
        self.app.as_ref().unwrap().url().to_owned()
    }

    /// The bridge crashes (no lease released) and a new process starts on the same store.
    async fn crash_and_restart(&mut self) {
        self.app.take().unwrap().abort();
        let mut config = self.config.clone();
        config.instance_id = Some("after-the-restart".to_owned());
        self.app = Some(
            App::start(&config, Keyring::parse(&keys_spec()).unwrap())
                .await
                .unwrap(),
        );
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The bridge crashes and starts again as the same instance, with no name configured.
    async fn crash_and_restart_unnamed(&mut self) {
        self.app.take().unwrap().abort();
        assert!(self.config.instance_id.is_none());
        self.app = Some(
            App::start(&self.config, Keyring::parse(&keys_spec()).unwrap())
                .await
                .unwrap(),
        );
    }

    /// A new process on the same store, after the previous one stopped.
    async fn start_next_instance(&mut self) {
        let mut config = self.config.clone();
        config.instance_id = Some("the-next-instance".to_owned());
        self.app = Some(
            App::start(&config, Keyring::parse(&keys_spec()).unwrap())
                .await
                .unwrap(),
        );
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::POST, path, KEY, Some(body)).await
    }

    async fn start_handover(&self, session: &str, extra: Value) -> String {
        let mut body = json!({
            "requestId": format!("{session}-{}", HandoverId::from_random_bytes(random_bytes())),
            "userId": "e2e-user",
            "sessionId": session,
            "URLToken": DEFAULT_URL_TOKEN,
            "endpointUrl": self.cognigy.url(),
            "locale": "de_DE",
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = self.post("/v1/handovers", body).await;
        assert_eq!(status, 202, "{answer}");
        answer["handoverId"].as_str().unwrap().to_owned()
    }

    async fn conversation(&self, handover: &str) -> String {
        let (_, view) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/handovers/{handover}"),
                KEY,
                None,
            )
            .await;
        view["conversationId"].as_str().unwrap().to_owned()
    }

    async fn view(&self, handover: &str) -> Value {
        self.api(
            reqwest::Method::GET,
            &format!("/v1/handovers/{handover}"),
            KEY,
            None,
        )
        .await
        .1
    }

    async fn say(&self, handover: &str, id: &str, text: &str) {
        let (status, answer) = self
            .post(
                &format!("/v1/handovers/{handover}/messages"),
                json!({ "messageId": id, "text": text }),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }

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
        answer["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == 200)
            .cloned()
            .collect()
    }

    /// What the user read (agent texts and bridge notices), in order.
    async fn user_read(&self, session: &str) -> Vec<String> {
        self.calls(session)
            .await
            .iter()
            .filter(|c| c["kind"] == "notify")
            .map(|c| c["body"]["text"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The statuses the Flow got, in order (`status` or `status/reason`).
    async fn flow_heard(&self, session: &str) -> Vec<String> {
        self.calls(session)
            .await
            .iter()
            .filter(|c| c["kind"] == "inject")
            .map(|c| {
                let handover = &c["body"]["data"]["handover"];
                match handover["reason"].as_str() {
                    Some(reason) => format!("{}/{reason}", handover["status"].as_str().unwrap()),
                    None => handover["status"].as_str().unwrap().to_owned(),
                }
            })
            .collect()
    }

    async fn agent_says(&self, conversation: &str, text: &str) {
        self.miaw
            .act(conversation, "messages", json!({ "text": text }))
            .await;
    }

    /// Jane accepts the handover's conversation and the Flow hears `active`.
    async fn with_agent(&self, session: &str, handover: &str) -> String {
        let conversation = self.conversation(handover).await;
        self.miaw
            .accept_when_created(&conversation, "Jane", WAIT)
            .await;
        until("the Flow got active", || async {
            self.flow_heard(session)
                .await
                .contains(&"active".to_owned())
        })
        .await;
        conversation
    }

    /// The agent says `text` and the user reads it.
    async fn relayed_to_user(&self, session: &str, conversation: &str, text: &str) {
        self.agent_says(conversation, text).await;
        until("the user read the agent", || async {
            self.user_read(session).await.contains(&text.to_owned())
        })
        .await;
    }

    async fn minted(&self) -> u64 {
        let answer: Value = self
            .http
            .get(format!("{}/control/tokens", self.miaw.sandbox.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["minted"].as_u64().unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown(Duration::from_secs(5)).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn random_bytes() -> [u8; 16] {
    fastrand::u128(..).to_le_bytes()
}

async fn until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(WAIT, what, condition).await;
}

#[tokio::test]
async fn s01_s10_s15_a_guest_handover_relays_both_ways_and_the_flow_hears_active() {
    let e2e = E2e::start().await;
    let handover = e2e
        .start_handover(
            "s01",
            json!({ "settings": { "routingAttributes": { "issueType": "Billing" } } }),
        )
        .await;
    let conversation = e2e.with_agent("s01", &handover).await;
    e2e.relayed_to_user("s01", &conversation, "Hi, Jane here")
        .await;
    let notify = e2e
        .calls("s01")
        .await
        .into_iter()
        .find(|c| c["body"]["text"] == "Hi, Jane here")
        .unwrap();
    assert_eq!(notify["body"]["data"]["handover"]["agentName"], "Jane");
    e2e.say(&handover, "m1", "My card was charged twice").await;
    until("the agent read the user", || async {
        e2e.miaw
            .user_texts(&conversation)
            .await
            .contains(&"My card was charged twice".to_owned())
    })
    .await;
    let details = e2e.miaw.conversation(&conversation).await;
    assert_eq!(
        details["routingAttributes"],
        json!({ "issueType": "Billing", "language": "de_DE" })
    );
    let metrics = e2e.metrics().await;
    assert!(metrics.contains("handover_started_total 1"), "{metrics}");
    assert!(
        metrics.contains("handover_relay_seconds_count{direction=\"to_user\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("handover_relay_seconds_count{direction=\"to_agent\"} 1"),
        "{metrics}"
    );
    e2e.stop().await;
}

#[tokio::test]
async fn s02_a_long_transcript_arrives_as_several_messages_in_order_before_live_ones() {
    let e2e = E2e::start().await;
    let turns: Vec<Value> = (0..50)
        .map(|i| json!({ "role": if i % 2 == 0 { "user" } else { "bot" }, "text": format!("turn {i:02} {}", "x".repeat(140)) }))
        .collect();
    let handover = e2e
        .start_handover(
            "s02",
            json!({ "transcript": turns, "settings": { "sendTranscript": true } }),
        )
        .await;
    let conversation = e2e.conversation(&handover).await;
    e2e.say(&handover, "live-1", "typed while queued").await;
    until("everything arrived", || async {
        e2e.miaw
            .user_texts(&conversation)
            .await
            .iter()
            .any(|t| t == "typed while queued")
    })
    .await;
    let texts = e2e.miaw.user_texts(&conversation).await;
    let chunks = &texts[..texts.len() - 1];
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.chars().count() <= 3000));
    let joined = chunks.join("\n");
    let positions: Vec<usize> = (0..50)
        .map(|i| joined.find(&format!("turn {i:02}")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "the turns are in order"
    );
    assert_eq!(texts.last().unwrap(), "typed while queued");
    e2e.stop().await;
}

#[tokio::test]
async fn s22_the_agent_sees_the_user_leave_and_come_back() {
    let e2e = E2e::start().await;
    let handover = e2e.start_handover("s22", json!({})).await;
    let conversation = e2e.with_agent("s22", &handover).await;
    for route in ["user-disconnected", "user-disconnected", "user-connected"] {
        assert_eq!(
            e2e.post(&format!("/v1/handovers/{handover}/{route}"), json!(null))
                .await
                .0,
            202
        );
    }
    until("both notices", || async {
        e2e.miaw.user_texts(&conversation).await.len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e2e.miaw.user_texts(&conversation).await,
        ["User left the conversation", "User joined the conversation"]
    );
    e2e.stop().await;
}

#[tokio::test]
async fn s24_s27_a_transfer_and_inactivity_are_not_ends() {
    let e2e = E2e::start().await;
    let handover = e2e.start_handover("s24", json!({})).await;
    let conversation = e2e.with_agent("s24", &handover).await;
    e2e.miaw
        .act(&conversation, "transfer", json!({ "to": "Sam" }))
        .await;
    e2e.agent_says(&conversation, "Sam here").await;
    until("Sam is heard", || async {
        e2e.user_read("s24").await.contains(&"Sam here".to_owned())
    })
    .await;
    // S27: inactive, then the user writes: re-routed, a new agent joins, the Flow hears active again.
    e2e.miaw.act(&conversation, "inactive", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    e2e.say(&handover, "m-back", "I am back").await;
    until("re-routed", || async {
        e2e.miaw.conversation(&conversation).await["sessionStatus"] == "Waiting"
    })
    .await;
    e2e.miaw
        .act(&conversation, "accept", json!({ "agent": "Kim" }))
        .await;
    until("active again", || async {
        e2e.flow_heard("s24")
            .await
            .iter()
            .filter(|s| *s == "active")
            .count()
            >= 2
    })
    .await;
    let heard = e2e.flow_heard("s24").await;
    assert!(
        !heard
            .iter()
            .any(|s| s.starts_with("completed") || s.starts_with("error")),
        "{heard:?}"
    );
    assert_eq!(e2e.view(&handover).await["live"], true);
    e2e.stop().await;
}

#[tokio::test]
async fn s26_s33_the_agent_ends_the_flow_hears_completed_once_and_a_second_handover_works() {
    let e2e = E2e::start().await;
    let first = e2e.start_handover("s26", json!({})).await;
    let conversation = e2e.conversation(&first).await;
    e2e.miaw
        .accept_when_created(&conversation, "Jane", WAIT)
        .await;
    until("active", || async {
        e2e.flow_heard("s26").await.contains(&"active".to_owned())
    })
    .await;
    e2e.miaw.act(&conversation, "end", json!({})).await;
    until("completed", || async {
        e2e.flow_heard("s26")
            .await
            .iter()
            .any(|s| s.starts_with("completed"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = e2e.flow_heard("s26").await;
    assert_eq!(
        heard.iter().filter(|s| s.starts_with("completed")).count(),
        1,
        "{heard:?}"
    );
    assert!(heard.contains(&"completed/agent_ended".to_owned()));
    assert_eq!(e2e.view(&first).await["outcome"]["reason"], "agent_ended");
    // S33: the same Cognigy session hands over again, with a new conversation.
    let second = e2e.start_handover("s26", json!({})).await;
    assert_ne!(second, first);
    let next = e2e.conversation(&second).await;
    assert_ne!(next, conversation);
    e2e.miaw.accept_when_created(&next, "Sam", WAIT).await;
    until("active again", || async {
        e2e.flow_heard("s26")
            .await
            .iter()
            .filter(|s| *s == "active")
            .count()
            == 2
    })
    .await;
    e2e.stop().await;
}

#[tokio::test]
async fn s31_a_cancel_while_queued_closes_the_conversation_and_the_flow_hears_cancelled() {
    let e2e = E2e::start().await;
    let handover = e2e.start_handover("s31", json!({})).await;
    let conversation = e2e.conversation(&handover).await;
    until("queued", || async {
        e2e.miaw.conversation(&conversation).await["sessionStatus"] == "Waiting"
    })
    .await;
    assert_eq!(
        e2e.post(&format!("/v1/handovers/{handover}/cancel"), json!(null))
            .await
            .0,
        202
    );
    until("cancelled", || async {
        e2e.flow_heard("s31")
            .await
            .contains(&"cancelled/cancelled_by_user".to_owned())
    })
    .await;
    until("closed at Salesforce", || async {
        e2e.miaw.conversation(&conversation).await["closed"] == true
    })
    .await;
    let (status, answer) = e2e
        .post(
            &format!("/v1/handovers/{handover}/messages"),
            json!({ "messageId": "late", "text": "x" }),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("ended"))
    );
    e2e.stop().await;
}

#[tokio::test]
async fn s13_s14_s35_a_lost_session_end_a_refused_file_and_a_withheld_message_lose_nothing() {
    let e2e = E2e::start().await;
    let handover = e2e.start_handover("s35", json!({})).await;
    let conversation = e2e.with_agent("s35", &handover).await;
    // S35: a message the stream never delivers arrives by the safety poll (2 s here).
    e2e.miaw
        .control(
            reqwest::Method::PUT,
            &format!("conversations/{conversation}/faults"),
            json!({ "withhold_next_events": 1 }),
        )
        .await;
    e2e.relayed_to_user("s35", &conversation, "never on the stream")
        .await;
    // S14: a file of a type Salesforce refuses reaches the agent as a link.
    let exe = e2e
        .miaw
        .host_file(
            handover_core::ConversationId::parse(&conversation).unwrap(),
            "tool.exe",
            "application/x-msdownload",
            b"MZ",
        )
        .await;
    let (status, _) = e2e
        .post(&format!("/v1/handovers/{handover}/messages"), json!({ "messageId": "file-1", "attachments": [{ "url": exe, "fileName": "tool.exe", "mimeType": "application/x-msdownload" }] }))
        .await;
    assert_eq!(status, 202);
    until("the link", || async {
        e2e.miaw
            .user_texts(&conversation)
            .await
            .iter()
            .any(|t| t.starts_with("tool.exe: http"))
    })
    .await;
    // S13: the agent ends while the end's events are lost; the user's message is resent as a
    // new messaging session and the agent sees it once.
    e2e.miaw
        .control(
            reqwest::Method::PUT,
            &format!("conversations/{conversation}/faults"),
            json!({ "withhold_next_events": 2 }),
        )
        .await;
    e2e.miaw.act(&conversation, "end", json!({})).await;
    e2e.say(&handover, "m-417", "Still there?").await;
    until("the resend", || async {
        e2e.miaw
            .user_texts(&conversation)
            .await
            .iter()
            .any(|t| t == "Still there?")
    })
    .await;
    let texts = e2e.miaw.user_texts(&conversation).await;
    assert_eq!(texts.iter().filter(|t| *t == "Still there?").count(), 1);
    e2e.stop().await;
}

/// The agent's texts in the order Salesforce recorded them (the sandbox's entries).
async fn agent_texts_at_salesforce(e2e: &E2e, conversation: &str) -> Vec<String> {
    e2e.miaw.conversation(conversation).await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["entryType"] == "Message" && entry["sender"]["role"] == "Agent")
        .filter_map(|entry| {
            entry["entryPayload"]["abstractMessage"]["staticContent"]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// S45: the stream drops again and again while the agent writes, every fourth message never
/// comes on the stream, and the entries list answers slowly, so each reconnect's backfill is
/// still paging while the new stream delivers what the agent writes next. The user reads
/// every message once, in the order Salesforce recorded them. The safety poll is out of the
/// way (10 minutes): the order comes from holding the stream's entries, not from polling.
#[tokio::test]
async fn s45_reconnects_while_the_agent_writes_and_withheld_messages_keep_server_order() {
    let e2e = E2e::start_with(|config| {
        config.salesforce.safety_poll_secs = 600;
        config.salesforce.safety_poll_with_agent_secs = 600;
    })
    .await;
    let handover = e2e.start_handover("s45", json!({})).await;
    let conversation = e2e.with_agent("s45", &handover).await;
    e2e.relayed_to_user("s45", &conversation, "before the trouble")
        .await;
    e2e.miaw
        .control(
            reqwest::Method::PUT,
            &format!("conversations/{conversation}/faults"),
            json!({ "drop_every_ms": 700, "latency_ms": 250 }),
        )
        .await;
    for n in 1..=24 {
        let text = format!("agent {n}");
        let withheld = n % 4 == 0;
        e2e.miaw
            .act(
                &conversation,
                "messages",
                json!({ "text": text, "withheld": withheld }),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(90)).await;
    }
    e2e.miaw
        .control(
            reqwest::Method::PUT,
            &format!("conversations/{conversation}/faults"),
            json!({}),
        )
        .await;
    e2e.relayed_to_user("s45", &conversation, "after the trouble")
        .await;
    let expected = agent_texts_at_salesforce(&e2e, &conversation).await;
    assert_eq!(expected.len(), 26);
    assert_eq!(
        e2e.user_read("s45").await,
        expected,
        "every agent message once, in Salesforce's order"
    );
    e2e.stop().await;
}

/// S47: sixty agent messages recorded in one millisecond, none of them on the stream, sit
/// between two that are. The backfill must page through them; under an exclusive reading of
/// `endTimestamp`, a page ending at the boundary millisecond would skip the rest of it. Both
/// readings lose nothing and keep Salesforce's order.
#[tokio::test]
async fn s47_a_crowded_millisecond_is_paged_through_under_either_reading_of_the_bounds() {
    for bounds in [
        miaw_sandbox::TimeBounds::Inclusive,
        miaw_sandbox::TimeBounds::Exclusive,
    ] {
        let sandbox = SandboxConfig {
            entry_time_bounds: bounds,
            ..SandboxConfig::default()
        };
        let e2e = E2e::start_with_sandbox(sandbox, |config| {
            config.salesforce.safety_poll_secs = 600;
            config.salesforce.safety_poll_with_agent_secs = 600;
        })
        .await;
        let handover = e2e.start_handover("s47", json!({})).await;
        let conversation = e2e.with_agent("s47", &handover).await;
        e2e.relayed_to_user("s47", &conversation, "before").await;
        let texts: Vec<String> = (1..=60).map(|n| format!("burst {n}")).collect();
        e2e.miaw
            .act(
                &conversation,
                "burst",
                json!({ "texts": texts, "withheld": (0..60).collect::<Vec<_>>() }),
            )
            .await;
        e2e.relayed_to_user("s47", &conversation, "after").await;
        let expected = agent_texts_at_salesforce(&e2e, &conversation).await;
        assert_eq!(expected.len(), 62);
        assert_eq!(e2e.user_read("s47").await, expected, "bounds {bounds:?}");
        assert_eq!(e2e.view(&handover).await["live"], true);
        e2e.stop().await;
    }
}

#[tokio::test]
async fn s42_a_single_instance_restarted_without_a_configured_name_takes_its_handovers_back_at_once()
 {
    // Leases far longer than the test waits: only taking them back can resume in time.
    let mut e2e = E2e::start_with(|config| config.store.lease_ttl_secs = 600).await;
    let handover = e2e.start_handover("s42u", json!({})).await;
    let conversation = e2e.with_agent("s42u", &handover).await;
    e2e.relayed_to_user("s42u", &conversation, "before the crash")
        .await;
    let kept = std::fs::read_to_string(e2e.config.data_dir.join("instance-id")).unwrap();
    e2e.crash_and_restart_unnamed().await;
    assert_eq!(
        std::fs::read_to_string(e2e.config.data_dir.join("instance-id")).unwrap(),
        kept,
        "the generated name is kept in the data directory"
    );
    e2e.relayed_to_user("s42u", &conversation, "after the restart")
        .await;
}

#[tokio::test]
async fn s42_after_a_crash_and_restart_the_stream_resumes_without_a_new_token_and_nothing_is_lost()
{
    let mut e2e = E2e::start().await;
    let handover = e2e.start_handover("s42", json!({})).await;
    let conversation = e2e.with_agent("s42", &handover).await;
    e2e.relayed_to_user("s42", &conversation, "before the crash")
        .await;
    let minted = e2e.minted().await;
    e2e.crash_and_restart().await;
    // Meanwhile both sides keep talking.
    e2e.agent_says(&conversation, "during the restart").await;
    e2e.say(&handover, "m-restart", "are you still there?")
        .await;
    until("the new process relays the agent", || async {
        e2e.user_read("s42")
            .await
            .contains(&"during the restart".to_owned())
    })
    .await;
    until("and the user", || async {
        e2e.miaw
            .user_texts(&conversation)
            .await
            .contains(&"are you still there?".to_owned())
    })
    .await;
    e2e.relayed_to_user("s42", &conversation, "after the restart")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = e2e.user_read("s42").await;
    for text in [
        "before the crash",
        "during the restart",
        "after the restart",
    ] {
        assert_eq!(
            read.iter().filter(|t| *t == text).count(),
            1,
            "{text} once: {read:?}"
        );
    }
    assert_eq!(
        e2e.miaw
            .user_texts(&conversation)
            .await
            .iter()
            .filter(|t| *t == "are you still there?")
            .count(),
        1
    );
    assert_eq!(e2e.minted().await, minted, "no token was minted again");
    e2e.stop().await;
}

#[tokio::test]
async fn s44_bad_requests_are_refused_and_change_no_live_handover() {
    let e2e = E2e::start().await;
    let handover = e2e.start_handover("s44", json!({})).await;
    let conversation = e2e.conversation(&handover).await;
    e2e.miaw
        .accept_when_created(&conversation, "Jane", WAIT)
        .await;
    let path = format!("/v1/handovers/{handover}/messages");
    let (status, _) = e2e
        .api(
            reqwest::Method::POST,
            &path,
            "wrong-key-0123456789",
            Some(json!({ "messageId": "x", "text": "x" })),
        )
        .await;
    assert_eq!(status, 401);
    let huge = json!({ "messageId": "big", "text": "x".repeat(2 * 1024 * 1024) });
    assert_eq!(e2e.post(&path, huge).await.0, 413);
    let missing = HandoverId::from_random_bytes(random_bytes());
    assert_eq!(
        e2e.post(
            &format!("/v1/handovers/{missing}/messages"),
            json!({ "messageId": "x", "text": "x" })
        )
        .await
        .0,
        404
    );
    let (status, answer) = e2e.post(&path, json!({ "text": "no id" })).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("messageId"))
    );
    e2e.say(&handover, "ok-1", "the only message").await;
    until("it arrived", || async {
        !e2e.miaw.user_texts(&conversation).await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e2e.miaw.user_texts(&conversation).await,
        ["the only message"]
    );
    assert_eq!(e2e.view(&handover).await["live"], true);
    let (status, list) = e2e
        .api(reqwest::Method::GET, "/v1/handovers?live=true", ADMIN, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["handovers"][0]["handoverId"], handover.as_str());
    e2e.stop().await;
}

/// Beyond `api.max_live_handovers` (by default what the open-file limit leaves after the
/// store's share), a start is refused before anything is stored, and a restarted instance
/// leaves the handovers it has no room for in the store, taking each up once room frees:
/// the agent's words from meanwhile still reach the user.
#[tokio::test]
async fn at_capacity_a_start_is_refused_and_a_handover_without_room_waits_in_the_store() {
    let mut e2e = E2e::start_with(|config| config.api.max_live_handovers = Some(2)).await;
    let first = e2e.start_handover("cap-1", json!({})).await;
    let second = e2e.start_handover("cap-2", json!({})).await;
    let response = e2e
        .http
        .post(format!("{}/v1/handovers", e2e.url()))
        .bearer_auth(KEY)
        .json(&json!({
            "requestId": "cap-3",
            "userId": "e2e-user",
            "sessionId": "cap-3",
            "URLToken": DEFAULT_URL_TOKEN,
            "endpointUrl": e2e.cognigy.url(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["retry-after"].to_str().unwrap(),
        "5",
        "Retry-After"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "at_capacity", "{answer}");
    let (_, list) = e2e
        .api(reqwest::Method::GET, "/v1/handovers", ADMIN, None)
        .await;
    assert_eq!(
        list["handovers"].as_array().unwrap().len(),
        2,
        "the refused start stored nothing: {list}"
    );
    assert!(
        e2e.metrics()
            .await
            .contains("handover_starts_refused_at_capacity_total 1"),
        "counted"
    );
    let conversations = [
        e2e.with_agent("cap-1", &first).await,
        e2e.with_agent("cap-2", &second).await,
    ];

    // A crash, and the next process has room for one of the two.
    e2e.config.api.max_live_handovers = Some(1);
    e2e.crash_and_restart().await;
    for (conversation, text) in conversations.iter().zip(["to one", "to two"]) {
        e2e.agent_says(conversation, text).await;
    }
    // One is driven again and relays its agent; the other waits in the store.
    let deadline = tokio::time::Instant::now() + WAIT;
    let driven = loop {
        if e2e.user_read("cap-1").await.contains(&"to one".to_owned()) {
            break 0;
        }
        if e2e.user_read("cap-2").await.contains(&"to two".to_owned()) {
            break 1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one handover is driven again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let waiting = 1 - driven;
    let [sessions, handovers, texts] = [
        ["cap-1", "cap-2"],
        [first.as_str(), second.as_str()],
        ["to one", "to two"],
    ];
    // Past the takeover scans (every 1.5 s here): still no room for the other.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !e2e.user_read(sessions[waiting])
            .await
            .contains(&texts[waiting].to_owned()),
        "no room, not driven"
    );
    // The driven one ends; the waiting one is taken up and loses nothing.
    assert_eq!(
        e2e.post(
            &format!("/v1/handovers/{}/cancel", handovers[driven]),
            json!(null)
        )
        .await
        .0,
        202
    );
    until(
        "the waiting handover is driven and relays what it missed",
        || async {
            e2e.user_read(sessions[waiting])
                .await
                .contains(&texts[waiting].to_owned())
        },
    )
    .await;
    e2e.relayed_to_user(sessions[waiting], &conversations[waiting], "and later")
        .await;
    let read = e2e.user_read(sessions[waiting]).await;
    assert_eq!(
        read.iter().filter(|t| *t == texts[waiting]).count(),
        1,
        "once: {read:?}"
    );
    e2e.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_releases_the_leases_so_another_instance_continues_at_once() {
    let mut e2e = E2e::start().await;
    let handover = e2e.start_handover("graceful", json!({})).await;
    let conversation = e2e.conversation(&handover).await;
    e2e.miaw
        .accept_when_created(&conversation, "Jane", WAIT)
        .await;
    until("active", || async {
        e2e.flow_heard("graceful")
            .await
            .contains(&"active".to_owned())
    })
    .await;
    e2e.app
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    // Well inside the 3 s lease: it was released, not left to lapse.
    let probe = handover_store::SqlStore::connect(
        &e2e.config.store_url(),
        Keyring::parse(&keys_spec()).unwrap(),
    )
    .await
    .unwrap();
    let id = HandoverId::parse(&handover).unwrap();
    let lease = handover_core::ports::SessionStore::acquire_lease(
        &probe,
        id,
        "probe",
        handover_app::runtime::now(),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .expect("the lease is free at once");
    handover_core::ports::SessionStore::release_lease(&probe, id, &lease)
        .await
        .unwrap();
    e2e.start_next_instance().await;
    e2e.agent_says(&conversation, "to the next instance").await;
    until("the next instance relays", || async {
        e2e.user_read("graceful")
            .await
            .contains(&"to the next instance".to_owned())
    })
    .await;
    e2e.stop().await;
}

/// A database of its own on the PostgreSQL of `HANDOVER_TEST_DATABASE_URL`.
async fn postgres_database(test: &str) -> Option<(sqlx::PgPool, String, String)> {
    let Ok(admin_url) = std::env::var("HANDOVER_TEST_DATABASE_URL") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: HANDOVER_TEST_DATABASE_URL is not set (.ci/run sets it)"
        );
        return None;
    };
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap();
    let name = format!(
        "handover_e2e_{}",
        HandoverId::from_random_bytes(random_bytes())
            .to_string()
            .replace('-', "")
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    Some((admin, name.clone(), format!("{base}/{name}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s43_when_an_instance_dies_another_takes_its_handover_over_and_nothing_is_lost() {
    let Some((admin, name, url)) = postgres_database("s43_failover").await else {
        return;
    };
    let mut e2e = E2e::start().await;
    e2e.app
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    let mut config = e2e.config.clone();
    config.store.url = Some(Secret::from(url.as_str()));
    let keys = || Keyring::parse(&keys_spec()).unwrap();
    let first = App::start(
        &Config {
            instance_id: Some("a".to_owned()),
            ..config.clone()
        },
        keys(),
    )
    .await
    .unwrap();
    e2e.app = Some(first);
    let handover = e2e.start_handover("s43", json!({})).await;
    let conversation = e2e.with_agent("s43", &handover).await;
    e2e.relayed_to_user("s43", &conversation, "before the failure")
        .await;
    // A second instance joins; the first holds the lease, so it only watches.
    let second = App::start(
        &Config {
            instance_id: Some("b".to_owned()),
            ..config.clone()
        },
        keys(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e2e.app.as_ref().unwrap().runtime().driving(),
        1,
        "the first instance drives it"
    );
    assert_eq!(second.runtime().driving(), 0, "the second only watches");
    let minted = e2e.minted().await;
    // Instance a dies for good; b takes over once the lease lapses (3 s) and its scan runs.
    e2e.app.take().unwrap().abort();
    e2e.app = Some(second);
    e2e.agent_says(&conversation, "while a is gone").await;
    e2e.say(&handover, "m-failover", "anyone there?").await;
    until("b relays the agent", || async {
        e2e.user_read("s43")
            .await
            .contains(&"while a is gone".to_owned())
    })
    .await;
    until("and the user", || async {
        e2e.miaw
            .user_texts(&conversation)
            .await
            .contains(&"anyone there?".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = e2e.user_read("s43").await;
    for text in ["before the failure", "while a is gone"] {
        assert_eq!(
            read.iter().filter(|t| *t == text).count(),
            1,
            "{text} once: {read:?}"
        );
    }
    assert_eq!(
        e2e.miaw
            .user_texts(&conversation)
            .await
            .iter()
            .filter(|t| *t == "anyone there?")
            .count(),
        1
    );
    assert_eq!(
        e2e.minted().await,
        minted,
        "the token travelled in the store; none was minted"
    );
    e2e.stop().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
}

// ---- hostile input -----------------------------------------------------------------------------

/// A request an attacker or a broken Flow could send. Every body is wrong by construction, so
/// the only right answer is a 4xx with a message (a replay of the live start is the exception:
/// it must name the same handover).
#[derive(Clone, Debug)]
enum Hostile {
    Request {
        path: String,
        key: Option<&'static str>,
        body: Vec<u8>,
    },
    ReplayStart,
}

fn start_body(session: &str) -> Value {
    json!({
        "requestId": format!("{session}-start"),
        "userId": "hostile-user",
        "sessionId": session,
        "URLToken": DEFAULT_URL_TOKEN,
        "endpointUrl": "http://127.0.0.1:9/",
    })
}

/// A JSON value of any shape, for wrong types and unknown fields.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Spoils a valid body in one of the ways the issue names. `typed` are fields whose value
/// of another type is an error (a `null` for an optional field would not be), `required` are
/// fields whose absence is.
fn spoiled(
    valid: Value,
    typed: &'static [&'static str],
    required: &'static [&'static str],
) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let typed: Vec<String> = typed.iter().map(|f| (*f).to_owned()).collect();
    let required: Vec<String> = required.iter().map(|f| (*f).to_owned()).collect();
    let wrong_type = {
        let valid = valid.clone();
        (proptest::sample::select(typed), any_json()).prop_filter_map(
            "a value of another type",
            move |(field, value)| {
                let same_kind = std::mem::discriminant(&value)
                    == std::mem::discriminant(&valid[field.as_str()]);
                // Cognigy's ids may be integers; the API takes those on purpose.
                let lenient = matches!(field.as_str(), "userId" | "sessionId")
                    && (value.is_i64() || value.is_u64());
                (!same_kind && !lenient).then(|| {
                    let mut body = valid.clone();
                    body[field.as_str()] = value;
                    serde_json::to_vec(&body).unwrap()
                })
            },
        )
    };
    let unknown_field = {
        let valid = valid.clone();
        ("x[a-z]{2,12}", any_json()).prop_map(move |(field, value)| {
            let mut body = valid.clone();
            body[field.as_str()] = value;
            serde_json::to_vec(&body).unwrap()
        })
    };
    let missing_field = {
        let valid = valid.clone();
        proptest::sample::select(required).prop_map(move |field| {
            let mut body = valid.clone();
            body.as_object_mut().unwrap().remove(&field);
            serde_json::to_vec(&body).unwrap()
        })
    };
    let invalid_utf8 = {
        let valid = serde_json::to_vec(&valid).unwrap();
        // A continuation byte with no lead byte before it is never valid UTF-8, whatever
        // follows.
        (
            0..valid.len(),
            proptest::collection::vec(0x80u8..=0xbf, 1..4),
        )
            .prop_map(move |(at, junk)| {
                // Inside the first string value, so the JSON is otherwise well formed.
                let quote = valid
                    .iter()
                    .skip(at)
                    .position(|b| *b == b'"')
                    .map(|p| p + at);
                let mut body = valid.clone();
                let at = quote.map_or(body.len(), |q| q + 1);
                body.splice(at..at, junk.iter().copied());
                body
            })
    };
    let deep = (200usize..50_000).prop_map(|depth| {
        let mut body = b"{\"text\":".to_vec();
        body.extend(std::iter::repeat_n(b'[', depth));
        body.extend(std::iter::repeat_n(b']', depth));
        body.push(b'}');
        body
    });
    let huge = {
        let valid = valid.clone();
        (1_100_000usize..1_300_000).prop_map(move |size| {
            let mut body = valid.clone();
            body["text"] = "x".repeat(size).into();
            serde_json::to_vec(&body).unwrap()
        })
    };
    let not_json = proptest::collection::vec(any::<u8>(), 0..200)
        .prop_filter("not JSON", |bytes| {
            serde_json::from_slice::<Value>(bytes).is_err()
        });
    prop_oneof![
        3 => wrong_type,
        2 => unknown_field,
        2 => missing_field,
        2 => invalid_utf8,
        1 => deep,
        1 => huge,
        2 => not_json,
    ]
}

fn hostile(live: String) -> impl proptest::strategy::Strategy<Value = Hostile> {
    use proptest::prelude::*;
    let message = json!({ "messageId": "hostile-1", "text": "hello" });
    let typing = json!({ "typing": true });
    let start = start_body("hostile-new");
    let unknown = HandoverId::from_random_bytes([7; 16]).to_string();
    let on_live = {
        let messages = format!("/v1/handovers/{live}/messages");
        let typing_path = format!("/v1/handovers/{live}/typing");
        prop_oneof![
            spoiled(message.clone(), &["messageId", "text"], &["messageId"])
                .prop_map(move |body| (messages.clone(), body)),
            spoiled(typing, &["typing"], &["typing"])
                .prop_map(move |body| (typing_path.clone(), body)),
        ]
    };
    const REQUIRED: &[&str] = &["userId", "sessionId", "URLToken", "endpointUrl"];
    let starts =
        spoiled(start, REQUIRED, REQUIRED).prop_map(|body| ("/v1/handovers".to_owned(), body));
    let elsewhere = (
        prop_oneof![
            Just(format!("/v1/handovers/{unknown}/messages")),
            Just(format!("/v1/handovers/{unknown}/close")),
            Just(format!("/v1/handovers/{unknown}/cancel")),
            "/v1/handovers/[a-z0-9%-]{1,40}/messages",
            "/v1/[a-z]{1,12}",
        ],
        Just(serde_json::to_vec(&message).unwrap()),
    );
    let keyless = {
        let live = live.clone();
        (
            prop_oneof![Just(None), Just(Some("not-the-key-0123456789"))],
            Just(serde_json::to_vec(&message).unwrap()),
        )
            .prop_map(move |(key, body)| Hostile::Request {
                path: format!("/v1/handovers/{live}/messages"),
                key,
                body,
            })
    };
    prop_oneof![
        4 => on_live.prop_map(|(path, body)| Hostile::Request { path, key: Some(KEY), body }),
        3 => starts.prop_map(|(path, body)| Hostile::Request { path, key: Some(KEY), body }),
        2 => elsewhere.prop_map(|(path, body)| Hostile::Request { path, key: Some(KEY), body }),
        1 => keyless,
        1 => Just(Hostile::ReplayStart),
    ]
}

#[test]
fn s44_hostile_requests_get_a_4xx_with_a_message_and_the_live_handover_goes_on() {
    use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let e2e = runtime.block_on(E2e::start());
    let start = {
        let mut body = start_body("hostile-live");
        body["endpointUrl"] = e2e.cognigy.url().into();
        body
    };
    let (handover, conversation) = runtime.block_on(async {
        let (status, answer) = e2e.post("/v1/handovers", start.clone()).await;
        assert_eq!(status, 202, "{answer}");
        let handover = answer["handoverId"].as_str().unwrap().to_owned();
        let conversation = e2e.conversation(&handover).await;
        e2e.miaw
            .accept_when_created(&conversation, "Jane", WAIT)
            .await;
        until("active", || async {
            e2e.flow_heard("hostile-live")
                .await
                .contains(&"active".to_owned())
        })
        .await;
        (handover, conversation)
    });
    let url = e2e.url();
    let cases = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&hostile(handover.clone()), |request| {
        let (status, answer) = runtime.block_on(async {
            const MAX_BODY: usize = 1024 * 1024;
            let (path, key, body) = match &request {
                Hostile::Request { path, key, body } => (path.clone(), *key, body.clone()),
                Hostile::ReplayStart => (
                    "/v1/handovers".to_owned(),
                    Some(KEY),
                    serde_json::to_vec(&start).unwrap(),
                ),
            };
            let body_len = body.len();
            let mut builder = e2e
                .http
                .post(format!("{url}{path}"))
                .header("content-type", "application/json")
                .body(body);
            if let Some(key) = key {
                builder = builder.bearer_auth(key);
            }
            let oversized = body_len > MAX_BODY;
            match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                }
                // A body over the limit may be refused before it is read, and the connection
                // closed while the client still writes: a 413 it never sees. That is the
                // server protecting itself; anything else must be answered.
                Err(_) if oversized => (413, json!({ "error": { "message": "refused early" } })),
                Err(error) => panic!("the bridge did not answer: {error}"),
            }
        });
        if let Hostile::ReplayStart = request {
            if !((200..300).contains(&status) && answer["handoverId"] == handover.as_str()) {
                return Err(TestCaseError::fail(format!(
                    "a replayed start must name the same handover: {status} {answer}"
                )));
            }
            return Ok(());
        }
        let message = answer["error"]["message"].as_str().unwrap_or("");
        if !(400..500).contains(&status) || message.is_empty() {
            let sent = match &request {
                Hostile::Request { body, .. } => String::from_utf8_lossy(body)
                    .chars()
                    .take(400)
                    .collect::<String>(),
                Hostile::ReplayStart => String::new(),
            };
            return Err(TestCaseError::fail(format!(
                "wanted a 4xx with a message, got {status} {answer} for {sent}"
            )));
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // The live handover is untouched and still relays both ways.
    runtime.block_on(async {
        let view = e2e.view(&handover).await;
        assert_eq!(view["live"], true, "{view}");
        assert_eq!(view["phase"], "with_agent", "{view}");
        e2e.agent_says(&conversation, "still here").await;
        e2e.say(&handover, "after-the-storm", "me too").await;
        until("both ways", || async {
            e2e.user_read("hostile-live")
                .await
                .contains(&"still here".to_owned())
                && e2e
                    .miaw
                    .user_texts(&conversation)
                    .await
                    .contains(&"me too".to_owned())
        })
        .await;
        assert_eq!(
            e2e.miaw.user_texts(&conversation).await,
            ["me too"],
            "no hostile message reached the agent"
        );
        let (_, list) = e2e
            .api(reqwest::Method::GET, "/v1/handovers", ADMIN, None)
            .await;
        assert_eq!(
            list["handovers"].as_array().map(Vec::len),
            Some(1),
            "no hostile start made a handover: {list}"
        );
        e2e.stop().await;
    });
}
