//! Conversation entries from `GET …/entries`: any JSON value decodes or is refused with an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(input) {
        let _ = handover_salesforce::decode::decode_entry(&value, "0a1b2c3d-0000-4000-8000-000000000000");
        if let Some(entries) = value.get("conversationEntries").and_then(|e| e.as_array()) {
            for entry in entries {
                let _ = handover_salesforce::decode::decode_entry(entry, "0a1b2c3d-0000-4000-8000-000000000000");
            }
        }
    }
});
