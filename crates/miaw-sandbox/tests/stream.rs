//! The event stream: headers, ids, replay after Last-Event-Id, pings, one stream per subject,
//! `entryPayload` as a string, and the conversation's life as the agent plays it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use miaw_sandbox::{DEFAULT_ORG_ID, SandboxConfig, ScriptedAgent};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

fn names(events: &[eventsource_stream::Event]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

#[tokio::test]
async fn the_stream_requires_a_token_and_the_matching_15_character_org_id() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let response = harness
        .client
        .get(harness.url("/eventrouter/v1/sse"))
        .header("X-Org-Id", DEFAULT_ORG_ID)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = harness
        .client
        .get(harness.url("/eventrouter/v1/sse"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = harness
        .open_stream(&token, None, "00D5e000000SBOXAAA")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = harness.open_stream(&token, None, "00D000000000XXX").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "OrgId in the header and token must match");
    let response = harness.open_stream(&token, None, DEFAULT_ORG_ID).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
async fn every_event_has_an_id_and_a_string_payload_and_last_event_id_replays_only_newer_ones() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    let id = harness.create(&token, json!({})).await;
    harness
        .control(&format!("{id}/accept"), json!({ "agent": "Jane" }))
        .await;
    harness
        .control(&format!("{id}/messages"), json!({ "text": "Hi, I'm Jane" }))
        .await;
    let events = stream.until("CONVERSATION_MESSAGE").await;
    assert_eq!(
        names(&events),
        [
            "CONVERSATION_SESSION_STATUS_CHANGED",
            "CONVERSATION_ROUTING_RESULT",
            "CONVERSATION_PARTICIPANT_CHANGED",
            "CONVERSATION_SESSION_STATUS_CHANGED",
            "CONVERSATION_MESSAGE",
        ]
    );
    let ids: Vec<u64> = events.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let message = events.last().unwrap();
    assert_eq!(data(message)["conversationId"], id.as_str());
    assert_eq!(
        data(message)["conversationEntry"]["sender"]["role"],
        "Agent"
    );
    assert_eq!(
        data(message)["conversationEntry"]["senderDisplayName"],
        "Jane"
    );
    assert_eq!(
        payload(message)["abstractMessage"]["staticContent"]["text"],
        "Hi, I'm Jane"
    );

    // Reconnect from the participant change: only the two newer events come again.
    let mut replay = harness.stream(&token, Some(&events[2].id)).await;
    let replayed = replay.until("CONVERSATION_MESSAGE").await;
    assert_eq!(
        names(&replayed),
        [
            "CONVERSATION_SESSION_STATUS_CHANGED",
            "CONVERSATION_MESSAGE"
        ]
    );
    assert_eq!(replayed[1].id, message.id);
}

#[tokio::test]
async fn pings_keep_the_stream_alive() {
    let config = SandboxConfig {
        ping_interval_ms: 100,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    for _ in 0..3 {
        let event = stream.next_within(Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            (event.event.as_str(), event.data.as_str(), event.id.as_str()),
            ("ping", "0", "")
        );
    }
}

#[tokio::test]
async fn one_stream_carries_every_conversation_of_the_subject_and_nobody_elses() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let (other, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    let first = harness.create(&token, json!({})).await;
    let _theirs = harness.create(&other, json!({})).await;
    let second = harness.create(&token, json!({})).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = stream.next_entry().await;
        seen.push(data(&event)["conversationId"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, [first.clone(), first, second.clone(), second]);
}

#[tokio::test]
async fn the_stream_closes_when_its_token_expires() {
    let config = SandboxConfig {
        guest_token_lifetime_secs: 1,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    let started = std::time::Instant::now();
    while stream.next_within(Duration::from_secs(5)).await.is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at expiry, not by the test's timeout"
    );
}

#[tokio::test]
async fn the_agent_plays_the_whole_life_of_a_conversation() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    let id = harness.create(&token, json!({})).await;
    stream.until("CONVERSATION_ROUTING_RESULT").await;
    let ok = |response: reqwest::Response| {
        assert!(response.status().is_success(), "{}", response.status())
    };

    ok(harness
        .control(
            &format!("{id}/queue"),
            json!({ "position": 3, "estimatedWaitSeconds": 120 }),
        )
        .await);
    let events = stream.until("CONVERSATION_ROUTING_RESULT").await;
    assert_eq!(payload(&events[0])["position"], 3);
    assert_eq!(
        payload(&events[1])["estimatedWaitTime"]["estimatedWaitTimeInSeconds"],
        120
    );

    ok(harness
        .control(&format!("{id}/accept"), json!({ "agent": "Jane" }))
        .await);
    let events = stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    assert_eq!(payload(&events[0])["entries"][0]["operation"], "add");
    assert_eq!(payload(&events[1])["sessionStatus"], "Active");
    assert_eq!(payload(&events[1])["sessionStatusPrev"], "Waiting");

    ok(harness
        .control(&format!("{id}/typing"), json!({ "on": true }))
        .await);
    assert_eq!(
        stream.next_entry().await.event,
        "CONVERSATION_TYPING_STARTED_INDICATOR"
    );
    ok(harness.control(&format!("{id}/messages"), json!({ "choices": { "style": "QuickReplies", "text": "Which?", "options": ["A", "B"] } })).await);
    let choices = payload(&stream.next_entry().await);
    assert_eq!(
        choices["abstractMessage"]["choices"]["optionItems"][1]["titleItem"]["title"],
        "B"
    );
    ok(harness.control(&format!("{id}/messages"), json!({ "attachments": [{ "name": "form.pdf", "mimeType": "application/pdf" }], "text": "Please sign" })).await);
    let attachment = payload(&stream.next_entry().await);
    let url = attachment["abstractMessage"]["staticContent"]["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        harness
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "sandbox file form.pdf"
    );

    // The user writes; the agent's console acknowledges it.
    assert_eq!(
        harness.send(&token, &id, "B").await.status(),
        StatusCode::ACCEPTED
    );
    let events = stream.until("CONVERSATION_DELIVERY_ACKNOWLEDGEMENT").await;
    let echo = &events[0];
    assert_eq!(data(echo)["conversationEntry"]["sender"]["role"], "EndUser");
    let echo_id = data(echo)["conversationEntry"]["identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        data(&events[1])["conversationEntry"]["relatedRecords"][0],
        echo_id.as_str()
    );
    ok(harness
        .control(
            &format!("{id}/acknowledge"),
            json!({ "entryId": echo_id, "read": true }),
        )
        .await);
    assert_eq!(
        stream.next_entry().await.event,
        "CONVERSATION_READ_ACKNOWLEDGEMENT"
    );

    // A transfer removes the agent, routes again with type Transfer, and the new agent joins;
    // the session stays Active, so no status change is reported.
    ok(harness
        .control(&format!("{id}/transfer"), json!({ "to": "Raj" }))
        .await);
    let mut events = stream.until("CONVERSATION_ROUTING_RESULT").await;
    events.extend(stream.until("CONVERSATION_PARTICIPANT_CHANGED").await);
    assert_eq!(
        names(&events),
        [
            "CONVERSATION_PARTICIPANT_CHANGED",
            "CONVERSATION_ROUTING_RESULT",
            "CONVERSATION_PARTICIPANT_CHANGED"
        ]
    );
    assert_eq!(payload(&events[0])["entries"][0]["operation"], "remove");
    assert_eq!(payload(&events[1])["routingType"], "Transfer");
    assert_eq!(payload(&events[2])["entries"][0]["displayName"], "Raj");

    // Inactive, then a user message moves it to Waiting and it is routed again.
    ok(harness.control(&format!("{id}/inactive"), json!({})).await);
    let events = stream.until("CONVERSATION_PARTICIPANT_CHANGED").await;
    assert_eq!(payload(&events[0])["sessionStatus"], "Inactive");
    harness.send(&token, &id, "back again").await;
    let events = stream.until("CONVERSATION_DELIVERY_ACKNOWLEDGEMENT").await;
    assert_eq!(
        names(&events),
        [
            "CONVERSATION_MESSAGE",
            "CONVERSATION_SESSION_STATUS_CHANGED",
            "CONVERSATION_DELIVERY_ACKNOWLEDGEMENT"
        ]
    );
    assert_eq!(payload(&events[1])["sessionStatus"], "Waiting");
    let status: Value = harness
        .call(
            Method::GET,
            &format!("{API}/conversation/{id}"),
            Some(&token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["routingStatus"], "NEEDS_ROUTING");

    // The agent ends the session: Ended, and no CloseConversation.
    ok(harness
        .control(&format!("{id}/accept"), json!({ "agent": "Ana" }))
        .await);
    stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    ok(harness.control(&format!("{id}/end"), json!({})).await);
    let events = stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    let ended = payload(events.last().unwrap());
    assert_eq!(
        (
            ended["sessionStatus"].as_str(),
            ended["sessionEndedByRole"].as_str()
        ),
        (Some("Ended"), Some("Agent"))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        stream
            .next_within(Duration::from_millis(300))
            .await
            .is_none_or(|e| e.event == "ping"),
        "no close follows"
    );
}

#[tokio::test]
async fn routing_can_fail_and_the_customer_side_can_close() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    let id = harness.create(&token, json!({})).await;
    stream.until("CONVERSATION_ROUTING_RESULT").await;
    harness
        .control(&format!("{id}/routing-failure"), json!({}))
        .await;
    let failed = payload(&stream.next_entry().await);
    assert_eq!(
        (
            failed["routingType"].as_str(),
            failed["failureType"].as_str()
        ),
        (Some("Initial"), Some("RoutingError"))
    );
    let path = format!(
        "{API}/conversation/{id}?esDeveloperName={}",
        miaw_sandbox::DEFAULT_DEVELOPER_NAME
    );
    harness
        .call(Method::DELETE, &path, Some(&token), None)
        .await;
    let events = stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    assert_eq!(
        names(&events),
        [
            "CONVERSATION_CLOSE_CONVERSATION",
            "CONVERSATION_SESSION_STATUS_CHANGED"
        ]
    );
}

#[tokio::test]
async fn a_scripted_agent_accepts_replies_and_ends() {
    let agent = ScriptedAgent {
        name: "Robo".to_owned(),
        accept_after_ms: 50,
        reply_after_ms: 10,
        reply_template: "Echo: {text}".to_owned(),
        end_after_messages: Some(2),
    };
    let mut config = SandboxConfig::default();
    config.deployments[0].scripted_agent = Some(agent);
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    let mut stream = harness.stream(&token, None).await;
    let id = harness.create(&token, json!({})).await;
    let joined = stream.until("CONVERSATION_PARTICIPANT_CHANGED").await;
    assert_eq!(
        payload(joined.last().unwrap())["entries"][0]["displayName"],
        "Robo"
    );
    let mut replies = Vec::new();
    for text in ["one", "two"] {
        harness.send(&token, &id, text).await;
        loop {
            let event = stream.next_entry().await;
            if event.event == "CONVERSATION_MESSAGE"
                && data(&event)["conversationEntry"]["sender"]["role"] == "Agent"
            {
                replies.push(
                    payload(&event)["abstractMessage"]["staticContent"]["text"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
                break;
            }
        }
    }
    assert_eq!(replies, ["Echo: one", "Echo: two"]);
    let events = stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    assert_eq!(payload(events.last().unwrap())["sessionStatus"], "Ended");
}
