//! Conversations and messages over REST: creation and its validation, routing status,
//! entries, messages (202, 409, 417, 429), files (413, 415), typing, receipts, transcript,
//! close and end of session.

#![allow(clippy::unwrap_used)]

mod support;

use miaw_sandbox::{DEFAULT_DEVELOPER_NAME, SandboxConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

async fn message_of(response: reqwest::Response) -> String {
    response.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn creating_a_conversation_validates_like_salesforce() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let path = format!("{API}/conversation");
    let create = |id: String, extra: Value| {
        let mut body = json!({ "conversationId": id, "esDeveloperName": DEFAULT_DEVELOPER_NAME });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let id = new_conversation_id();
    for bad_id in [
        id.to_uppercase(),
        "6fa459ea-ee8a-11ca-8000-000000000000".to_owned(),
        "abc".to_owned(),
    ] {
        let response = harness
            .call(
                Method::POST,
                &path,
                Some(&token),
                Some(create(bad_id, json!({}))),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            message_of(response).await,
            "Specify the conversationId in UUID format."
        );
    }
    let response = harness
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({ "conversationId": id, "esDeveloperName": "Other" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = harness
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(create(id.clone(), json!({ "surprise": true }))),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        message_of(response)
            .await
            .contains("unknown field `surprise`")
    );
    let response = harness
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(create(
                id.clone(),
                json!({ "routingAttributes": { "tier": 3 } }),
            )),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        message_of(response)
            .await
            .contains("routingAttributes.tier")
    );
    let response = harness
        .call(
            Method::POST,
            &path,
            None,
            Some(create(id.clone(), json!({}))),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let body = create(
        id.clone(),
        json!({ "routingAttributes": { "issueType": "Billing" }, "language": "es_MX" }),
    );
    let response = harness
        .call(Method::POST, &path, Some(&token), Some(body.clone()))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["conversationId"],
        id.as_str()
    );
    let response = harness
        .call(Method::POST, &path, Some(&token), Some(body))
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);

    // The agent sees the routing attributes.
    let details: Value = harness
        .call(
            Method::GET,
            &format!("/control/conversations/{id}"),
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        details["routingAttributes"],
        json!({ "issueType": "Billing", "language": "es_MX" })
    );
    // Another subject cannot see it.
    let (stranger, _) = harness.guest().await;
    let response = harness
        .call(
            Method::GET,
            &format!("{API}/conversation/{id}"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn routing_status_follows_the_conversation() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let status = || async {
        let response = harness
            .call(
                Method::GET,
                &format!("{API}/conversation/{id}"),
                Some(&token),
                None,
            )
            .await;
        response.json::<Value>().await.unwrap()["routingStatus"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status().await, "INITIAL");
    harness
        .control(&format!("{id}/accept"), json!({ "agent": "Jane" }))
        .await;
    assert_eq!(status().await, "ROUTED");
    harness.control(&format!("{id}/transfer"), json!({})).await;
    assert_eq!(status().await, "TRANSFER");
    harness
        .control(&format!("{id}/accept"), json!({ "agent": "Raj" }))
        .await;
    harness.control(&format!("{id}/leave"), json!({})).await;
    assert_eq!(status().await, "NEEDS_ROUTING");
}

#[tokio::test]
async fn entries_carry_the_payload_as_an_object_and_honour_the_query() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    for i in 0..5 {
        assert_eq!(
            harness.send(&token, &id, &format!("m{i}")).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let all = harness.entries(&token, &id, "limit=50").await;
    assert!(
        all.iter().all(|e| e["entryPayload"].is_object()),
        "entryPayload is an object here"
    );
    let times: Vec<u64> = all
        .iter()
        .map(|e| e["transcriptedTimestamp"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first by default: {times:?}"
    );
    let oldest_first = harness
        .entries(&token, &id, "limit=50&direction=FromStart")
        .await;
    assert_eq!(
        oldest_first.first().unwrap()["entryType"],
        "SessionStatusChanged"
    );
    let messages = harness
        .entries(&token, &id, "limit=2&entryTypeFilter=Message")
        .await;
    assert_eq!(messages.len(), 2);
    let text = |e: &Value| {
        e["entryPayload"]["abstractMessage"]["staticContent"]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(messages.iter().map(text).collect::<Vec<_>>(), ["m4", "m3"]);
    let cut = messages[1]["transcriptedTimestamp"].as_u64().unwrap();
    let before = harness
        .entries(
            &token,
            &id,
            &format!("limit=50&entryTypeFilter=Message&endTimestamp={cut}"),
        )
        .await;
    assert_eq!(
        before.iter().map(text).collect::<Vec<_>>(),
        ["m3", "m2", "m1", "m0"],
        "endTimestamp is inclusive"
    );
    let response = harness
        .call(
            Method::GET,
            &format!("{API}/conversation/{id}/entries?direction=Sideways"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sending_a_message_answers_202_and_refuses_repeats() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let message_id = new_conversation_id();
    let path = format!("{API}/conversation/{id}/message");
    let response = harness
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(message_body(&message_id, "hello")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["conversationEntries"][0]["id"], message_id.as_str());
    assert!(body["conversationEntries"][0]["clientTimestamp"].is_u64());
    let response = harness
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(message_body(&message_id, "hello")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let mut strict = message_body(&new_conversation_id(), "x");
    strict["message"]["color"] = json!("red");
    let response = harness
        .call(Method::POST, &path, Some(&token), Some(strict))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(message_of(response).await.contains("unknown field `color`"));
}

#[tokio::test]
async fn more_than_22_messages_a_minute_get_429() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    for i in 0..22 {
        assert_eq!(
            harness.send(&token, &id, &format!("m{i}")).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let response = harness.send(&token, &id, "one too many").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn after_the_session_ends_a_message_needs_a_new_session() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness
        .create(&token, json!({ "issueType": "Billing" }))
        .await;
    harness.control(&format!("{id}/accept"), json!({})).await;
    assert_eq!(
        harness
            .control(&format!("{id}/end"), json!({}))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let response = harness.send(&token, &id, "are you there?").await;
    assert_eq!(response.status(), StatusCode::EXPECTATION_FAILED);
    let path = format!("{API}/conversation/{id}/message");
    let mut body = message_body(&new_conversation_id(), "are you there?");
    body["isNewMessagingSession"] = json!(true);
    let response = harness
        .call(Method::POST, &path, Some(&token), Some(body.clone()))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "routingAttributes are required"
    );
    body["routingAttributes"] = json!({ "issueType": "Billing" });
    let response = harness
        .call(Method::POST, &path, Some(&token), Some(body))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let details: Value = harness
        .call(
            Method::GET,
            &format!("/control/conversations/{id}"),
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(details["sessionStatus"], "Waiting", "routed again");
}

#[tokio::test]
async fn the_customer_can_end_the_session_and_keep_the_conversation() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let path = format!("{API}/conversation/{id}/session?esDeveloperName={DEFAULT_DEVELOPER_NAME}");
    assert_eq!(
        harness
            .call(Method::DELETE, &path, Some(&token), None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        harness.send(&token, &id, "hi").await.status(),
        StatusCode::EXPECTATION_FAILED
    );
    let list: Value = harness
        .call(
            Method::GET,
            &format!("{API}/conversation/list"),
            Some(&token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["openConversationsFound"], 1);
}

#[tokio::test]
async fn closing_a_conversation_needs_the_deployment_and_ends_it() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let path = format!("{API}/conversation/{id}");
    assert_eq!(
        harness
            .call(Method::DELETE, &path, Some(&token), None)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let path = format!("{path}?esDeveloperName={DEFAULT_DEVELOPER_NAME}");
    assert_eq!(
        harness
            .call(Method::DELETE, &path, Some(&token), None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        harness.send(&token, &id, "hi").await.status(),
        StatusCode::NOT_FOUND
    );
    let list: Value = harness
        .call(
            Method::GET,
            &format!("{API}/conversation/list?inclClosedConvs=true&limit=20"),
            Some(&token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["openConversationsFound"], 0);
    assert_eq!(list["closedConversationsFound"], 1);
    assert!(list["conversations"][0]["endTimestamp"].as_u64().unwrap() > 0);
    let types: Vec<String> = harness
        .entries(&token, &id, "limit=3")
        .await
        .iter()
        .map(|e| e["entryType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        ["SessionStatusChanged", "CloseConversation", "RoutingResult"]
    );
}

async fn upload(
    harness: &Harness,
    token: &str,
    id: &str,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    harness
        .upload(token, id, (name, mime), bytes, Some("my receipt"))
        .await
}

#[tokio::test]
async fn files_are_uploaded_multipart_and_served_back() {
    let config = SandboxConfig {
        max_file_bytes: 1024,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let response = upload(
        &harness,
        &token,
        &id,
        "receipt.pdf",
        "application/pdf",
        b"%PDF-1.4 tiny".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let entry = harness
        .entries(&token, &id, "limit=5&entryTypeFilter=Message")
        .await
        .remove(0);
    let content = &entry["entryPayload"]["abstractMessage"]["staticContent"];
    assert_eq!(content["formatType"], "Attachments");
    assert_eq!(content["text"], "my receipt");
    let url = content["attachments"][0]["url"].as_str().unwrap();
    let download = harness.client.get(url).send().await.unwrap();
    assert_eq!(download.headers()["content-type"], "application/pdf");
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"%PDF-1.4 tiny");

    let response = upload(
        &harness,
        &token,
        &id,
        "big.pdf",
        "application/pdf",
        vec![0; 2048],
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        message_of(response).await,
        "The maximum size of each file is 5 MB."
    );
    let response = upload(
        &harness,
        &token,
        &id,
        "tool.exe",
        "application/x-msdownload",
        b"MZ".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn point_4_typing_and_receipts_answer_200_and_an_ack_needs_no_id_of_its_own() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    harness.control(&format!("{id}/accept"), json!({})).await;
    let agent_entry: Value = harness
        .control(&format!("{id}/messages"), json!({ "text": "Hi" }))
        .await
        .json()
        .await
        .unwrap();
    let agent_entry = agent_entry["identifier"].as_str().unwrap();
    let path = format!("{API}/conversation/{id}/entry");
    let typing = json!({ "entryType": "TypingStartedIndicator", "id": new_conversation_id() });
    assert_eq!(
        harness
            .call(Method::POST, &path, Some(&token), Some(typing))
            .await
            .status(),
        StatusCode::OK
    );
    let wrong = json!({ "entryType": "Typing", "id": new_conversation_id() });
    assert_eq!(
        harness
            .call(Method::POST, &path, Some(&token), Some(wrong))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let acks = json!({ "acks": [
        { "id": new_conversation_id(), "entryType": "Delivery", "conversationEntryId": agent_entry },
        // Salesforce's sample sends an id of its own with every ack; other clients do not.
        { "entryType": "Read", "conversationEntryId": agent_entry },
    ] });
    let path = format!("{API}/conversation/{id}/acknowledge-entries");
    assert_eq!(
        harness
            .call(Method::POST, &path, Some(&token), Some(acks))
            .await
            .status(),
        StatusCode::OK
    );
    let types: Vec<String> = harness
        .entries(&token, &id, "limit=3")
        .await
        .iter()
        .map(|e| e["entryType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "ReadAcknowledgement",
            "DeliveryAcknowledgement",
            "TypingStartedIndicator"
        ]
    );
}

#[tokio::test]
async fn the_transcript_is_a_pdf() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    harness.send(&token, &id, "hello (world)").await;
    let path =
        format!("{API}/conversation/{id}/transcript?esDeveloperName={DEFAULT_DEVELOPER_NAME}");
    let response = harness.call(Method::GET, &path, Some(&token), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-1.4"));
    assert!(String::from_utf8_lossy(&bytes).contains("hello \\(world\\)"));
}

#[tokio::test]
async fn with_queue_notifications_a_waiting_conversation_learns_its_place_and_wait() {
    let harness = Harness::with_config(SandboxConfig {
        queue_notifications: true,
        ..SandboxConfig::default()
    })
    .await;
    let (first_token, _) = harness.guest().await;
    harness.create(&first_token, json!({})).await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    let listed = harness.entries(&token, &id, "limit=10").await;
    let queue = listed
        .iter()
        .find(|e| e["entryType"] == "QueuePosition")
        .expect("a queue position");
    assert_eq!(queue["entryPayload"]["position"], 2, "second in the queue");
    let wait = listed
        .iter()
        .filter(|e| e["entryType"] == "RoutingResult")
        .find_map(|e| {
            e["entryPayload"]["estimatedWaitTime"]["estimatedWaitTimeInSeconds"].as_u64()
        });
    assert_eq!(wait, Some(120));
}

/// What a text entry says.
fn entry_text(entry: &Value) -> String {
    entry["entryPayload"]["abstractMessage"]["staticContent"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_entries_bounds_can_be_read_as_exclusive() {
    let config = SandboxConfig {
        entry_time_bounds: miaw_sandbox::TimeBounds::Exclusive,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    for i in 0..4 {
        harness.send(&token, &id, &format!("m{i}")).await;
    }
    let messages = harness
        .entries(&token, &id, "limit=50&entryTypeFilter=Message")
        .await;
    let time = |e: &Value| e["transcriptedTimestamp"].as_u64().unwrap();
    let (m2, m1) = (time(&messages[1]), time(&messages[2]));
    let before = harness
        .entries(
            &token,
            &id,
            &format!("limit=50&entryTypeFilter=Message&endTimestamp={m2}"),
        )
        .await;
    assert_eq!(
        before.iter().map(entry_text).collect::<Vec<_>>(),
        ["m1", "m0"],
        "the entry at endTimestamp is left out"
    );
    let after = harness
        .entries(
            &token,
            &id,
            &format!("limit=50&entryTypeFilter=Message&direction=FromStart&startTimestamp={m1}"),
        )
        .await;
    assert_eq!(
        after.iter().map(entry_text).collect::<Vec<_>>(),
        ["m2", "m3"],
        "the entry at startTimestamp is left out"
    );
}

#[tokio::test]
async fn an_agent_message_can_be_kept_off_the_stream_and_a_burst_shares_one_millisecond() {
    let harness = Harness::start().await;
    let (token, minted) = harness.guest().await;
    let id = harness.create(&token, json!({})).await;
    harness
        .control(&format!("{id}/accept"), json!({ "agent": "Jane" }))
        .await;
    // From the token's event id: everything since the token was minted.
    let mut stream = harness.stream(&token, minted["lastEventId"].as_str()).await;
    stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    stream.until("CONVERSATION_SESSION_STATUS_CHANGED").await;
    let response = harness
        .control(
            &format!("{id}/messages"),
            json!({ "text": "only listed", "withheld": true }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = harness
        .control(
            &format!("{id}/burst"),
            json!({ "texts": ["b0", "b1", "b2", "b3"], "withheld": [1] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["identifiers"].as_array().unwrap().len(), 4);

    let mut streamed = Vec::new();
    while let Some(event) = stream
        .next_within(std::time::Duration::from_millis(500))
        .await
    {
        if event.event == "CONVERSATION_MESSAGE" {
            streamed.push(payload(&event)["abstractMessage"]["staticContent"]["text"].clone());
        }
    }
    assert_eq!(
        streamed,
        ["b0", "b2", "b3"],
        "the withheld ones stay off the stream"
    );

    let listed = harness
        .entries(
            &token,
            &id,
            "limit=50&entryTypeFilter=Message&direction=FromStart",
        )
        .await;
    let texts: Vec<String> = listed.iter().map(entry_text).collect();
    assert_eq!(
        texts,
        ["only listed", "b0", "b1", "b2", "b3"],
        "the list has them all, in order"
    );
    let times: Vec<u64> = listed[1..]
        .iter()
        .map(|e| e["transcriptedTimestamp"].as_u64().unwrap())
        .collect();
    assert!(
        times.iter().all(|&t| t == times[0]),
        "one millisecond: {times:?}"
    );
    let response = harness
        .control(&format!("{id}/burst"), json!({ "texts": [] }))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
