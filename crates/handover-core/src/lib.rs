/*!
The pure state machine of a handover from a bot (Cognigy.AI) to a human agent in Salesforce
Messaging for In-App and Web (MIAW, "Enhanced Chat").

Every rule of a handover lives here once: when to mint a token and when it can no longer be
used, what ends a handover and what only looks like an end, which agent events reach the user,
how user messages are paced, retried and de-duplicated, what the Flow is told and when. Nothing
here does I/O, reads a clock, spawns a task or draws a random number. The crate can therefore be
embedded in any runtime, tested faster than real time, and property-tested with millions of
steps.

# The driving contract

A [`Session`] is one handover. It is driven with three kinds of method, after quinn-proto's
`Connection`:

- **`handle`** — [`Session::handle(input, now)`](Session::handle) takes one [`Input`] (a fact:
  the Flow asked for something, a call finished, the stream delivered an event, time passed) and
  returns the [`Command`]s to execute, in order.
- **`poll_timeout`** — [`Session::poll_timeout`] says when the session next wants to be woken,
  and why ([`Timer`]). When that time comes, feed [`Input::Timeout`].
- **getters** — [`Session::phase`], [`Session::outcome`], [`Session::last_event_id`], … read
  the state and change nothing.

The rules:

1. **Feed [`Input::Start`] first.** A new session waits in [`Phase::Requested`].
2. **Execute every command of one `handle` call, in order**, before relying on the session's
   state. Commands are idempotent by construction (message ids derive from the bot's message
   ids), so executing one twice after a crash is safe; skipping one is not.
3. **Report every result.** Each [`SalesforceCall`] and [`BotCall`] carries a [`CallId`]; its
   outcome comes back as [`Input::Salesforce`] or [`Input::Bot`] with that id, success or
   failure. A stream opened by an `OpenStream` call reports through [`Input::Stream`] with that
   call's id. [`Command::Record`] needs no result.
4. **Make one attempt per command.** Retries, backoff, pacing and ordering are decided here,
   because they must see every attempt. The ports ([`ports`]) say the same to adapters.
5. **Time is a parameter.** `now` is a UTC [`Timestamp`]. Pass a non-decreasing value; a value
   that goes backwards is treated as the latest one seen. Deadlines are absolute UTC times, so a
   restored session fires whatever fell due while it was stored. Calling with
   `Input::Timeout` early is harmless.
6. **Sleep until [`Session::poll_timeout`]** or the next input, whichever comes first. After the
   session is [`Session::is_finished`], nothing more will happen.

Everything random comes from outside: the handover and conversation ids are in the
[`HandoverRequest`]; client message ids are derived from them with [`ClientEntryId::derive`];
retry jitter is drawn from a generator seeded by the conversation id.

```
use handover_core::*;

let request = HandoverRequest {
    handover_id: HandoverId::from_random_bytes([1; 16]),
    conversation_id: ConversationId::from_random_bytes([2; 16]),
    transcript: vec![TranscriptTurn::user("I need a human")],
    settings: HandoverSettings::default(),
    copilot_url: None,
    deployment: None,
};
let mut session = Session::new(request, SessionConfig::default());
let now = Timestamp::from_unix_secs(1_700_000_000);
let commands = session.handle(Input::Start, now);
// The first thing a handover needs is a Salesforce access token.
assert!(matches!(
    &commands[..],
    [Command::Salesforce(SalesforceCall { request: SalesforceRequest::MintToken(MintKind::Guest), .. })]
));
assert_eq!(session.phase(), Phase::MintingToken);
```

# The life of a handover

[`Phase::MintingToken`] → [`Phase::OpeningStream`] (the stream is opened before the
conversation exists, so no early event is missed) → [`Phase::CreatingConversation`] →
[`Phase::Queued`] → [`Phase::WithAgent`], with [`Phase::Transferring`],
[`Phase::AgentLeft`] and [`Phase::Inactive`] as detours that are *not* ends, and finally
[`Phase::Ended`] with exactly one terminal status ([`HandoverStatus::Ended`]) for the Flow.

What ends a handover: `SessionStatusChanged` with status `Ended` (`agent_ended`);
`CloseConversation` (`user_closed`); the agent leaving when "End Chat When Agent Leaves" is on
and the routing status is `NEEDS_ROUTING` (`agent_left`; a removal with status `TRANSFER`, or
after a transfer routing result, never ends it); the Flow or the user (`closed_by_flow`,
`cancelled_by_user`); a routing failure on initial routing (`routing_failed`); the token
(`token_expired`, below); an unrecoverable failure (`provider_error`). An `Inactive` session is
not ended: the next user message re-routes it.

# Tokens

Commands that use a token carry it as a [`Credential`] with its expiry, and the session never
issues one within a safety margin of that expiry: no call carries a token known to be expired.

- A **verified user's** token is renewed before it expires by minting a new one with the
  identity token (same subject, so the conversation carries on). If renewal keeps failing, the
  handover ends `token_expired` when the grace period after expiry
  ([`SessionConfig::token_grace`], Cognigy's `SALESFORCE_MIAW_ACCESS_TOKEN_GRACE_PERIOD`) runs
  out.
- A **guest's** token cannot be renewed: a new guest token is a new subject that cannot reach
  the conversation, and a continuation token keeps the expiry. Waiting out a grace period after
  expiry would leave the agent with a conversation nobody can answer and nothing able to close
  it, so a guest handover ends `token_expired` shortly *before* expiry
  ([`SessionConfig::token_renew_lead`]), closing the conversation on both sides while the token
  still works.
- A 401 before expiry makes the token unusable: a continuation token is tried first, then
  (verified users) a new token, then the handover ends as above. Retries back off; nothing
  hammers Salesforce.

# Delivery guarantees

- Entries are de-duplicated by identifier whether they arrive on the stream, in a replay or in
  a backfill; a safety poll and a backfill after every reconnect recover what the stream
  missed.
- Agent-side entries reach the bot in server order, entries the stream withheld included: an
  entry from the stream waits (at most [`SessionConfig::stream_hold`]) for a listing of the
  conversation and is relayed merged with what the listing found. What goes without that
  listing is reported ([`Observation::HoldReleased`]); a stretch no page can reach is
  reported too ([`Observation::EntriesMissed`], [`Outcome::missed`]).
- User messages go to Salesforce one at a time, in order, at most
  [`SessionConfig::pacing_max_messages`] per [`SessionConfig::pacing_window`]; a retry reuses
  the message id, so the agent never sees a message twice. A message Salesforce refuses for good
  is listed in the [`Outcome`], never silently dropped.
- Deliveries to the bot platform go one at a time, in order; a failing one holds the later ones
  back, and after the retry budget the handover ends with `error` and the deliveries are kept
  ([`Session::failed_bot_deliveries`]).

# Persistence and restarts

With the `serde` feature, a [`Session`], its [`Input`]s and its [`Command`]s (all but
[`Command::Record`], which is never stored) serialize with serde, in any format the embedder
picks. A durable driver stores the session together with the commands one `handle` call
returned (an outbox) in one transaction, marks a command done in the same transaction as the
input that reports its result, and after a restart:

1. loads the session and feeds [`Input::Resumed`]: the old connections are gone, so the
   session reopens its stream from the last event id (which it stored) and backfills;
2. runs the outbox's pending commands again, except `OpenStream` and `CloseStream`; they carry
   the same call ids and idempotency ids, so results find their calls and Salesforce and the
   bot platform see nothing twice. The token is reused: nothing is minted again.

A serialized session holds the access token in plain text; encrypt it at rest.

# Crate features

- `sim`: a deterministic simulation of Salesforce and the bot platform ([`sim`]), for tests of
  this crate and of anything that embeds it.
- `serde`: `Serialize` and `Deserialize` for sessions, inputs and commands.
*/

