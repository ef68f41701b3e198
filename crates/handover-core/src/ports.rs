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
use crate::ids::{CallId, EventId, HandoverId};
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
    /// The store could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read (for example a missing encryption key).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

/// Durable sessions, a transactional outbox, a per-session inbox, and leases.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new handover.
    async fn create(&self, session: &Session, address: &BotAddress) -> Result<Version, StoreError>;

    /// Loads a handover.
    async fn load(&self, id: HandoverId) -> Result<Option<StoredHandover>, StoreError>;

    /// Writes the new state and the commands it produced in one transaction, if the stored
    /// version is still `expected` and `fencing` is the current lease's token.
    async fn commit(
        &self,
        session: &Session,
        expected: Version,
        fencing: FencingToken,
        outbox: &[Command],
    ) -> Result<Version, StoreError>;

    /// Commands committed but not yet marked done, in order: what to run again after a crash.
    async fn pending_commands(&self, id: HandoverId) -> Result<Vec<Command>, StoreError>;

    /// Marks a command executed.
    async fn command_done(&self, id: HandoverId, call: CallId) -> Result<(), StoreError>;

    /// Appends an input from any instance (user messages, presence, cancel, close) before the
    /// API answers.
    async fn append_input(&self, id: HandoverId, input: &Input) -> Result<(), StoreError>;

    /// Removes and returns the inputs waiting for the lease holder, oldest first.
    async fn take_inputs(
        &self,
        id: HandoverId,
        fencing: FencingToken,
    ) -> Result<Vec<Input>, StoreError>;

    /// Takes the lease if it is free or lapsed. `None` if someone else holds it.
    async fn acquire_lease(
        &self,
        id: HandoverId,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a held lease.
    async fn renew_lease(
        &self,
        id: HandoverId,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;

    /// Gives the lease up at once (graceful shutdown).
    async fn release_lease(&self, id: HandoverId, lease: &Lease) -> Result<(), StoreError>;

    /// Deletes handovers that ended before `before`. Returns how many.
    async fn purge_ended(&self, before: Timestamp) -> Result<u64, StoreError>;
}
