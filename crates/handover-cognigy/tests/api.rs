//! The `/v1` API over real HTTP, in front of a fake `Handovers` that admits starts with the
//! core's `StartGate` and records inputs: every route, every error status, the OpenAPI
//! document against the routes.

#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use handover_cognigy::api::{self, ApiConfig, ApiKey};
use handover_cognigy::{HandoverView, Handovers, ListFilter, NewHandover, ServiceError};
use handover_core::{
    Admission, EndReason, HandoverId, Input, Outcome, Phase, Speaker, StartGate, UserMessage,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FLOW_KEY: &str = "flow-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

#[derive(Default)]
struct Fake {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    gates: HashMap<(String, String), StartGate>,
    handovers: BTreeMap<HandoverId, Stored>,
    order: Vec<HandoverId>,
}

struct Stored {
    started: NewHandover,
    inputs: Vec<Input>,
    outcome: Option<Outcome>,
}

impl Fake {
    fn only(&self) -> (NewHandover, Vec<Input>) {
        let state = self.state.lock().unwrap();
        assert_eq!(state.handovers.len(), 1, "one handover");
        let stored = state.handovers.values().next().unwrap();
        (stored.started.clone(), stored.inputs.clone())
    }

    fn count(&self) -> usize {
        self.state.lock().unwrap().handovers.len()
    }

    fn inputs(&self, id: &str) -> Vec<Input> {
        let id = HandoverId::parse(id).unwrap();
        self.state.lock().unwrap().handovers[&id].inputs.clone()
    }

    fn end(&self, id: &str) {
        let id = HandoverId::parse(id).unwrap();
        let mut state = self.state.lock().unwrap();
        let stored = state.handovers.get_mut(&id).unwrap();
        stored.outcome = Some(Outcome {
            reason: EndReason::AgentEnded,
            detail: None,
            undelivered: Vec::new(),
            unconfirmed: Vec::new(),
            missed: Vec::new(),
        });
        let key = (
            stored.started.address.user_id.clone(),
            stored.started.address.session_id.clone(),
        );
        state.gates.get_mut(&key).unwrap().ended(id);
    }
}

fn view(stored: &Stored) -> HandoverView {
    HandoverView {
        handover_id: stored.started.request.handover_id,
        conversation_id: stored.started.request.conversation_id,
        user_id: stored.started.address.user_id.clone(),
        session_id: stored.started.address.session_id.clone(),
        phase: if stored.outcome.is_some() {
            Phase::Ended
        } else {
            Phase::Requested
        },
        outcome: stored.outcome.clone(),
    }
}

#[async_trait]
impl Handovers for Fake {
    async fn start(&self, handover: NewHandover) -> Result<Admission, ServiceError> {
        if handover.request.deployment.as_deref() == Some("nowhere") {
            return Err(ServiceError::UnknownDeployment("nowhere".to_owned()));
        }
        if handover.request.deployment.as_deref() == Some("down") {
            return Err(ServiceError::Unavailable(
                "the store is unreachable".to_owned(),
            ));
        }
        let mut state = self.state.lock().unwrap();
        let key = (
            handover.address.user_id.clone(),
            handover.address.session_id.clone(),
        );
        let id = handover.request.handover_id;
        let admission = state
            .gates
            .entry(key)
            .or_default()
            .admit(handover.request_id.clone(), id);
        if admission == Admission::Started(id) {
            state.order.push(id);
            state.handovers.insert(
                id,
                Stored {
                    started: handover,
                    inputs: Vec::new(),
                    outcome: None,
                },
            );
        }
        Ok(admission)
    }

    async fn input(&self, handover: HandoverId, input: Input) -> Result<(), ServiceError> {
        let mut state = self.state.lock().unwrap();
        let stored = state
            .handovers
            .get_mut(&handover)
            .ok_or(ServiceError::NotFound(handover))?;
        if stored.outcome.is_some() {
            return Err(ServiceError::Ended(handover));
        }
        stored.inputs.push(input);
        Ok(())
    }

    async fn get(&self, handover: HandoverId) -> Result<HandoverView, ServiceError> {
        let state = self.state.lock().unwrap();
        state
            .handovers
            .get(&handover)
            .map(view)
            .ok_or(ServiceError::NotFound(handover))
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<HandoverView>, ServiceError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .order
            .iter()
            .rev()
            .map(|id| &state.handovers[id])
            .filter(|s| filter.live.is_none_or(|live| live == s.outcome.is_none()))
            .filter(|s| {
                filter
                    .user_id
                    .as_deref()
                    .is_none_or(|u| u == s.started.address.user_id)
            })
            .filter(|s| {
                filter
                    .session_id
                    .as_deref()
                    .is_none_or(|u| u == s.started.address.session_id)
            })
            .take(filter.limit)
            .map(view)
            .collect())
    }
}

