//! One connection of the event stream, parsed by `eventsource-stream` and decoded into the
//! core's `StreamEvent`s. Reconnecting, the watchdog and backfills are the session's
//! decisions: this type only reads.

use std::pin::Pin;

use async_trait::async_trait;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use handover_core::ports::EventStream;
use handover_core::{EventId, StreamEvent};

use crate::decode::decode_stream_event;
use crate::http::Lease;

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<ByteError>>> + Send>>;

/// The longest line the stream may send. Salesforce's events are a few kilobytes; a message
/// entry with every field filled stays far below this. A longer line (or a stream that never
/// sends a newline) would otherwise be buffered without bound.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What can go wrong under the SSE parser.
#[derive(Debug)]
enum ByteError {
    Transport(reqwest::Error),
    /// With the `id:` of the event the line belongs to, if it came first, so that the session
    /// can resume after that event instead of being served it again.
    LineTooLong(Option<String>),
}

/// Watches the lines go by: their length, and the `id:` of the event being read.
#[derive(Default)]
struct LineGuard {
    /// The start of the current line, enough to read an `id:` field.
    head: Vec<u8>,
    len: usize,
    pending_id: Option<String>,
    last_cr: bool,
}

impl LineGuard {
    const HEAD: usize = 512;

    /// `Err` with the pending event id once a line runs past [`MAX_LINE_BYTES`].
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Option<String>> {
        for &byte in bytes {
            if byte == b'\n' && self.last_cr {
                self.last_cr = false;
                continue;
            }
            self.last_cr = byte == b'\r';
            if byte == b'\n' || byte == b'\r' {
                self.end_line();
                continue;
            }
            self.len += 1;
            if self.head.len() < Self::HEAD {
                self.head.push(byte);
            }
            if self.len > MAX_LINE_BYTES {
                return Err(self.pending_id.clone());
            }
        }
        Ok(())
    }

    fn end_line(&mut self) {
        if self.len == 0 {
            // A blank line dispatches the event.
            self.pending_id = None;
        } else if let Some(value) = self.head.strip_prefix(b"id:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            self.pending_id = Some(String::from_utf8_lossy(value).into_owned());
        }
        self.head.clear();
        self.len = 0;
    }
}

impl std::fmt::Display for ByteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(_) => f.write_str("the stream's connection failed"),
            Self::LineTooLong(_) => write!(f, "a line longer than {MAX_LINE_BYTES} bytes"),
        }
    }
}

/// An open event stream.
pub struct SseConnection {
    events: Events,
    /// The stream's place on its connection, given back when the stream is dropped.
    _lease: Option<Lease>,
}

impl std::fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseConnection")
    }
}

impl SseConnection {
    pub(crate) fn new(response: reqwest::Response, lease: Lease) -> Self {
        let mut connection = Self::from_bytes(
            response
                .bytes_stream()
                .map(|chunk| chunk.map_err(ByteError::Transport)),
        );
        connection._lease = Some(lease);
        connection
    }

    /// The bytes pass through a guard that counts the bytes since the last line break and
    /// stops the stream when they exceed [`MAX_LINE_BYTES`].
    fn from_bytes<B: AsRef<[u8]> + Send + 'static>(
        bytes: impl Stream<Item = Result<B, ByteError>> + Send + 'static,
    ) -> Self {
        let mut guard = LineGuard::default();
        let mut stopped = false;
        let guarded = bytes.map(move |chunk| {
            if stopped {
                return Err(ByteError::LineTooLong(None));
            }
            let chunk = chunk?;
            if let Err(id) = guard.feed(chunk.as_ref()) {
                stopped = true;
                return Err(ByteError::LineTooLong(id));
            }
            Ok(chunk)
        });
        Self {
            events: Box::pin(guarded.eventsource()),
            _lease: None,
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
            Err(EventStreamError::Transport(ByteError::LineTooLong(id))) => {
                // Report it once, then end the stream: the session resumes after this event
                // (when its id came first) and backfills, so an entry that was real is not lost.
                self.events = Box::pin(futures_util::stream::empty());
                Some(StreamEvent::Malformed {
                    event_id: id.and_then(|id| EventId::new(id.trim()).ok()),
                    reason: format!("a line of the stream exceeded {MAX_LINE_BYTES} bytes"),
                })
            }
            Err(EventStreamError::Transport(ByteError::Transport(error))) => {
                tracing::debug!(error = %error.without_url(), "the event stream broke");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

    fn text(event: &StreamEvent) -> String {
        format!("{event:?}")
    }

    #[tokio::test]
    async fn a_stream_that_never_sends_a_newline_is_cut_off_and_reported() {
        // Endless bytes, no line break: the guard stops it after MAX_LINE_BYTES.
        let endless = stream::repeat_with(|| Ok::<_, ByteError>(vec![b'a'; 64 * 1024]));
        let mut connection = SseConnection::from_bytes(endless);
        let event = connection.next_event().await.unwrap();
        assert!(
            matches!(&event, StreamEvent::Malformed { reason, .. } if reason.contains("exceeded")),
            "{}",
            text(&event)
        );
        assert!(
            connection.next_event().await.is_none(),
            "then the stream ends"
        );
    }

    #[tokio::test]
    async fn an_overlong_event_is_reported_with_its_id_so_it_can_be_skipped() {
        let chunks: Vec<Result<Vec<u8>, ByteError>> = vec![
            Ok(b"id: 41\r\nevent: ping\r\ndata: {}\r\n\r\nid: 42\nevent: CONVERSATION_MESSAGE\ndata: ".to_vec()),
            Ok(vec![b'x'; MAX_LINE_BYTES + 1]),
        ];
        let mut connection = SseConnection::from_bytes(stream::iter(chunks));
        assert!(matches!(
            connection.next_event().await,
            Some(StreamEvent::Ping)
        ));
        let event = connection.next_event().await.unwrap();
        match &event {
            StreamEvent::Malformed { event_id, .. } => {
                assert_eq!(event_id.as_ref().map(EventId::as_str), Some("42"));
            }
            other => panic!("{}", text(other)),
        }
        assert!(connection.next_event().await.is_none());
    }

    #[tokio::test]
    async fn long_lines_below_the_limit_and_many_short_lines_pass() {
        let long = format!(
            "event: ping\ndata: {}\n\n",
            "x".repeat(MAX_LINE_BYTES - 100)
        );
        // Many chunks without a newline each, but lines stay short: the count resets.
        let mut chunks: Vec<Result<Vec<u8>, ByteError>> = vec![Ok(long.into_bytes())];
        for _ in 0..64 {
            chunks.push(Ok(b"event: ping\ndata: {}\n\n".to_vec()));
        }
        let mut connection = SseConnection::from_bytes(stream::iter(chunks));
        let mut pings = 0;
        while let Some(event) = connection.next_event().await {
            assert!(matches!(event, StreamEvent::Ping), "{}", text(&event));
            pings += 1;
        }
        assert_eq!(pings, 65);
    }
}
