/*!
Durable handover sessions: the core's [`SessionStore`](handover_core::ports::SessionStore) on
memory ([`MemoryStore`]), SQLite (the embedded default) and PostgreSQL (several instances)
([`SqlStore`]).

What it keeps, per handover: the session (which holds the token, the MIAW conversation id, the
last SSE event id and the de-duplication set of entry identifiers), its version for optimistic
concurrency, the bot-side address, an outbox of commands not yet done, an inbox of inputs not
yet applied, and a lease with a fencing token. Per Cognigy session it keeps the start gate
(idempotent starts, one live handover at a time).

Every value that can hold a secret or a customer's words (the session, the address with its
URL token, commands, inputs) is serde JSON sealed with AES-256-GCM under a key id
([`Keyring`]); the plain columns hold ids, versions, times and lease data only.
*/

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod codec;
mod crypto;
mod memory;
mod sql;
mod sqlite;
mod writer;

use handover_core::ports::BotAddress;
use handover_core::{CallId, Command, HandoverId, Outcome, Phase, SalesforceRequest, Session};

pub use crypto::{KeyError, Keyring, OpenError};
pub use memory::MemoryStore;

pub use sql::{INBOX_CHANNEL, InboxListener, SqlBackend, SqlStore};

/// Which handovers a list shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryFilter {
    /// Only those still live (`Some(true)`) or ended (`Some(false)`).
    pub live: Option<bool>,
    /// Only this Cognigy user.
    pub user_id: Option<String>,
    /// Only this Cognigy session.
    pub session_id: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// What a list of handovers shows, without decrypting more than the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The handover.
    pub handover_id: HandoverId,
    /// Cognigy's user id.
    pub user_id: String,
    /// Cognigy's session id.
    pub session_id: String,
    /// Its MIAW conversation.
    pub conversation_id: handover_core::ConversationId,
    /// Where it stands.
    pub phase: Phase,
    /// How it ended.
    pub outcome: Option<Outcome>,
}

impl Summary {
    fn of(session: &Session, user_id: String, session_id: String) -> Self {
        Self {
            handover_id: session.handover_id(),
            user_id,
            session_id,
            conversation_id: session.conversation_id(),
            phase: session.phase(),
            outcome: session.outcome().cloned(),
        }
    }
}

/// The start gate's key: one Cognigy session.
fn gate_key(address: &BotAddress) -> (String, String) {
    (address.user_id.clone(), address.session_id.clone())
}

/// The call a stored command answers to; `None` for what is never stored: observations, and
/// stream opening and closing, which belong to a process's connection and are not re-run
/// after a restart (the session reopens its stream on `Input::Resumed`).
fn call_of(command: &Command) -> Option<CallId> {
    match command {
        Command::Salesforce(call) => match call.request {
            SalesforceRequest::OpenStream { .. } | SalesforceRequest::CloseStream => None,
            SalesforceRequest::MintToken(_)
            | SalesforceRequest::RenewToken(_)
            | SalesforceRequest::ContinueToken
            | SalesforceRequest::CreateConversation { .. }
            | SalesforceRequest::SendMessage { .. }
            | SalesforceRequest::SendTyping { .. }
            | SalesforceRequest::Acknowledge { .. }
            | SalesforceRequest::ListEntries { .. }
            | SalesforceRequest::FetchRoutingStatus { .. }
            | SalesforceRequest::CloseConversation { .. }
            | SalesforceRequest::RevokeToken => Some(call.id),
        },
        Command::Bot(call) => Some(call.id),
        Command::Record(_) => None,
    }
}
