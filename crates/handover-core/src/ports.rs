//! The ports: what the app needs from Salesforce, the bot platform and storage.
//!
//! The core defines these traits and never calls them. The app turns each [`Command`] into a
//! port call and each result back into an [`Input`]; adapter crates implement the traits, so a
//! sandbox and production are swapped by choosing an implementation. Every method makes one
//! attempt: retries, pacing and ordering are the session's decisions, which is why they must
//! see every attempt.
//!
//! [`Command`]: crate::Command
//! [`Input`]: crate::Input

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::bot::{BotDelivery, DeliveryFailure};
use crate::gate::Admission;
use crate::ids::{CallId, EventId, HandoverId, RequestId};
use crate::io::{Command, Input};
use crate::salesforce::{
    CallFailure, Credential, SalesforceRequest, SalesforceResponse, StreamEvent,
};
use crate::session::Session;
use crate::time::Timestamp;

/// Salesforce Messaging for In-App and Web.
#[async_trait]
pub trait SalesforcePort: Send + Sync {
    /// Makes one request. [`SalesforceRequest::OpenStream`] and
    /// [`SalesforceRequest::CloseStream`] go through [`Self::open_stream`] and dropping the
    /// stream instead; an adapter answers them here with a `Rejected` failure.
    ///
    /// Implementations MUST bound every request with a timeout and report it as
    /// [`CallFailure::Transient`], so that every command gets a result.
    async fn execute(
        &self,
        credential: Option<&Credential>,
        request: &SalesforceRequest,
    ) -> Result<SalesforceResponse, CallFailure>;

    /// Connects the event stream of the credential's subject, resuming after `last_event_id`.
    async fn open_stream(
        &self,
        credential: &Credential,
        last_event_id: Option<&EventId>,
    ) -> Result<Box<dyn EventStream>, CallFailure>;
}

/// One connection of the event stream. Dropping it closes the connection.
#[async_trait]
pub trait EventStream: Send {
    /// The next event. `None` means the connection ended; the app reports that as
    /// [`StreamEvent::Closed`].
    async fn next_event(&mut self) -> Option<StreamEvent>;
}

/// Where the bot platform takes deliveries for one conversation (Cognigy: the Endpoint URL,
/// the URL token and the user and session ids).
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BotAddress {
    /// The Endpoint's base URL.
    pub endpoint_url: String,
    /// The Endpoint's URL token. Anyone holding it can post into the Endpoint, so it is
    /// redacted from `Debug`.
    pub url_token: String,
    /// The user id (any string; big integers stay strings).
    pub user_id: String,
    /// The session id.
    pub session_id: String,
}

impl fmt::Debug for BotAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotAddress")
            .field("endpoint_url", &self.endpoint_url)
            .field("url_token", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .finish()
    }
}

/// The bot platform (Cognigy Notify and Inject).
#[async_trait]
pub trait BotPort: Send + Sync {
    /// Delivers one item. Implementations MUST bound the call with a timeout.
    async fn deliver(
        &self,
        address: &BotAddress,
        delivery: &BotDelivery,
    ) -> Result<(), DeliveryFailure>;
}

/// A stored session's version, for optimistic concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

/// A lease's fencing token: grows with every new holder, so a write from a holder that lost
/// its lease can be told apart and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

/// The right to drive a session's stream, timers and outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it.
    pub owner: String,
    /// Its fencing token.
    pub fencing: FencingToken,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// A stored handover.
#[derive(Clone, Debug)]
pub struct StoredHandover {
    /// The state machine.
    pub session: Session,
    /// Where its deliveries go.
    pub address: BotAddress,
    /// Its version.
    pub version: Version,
}