struct Api {
    url: String,
    fake: Arc<Fake>,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        Self::start_with(ApiConfig {
            keys: vec![
                ApiKey::new("flow", FLOW_KEY).unwrap(),
                ApiKey::admin("ops", ADMIN_KEY).unwrap(),
            ],
            max_body_bytes: 64 * 1024,
            ..test_config()
        })
        .await
    }

    async fn start_with(config: ApiConfig) -> Self {
        let fake = Arc::new(Fake::default());
        let router = api::router(fake.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            fake,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(FLOW_KEY),
            Some(body.to_string()),
        )
        .await
    }

    async fn start_handover(&self, body: Value) -> String {
        let (status, answer) = self.post("/v1/handovers", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["handoverId"].as_str().unwrap().to_owned()
    }
}

/// The defaults, with the Endpoint host of `minimal()` listed by name: the tests run without
/// DNS, and Cognigy's default `*.cognigy.ai` needs the name resolved to public addresses.
fn test_config() -> ApiConfig {
    ApiConfig {
        endpoint_hosts: handover_cognigy::endpoint_policy(&["endpoint-trial.cognigy.ai"]),
        ..ApiConfig::default()
    }
}

fn minimal() -> Value {
    json!({
        "userId": "user-1",
        "sessionId": "session-1",
        "URLToken": "url-token",
        "endpointUrl": "https://endpoint-trial.cognigy.ai/",
    })
}

