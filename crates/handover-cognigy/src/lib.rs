/*!
The bot side of the handover bridge, for Cognigy.AI.

- [`api`]: the bridge's inbound HTTP API (`/v1`), which a Flow's HTTP Request nodes call to
  start a handover, forward the user's messages, presence and typing, cancel or close it, and
  read its status. It is described by an OpenAPI document generated from the same code
  (`/v1/openapi.json`). It depends on a [`Handovers`] service, which the app implements.
- [`CognigyClient`]: the core's [`BotPort`](handover_core::ports::BotPort) over Cognigy's
  Endpoint APIs. Agent messages and bridge notices go to the user through Notify; handover
  statuses go into the Flow through Inject, with `data` mirroring Cognigy's `input.handover`.

Wire JSON lives here, as serde types; the core's types are plain Rust and converted at this
edge. Like every adapter, each call makes one attempt: retries, order and backoff are the
session's decisions.
*/

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))]

pub mod api;
mod notify;
mod outbound;
mod service;

pub use handover_egress::EgressPolicy;
pub use notify::{
    COGNIGY_SAAS_ENDPOINT_HOSTS, CognigyClient, CognigyConfig, EndpointRoutes, endpoint_policy,
};
pub use service::{HandoverView, Handovers, ListFilter, NewHandover, ServiceError};
