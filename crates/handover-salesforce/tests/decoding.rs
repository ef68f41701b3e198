//! Decoding untrusted bytes never panics, and the SSE parsing does not depend on how the bytes
//! were cut into chunks (several frames per read, frames split across reads). CI runs these
//! properties as its fuzzing smoke run.

#![allow(clippy::unwrap_used)]

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use handover_core::StreamEvent;
use handover_salesforce::decode::{decode_entry, decode_envelope, decode_stream_event};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("Message"),
            Just("ParticipantChanged"),
            Just("RoutingResult"),
            Just("SessionStatusChanged"),
            Just("QueuePosition"),
            Just("StaticContentMessage"),
            Just("ChoicesMessage"),
            Just("Text"),
            Just("Attachments"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("entryType"),
            Just("identifier"),
            Just("entryPayload"),
            Just("abstractMessage"),
            Just("messageType"),
            Just("staticContent"),
            Just("formatType"),
            Just("text"),
            Just("entries"),
            Just("participant"),
            Just("role"),
            Just("operation"),
            Just("routingType"),
            Just("failureType"),
            Just("sessionStatus"),
            Just("position"),
            Just("attachments"),
            Just("choices"),
            Just("optionItems"),
            Just("sender"),
            Just("x"),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_event_data_never_panics(name in prop_oneof![Just("CONVERSATION_MESSAGE".to_owned()), ".{0,20}"], id in ".{0,10}", data in ".{0,200}") {
        let _ = decode_stream_event(&name, &id, &data);
        let _ = decode_envelope(&data);
    }

    #[test]
    fn arbitrary_json_entries_never_panic(entry in json_value(), payload in json_value(), as_string in any::<bool>()) {
        let mut entry = entry;
        if let Value::Object(map) = &mut entry {
            map.insert("entryPayload".to_owned(), if as_string { Value::String(payload.to_string()) } else { payload });
        }
        let _ = decode_entry(&entry, "3b6f0c52-8d1e-4a7b-9c2d-5e6f7a8b9c0d");
        let envelope = json!({ "conversationId": "3b6f0c52-8d1e-4a7b-9c2d-5e6f7a8b9c0d", "conversationEntry": entry });
        let _ = decode_stream_event("CONVERSATION_MESSAGE", "1", &envelope.to_string());
    }

    #[test]
    fn sse_parsing_does_not_depend_on_chunking(texts in proptest::collection::vec("[a-z ]{0,30}", 1..8), cuts in proptest::collection::vec(1usize..40, 0..20)) {
        let mut wire = String::new();
        for (index, text) in texts.iter().enumerate() {
            let data = json!({ "text": text }).to_string();
            wire.push_str(&format!("id: {index}\nevent: CONVERSATION_MESSAGE\ndata: {data}\n\nevent: ping\ndata: 0\n\n"));
        }
        let bytes = wire.into_bytes();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            let end = (start + cut).min(bytes.len());
            chunks.push(bytes[start..end].to_vec());
            start = end;
        }
        chunks.push(bytes[start..].to_vec());
        let parse = |chunks: Vec<Vec<u8>>| {
            runtime().block_on(async move {
                futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>))
                    .eventsource()
                    .map(|event| event.map(|e| (e.event, e.id, e.data)).map_err(|e| e.to_string()))
                    .collect::<Vec<_>>()
                    .await
            })
        };
        let whole = parse(vec![bytes.clone()]);
        prop_assert_eq!(parse(chunks), whole.clone());
        prop_assert_eq!(whole.len(), texts.len() * 2);
    }
}

#[test]
fn a_ping_is_a_ping_and_an_unknown_name_is_unknown() {
    assert_eq!(decode_stream_event("ping", "", "0"), StreamEvent::Ping);
    assert!(matches!(
        decode_stream_event("message", "", "hello"),
        StreamEvent::Unknown { .. }
    ));
}
