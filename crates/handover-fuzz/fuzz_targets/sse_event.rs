//! SSE events as the stream delivers them: any event name, id and data must decode into a
//! `StreamEvent` (an `Unknown` or `Malformed` one for junk) and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, '\n');
    let name = parts.next().unwrap_or("");
    let id = parts.next().unwrap_or("");
    let data = parts.next().unwrap_or("");
    let _ = handover_salesforce::decode::decode_stream_event(name, id, data);
    let _ = handover_salesforce::decode::decode_envelope(data);
});
