//! A client for the sandbox's own tests: plain reqwest over real HTTP, independent of the
//! bridge's Salesforce adapter.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use miaw_sandbox::{DEFAULT_DEVELOPER_NAME, DEFAULT_ORG_ID, Sandbox, SandboxConfig};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

pub const API: &str = "/iamessage/api/v2";

pub struct Harness {
    pub sandbox: Sandbox,
    pub client: Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::with_config(SandboxConfig::default()).await
    }

    pub async fn with_config(config: SandboxConfig) -> Self {
        let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), config, None)
            .await
            .unwrap();
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { sandbox, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.url())
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// A guest token: (accessToken, the whole response).
    pub async fn guest(&self) -> (String, Value) {
        let response = self
            .call(
                Method::POST,
                &format!("{API}/authorization/unauthenticated/access-token"),
                None,
                Some(token_body()),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (body["accessToken"].as_str().unwrap().to_owned(), body)
    }

    pub async fn create(&self, token: &str, attributes: Value) -> String {
        let id = new_conversation_id();
        let response = self
            .call(
                Method::POST,
                &format!("{API}/conversation"),
                Some(token),
                Some(json!({ "conversationId": id, "esDeveloperName": DEFAULT_DEVELOPER_NAME, "routingAttributes": attributes })),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
        id
    }

    pub async fn send(&self, token: &str, conversation: &str, text: &str) -> Response {
        self.call(
            Method::POST,
            &format!("{API}/conversation/{conversation}/message"),
            Some(token),
            Some(message_body(&new_conversation_id(), text)),
        )
        .await
    }

    /// Uploads a file message (multipart `messageEntry` + `fileData`) with `text` beside it.
    pub async fn upload(
        &self,
        token: &str,
        conversation: &str,
        (name, mime): (&str, &str),
        bytes: Vec<u8>,
        text: Option<&str>,
    ) -> Response {
        let mut message = json!({ "id": new_conversation_id(), "fileId": new_conversation_id() });
        if let Some(text) = text {
            message["text"] = text.into();
        }
        let entry = json!({ "esDeveloperName": DEFAULT_DEVELOPER_NAME, "message": message });
        let form = reqwest::multipart::Form::new()
            .part(
                "messageEntry",
                reqwest::multipart::Part::text(entry.to_string())
                    .mime_str("application/json")
                    .unwrap(),
            )
            .part(
                "fileData",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(name.to_owned())
                    .mime_str(mime)
                    .unwrap(),
            );
        self.client
            .post(self.url(&format!("{API}/conversation/{conversation}/file")))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn control(&self, path: &str, body: Value) -> Response {
        self.call(
            Method::POST,
            &format!("/control/conversations/{path}"),
            None,
            Some(body),
        )
        .await
    }

    pub async fn entries(&self, token: &str, conversation: &str, query: &str) -> Vec<Value> {
        let response = self
            .call(
                Method::GET,
                &format!("{API}/conversation/{conversation}/entries?{query}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["conversationEntries"].as_array().unwrap().clone()
    }

    /// Opens the event stream.
    pub async fn stream(&self, token: &str, last_event_id: Option<&str>) -> EventStream {
        let response = self.open_stream(token, last_event_id, DEFAULT_ORG_ID).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap()
        );
        EventStream {
            inner: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    pub async fn open_stream(
        &self,
        token: &str,
        last_event_id: Option<&str>,
        org: &str,
    ) -> Response {
        let mut request = self
            .client
            .get(self.url(&format!("/eventrouter/v1/sse?_ts={}", fastrand::u64(..))))
            .bearer_auth(token)
            .header("Accept", "text/event-stream")
            .header("X-Org-Id", org)
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-Id", id);
        }
        request.send().await.unwrap()
    }
}

pub fn token_body() -> Value {
    json!({
        "orgId": DEFAULT_ORG_ID,
        "esDeveloperName": DEFAULT_DEVELOPER_NAME,
        "capabilitiesVersion": "1",
        "platform": "Web",
        "context": { "appName": "sandbox-tests", "clientVersion": "1.0.0" },
    })
}

pub fn message_body(id: &str, text: &str) -> Value {
    json!({
        "message": { "id": id, "messageType": "StaticContentMessage", "staticContent": { "formatType": "Text", "text": text } },
        "esDeveloperName": DEFAULT_DEVELOPER_NAME,
    })
}

pub fn new_conversation_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}

pub struct EventStream {
    inner: std::pin::Pin<
        Box<
            dyn Stream<Item = Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>>
                + Send,
        >,
    >,
}

impl EventStream {
    /// The next event (pings included), or `None` if the stream ended or `wait` passed.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        match tokio::time::timeout(wait, self.inner.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(_)) | None) | Err(_) => None,
        }
    }

    /// The next event that is not a ping.
    pub async fn next_entry(&mut self) -> Event {
        loop {
            let event = self
                .next_within(Duration::from_secs(5))
                .await
                .expect("an event within 5 s");
            if event.event != "ping" {
                return event;
            }
        }
    }

    /// Events until `name` arrives (inclusive), pings excluded.
    pub async fn until(&mut self, name: &str) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let event = self.next_entry().await;
            let done = event.event == name;
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

/// The `data` of an event as JSON.
pub fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

/// The parsed `entryPayload` of an event (a JSON string on the stream).
pub fn payload(event: &Event) -> Value {
    let data = data(event);
    let text = data["conversationEntry"]["entryPayload"]
        .as_str()
        .expect("entryPayload is a string on the stream");
    serde_json::from_str(text).unwrap()
}
