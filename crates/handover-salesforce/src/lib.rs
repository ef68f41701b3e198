/*!
The Salesforce Messaging for In-App and Web (MIAW) adapter of the handover bridge.

[`MiawClient`] makes every MIAW call the bridge needs — guest and verified-user tokens (with
the silent anonymous fallback detected from `context.endUser.subject`), continuation tokens,
conversations, routing status, messages with caller-supplied ids, files (multipart, with a
5 MB check before upload), typing, receipts, entry listings, close, end of session, revoke —
and reads the event stream ([`SseConnection`], parsed with `eventsource-stream`). It
implements the core's [`SalesforcePort`](handover_core::ports::SalesforcePort). The wire
format lives here as serde types (`wire.rs`, spelled like Salesforce's API) and is converted
to the core's types at this edge ([`decode`]); a field of the wrong shape is reported by its
path, never by its value.

Every call makes one attempt, bounded by a timeout, and reports its outcome; retries,
backoff, pacing, reconnects and the stream watchdog are the session's decisions
(`handover-core`), which is what lets them see every attempt. Failures map to the core's
`CallFailure` by what the core does about them: 401 → token path, 417 → resend as a new
session, 429 and 5xx → retry, 413/415 → send the link instead.

Access and identity tokens live in the core's secret types; they are sent only in headers and
bodies and never appear in `Debug`, errors or logs.
*/

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))]

pub mod attachments;
mod client;
mod config;
pub mod decode;
mod error;
mod http;
mod pacing;
mod stream;
mod wire;

pub use attachments::{AttachmentPolicy, AttachmentRefused};
pub use client::{EntryWindow, MiawClient, Receipt};
pub use config::{MiawConfig, MiawConfigError};
pub use error::SalesforceError;
pub use http::{HttpSettings, HttpVersion, StreamConnections, Transport};
pub use pacing::{SharedSlots, TokenPacer, Turn};
pub use stream::{MAX_LINE_BYTES as MAX_SSE_LINE_BYTES, SseConnection};
