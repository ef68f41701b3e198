//! What the inbound API needs from whoever runs the handovers (the app): admit a new one,
//! take an input for a live one, and show them. The API turns HTTP into these calls and their
//! results back into HTTP; it keeps no state of its own, so any number of instances can serve
//! it in front of one store.

use async_trait::async_trait;
use handover_core::ports::BotAddress;
use handover_core::{
    Admission, ConversationId, HandoverId, HandoverRequest, Input, Outcome, Phase, RequestId,
};

/// A start request, checked and complete: the bridge's ids are chosen, the Copilot URL is
/// built.
#[derive(Clone, Debug)]
pub struct NewHandover {
    /// The caller's idempotency key (S07).
    pub request_id: RequestId,
    /// Where the user and the Flow are reached.
    pub address: BotAddress,
    /// The handover itself (with the Salesforce deployment it names, if any).
    pub request: HandoverRequest,
}

/// One handover as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoverView {
    /// The bridge's id.
    pub handover_id: HandoverId,
    /// The MIAW conversation.
    pub conversation_id: ConversationId,
    /// Cognigy's user id.
    pub user_id: String,
    /// Cognigy's session id.
    pub session_id: String,
    /// Where it stands.
    pub phase: Phase,
    /// How it ended, once it has.
    pub outcome: Option<Outcome>,
}

/// Which handovers to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only live ones (`Some(true)`), only ended ones (`Some(false)`), or all.
    pub live: Option<bool>,
    /// Only this Cognigy user.
    pub user_id: Option<String>,
    /// Only this Cognigy session.
    pub session_id: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Why the service could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No such handover.
    #[error("no handover {0}")]
    NotFound(HandoverId),
    /// The handover has ended; it takes no more input.
    #[error("handover {0} has ended")]
    Ended(HandoverId),
    /// The start request names a Salesforce deployment that is not configured.
    #[error("no Salesforce deployment is configured under the name {0:?}")]
    UnknownDeployment(String),
    /// The bridge cannot take work right now (store unreachable, shutting down).
    #[error("the bridge is unavailable: {0}")]
    Unavailable(String),
    /// This instance already drives as many handovers as it may; a new start is refused
    /// before anything is stored.
    #[error("this instance drives its limit of {max_live} live handovers")]
    AtCapacity {
        /// The limit.
        max_live: usize,
    },
}

/// The handovers behind the API. The app implements it over its store and runtime; tests
/// implement it with fakes.
#[async_trait]
pub trait Handovers: Send + Sync {
    /// Admits a start request: a new handover, the one an earlier identical request started
    /// (S07), or a conflict with the live handover of the same Cognigy session (S08). It must
    /// return quickly: the work happens after the answer.
    async fn start(&self, handover: NewHandover) -> Result<Admission, ServiceError>;

    /// Hands an input (a user message, presence, typing, cancel, close) to a live handover.
    /// It is durable when this returns.
    async fn input(&self, handover: HandoverId, input: Input) -> Result<(), ServiceError>;

    /// One handover.
    async fn get(&self, handover: HandoverId) -> Result<HandoverView, ServiceError>;

    /// Handovers, newest first.
    async fn list(&self, filter: ListFilter) -> Result<Vec<HandoverView>, ServiceError>;
}
