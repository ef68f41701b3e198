//! The Salesforce adapter's event stream against the MIAW sandbox: decoding real events,
//! resuming after drops with Last-Event-Id, garbled framing, a thousand streams at once, and
//! streams sharing HTTP/2 connections.

#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use handover_core::ports::EventStream as _;
use handover_core::*;
use handover_salesforce::{
    EntryWindow, HttpSettings, HttpVersion, MiawClient, MiawConfig, Transport,
};
use miaw_sandbox::{Replay, SandboxConfig};
use serde_json::json;
use support::Miaw;

/// A sandbox whose streams opened without `Last-Event-Id` replay the subject's history: these
/// tests read a conversation from its start. (The default, only new events, is tested in
/// `salesforce_session.rs` and the sandbox's own tests.)
fn replaying() -> SandboxConfig {
    SandboxConfig {
        replay_without_last_event_id: Replay::All,
        ..SandboxConfig::default()
    }
}

async fn setup(miaw: &Miaw) -> (AccessToken, ConversationId) {
    miaw.guest_conversation(&RoutingAttributes::new()).await
}

/// Entries from a stream until `count` entries arrived or it ended; pings are skipped.
async fn read(
    stream: &mut handover_salesforce::SseConnection,
    count: usize,
) -> (Vec<(Option<EventId>, ConversationEntry)>, bool) {
    let mut entries = Vec::new();
    while entries.len() < count {
        match tokio::time::timeout(Duration::from_secs(5), stream.next_event())
            .await
            .expect("an event within 5 s")
        {
            Some(StreamEvent::Entry { event_id, entry }) => entries.push((event_id, entry)),
            Some(StreamEvent::Ping) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => return (entries, true),
        }
    }
    (entries, false)
}

#[tokio::test]
async fn sandbox_events_decode_into_the_cores_types() {
    let miaw = Miaw::start(replaying()).await;
    let (token, conversation) = setup(&miaw).await;
    let mut stream = miaw.client.connect(&token, None).await.unwrap();
    miaw.act(conversation, "queue", json!({ "position": 2 }))
        .await;
    miaw.act(conversation, "accept", json!({ "agent": "Jane" }))
        .await;
    miaw.act(
        conversation,
        "messages",
        json!({ "choices": { "style": "Buttons", "text": "Pick", "options": ["A"] } }),
    )
    .await;
    miaw.act(conversation, "transfer", json!({})).await;
    miaw.client
        .close_conversation(&token, conversation)
        .await
        .unwrap();
    let (entries, ended) = read(&mut stream, 10).await;
    assert!(!ended);
    let payloads: Vec<EntryPayload> = entries.iter().map(|(_, e)| e.payload.clone()).collect();
    assert!(
        entries
            .iter()
            .all(|(id, e)| id.is_some() && e.conversation_id == conversation)
    );
    assert!(matches!(
        &payloads[0],
        EntryPayload::SessionStatusChanged {
            status: SessionStatus::Waiting,
            ..
        }
    ));
    assert!(matches!(
        &payloads[1],
        EntryPayload::RoutingResult(RoutingResult {
            routing_type: RoutingType::Initial,
            failure: None,
            ..
        })
    ));
    assert_eq!(payloads[2], EntryPayload::QueuePosition { position: 2 });
    assert!(
        matches!(&payloads[3], EntryPayload::ParticipantChanged(c) if c[0].operation == ParticipantOperation::Add && c[0].display_name.as_deref() == Some("Jane"))
    );
    assert!(matches!(
        &payloads[4],
        EntryPayload::SessionStatusChanged {
            status: SessionStatus::Active,
            ..
        }
    ));
    assert!(
        matches!(&payloads[5], EntryPayload::Message(MessageContent::Choices { style: ChoiceStyle::Buttons, options, .. }) if options[0].title == "A")
    );
    assert_eq!(entries[5].1.sender.role, Role::Agent);
    assert!(
        matches!(&payloads[6], EntryPayload::ParticipantChanged(c) if c[0].operation == ParticipantOperation::Remove)
    );
    assert!(matches!(
        &payloads[7],
        EntryPayload::RoutingResult(RoutingResult {
            routing_type: RoutingType::Transfer,
            ..
        })
    ));
    assert_eq!(payloads[8], EntryPayload::CloseConversation);
    assert!(matches!(
        &payloads[9],
        EntryPayload::SessionStatusChanged {
            status: SessionStatus::Ended,
            ended_by: Some(Role::EndUser)
        }
    ));
}

