//! A `Handovers` service for tests: the core's `StartGate` per Cognigy session, and one driver
//! (`driver.rs`) per handover delivering through the real Cognigy adapter. No store: what the
//! app (with its store and runtime) will do durably, this does in memory, so that the API can
//! be exercised end to end over HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use handover_cognigy::{
    CognigyClient, HandoverView, Handovers, ListFilter, NewHandover, ServiceError,
};
use handover_core::ports::BotAddress;
use handover_core::*;
use handover_salesforce::MiawClient;

use super::driver::{self, Running};

pub struct LocalHandovers {
    salesforce: MiawClient,
    cognigy: CognigyClient,
    config: SessionConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    gates: HashMap<(String, String), StartGate>,
    running: BTreeMap<HandoverId, (BotAddress, ConversationId, Running<CognigyClient>)>,
    order: Vec<HandoverId>,
}

impl LocalHandovers {
    pub fn new(salesforce: MiawClient, cognigy: CognigyClient, config: SessionConfig) -> Arc<Self> {
        Arc::new(Self {
            salesforce,
            cognigy,
            config,
            state: Mutex::new(State::default()),
        })
    }

    /// The MIAW conversation of a handover.
    pub fn conversation(&self, id: HandoverId) -> Option<ConversationId> {
        self.state
            .lock()
            .unwrap()
            .running
            .get(&id)
            .map(|(_, c, _)| *c)
    }
}

fn view(
    id: HandoverId,
    address: &BotAddress,
    conversation: ConversationId,
    running: &Running<CognigyClient>,
) -> HandoverView {
    let (phase, outcome) = running.status.lock().unwrap().clone();
    HandoverView {
        handover_id: id,
        conversation_id: conversation,
        user_id: address.user_id.clone(),
        session_id: address.session_id.clone(),
        phase,
        outcome,
    }
}

#[async_trait]
impl Handovers for LocalHandovers {
    async fn start(&self, handover: NewHandover) -> Result<Admission, ServiceError> {
        if let Some(name) = handover.request.deployment {
            return Err(ServiceError::UnknownDeployment(name));
        }
        let mut state = self.state.lock().unwrap();
        let key = (
            handover.address.user_id.clone(),
            handover.address.session_id.clone(),
        );
        let live = state.gates.get(&key).and_then(StartGate::live);
        if let Some(live) = live
            && state
                .running
                .get(&live)
                .is_some_and(|(_, _, r)| r.status.lock().unwrap().1.is_some())
        {
            state.gates.get_mut(&key).unwrap().ended(live);
        }
        let id = handover.request.handover_id;
        let admission = state
            .gates
            .entry(key)
            .or_default()
            .admit(handover.request_id, id);
        if admission == Admission::Started(id) {
            let conversation = handover.request.conversation_id;
            let running = driver::start_with(
                self.salesforce.clone(),
                Arc::new(self.cognigy.clone()),
                handover.address.clone(),
                handover.request,
                self.config.clone(),
            );
            state.order.push(id);
            state
                .running
                .insert(id, (handover.address, conversation, running));
        }
        Ok(admission)
    }

    async fn input(&self, handover: HandoverId, input: Input) -> Result<(), ServiceError> {
        let state = self.state.lock().unwrap();
        let (_, _, running) = state
            .running
            .get(&handover)
            .ok_or(ServiceError::NotFound(handover))?;
        if running.status.lock().unwrap().1.is_some() {
            return Err(ServiceError::Ended(handover));
        }
        running
            .inputs
            .send(input)
            .map_err(|_| ServiceError::Ended(handover))
    }

    async fn get(&self, handover: HandoverId) -> Result<HandoverView, ServiceError> {
        let state = self.state.lock().unwrap();
        let (address, conversation, running) = state
            .running
            .get(&handover)
            .ok_or(ServiceError::NotFound(handover))?;
        Ok(view(handover, address, *conversation, running))
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<HandoverView>, ServiceError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .order
            .iter()
            .rev()
            .map(|id| {
                let (address, conversation, running) = &state.running[id];
                view(*id, address, *conversation, running)
            })
            .filter(|v| filter.live.is_none_or(|live| live == v.outcome.is_none()))
            .filter(|v| filter.user_id.as_deref().is_none_or(|u| u == v.user_id))
            .filter(|v| {
                filter
                    .session_id
                    .as_deref()
                    .is_none_or(|s| s == v.session_id)
            })
            .take(filter.limit)
            .collect())
    }
}