fn with(mut body: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// The error's code and field, for assertions.
fn error(answer: &Value) -> (String, Option<String>) {
    (
        answer["error"]["code"].as_str().unwrap_or("?").to_owned(),
        answer["error"]["field"].as_str().map(str::to_owned),
    )
}

#[tokio::test]
async fn s01_a_start_carries_every_node_setting_into_the_handover() {
    let api = Api::start().await;
    let body = with(
        minimal(),
        json!({
            "requestId": "input-42",
            "transcript": [{ "role": "user", "text": "I need help" }, { "role": "bot", "text": "Sure" }],
            "locale": "de_DE",
            "deployment": "emea",
            "settings": {
                "sendTranscript": true,
                "routingAttributes": { "issueType": "Billing" },
                "identityToken": "eyJ.identity.token",
                "userConnectsMessage": false,
                "userDisconnectsMessage": true,
                "endChatWhenAgentLeaves": true,
                "agentChangeNotification": true,
                "queue": { "position": true, "estimatedWaitTime": true,
                           "alternative": { "maxPosition": 10, "maxEstimatedWaitTimeMs": 600000, "text": "Busy" } },
                "forwardEvents": true,
                "forwardWhileQueued": false,
            },
        }),
    );
    let id = api.start_handover(body).await;
    let (started, inputs) = api.fake.only();
    assert!(inputs.is_empty());
    let request = &started.request;
    assert_eq!(request.handover_id.to_string(), id);
    assert_eq!(started.request_id.as_str(), "input-42");
    assert_eq!(started.request.deployment.as_deref(), Some("emea"));
    assert_eq!(
        started.address.endpoint_url,
        "https://endpoint-trial.cognigy.ai"
    );
    assert_eq!(started.address.url_token, "url-token");
    assert_eq!(
        request
            .transcript
            .iter()
            .map(|t| (t.speaker, t.text.as_str()))
            .collect::<Vec<_>>(),
        [(Speaker::User, "I need help"), (Speaker::Bot, "Sure")]
    );
    let settings = &request.settings;
    assert!(
        settings.send_transcript
            && !settings.user_connected_message
            && settings.user_disconnected_message
    );
    assert!(
        settings.end_when_agent_leaves
            && settings.agent_change_notification
            && settings.forward_events
    );
    assert!(!settings.forward_while_queued);
    assert_eq!(
        settings.identity_token.as_ref().unwrap().expose_secret(),
        "eyJ.identity.token"
    );
    assert_eq!(settings.locale.as_deref(), Some("de_DE"));
    let alternative = settings.queue.alternative.as_ref().unwrap();
    assert_eq!(
        (
            alternative.max_position,
            alternative.max_wait.map(|d| d.as_secs())
        ),
        (Some(10), Some(600))
    );
    assert!(
        !format!("{started:?}").contains("eyJ.identity.token"),
        "the identity token never shows in Debug"
    );
    // Defaults are Cognigy's.
    let api = Api::start().await;
    api.start_handover(minimal()).await;
    let (started, _) = api.fake.only();
    assert_eq!(
        started.request.settings,
        handover_core::HandoverSettings::default()
    );
}

#[tokio::test]
async fn s04_routing_attributes_must_be_an_object_and_scalars_become_strings() {
    let api = Api::start().await;
    let settings = |attributes: Value| {
        with(
            minimal(),
            json!({ "settings": { "routingAttributes": attributes } }),
        )
    };
    for bad in [json!(["Billing"]), json!("issueType=Billing"), json!(42)] {
        let (status, answer) = api.post("/v1/handovers", settings(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            error(&answer),
            (
                "invalid_field".to_owned(),
                Some("settings.routingAttributes".to_owned())
            )
        );
    }
    let (status, answer) = api
        .post("/v1/handovers", settings(json!({ "nested": { "a": 1 } })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nested must be a string, number or boolean")
    );
    assert_eq!(api.fake.count(), 0, "nothing was started");
    api.start_handover(settings(
        json!({ "count": 5, "vip": true, "name": "Ann", "gone": null }),
    ))
    .await;
    let (started, _) = api.fake.only();
    let attributes: Vec<_> = started.request.settings.routing_attributes.iter().collect();
    assert_eq!(
        attributes,
        [("count", "5"), ("name", "Ann"), ("vip", "true")]
    );
}

#[tokio::test]
async fn s06_the_copilot_url_is_built_from_the_base_and_refused_when_too_long() {
    let api = Api::start().await;
    let body = with(
        minimal(),
        json!({ "copilotBaseUrl": "ai-copilot-trial.cognigy.ai", "userId": "a b&c" }),
    );
    api.start_handover(body).await;
    let (started, _) = api.fake.only();
    let url = started.request.copilot_url.as_ref().unwrap();
    assert_eq!(
        url.as_str(),
        "https://ai-copilot-trial.cognigy.ai/?userId=a%20b%26c&sessionId=session-1&URLToken=url-token"
    );
    let long = with(
        minimal(),
        json!({ "copilotBaseUrl": "ai-copilot-trial.cognigy.ai", "sessionId": "s".repeat(250) }),
    );
    let (status, answer) = api.post("/v1/handovers", long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&answer).1.as_deref(), Some("copilotBaseUrl"));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 255")
    );
    let plain = with(
        minimal(),
        json!({ "copilotBaseUrl": "http://copilot.example" }),
    );
    assert_eq!(
        api.post("/v1/handovers", plain).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn s07_the_same_request_id_returns_the_same_handover() {
    let api = Api::start().await;
    let body = with(minimal(), json!({ "requestId": "input-1" }));
    let (first_status, first) = api.post("/v1/handovers", body.clone()).await;
    let (second_status, second) = api.post("/v1/handovers", body).await;
    assert_eq!(
        (first_status, second_status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(first["handoverId"], second["handoverId"]);
    assert_eq!(
        (first["duplicate"].as_bool(), second["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(api.fake.count(), 1, "one conversation");
}

#[tokio::test]
async fn s08_a_second_start_while_one_is_live_answers_409_with_the_live_id() {
    let api = Api::start().await;
    let live = api
        .start_handover(with(minimal(), json!({ "requestId": "a" })))
        .await;
    let (status, answer) = api
        .post(
            "/v1/handovers",
            with(minimal(), json!({ "requestId": "b" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["error"]["handoverId"], live.as_str());
    // Another session is not affected, and after the end a new handover may start.
    api.start_handover(with(
        minimal(),
        json!({ "requestId": "c", "sessionId": "session-2" }),
    ))
    .await;
    api.fake.end(&live);
    let next = api
        .start_handover(with(minimal(), json!({ "requestId": "d" })))
        .await;
    assert_ne!(next, live);
}

#[tokio::test]
async fn s44_bad_requests_get_clear_errors_and_change_no_live_handover() {
    let api = Api::start().await;
    let id = api.start_handover(minimal()).await;
    let message = json!({ "messageId": "m1", "text": "hello" }).to_string();
    let path = format!("/v1/handovers/{id}/messages");
    let post = reqwest::Method::POST;

    // Wrong or missing key: 401, with a challenge, before the body is even read.
    for key in [None, Some("flow-key-0123456789abcdeX"), Some("")] {
        let response = api
            .http
            .post(format!("{}{path}", api.url))
            .header(
                "authorization",
                key.map_or(String::new(), |k| format!("Bearer {k}")),
            )
            .body("{ not even json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(error(&answer).0, "unauthorized");
    }
    // Oversize: 413.
    let huge = json!({ "messageId": "m2", "text": "x".repeat(70 * 1024) }).to_string();
    let (status, answer) = api
        .call(post.clone(), &path, Some(FLOW_KEY), Some(huge))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error(&answer).0, "payload_too_large");
    // Unknown handover: 404, whether the id is well-formed or not.
    let unknown = HandoverId::from_random_bytes([7; 16]);
    for missing in [unknown.to_string(), "not-an-id".to_owned()] {
        let (status, answer) = api
            .call(
                post.clone(),
                &format!("/v1/handovers/{missing}/messages"),
                Some(FLOW_KEY),
                Some(message.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error(&answer).0, "not_found");
    }
    // Bad JSON and bad fields: 400, naming the field.
    let (status, answer) = api
        .call(
            post.clone(),
            &path,
            Some(FLOW_KEY),
            Some("{\"messageId\": ".to_owned()),
        )
        .await;
    assert_eq!(
        (status, error(&answer).0.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let cases = [
        (json!({ "text": "no id" }), "messageId"),
        (json!({ "messageId": 5, "text": "x" }), "messageId"),
        (json!({ "messageId": "m3", "text": "   " }), "text"),
        (
            json!({ "messageId": "m3", "text": "x", "colour": "red" }),
            "colour",
        ),
        (
            json!({ "messageId": "m3", "attachments": [{ "url": "ftp://files/x" }] }),
            "attachments[0].url",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api.post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (code, named) = error(&answer);
        assert_eq!(code, "invalid_field", "{body}");
        let named = named.unwrap_or_default();
        assert!(
            named == field || answer["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {answer}"
        );
    }
    let start_cases = [
        (
            with(
                minimal(),
                json!({ "settings": { "sendTranscript": "yes" } }),
            ),
            "settings.sendTranscript",
        ),
        (
            with(minimal(), json!({ "settings": { "sendTranscrpt": true } })),
            "settings.sendTranscrpt",
        ),
        (
            with(
                minimal(),
                json!({ "endpointUrl": "endpoint-trial.cognigy.ai" }),
            ),
            "endpointUrl",
        ),
        (with(minimal(), json!({ "userId": 1.5e30 })), "userId"),
        (
            with(
                minimal(),
                json!({ "transcript": [{ "role": "agent", "text": "x" }] }),
            ),
            "transcript[0].role",
        ),
        (
            with(
                minimal(),
                json!({ "deployment": "nowhere", "sessionId": "other" }),
            ),
            "deployment",
        ),
        (
            json!({ "userId": "u", "sessionId": "s", "endpointUrl": "https://e" }),
            "URLToken",
        ),
    ];
    for (body, field) in start_cases {
        let (status, answer) = api.post("/v1/handovers", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error(&answer).1.as_deref(), Some(field), "{body}: {answer}");
    }
    // A bridge that cannot take work says so with 503.
    let (status, answer) = api
        .post(
            "/v1/handovers",
            with(
                minimal(),
                json!({ "deployment": "down", "sessionId": "other" }),
            ),
        )
        .await;
    assert_eq!(
        (status, error(&answer).0.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    // None of that reached the live handover, and only it exists.
    assert_eq!(api.fake.count(), 1);
    assert!(api.fake.inputs(&id).is_empty());
}

#[tokio::test]
async fn every_input_route_reaches_the_handover_in_order() {
    let api = Api::start().await;
    let id = api.start_handover(minimal()).await;
    let base = format!("/v1/handovers/{id}");
    let message = json!({
        "messageId": "input-7",
        "text": "see attached",
        // Cognigy's own `data.attachments` objects pass as they are.
        "attachments": [{ "runtimeFileId": "f1", "fileName": "receipt.pdf", "mimeType": "application/pdf",
                          "size": 1234, "url": "https://files.example/receipt.pdf", "status": "scanned" }],
    });
    for (route, body) in [
        ("messages", Some(message)),
        ("user-disconnected", None),
        ("user-connected", None),
        ("typing", Some(json!({ "typing": true }))),
        ("cancel", None),
        ("close", None),
    ] {
        let (status, answer) = api
            .call(
                reqwest::Method::POST,
                &format!("{base}/{route}"),
                Some(FLOW_KEY),
                body.map(|b| b.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{route}: {answer}");
        assert_eq!(answer["accepted"], true);
    }
    let inputs = api.fake.inputs(&id);
    let Input::UserMessage(UserMessage {
        id: message_id,
        text,
        attachments,
    }) = &inputs[0]
    else {
        panic!("a message first: {inputs:?}");
    };
    assert_eq!(
        (message_id.as_str(), text.as_str()),
        ("input-7", "see attached")
    );
    assert_eq!(attachments[0].name, "receipt.pdf");
    assert_eq!(attachments[0].size, Some(1234));
    assert_eq!(attachments[0].mime_type.as_deref(), Some("application/pdf"));
    assert_eq!(
        inputs[1..],
        [
            Input::UserDisconnected,
            Input::UserConnected,
            Input::UserTyping { on: true },
            Input::UserCancelled,
            Input::FlowClosed
        ]
    );
    let (status, answer) = api
        .call(reqwest::Method::GET, &base, Some(FLOW_KEY), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (answer["phase"].as_str(), answer["live"].as_bool()),
        (Some("requested"), Some(true))
    );
    assert_eq!(answer["userId"], "user-1");
    // After the end, inputs get 409 and the status shows the outcome.
    api.fake.end(&id);
    let (status, answer) = api
        .post(&format!("{base}/user-connected"), json!(null))
        .await;
    assert_eq!(
        (status, error(&answer).0.as_str()),
        (StatusCode::CONFLICT, "ended")
    );
    let (_, answer) = api
        .call(reqwest::Method::GET, &base, Some(FLOW_KEY), None)
        .await;
    assert_eq!(answer["outcome"]["status"], "completed");
    assert_eq!(answer["outcome"]["reason"], "agent_ended");
}

#[tokio::test]
async fn big_integer_user_ids_stay_exact() {
    let api = Api::start().await;
    api.start_handover(with(
        minimal(),
        json!({ "userId": "123456789012345678901234567890" }),
    ))
    .await;
    let number = with(minimal(), json!({ "sessionId": "s2" }))
        .to_string()
        .replace("\"user-1\"", "18446744073709551615");
    let (status, answer) = api
        .call(
            reqwest::Method::POST,
            "/v1/handovers",
            Some(FLOW_KEY),
            Some(number),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let users: Vec<String> = {
        let state = api.fake.state.lock().unwrap();
        state
            .handovers
            .values()
            .map(|s| s.started.address.user_id.clone())
            .collect()
    };
    assert!(users.contains(&"123456789012345678901234567890".to_owned()));
    assert!(users.contains(&"18446744073709551615".to_owned()));
    let too_big = with(minimal(), json!({ "sessionId": "s3" }))
        .to_string()
        .replace("\"user-1\"", "123456789012345678901234567890");
    let (status, answer) = api
        .call(
            reqwest::Method::POST,
            "/v1/handovers",
            Some(FLOW_KEY),
            Some(too_big),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&answer).1.as_deref(), Some("userId"));
}

#[tokio::test]
async fn the_admin_routes_need_an_admin_key() {
    let api = Api::start().await;
    let first = api.start_handover(minimal()).await;
    let second = api
        .start_handover(with(minimal(), json!({ "sessionId": "session-2" })))
        .await;
    api.fake.end(&first);
    let get = reqwest::Method::GET;
    let (status, _) = api
        .call(get.clone(), "/v1/handovers", Some(FLOW_KEY), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = api
        .call(get.clone(), "/v1/handovers", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = answer["handovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["handoverId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let (_, answer) = api
        .call(
            get.clone(),
            "/v1/handovers?live=true",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(answer["handovers"].as_array().unwrap().len(), 1);
    let (_, answer) = api
        .call(
            get.clone(),
            "/v1/handovers?sessionId=session-1&limit=5",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(answer["handovers"][0]["handoverId"], first.as_str());
    let (status, answer) = api
        .call(get, "/v1/handovers?live=maybe", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(
        (status, error(&answer).1.as_deref()),
        (StatusCode::BAD_REQUEST, Some("query"))
    );
    let path = format!("/v1/handovers/{second}/force-close");
    let (status, _) = api
        .call(reqwest::Method::POST, &path, Some(FLOW_KEY), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(reqwest::Method::POST, &path, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(api.fake.inputs(&second), [Input::FlowClosed]);
}

/// Every route of the API, as a client knows it. The document must describe exactly these,
/// and the server must serve every one of them.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/handovers"),
    ("get", "/v1/handovers"),
    ("get", "/v1/handovers/{id}"),
    ("post", "/v1/handovers/{id}/messages"),
    ("post", "/v1/handovers/{id}/user-connected"),
    ("post", "/v1/handovers/{id}/user-disconnected"),
    ("post", "/v1/handovers/{id}/typing"),
    ("post", "/v1/handovers/{id}/cancel"),
    ("post", "/v1/handovers/{id}/close"),
    ("post", "/v1/handovers/{id}/force-close"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_route_the_server_serves() {
    let api = Api::start().await;
    let (status, document) = api
        .call(reqwest::Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "the document needs no key");
    assert_eq!(document, serde_json::to_value(api::openapi()).unwrap());
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
                let operation = &item[method];
                assert!(
                    operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path} has a summary"
                );
                assert!(
                    operation["responses"]
                        .as_object()
                        .unwrap()
                        .contains_key("401"),
                    "{method} {path} documents 401"
                );
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(
        documented, expected,
        "the document and the route list differ"
    );
    // Every documented route is served: without a key it is a 401, never the fallback 404.
    let id = HandoverId::from_random_bytes([1; 16]).to_string();
    for (method, path) in ROUTES {
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, answer) = api
            .call(method.clone(), &path.replace("{id}", &id), None, None)
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {answer}"
        );
    }
    assert!(document["components"]["schemas"]["StartBody"]["properties"]["settings"].is_object());
    let (status, answer) = api
        .call(
            reqwest::Method::GET,
            "/v1/nothing-here",
            Some(FLOW_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, error(&answer).0.as_str()),
        (StatusCode::NOT_FOUND, "no_route")
    );
}

#[tokio::test]
async fn s44_input_edges_non_object_bodies_405_and_long_texts_get_the_apis_json_errors() {
    let api = Api::start_with(ApiConfig {
        keys: vec![ApiKey::new("flow", FLOW_KEY).unwrap()],
        max_message_chars: 100,
        ..test_config()
    })
    .await;
    // serde would take an array as the fields in order; a body is an object.
    let positional = json!([
        "user-1",
        "session-1",
        "url-token",
        "https://endpoint-trial.cognigy.ai/"
    ]);
    for body in [
        positional.to_string(),
        "\"text\"".to_owned(),
        "42".to_owned(),
        "null".to_owned(),
    ] {
        let (status, answer) = api
            .call(
                reqwest::Method::POST,
                "/v1/handovers",
                Some(FLOW_KEY),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error(&answer).0, "invalid_json", "{body}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be a JSON object"),
            "{answer}"
        );
    }
    assert_eq!(api.fake.count(), 0, "nothing was started");

    // A method the route does not take: 405 in the API's JSON shape.
    let (status, answer) = api
        .call(
            reqwest::Method::DELETE,
            "/v1/handovers",
            Some(FLOW_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error(&answer).0, "method_not_allowed");

    // The longest user text is a setting; one character more is 413 naming it.
    let id = api.start_handover(minimal()).await;
    let path = format!("/v1/handovers/{id}/messages");
    let (status, _) = api
        .post(&path, json!({ "messageId": "m1", "text": "é".repeat(100) }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, answer) = api
        .post(&path, json!({ "messageId": "m2", "text": "é".repeat(101) }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error(&answer),
        ("text_too_long".to_owned(), Some("text".to_owned()))
    );
    assert!(answer["error"]["message"].as_str().unwrap().contains("100"));
    assert_eq!(
        api.fake.inputs(&id).len(),
        1,
        "the one message within the limit"
    );
}

/// Every key of `body` (recursively through objects) is a property of the schema it lands in.
fn undocumented_keys(document: &Value, schema: &Value, body: &Value, at: &str) -> Vec<String> {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["schemas"][name]
        }
        None => schema,
    };
    let Some(fields) = body.as_object() else {
        return Vec::new();
    };
    if schema["properties"].is_null() {
        // A free-form object (routing attributes).
        return Vec::new();
    }
    let mut missing = Vec::new();
    for (key, value) in fields {
        let property = &schema["properties"][key];
        if property.is_null() {
            if schema["additionalProperties"] != json!(true)
                && !schema["additionalProperties"].is_object()
            {
                missing.push(format!("{at}.{key}"));
            }
            continue;
        }
        // An optional field is `oneOf: [null, X]` or a plain X.
        let inner = property["oneOf"]
            .as_array()
            .and_then(|options| options.iter().find(|o| o["type"] != "null"))
            .unwrap_or(property);
        let inner = if inner["type"] == "array" {
            &inner["items"]
        } else {
            inner
        };
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            missing.extend(undocumented_keys(
                document,
                inner,
                value,
                &format!("{at}.{key}"),
            ));
        }
    }
    missing
}

#[tokio::test]
async fn the_openapi_schema_names_every_field_the_start_handler_accepts() {
    let api = Api::start().await;
    let full = with(
        minimal(),
        json!({
            "requestId": "r1",
            "deployment": "main",
            "locale": "en-US",
            "copilotBaseUrl": "ai-copilot-trial.cognigy.ai",
            "transcript": [{ "role": "user", "text": "hi" }, { "role": "bot", "text": "hello" }],
            "settings": {
                "sendTranscript": true,
                "routingAttributes": { "issueType": "Billing" },
                "identityToken": "eyJ.identity.token",
                "userConnectsMessage": true,
                "userDisconnectsMessage": true,
                "endChatWhenAgentLeaves": false,
                "agentChangeNotification": false,
                "queue": {
                    "position": true,
                    "estimatedWaitTime": true,
                    "alternative": { "maxPosition": 5, "maxEstimatedWaitTimeMs": 600000, "text": "Busy" },
                },
                "forwardEvents": false,
                "forwardWhileQueued": true,
            },
        }),
    );
    // The handler takes it (so every key is one it knows)...
    let (status, answer) = api.post("/v1/handovers", full.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // ...and the document names every one of them.
    let document = serde_json::to_value(api::openapi()).unwrap();
    let start = json!({ "$ref": "#/components/schemas/StartBody" });
    assert_eq!(
        undocumented_keys(&document, &start, &full, "body"),
        Vec::<String>::new()
    );
    let (started, _) = api.fake.only();
    assert!(started.request.settings.identity_token.is_some());
}

#[tokio::test]
async fn s44_an_endpoint_url_off_the_allow_list_or_on_a_private_address_is_refused() {
    // Production's defaults: Cognigy's SaaS domains, public addresses only.
    let api = Api::start_with(ApiConfig {
        keys: vec![ApiKey::new("flow", FLOW_KEY).unwrap()],
        ..ApiConfig::default()
    })
    .await;
    for endpoint in [
        "http://127.0.0.1:9000",
        "http://10.0.0.1",
        "http://169.254.169.254/latest",
        "https://evil.example",
        "https://cognigy.ai.evil.example",
    ] {
        let (status, answer) = api
            .post(
                "/v1/handovers",
                with(minimal(), json!({ "endpointUrl": endpoint })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{endpoint}: {answer}");
        assert_eq!(
            error(&answer),
            ("invalid_field".to_owned(), Some("endpointUrl".to_owned())),
            "{endpoint}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cognigy.endpoint_hosts"),
            "{answer}"
        );
    }
    assert_eq!(api.fake.count(), 0, "nothing was stored");

    // Any host allowed, but a name that resolves to loopback is refused all the same.
    let open = Api::start_with(ApiConfig {
        keys: vec![ApiKey::new("flow", FLOW_KEY).unwrap()],
        endpoint_hosts: handover_cognigy::EgressPolicy::default(),
        ..ApiConfig::default()
    })
    .await;
    let (status, answer) = open
        .post(
            "/v1/handovers",
            with(minimal(), json!({ "endpointUrl": "http://localhost:9000" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(open.fake.count(), 0);

    // A host listed by name may be on a private network: the operator said so.
    let listed = Api::start_with(ApiConfig {
        keys: vec![ApiKey::new("flow", FLOW_KEY).unwrap()],
        endpoint_hosts: handover_cognigy::endpoint_policy(&["localhost", "*.cognigy.ai"]),
        ..ApiConfig::default()
    })
    .await;
    listed
        .start_handover(with(
            minimal(),
            json!({ "endpointUrl": "http://localhost:9000" }),
        ))
        .await;
}
