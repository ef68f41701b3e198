//! `GET /eventrouter/v1/sse`: one stream per token subject, every event with an `id:`,
//! replay after `Last-Event-Id`, `ping` keep-alives, and the stream faults.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::{Shared, State, bearer, now_ms};
use crate::config::Replay;
use crate::faults::Faults;
use crate::world::{ApiError, Delivery, Event};

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/eventrouter/v1/sse", get(subscribe))
}

async fn subscribe(state: State, headers: HeaderMap) -> Result<Response, ApiError> {
    let (claims, grown, number, after) = {
        let mut world = state.world();
        let claims = world.authorize(now_ms(), bearer(&headers))?;
        let org = headers
            .get("x-org-id")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::new(400, "The X-Org-Id header is required."))?;
        // Salesforce documents the 15-character id; clients report this message for an
        // 18-character one.
        if org != claims.org_id {
            return Err(ApiError::new(
                400,
                "OrgId in the header and token must match",
            ));
        }
        let grown = world.subscribe(&claims.sub);
        let number = world.stream_opened(&claims.sub);
        // Without an event id to resume from (no header, or one that is not an id), where
        // the stream starts is the configured reading of what Salesforce leaves unsaid.
        let after = headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| match world.config().replay_without_last_event_id {
                Replay::All => 0,
                Replay::New => world.latest_event_id(),
            });
        (claims, grown, number, after)
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let expires =
        Instant::now() + Duration::from_millis((claims.exp * 1000).saturating_sub(now_ms()));
    let connection = Connection {
        shared: state.0.clone(),
        subject: claims.sub,
        cursor: after,
        sender,
        expires,
        number,
    };
    tokio::spawn(connection.run(grown));
    let body = Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

struct Connection {
    shared: Arc<Shared>,
    subject: String,
    cursor: u64,
    sender: mpsc::Sender<Result<Bytes, Infallible>>,
    expires: Instant,
    /// Its number in the world's list of open streams.
    number: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.world().stream_closed(self.number);
    }
}

enum Next {
    Continue,
    Close,
}

impl Connection {
    async fn run(mut self, mut grown: tokio::sync::watch::Receiver<usize>) {
        let opened = Instant::now();
        let ping_interval = self.shared.world().config().ping_interval();
        let mut next_ping = opened + ping_interval;
        let mut sent = 0u32;
        loop {
            let (events, faults) = {
                let world = self.shared.world();
                (
                    world.events_after(&self.subject, self.cursor),
                    world.stream_faults(&self.subject),
                )
            };
            if let Some(drop_ms) = faults.drop_every_ms
                && opened.elapsed() >= Duration::from_millis(drop_ms)
            {
                return;
            }
            if !faults.stall && !events.is_empty() {
                match self.send_events(&events, &faults, &mut sent).await {
                    Next::Continue => {}
                    Next::Close => return,
                }
            }
            let drop_at = faults
                .drop_every_ms
                .map(|ms| opened + Duration::from_millis(ms));
            tokio::select! {
                changed = grown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(next_ping) => {
                    next_ping = Instant::now() + ping_interval;
                    if !faults.stall && self.write(Bytes::from_static(b"event: ping\ndata: 0\n\n")).await.is_err() {
                        return;
                    }
                }
                () = sleep_until(drop_at.unwrap_or(self.expires)) => return,
                () = sleep_until(self.expires) => return,
                () = self.sender.closed() => return,
            }
        }
    }

    /// Sends `events` (skipping withheld ones, cutting garbled ones) with the framing faults applied, and moves the
    /// cursor past them.
    async fn send_events(&mut self, events: &[Event], faults: &Faults, sent: &mut u32) -> Next {
        let mut frames = Vec::new();
        for event in events {
            self.cursor = event.id;
            let data = match event.delivery {
                Delivery::Withheld => continue,
                Delivery::Intact => event.data.as_str(),
                Delivery::Garbled => {
                    let mut cut = event.data.len() / 2;
                    while !event.data.is_char_boundary(cut) {
                        cut += 1;
                    }
                    &event.data[..cut]
                }
            };
            frames.push(if faults.omit_event_ids {
                format!("event: {}\ndata: {}\n\n", event.name, data)
            } else {
                format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    event.id, event.name, data
                )
            });
            *sent += 1;
            if faults.drop_after_events.is_some_and(|limit| *sent >= limit) {
                break;
            }
        }
        let frames: Vec<String> = if faults.duplicate_frames {
            frames
                .into_iter()
                .flat_map(|frame| [frame.clone(), frame])
                .collect()
        } else {
            frames
        };
        let chunks: Vec<Bytes> = if faults.coalesce_frames {
            vec![Bytes::from(frames.concat())]
        } else if faults.split_frames {
            frames
                .iter()
                .flat_map(|frame| {
                    let mut cut = frame.len() / 2;
                    while !frame.is_char_boundary(cut) {
                        cut += 1;
                    }
                    [
                        Bytes::from(frame[..cut].to_owned()),
                        Bytes::from(frame[cut..].to_owned()),
                    ]
                })
                .collect()
        } else {
            frames.into_iter().map(Bytes::from).collect()
        };
        for chunk in chunks {
            if chunk.is_empty() {
                continue;
            }
            if self.write(chunk).await.is_err() {
                return Next::Close;
            }
        }
        if faults.drop_after_events.is_some_and(|limit| *sent >= limit) {
            return Next::Close;
        }
        Next::Continue
    }

    async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        self.sender.send(Ok(chunk)).await.map_err(|_| ())
    }
}