/// One write of a session's progress: the new state, the commands it produced, and what it
/// consumed, in one transaction.
#[derive(Clone, Copy, Debug)]
pub struct Commit<'a> {
    /// The new state.
    pub session: &'a Session,
    /// The version the state was loaded at; a newer stored version refuses the write.
    pub expected: Version,
    /// The writer's lease; a newer lease refuses the write.
    pub fencing: FencingToken,
    /// The commands the `handle` calls since the last commit returned, in order. They are
    /// stored as pending (an outbox); [`Command::Record`] is not stored.
    pub outbox: &'a [Command],
    /// Commands whose results were fed to the session since the last commit: no longer
    /// pending.
    pub done: &'a [CallId],
    /// The inbox was applied up to and including this position.
    pub inbox_through: Option<u64>,
    /// When the write happens (recorded as the end time once the session is finished, for
    /// retention).
    pub now: Timestamp,
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stored version is newer than the one the write was based on.
    #[error("the session changed since it was read (stored version {stored:?})")]
    Conflict {
        /// The version in the store.
        stored: Version,
    },
    /// The writer's lease is no longer current.
    #[error("stale fencing token")]
    Fenced,
    /// No such session.
    #[error("no handover {0}")]
    NotFound(HandoverId),
    /// The handover has ended; it takes no more input.
    #[error("handover {0} has ended")]
    Ended(HandoverId),
    /// The store could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read (for example a missing or wrong encryption key).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

/// Durable sessions, a transactional outbox, a per-session inbox, and leases.
///
/// The contract, for every implementation (memory, SQLite, PostgreSQL):
/// - a session is written only with the version it was read at and the current lease's
///   fencing token;
/// - the commands a write carries are pending until a later write lists them as done;
/// - inputs appended by any instance are kept in order until a write says they were applied;
/// - one start request per Cognigy session is admitted at a time ([`StartGate`] rules), and
///   the gate opens again once a write shows the handover finished.
///
/// [`StartGate`]: crate::StartGate
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Admits a start request for the address's Cognigy session (user id and session id) by
    /// the [`StartGate`](crate::StartGate) rules, and stores the session if it is new.
    async fn admit(
        &self,
        request: &RequestId,
        session: &Session,
        address: &BotAddress,
        now: Timestamp,
    ) -> Result<Admission, StoreError>;

    /// Loads a handover.
    async fn load(&self, id: HandoverId) -> Result<Option<StoredHandover>, StoreError>;

    /// Writes a session's progress in one transaction (see [`Commit`]). Returns the new
    /// version.
    async fn commit(&self, commit: Commit<'_>) -> Result<Version, StoreError>;

    /// Commands stored but not yet done, in order: what to run again after a restart.
    async fn pending_commands(&self, id: HandoverId) -> Result<Vec<Command>, StoreError>;

    /// Appends an input from any instance (user messages, presence, cancel, close). Durable
    /// when this returns. Returns its position in the session's inbox.
    async fn append_input(&self, id: HandoverId, input: &Input) -> Result<u64, StoreError>;

    /// The inputs not yet applied, oldest first, with their positions.
    async fn pending_inputs(&self, id: HandoverId) -> Result<Vec<(u64, Input)>, StoreError>;

    /// Takes the lease if it is free or lapsed at `now`. `None` if someone else holds it.
    /// Every new holder gets a larger fencing token than any before.
    async fn acquire_lease(
        &self,
        id: HandoverId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a held lease. [`StoreError::Fenced`] if it is no longer held.
    async fn renew_lease(
        &self,
        id: HandoverId,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;

    /// Gives the lease up at once (graceful shutdown).
    async fn release_lease(&self, id: HandoverId, lease: &Lease) -> Result<(), StoreError>;

    /// Frees every lease held under `owner`, at once. An instance with a fixed name calls it
    /// when it starts: the leases its previous run held (a crash, a `kill -9`) are its own,
    /// so it takes its handovers back now instead of after they lapse. Every new holder still
    /// gets a larger fencing token, so a stray process of the same name is fenced off. Returns
    /// how many leases were freed.
    async fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError>;

    /// Handovers that have not finished, oldest first: what the instances share out.
    async fn live_handovers(&self) -> Result<Vec<HandoverId>, StoreError>;

    /// Deletes handovers that finished before `before`. Returns how many.
    async fn purge_ended(&self, before: Timestamp) -> Result<u64, StoreError>;
}
