//! Micro-benchmarks of what the adapter does with every event and entry: decoding an SSE
//! event's `data` (the envelope with its `entryPayload` string) into the core's
//! `StreamEvent`, and an entry of an entries listing. Payloads are shaped like the sandbox's,
//! which validate against Salesforce's schema.
//! Run with `cargo xtask bench --micro` (or `cargo bench -p handover-salesforce`).

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use handover_core::StreamEvent;
use handover_salesforce::decode::{decode_entry, decode_stream_event};
use serde_json::{Value, json};

const CONVERSATION: &str = "3f1c0a52-9d7e-4b8a-a1c2-5e6f7a8b9c0d";

fn message_entry(text: &str) -> Value {
    let payload = json!({
        "entryType": "Message",
        "id": "d0c2e7a4-1b3f-4c5d-8e9f-0a1b2c3d4e5f",
        "abstractMessage": {
            "messageType": "StaticContentMessage",
            "id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
            "references": [],
            "staticContent": { "formatType": "Text", "text": text },
        },
    });
    json!({
        "entryType": "Message",
        "identifier": "d0c2e7a4-1b3f-4c5d-8e9f-0a1b2c3d4e5f",
        "entryPayload": payload.to_string(),
        "sender": { "role": "Agent", "appType": "agent", "subject": "005xx000001Sv6AAAS", "clientIdentifier": "agent-client" },
        "senderDisplayName": "Jane",
        "clientTimestamp": 1_700_000_000_000u64,
        "transcriptedTimestamp": 1_700_000_000_000u64,
        "clientDuration": 0,
        "relatedRecords": ["0Mwxx0000000001"],
    })
}

fn decoding(c: &mut Criterion) {
    let entry = message_entry("Your order ships tomorrow. Anything else I can do for you?");
    let data = json!({
        "channelPlatformKey": "sandbox",
        "channelType": "embedded_messaging",
        "channelAddressIdentifier": "Handover_Sandbox_channel",
        "conversationId": CONVERSATION,
        "conversationEntry": entry,
    })
    .to_string();
    assert!(matches!(
        decode_stream_event("CONVERSATION_MESSAGE", "42", &data),
        StreamEvent::Entry { .. }
    ));
    c.bench_function("decode/sse_message_event", |b| {
        b.iter(|| decode_stream_event("CONVERSATION_MESSAGE", black_box("42"), black_box(&data)));
    });
    c.bench_function("decode/sse_ping", |b| {
        b.iter(|| decode_stream_event(black_box("ping"), "", black_box("0")));
    });
    let mut listed = entry;
    listed["entryPayload"] =
        serde_json::from_str(listed["entryPayload"].as_str().unwrap()).unwrap();
    assert!(decode_entry(&listed, CONVERSATION).is_ok());
    c.bench_function("decode/listed_entry", |b| {
        b.iter(|| decode_entry(black_box(&listed), CONVERSATION));
    });
}

criterion_group!(benches, decoding);
criterion_main!(benches);