#![warn(missing_docs)]

mod backoff;
mod bot;
mod dedupe;
mod gate;
mod ids;
mod io;
mod pacing;
pub mod ports;
mod salesforce;
mod secret;
mod session;
mod settings;
mod time;
mod timer;
pub mod transcript;

#[cfg(feature = "sim")]
pub mod sim;

pub use bot::{
    AgentMessage, BotDelivery, DeliveryFailure, EndReason, HandoverStatus, MissedEntries,
    Notification, Outcome, ProviderEvent, QueueUpdate, StatusUpdate, TerminalStatus, UserMessage,
};
pub use gate::{Admission, StartGate};
pub use ids::{
    BotMessageId, CallId, ClientEntryId, ConversationId, EntryId, EventId, HandoverId, IdError,
    RequestId,
};
pub use io::{BotCall, Command, EchoMatch, Input, Observation, ReconnectReason, SalesforceCall};
pub use salesforce::{
    Acknowledgement, AcknowledgementKind, Attachment, CallFailure, ChoiceOption, ChoiceStyle,
    ConversationEntry, Credential, EntryPayload, FileRef, IssuedToken, MessageContent, MintKind,
    OutboundBody, OutboundMessage, ParticipantChange, ParticipantOperation, Role, RoutingFailure,
    RoutingResult, RoutingStatus, RoutingType, SalesforceRequest, SalesforceResponse, Sender,
    SessionStatus, StreamClosed, StreamEvent, Subject,
};
pub use secret::{AccessToken, IdentityToken};
pub use session::{Phase, Session, USER_CONNECTED_TEXT, USER_DISCONNECTED_TEXT};
pub use settings::{
    ConfigError, CopilotUrl, CopilotUrlError, HandoverRequest, HandoverSettings, QueueAlternative,
    QueueSettings, RetryPolicy, RoutingAttributes, SessionConfig,
};
pub use time::Timestamp;
pub use timer::Timer;
pub use transcript::{Speaker, TranscriptTurn};
