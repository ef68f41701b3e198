//! The API's `Handovers` over the store and the runtime: admit by the start gate (in the
//! store, so across instances), append inputs to the inbox before answering, read views.

use async_trait::async_trait;
use handover_cognigy::{HandoverView, Handovers, ListFilter, NewHandover, ServiceError};
use handover_core::ports::StoreError;
use handover_core::{Admission, HandoverId, Input, Session};
use handover_store::{MemoryStore, SqlStore, SummaryFilter};

use crate::runtime::{Runtime, now};

/// The store, with what only the concrete stores offer (lists).
#[derive(Clone, Debug)]
pub enum Lists {
    /// In memory.
    Memory(std::sync::Arc<MemoryStore>),
    /// SQLite or PostgreSQL.
    Sql(std::sync::Arc<SqlStore>),
}

/// The bridge's handovers.
#[derive(Clone, Debug)]
pub struct AppHandovers {
    runtime: Runtime,
    lists: Lists,
}

impl AppHandovers {
    /// Handovers driven by `runtime`, listed from `lists` (the same store).
    pub fn new(runtime: Runtime, lists: Lists) -> Self {
        Self { runtime, lists }
    }
}

fn service_error(error: StoreError) -> ServiceError {
    match error {
        StoreError::NotFound(id) => ServiceError::NotFound(id),
        StoreError::Ended(id) => ServiceError::Ended(id),
        other @ (StoreError::Conflict { .. }
        | StoreError::Fenced
        | StoreError::Unavailable(_)
        | StoreError::Corrupt(_)) => ServiceError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl Handovers for AppHandovers {
    async fn start(&self, handover: NewHandover) -> Result<Admission, ServiceError> {
        if self.runtime.is_stopping() {
            return Err(ServiceError::Unavailable(
                "the bridge is shutting down".to_owned(),
            ));
        }
        if let Some(name) = handover.request.deployment.as_deref()
            && !self.runtime.has_deployment(name)
        {
            return Err(ServiceError::UnknownDeployment(name.to_owned()));
        }
        // Room first, so that a start this instance could not drive is never admitted.
        let Some(room) = self.runtime.take_room() else {
            self.runtime.metrics().starts_refused_at_capacity.inc();
            return Err(ServiceError::AtCapacity {
                max_live: self.runtime.max_live(),
            });
        };
        let session = Session::new(handover.request, self.runtime.session_config().clone());
        let admission = self
            .runtime
            .store()
            .admit(&handover.request_id, &session, &handover.address, now())
            .await
            .map_err(service_error)?;
        if let Admission::Started(id) = admission {
            self.runtime.metrics().started.inc();
            self.runtime.drive(id, true, room);
        }
        Ok(admission)
    }

    async fn input(&self, handover: HandoverId, input: Input) -> Result<(), ServiceError> {
        self.runtime
            .store()
            .append_input(handover, &input)
            .await
            .map_err(service_error)?;
        self.runtime.wake(handover);
        Ok(())
    }

    async fn get(&self, handover: HandoverId) -> Result<HandoverView, ServiceError> {
        let stored = self
            .runtime
            .store()
            .load(handover)
            .await
            .map_err(service_error)?
            .ok_or(ServiceError::NotFound(handover))?;
        Ok(HandoverView {
            handover_id: handover,
            conversation_id: stored.session.conversation_id(),
            user_id: stored.address.user_id,
            session_id: stored.address.session_id,
            phase: stored.session.phase(),
            outcome: stored.session.outcome().cloned(),
        })
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<HandoverView>, ServiceError> {
        let filter = SummaryFilter {
            live: filter.live,
            user_id: filter.user_id,
            session_id: filter.session_id,
            limit: filter.limit,
        };
        let summaries = match &self.lists {
            Lists::Memory(store) => store.summaries(&filter),
            Lists::Sql(store) => store.summaries(&filter).await,
        }
        .map_err(service_error)?;
        Ok(summaries
            .into_iter()
            .map(|summary| HandoverView {
                handover_id: summary.handover_id,
                conversation_id: summary.conversation_id,
                user_id: summary.user_id,
                session_id: summary.session_id,
                phase: summary.phase,
                outcome: summary.outcome,
            })
            .collect())
    }
}
