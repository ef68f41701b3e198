//! The inbound `/v1` API: any method, path and body gets an answer (a 4xx for anything
//! wrong), never a panic, and a 5xx only from the service, which here never fails.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request};
use handover_cognigy::api::{ApiConfig, ApiKey};
use handover_cognigy::{HandoverView, Handovers, ListFilter, NewHandover, ServiceError};
use handover_core::{Admission, HandoverId, Input, Phase, StartGate};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

const KEY: &str = "fuzz-key-0123456789abcdef";

/// A service that admits starts through the core's gate and keeps inputs in memory.
#[derive(Default)]
struct Memory {
    gate: Mutex<StartGate>,
    handovers: Mutex<Vec<(HandoverId, NewHandover)>>,
}

#[async_trait]
impl Handovers for Memory {
    async fn start(&self, handover: NewHandover) -> Result<Admission, ServiceError> {
        let id = handover.request.handover_id;
        let admission = self
            .gate
            .lock()
            .map_err(|_| ServiceError::Unavailable("poisoned".to_owned()))?
            .admit(handover.request_id.clone(), id);
        if admission == Admission::Started(id) {
            if let Ok(mut handovers) = self.handovers.lock() {
                handovers.push((id, handover));
            }
        }
        Ok(admission)
    }

    async fn input(&self, handover: HandoverId, _input: Input) -> Result<(), ServiceError> {
        let known = self
            .handovers
            .lock()
            .map(|h| h.iter().any(|(id, _)| *id == handover))
            .unwrap_or(false);
        if known { Ok(()) } else { Err(ServiceError::NotFound(handover)) }
    }

    async fn get(&self, handover: HandoverId) -> Result<HandoverView, ServiceError> {
        let handovers = self
            .handovers
            .lock()
            .map_err(|_| ServiceError::Unavailable("poisoned".to_owned()))?;
        let (_, started) = handovers
            .iter()
            .find(|(id, _)| *id == handover)
            .ok_or(ServiceError::NotFound(handover))?;
        Ok(HandoverView {
            handover_id: handover,
            conversation_id: started.request.conversation_id,
            user_id: started.address.user_id.clone(),
            session_id: started.address.session_id.clone(),
            phase: Phase::Requested,
            outcome: None,
        })
    }

    async fn list(&self, _filter: ListFilter) -> Result<Vec<HandoverView>, ServiceError> {
        Ok(Vec::new())
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = ApiConfig {
            keys: vec![ApiKey::admin("fuzz", KEY).expect("a valid key")],
            max_body_bytes: 64 * 1024,
            ..ApiConfig::default()
        };
        let router = handover_cognigy::api::router(Arc::new(Memory::default()), config);
        World { runtime, router }
    })
}

const PATHS: &[&str] = &[
    "/v1/handovers",
    "/v1/handovers/00000000-0000-4000-8000-000000000001",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/messages",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/typing",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/user-connected",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/user-disconnected",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/cancel",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/close",
    "/v1/handovers/00000000-0000-4000-8000-000000000001/force-close",
    "/v1/handovers/not-a-uuid/messages",
    "/v1/handovers?live=maybe&limit=-1",
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let path = PATHS[usize::from(selector & 0x0f) % PATHS.len()];
    let method = if selector & 0x10 == 0 { Method::POST } else { Method::GET };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if selector & 0x20 == 0 {
        request = request.header("authorization", format!("Bearer {KEY}"));
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let world = world();
    let response = world
        .runtime
        .block_on(world.router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status().as_u16();
    assert!(status < 500, "{path}: {status} for a service that never fails");
});
