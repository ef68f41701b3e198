//! The adapter's HTTP clients: one pool for REST calls, and connections leased to event
//! streams.
//!
//! An event stream lives as long as its handover. Over HTTP/1.1 it holds a connection (and a
//! socket on both ends) the whole time, so a bridge with 20,000 open files could hold fewer
//! than 20,000 handovers. Over HTTP/2 a connection carries many streams, but a client that put
//! every stream on one connection would stop at the server's limit of concurrent streams
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`): the next request waits for a stream to end, which a
//! live handover's stream never does. So [`StreamConnections`] spreads the streams over
//! connections of its own, at most [`HttpSettings::streams_per_connection`] on each, and
//! opens another connection when all are full. RFC 9113 §6.5.2 recommends that servers allow
//! at least 100 concurrent streams, the default here. A connection on which a stream does not
//! open in time, while others opened on it, takes no more streams than those: a server with a
//! lower limit costs one slow stream open per connection, not a handover that never connects.
//! What one connection learned is not passed on to the next: a slow server (an outage) could
//! otherwise shrink every later connection for good, down to a stream each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::MiawConfigError;

/// Which HTTP version the adapter speaks to Salesforce (`salesforce.http_version`:
/// `auto`, `http1`, `http2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    /// HTTP/2 when the server offers it in the TLS handshake (ALPN), HTTP/1.1 otherwise and
    /// over plain `http://`.
    #[default]
    Auto,
    /// HTTP/1.1 only: each event stream holds a connection of its own.
    Http1,
    /// HTTP/2 only, over plain `http://` too (prior knowledge, for a local sandbox). A server
    /// that does not speak it fails every call, which is what makes the stream count per
    /// connection certain.
    Http2,
}

/// How the adapter's HTTP clients connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Which HTTP version to speak.
    pub version: HttpVersion,
    /// Connecting gives up after this long.
    pub connect_timeout: Duration,
    /// Event streams one HTTP/2 connection carries at most (at least 1).
    pub streams_per_connection: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            version: HttpVersion::Auto,
            connect_timeout: Duration::from_secs(5),
            streams_per_connection: 100,
        }
    }
}

impl HttpSettings {
    /// Checks the values.
    pub fn validated(self) -> Result<Self, MiawConfigError> {
        if self.streams_per_connection == 0 {
            return Err(MiawConfigError {
                field: "streams_per_connection",
                problem: "must be at least 1 (servers should allow 100 concurrent HTTP/2 streams)",
            });
        }
        if self.connect_timeout.is_zero() {
            return Err(MiawConfigError {
                field: "connect_timeout",
                problem: "must be longer than zero",
            });
        }
        Ok(self)
    }

    /// Event streams that share one socket for sure: `streams_per_connection` when HTTP/2 is
    /// required, 1 otherwise (a server may answer in HTTP/1.1).
    pub fn streams_per_socket(&self) -> usize {
        match self.version {
            HttpVersion::Http2 => self.streams_per_connection,
            HttpVersion::Auto | HttpVersion::Http1 => 1,
        }
    }

    fn client(&self) -> Result<reqwest::Client, MiawConfigError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("handover-bridge/", env!("CARGO_PKG_VERSION")));
        let builder = match self.version {
            HttpVersion::Auto => builder,
            HttpVersion::Http1 => builder.http1_only(),
            HttpVersion::Http2 => builder.http2_prior_knowledge(),
        };
        builder.build().map_err(|_| MiawConfigError {
            field: "http_version",
            problem: "the HTTP client could not be built",
        })
    }
}

/// The HTTP clients every deployment shares: a pool for REST calls and the connections of
/// the event streams. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    rest: reqwest::Client,
    streams: Arc<StreamConnections>,
}

impl Transport {
    /// Clients connecting as `settings` say.
    pub fn new(settings: HttpSettings) -> Result<Self, MiawConfigError> {
        let settings = settings.validated()?;
        Ok(Self {
            rest: settings.client()?,
            streams: Arc::new(StreamConnections::new(settings)),
        })
    }

    pub(crate) fn rest(&self) -> &reqwest::Client {
        &self.rest
    }

    /// The event streams' connections.
    pub fn streams(&self) -> &StreamConnections {
        &self.streams
    }
}

/// The connections of the event streams (see the module's doc).
pub struct StreamConnections {
    settings: HttpSettings,
    /// What a new connection may carry: `streams_per_connection`, or everything over
    /// HTTP/1.1 only (a client opens a connection per stream there anyway).
    cap: usize,
    slots: Mutex<Vec<Slot>>,
}

impl std::fmt::Debug for StreamConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConnections")
            .field("settings", &self.settings)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

/// One client, which keeps one HTTP/2 connection (or, over HTTP/1.1, one per stream).
struct Slot {
    client: reqwest::Client,
    usage: Arc<Usage>,
}

struct Usage {
    /// Places taken: streams open and streams being opened.
    live: AtomicUsize,
    /// Streams that opened (the server answered).
    opened: AtomicUsize,
    cap: AtomicUsize,
}

/// A stream's place on a connection, given back when the stream is dropped.
pub(crate) struct Lease {
    usage: Arc<Usage>,
    opened: bool,
}

