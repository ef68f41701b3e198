//! Fault injection: dropped, stalled and garbled streams, random errors, latency, withheld
//! events. Each fault is switched on through the control API and observed from outside.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use miaw_sandbox::{DEFAULT_ORG_ID, SandboxConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

async fn set_faults(harness: &Harness, faults: Value) {
    let response = harness
        .call(Method::PUT, "/control/faults", None, Some(faults))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// An active conversation whose stream has passed the accept, with `fault` set to 1 for it.
async fn active_with_fault(fault: &str) -> (Harness, String, String, EventStream) {
    let harness = Harness::start().await;
    let (token, minted) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    harness.control(&format!("{id}/accept"), json!({})).await;
    let mut stream = harness.stream(&token, minted["lastEventId"].as_str()).await;
    stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    let response = harness
        .call(
            Method::PUT,
            &format!("/control/conversations/{id}/faults"),
            None,
            Some(json!({ fault: 1 })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    (harness, token, id, stream)
}

/// Raw chunks of the stream for `wait`.
async fn raw_chunks(harness: &Harness, token: &str, wait: Duration) -> Vec<String> {
    let response = harness.open_stream(token, Some("0"), DEFAULT_ORG_ID).await;
    let mut body = response.bytes_stream();
    let mut chunks = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        chunks.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    chunks
}

#[tokio::test]
async fn streams_can_be_dropped_after_some_time_or_some_events() {
    let harness = Harness::start().await;
    let (token, minted) = harness.guest().await;
    harness.create(&token, json!({})).await;
    set_faults(&harness, json!({ "drop_after_events": 1 })).await;
    let mut stream = harness.stream(&token, minted["lastEventId"].as_str()).await;
    assert_eq!(
        stream.next_entry().await.event,
        "CONVERSATION_SESSION_STATUS_CHANGED"
    );
    assert!(
        stream.next_within(Duration::from_secs(2)).await.is_none(),
        "closed after one event"
    );

    set_faults(&harness, json!({ "drop_every_ms": 300 })).await;
    let mut stream = harness.stream(&token, Some("2")).await;
    let started = Instant::now();
    while stream.next_within(Duration::from_secs(5)).await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_stalled_stream_sends_nothing_until_the_client_reconnects() {
    let config = SandboxConfig {
        ping_interval_ms: 100,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let mut stream = harness.stream(&token, Some("2")).await;
    assert_eq!(
        stream
            .next_within(Duration::from_secs(2))
            .await
            .unwrap()
            .event,
        "ping"
    );
    set_faults(&harness, json!({ "stall": true })).await;
    harness.control(&format!("{id}/accept"), json!({})).await;
    assert!(
        stream
            .next_within(Duration::from_millis(600))
            .await
            .is_none(),
        "no events and no pings"
    );
    set_faults(&harness, json!({})).await;
    let mut fresh = harness.stream(&token, Some("2")).await;
    assert_eq!(
        fresh.next_entry().await.event,
        "CONVERSATION_PARTICIPANT_CHANGED",
        "nothing was lost"
    );
}

#[tokio::test]
async fn frames_can_be_duplicated_coalesced_or_split() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    harness.create(&token, json!({})).await;

    set_faults(&harness, json!({ "duplicate_frames": true })).await;
    let mut stream = harness.stream(&token, Some("0")).await;
    let (a, b) = (stream.next_entry().await, stream.next_entry().await);
    assert_eq!((a.id.as_str(), b.id.as_str()), ("1", "1"));

    set_faults(&harness, json!({ "coalesce_frames": true })).await;
    let chunks = raw_chunks(&harness, &token, Duration::from_millis(300)).await;
    assert!(
        chunks.iter().any(|c| c.matches("id: ").count() == 2),
        "{chunks:?}"
    );

    set_faults(&harness, json!({ "split_frames": true })).await;
    let chunks = raw_chunks(&harness, &token, Duration::from_millis(300)).await;
    assert!(chunks.iter().any(|c| !c.ends_with("\n\n")), "{chunks:?}");
    // Split or not, a proper SSE parser sees whole events.
    let mut stream = harness.stream(&token, Some("0")).await;
    assert_eq!(
        payload(&stream.next_entry().await)["sessionStatus"],
        "Waiting"
    );
}

#[tokio::test]
async fn rest_calls_can_fail_or_slow_down_at_random() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    set_faults(&harness, json!({ "error_rate_5xx": 1.0 })).await;
    assert_eq!(
        harness.send(&token, &id, "x").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    set_faults(&harness, json!({ "error_rate_429": 1.0 })).await;
    assert_eq!(
        harness.send(&token, &id, "x").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    set_faults(&harness, json!({ "latency_ms": 300 })).await;
    let started = Instant::now();
    assert_eq!(
        harness.send(&token, &id, "x").await.status(),
        StatusCode::ACCEPTED
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Faults can target one conversation only.
    set_faults(&harness, json!({})).await;
    let other = harness.create(&token, json!({})).await;
    let response = harness
        .call(
            Method::PUT,
            &format!("/control/conversations/{id}/faults"),
            None,
            Some(json!({ "error_rate_5xx": 1.0 })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        harness.send(&token, &id, "y").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        harness.send(&token, &other, "y").await.status(),
        StatusCode::ACCEPTED
    );
    let response = harness
        .call(
            Method::PUT,
            "/control/faults",
            None,
            Some(json!({ "explode": true })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_withheld_event_is_only_in_the_entries() {
    let (harness, token, id, mut stream) = active_with_fault("withhold_next_events").await;
    harness
        .control(&format!("{id}/messages"), json!({ "text": "withheld" }))
        .await;
    harness
        .control(&format!("{id}/messages"), json!({ "text": "streamed" }))
        .await;
    let event = stream.next_entry().await;
    assert_eq!(
        payload(&event)["abstractMessage"]["staticContent"]["text"],
        "streamed"
    );
    let texts: Vec<String> = harness
        .entries(&token, &id, "limit=2&entryTypeFilter=Message")
        .await
        .iter()
        .map(|e| {
            e["entryPayload"]["abstractMessage"]["staticContent"]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["streamed", "withheld"]);
    // A replay does not bring it either: it never was on the stream.
    let mut replay = harness.stream(&token, Some("0")).await;
    let replayed = replay.until("CONVERSATION_MESSAGE").await;
    assert_eq!(
        payload(replayed.last().unwrap())["abstractMessage"]["staticContent"]["text"],
        "streamed"
    );
}

#[tokio::test]
async fn browsers_get_cors_answers_for_the_headers_miaw_clients_send() {
    let harness = Harness::start().await;
    let response = harness
        .client
        .request(Method::OPTIONS, harness.url("/eventrouter/v1/sse"))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "GET")
        .header(
            "Access-Control-Request-Headers",
            "Authorization, X-Org-ID, Last-Event-ID, Content-Type, Cache-Control",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "authorization",
        "x-org-id",
        "last-event-id",
        "content-type",
        "cache-control",
    ] {
        assert!(allowed.contains(header), "{allowed}");
    }
}

#[tokio::test]
async fn the_sandbox_serves_https_with_a_self_signed_certificate() {
    let identity = miaw_sandbox::Identity::self_signed().unwrap();
    let sandbox = miaw_sandbox::Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxConfig::default(),
        Some(identity),
    )
    .await
    .unwrap();
    assert!(sandbox.url().starts_with("https://"));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "{}{API}/authorization/unauthenticated/access-token",
            sandbox.url()
        ))
        .json(&token_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let plain = reqwest::Client::new()
        .get(format!("{}/console", sandbox.url()))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "an untrusted certificate is refused by a normal client"
    );
}

#[tokio::test]
async fn a_garbled_event_is_broken_on_the_stream_and_intact_in_the_entries() {
    let (harness, token, id, mut stream) = active_with_fault("garble_next_events").await;
    for text in ["garbled", "intact"] {
        harness
            .control(&format!("{id}/messages"), json!({ "text": text }))
            .await;
    }
    let garbled = stream.next_entry().await;
    assert_eq!(garbled.event, "CONVERSATION_MESSAGE");
    assert!(
        serde_json::from_str::<Value>(&garbled.data).is_err(),
        "{}",
        garbled.data
    );
    let intact = stream.next_entry().await;
    assert_eq!(
        payload(&intact)["abstractMessage"]["staticContent"]["text"],
        "intact"
    );
    let listed = harness
        .entries(&token, &id, "limit=2&entryTypeFilter=Message")
        .await;
    assert_eq!(
        listed[1]["entryPayload"]["abstractMessage"]["staticContent"]["text"],
        "garbled"
    );
}

#[tokio::test]
async fn raw_events_of_any_name_reach_the_subjects_stream_but_not_the_entries() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let mut stream = harness.stream(&token, None).await;
    harness
        .control(
            &format!("{id}/events"),
            json!({ "event": "CONVERSATION_SOMETHING_NEW", "data": { "hint": 1 } }),
        )
        .await;
    let events = stream.until("CONVERSATION_SOMETHING_NEW").await;
    let raw = data(events.last().unwrap());
    assert_eq!(raw["hint"], 1);
    assert_eq!(raw["conversationId"], id.as_str());
    assert!(events.last().unwrap().id.parse::<u64>().is_ok());
    let listed = harness.entries(&token, &id, "limit=50").await;
    assert!(
        listed
            .iter()
            .all(|e| e["entryType"] != "CONVERSATION_SOMETHING_NEW")
    );
    let response = harness
        .call(
            Method::POST,
            &format!("/control/conversations/{id}/events"),
            None,
            Some(json!({ "event": "bad name\nevent: x" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