/// Reads a subject's stream to the end of `expected` entries, reconnecting with the last
/// event id whenever the connection ends. Returns the entry identifiers seen, in order, and
/// how many connections it took.
async fn read_with_reconnects(
    client: &MiawClient,
    token: &AccessToken,
    expected: usize,
) -> (Vec<EntryId>, usize) {
    let mut seen = Vec::new();
    let mut last: Option<EventId> = None;
    let mut connections = 0;
    while seen.len() < expected {
        connections += 1;
        assert!(connections < 100, "no progress");
        let Ok(mut stream) = client.connect(token, last.as_ref()).await else {
            continue;
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next_event())
                .await
                .expect("an event within 10 s")
            {
                Some(StreamEvent::Entry { event_id, entry }) => {
                    if event_id.is_some() {
                        last = event_id;
                    }
                    seen.push(entry.identifier);
                }
                Some(StreamEvent::Ping) => {}
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
            if seen.len() == expected {
                break;
            }
        }
    }
    (seen, connections)
}

#[tokio::test]
async fn a_stream_dropped_every_few_events_resumes_with_last_event_id_and_loses_nothing() {
    let miaw = Miaw::start(replaying()).await;
    let (token, conversation) = setup(&miaw).await;
    miaw.act(conversation, "accept", json!({})).await;
    for i in 0..40 {
        miaw.act(conversation, "messages", json!({ "text": format!("m{i}") }))
            .await;
    }
    miaw.faults(json!({ "drop_after_events": 7 })).await;
    let listed = miaw
        .client
        .list_entries(&token, conversation, EntryWindow::default(), 50)
        .await
        .unwrap();
    assert_eq!(listed.len(), 44);
    let (seen, connections) = read_with_reconnects(&miaw.client, &token, listed.len()).await;
    let expected: Vec<EntryId> = listed.into_iter().map(|e| e.identifier).collect();
    assert_eq!(seen, expected, "every event once, in order");
    assert_eq!(connections, 7, "44 events, 7 per connection");
}

#[tokio::test]
async fn garbled_framing_still_yields_whole_events() {
    let miaw = Miaw::start(replaying()).await;
    let (token, conversation) = setup(&miaw).await;
    miaw.act(conversation, "accept", json!({})).await;
    miaw.act(
        conversation,
        "messages",
        json!({ "text": "ünïcödé 🙂 split me" }),
    )
    .await;
    let mut reference = miaw.client.connect(&token, None).await.unwrap();
    let (plain, _) = read(&mut reference, 5).await;
    for faults in [
        json!({ "coalesce_frames": true }),
        json!({ "split_frames": true }),
    ] {
        miaw.faults(faults.clone()).await;
        let mut stream = miaw.client.connect(&token, None).await.unwrap();
        let (events, _) = read(&mut stream, 5).await;
        assert_eq!(events, plain, "{faults}");
    }
    miaw.faults(json!({ "duplicate_frames": true })).await;
    let mut stream = miaw.client.connect(&token, None).await.unwrap();
    let (events, _) = read(&mut stream, 10).await;
    let doubled: Vec<_> = plain.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    assert_eq!(
        events, doubled,
        "duplicates arrive as duplicates; the session drops them by identifier"
    );
}

#[tokio::test]
async fn a_thousand_streams_with_drops_lose_and_duplicate_nothing() {
    const STREAMS: usize = 1000;
    const MESSAGES: usize = 5;
    let config = SandboxConfig {
        token_requests_per_minute: 10_000,
        ..replaying()
    };
    let miaw = Miaw::start(config).await;
    let mut subjects = Vec::new();
    for _ in 0..STREAMS {
        subjects.push(setup(&miaw).await);
    }
    for (_, conversation) in &subjects {
        miaw.act(conversation, "accept", json!({})).await;
        for i in 0..MESSAGES {
            miaw.act(conversation, "messages", json!({ "text": format!("m{i}") }))
                .await;
        }
    }
    miaw.faults(json!({ "drop_after_events": 3 })).await;
    // Every subject's events: 2 on create, 2 on accept, then the messages.
    let expected_per_stream = 4 + MESSAGES;
    let readers: Vec<_> = subjects
        .iter()
        .map(|(token, conversation)| {
            let client = miaw.client.clone();
            let token = token.clone();
            let conversation = *conversation;
            tokio::spawn(async move {
                let (seen, _) = read_with_reconnects(&client, &token, expected_per_stream).await;
                let listed: Vec<EntryId> = client
                    .list_entries(&token, conversation, EntryWindow::default(), 50)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.identifier)
                    .collect();
                (seen, listed)
            })
        })
        .collect();
    let mut totals = BTreeMap::new();
    for reader in readers {
        let (seen, listed) = reader.await.unwrap();
        *totals.entry("seen").or_insert(0) += seen.len();
        *totals.entry("lost or duplicated").or_insert(0) += usize::from(seen != listed);
    }
    assert_eq!(totals["seen"], STREAMS * expected_per_stream);
    assert_eq!(totals["lost or duplicated"], 0);
}

