//! One connection of the event stream, parsed by `eventsource-stream` and decoded into the
//! core's `StreamEvent`s. Reconnecting, the watchdog and backfills are the session's
//! decisions: this type only reads.

use std::pin::Pin;

use async_trait::async_trait;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use handover_core::StreamEvent;
use handover_core::ports::EventStream;

use crate::decode::decode_stream_event;

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open event stream.
pub struct SseConnection {
    events: Events,
}

impl std::fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseConnection")
    }
}

impl SseConnection {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self {
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }
}

#[async_trait]
impl EventStream for SseConnection {
    async fn next_event(&mut self) -> Option<StreamEvent> {
        match self.events.next().await? {
            Ok(event) => Some(decode_stream_event(&event.event, &event.id, &event.data)),
            // Bytes that are not UTF-8 or not SSE: skip the frame, keep reading.
            Err(EventStreamError::Utf8(_)) => Some(StreamEvent::Malformed {
                event_id: None,
                reason: "the event is not UTF-8".to_owned(),
            }),
            Err(EventStreamError::Parser(_)) => Some(StreamEvent::Malformed {
                event_id: None,
                reason: "the event is not valid SSE".to_owned(),
            }),
            // The connection broke: the stream has ended.
            Err(EventStreamError::Transport(error)) => {
                tracing::debug!(error = %error.without_url(), "the event stream broke");
                None
            }
        }
    }
}