impl Lease {
    /// The server answered: the stream is open.
    pub(crate) fn opened(&mut self) {
        if !self.opened {
            self.opened = true;
            self.usage.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection did not open this stream in time. If others opened on it, the
    /// server's limit may be what they are: the connection takes no more. If none did, the
    /// server is slow or gone, which says nothing about its limit.
    pub(crate) fn saturated(&self) {
        let opened = self.usage.opened.load(Ordering::Relaxed);
        if opened == 0 {
            return;
        }
        let before = self.usage.cap.fetch_min(opened, Ordering::Relaxed);
        if opened < before {
            tracing::warn!(
                streams = opened,
                "an event stream did not open in time; its connection takes no more streams \
                 than opened on it"
            );
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.opened {
            self.usage.opened.fetch_sub(1, Ordering::Relaxed);
        }
        self.usage.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamConnections {
    fn new(settings: HttpSettings) -> Self {
        let cap = match settings.version {
            // One client opens a connection per stream anyway.
            HttpVersion::Http1 => usize::MAX,
            HttpVersion::Auto | HttpVersion::Http2 => settings.streams_per_connection,
        };
        Self {
            settings,
            cap,
            slots: Mutex::new(Vec::new()),
        }
    }

    /// A client for one more event stream, and the lease that holds its place until dropped.
    pub(crate) fn lease(&self) -> Result<(reqwest::Client, Lease), MiawConfigError> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Connections no stream uses are closed, save one kept for the next stream.
        let mut kept_idle = false;
        slots.retain(|slot| {
            let busy = slot.usage.live.load(Ordering::Relaxed) > 0;
            let keep = busy || !kept_idle;
            kept_idle |= !busy;
            keep
        });
        // The first connection with room: streams pack onto as few connections as they can.
        let index = match slots.iter().position(|slot| {
            slot.usage.live.load(Ordering::Relaxed) < slot.usage.cap.load(Ordering::Relaxed)
        }) {
            Some(index) => index,
            None => {
                slots.push(Slot {
                    client: self.settings.client()?,
                    usage: Arc::new(Usage {
                        live: AtomicUsize::new(0),
                        opened: AtomicUsize::new(0),
                        cap: AtomicUsize::new(self.cap),
                    }),
                });
                slots.len() - 1
            }
        };
        let slot = &slots[index];
        // Taken under the lock, so two leases never both take a connection's last place.
        slot.usage.live.fetch_add(1, Ordering::Relaxed);
        Ok((
            slot.client.clone(),
            Lease {
                usage: slot.usage.clone(),
                opened: false,
            },
        ))
    }

    /// Connections (clients) that carry at least one stream.
    pub fn connections(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .filter(|slot| slot.usage.live.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// Event streams open or being opened.
    pub fn streams(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .map(|slot| slot.usage.live.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(version: HttpVersion, per_connection: usize) -> StreamConnections {
        StreamConnections::new(HttpSettings {
            version,
            streams_per_connection: per_connection,
            ..HttpSettings::default()
        })
    }

    #[test]
    fn streams_fill_a_connection_before_the_next_is_opened() {
        let pool = pool(HttpVersion::Http2, 3);
        let leases: Vec<_> = (0..7).map(|_| pool.lease().unwrap().1).collect();
        assert_eq!((pool.connections(), pool.streams()), (3, 7));
        drop(leases);
        assert_eq!((pool.connections(), pool.streams()), (0, 0));
    }

    #[test]
    fn a_place_given_back_is_taken_again_and_idle_connections_are_closed_save_one() {
        let pool = pool(HttpVersion::Auto, 2);
        let mut leases: Vec<_> = (0..6).map(|_| pool.lease().unwrap().1).collect();
        assert_eq!(pool.connections(), 3);
        // The first connection's places are given back: the next stream takes one.
        leases.drain(..2);
        assert_eq!(pool.connections(), 2);
        leases.push(pool.lease().unwrap().1);
        assert_eq!((pool.connections(), pool.streams()), (3, 5));
        // All ended: the next lease closes every idle connection but one, and reuses it.
        leases.clear();
        let _one = pool.lease().unwrap();
        let kept = pool.slots.lock().unwrap().len();
        assert_eq!((kept, pool.connections()), (1, 1));
    }

    #[test]
    fn over_http1_one_client_serves_every_stream() {
        let pool = pool(HttpVersion::Http1, 2);
        let _leases: Vec<_> = (0..50).map(|_| pool.lease().unwrap().1).collect();
        assert_eq!(pool.slots.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_connection_that_did_not_open_a_stream_takes_no_more_than_opened_on_it() {
        let pool = pool(HttpVersion::Http2, 10);
        let mut leases: Vec<_> = (0..5).map(|_| pool.lease().unwrap().1).collect();
        for lease in &mut leases[..4] {
            lease.opened();
        }
        // The fifth stream timed out while 4 were open: the server allows 4 a connection.
        leases[4].saturated();
        leases.pop();
        let _more: Vec<_> = (0..6).map(|_| pool.lease().unwrap().1).collect();
        // 4 on the first; the next connection starts from the setting again: 6 on it.
        assert_eq!((pool.connections(), pool.streams()), (2, 10));
        // A stream that times out where none opened (a slow server) lowers nothing.
        let pool = self::pool(HttpVersion::Http2, 10);
        let first = pool.lease().unwrap().1;
        first.saturated();
        let _others: Vec<_> = (0..9).map(|_| pool.lease().unwrap().1).collect();
        assert_eq!((pool.connections(), pool.streams()), (1, 10));
    }

    #[test]
    fn settings_refuse_zero_streams_per_connection_by_name() {
        let error = HttpSettings {
            streams_per_connection: 0,
            ..HttpSettings::default()
        }
        .validated()
        .unwrap_err();
        assert_eq!(error.field, "streams_per_connection");
        assert_eq!(
            HttpSettings {
                version: HttpVersion::Http2,
                ..HttpSettings::default()
            }
            .streams_per_socket(),
            100
        );
        assert_eq!(HttpSettings::default().streams_per_socket(), 1);
    }
}