/// A client for `miaw`'s sandbox speaking HTTP/2 only, with at most `per_connection` streams
/// on a connection, and the transport to watch its connections.
fn http2_client(
    miaw: &Miaw,
    per_connection: usize,
    stream_open_timeout: Duration,
) -> (MiawClient, Transport) {
    let transport = Transport::new(HttpSettings {
        version: HttpVersion::Http2,
        streams_per_connection: per_connection,
        ..HttpSettings::default()
    })
    .unwrap();
    let mut config = MiawConfig::new(
        miaw.sandbox.url(),
        miaw_sandbox::DEFAULT_ORG_ID,
        miaw_sandbox::DEFAULT_DEVELOPER_NAME,
    );
    config.stream_open_timeout = stream_open_timeout;
    let client = MiawClient::with_transport(config.validated().unwrap(), &transport);
    (client, transport)
}

/// Each subject's stream, once `text` was sent to its conversation, carries that text.
async fn each_stream_gets_its_own_message(
    miaw: &Miaw,
    subjects: &[(AccessToken, ConversationId)],
    streams: &mut [handover_salesforce::SseConnection],
) {
    for (index, (_, conversation)) in subjects.iter().enumerate() {
        miaw.act(conversation, "accept", json!({})).await;
        miaw.act(
            conversation,
            "messages",
            json!({ "text": format!("to {index}") }),
        )
        .await;
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        // 2 entries on create, 2 on accept, then the message.
        let (entries, ended) = read(stream, 5).await;
        assert!(!ended);
        let texts: Vec<String> = entries
            .iter()
            .filter_map(|(_, entry)| match &entry.payload {
                EntryPayload::Message(MessageContent::Text(text)) => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, vec![format!("to {index}")], "stream {index}");
        assert!(
            entries
                .iter()
                .all(|(_, entry)| entry.conversation_id == subjects[index].1)
        );
    }
}

#[tokio::test]
async fn event_streams_over_http2_share_connections_and_each_keeps_its_own_events() {
    let miaw = Miaw::start(replaying()).await;
    let (client, transport) = http2_client(&miaw, 4, Duration::from_secs(5));
    let mut subjects = Vec::new();
    for _ in 0..10 {
        subjects.push(setup(&miaw).await);
    }
    let mut streams = Vec::new();
    for (token, _) in &subjects {
        // Prior knowledge: this succeeds only if the sandbox answered in HTTP/2.
        streams.push(client.connect(token, None).await.unwrap());
    }
    let pool = transport.streams();
    assert_eq!((pool.connections(), pool.streams()), (3, 10), "4 + 4 + 2");
    each_stream_gets_its_own_message(&miaw, &subjects, &mut streams).await;
    // Streams that end give their places back; the connections without a stream close.
    streams.truncate(3);
    assert_eq!((pool.connections(), pool.streams()), (1, 3));
    drop(streams);
    assert_eq!((pool.connections(), pool.streams()), (0, 0));
}

#[tokio::test]
async fn a_server_taking_fewer_http2_streams_than_wanted_costs_a_slow_open_per_connection_not_a_stream()
 {
    // The sandbox takes 3 streams a connection; the client would put 5 on one.
    let miaw = Miaw::start(SandboxConfig {
        http2_max_concurrent_streams: Some(3),
        ..replaying()
    })
    .await;
    let (client, transport) = http2_client(&miaw, 5, Duration::from_secs(1));
    let mut subjects = Vec::new();
    for _ in 0..7 {
        subjects.push(setup(&miaw).await);
    }
    let mut streams = Vec::new();
    let mut failures = Vec::new();
    for (index, (token, _)) in subjects.iter().enumerate() {
        // As the session does: a stream that did not open is opened again.
        let mut attempts = 0;
        let stream = loop {
            attempts += 1;
            assert!(attempts <= 3, "stream {index} never opened");
            match client.connect(token, None).await {
                Ok(stream) => break stream,
                Err(error) => failures.push((index, error.to_string())),
            }
        };
        streams.push(stream);
    }
    // The fourth stream waited on the first connection, which then took no more; the second
    // connection started from the setting (5) again, so the seventh waited there.
    let failed: Vec<usize> = failures.iter().map(|(index, _)| *index).collect();
    assert_eq!(failed, vec![3, 6], "{failures:?}");
    assert!(
        failures.iter().all(|(_, error)| error.contains("in time")),
        "{failures:?}"
    );
    let pool = transport.streams();
    assert_eq!((pool.connections(), pool.streams()), (3, 7), "3 + 3 + 1");
    each_stream_gets_its_own_message(&miaw, &subjects, &mut streams).await;
}
