/*!
The handover bridge application: the `handover` binary's parts, as a library so that the
end-to-end tests run the real thing in-process.

- [`config`]: configuration (figment layers, validation, redaction).
- [`runtime`]: one driver per live handover over the store's outbox, inbox and leases.
- [`service`]: the API's `Handovers` over the store and the runtime.
- [`app`]: everything assembled: store, adapters, runtime, HTTP (`/v1`, `/metrics`,
  `/healthz`, `/readyz`), background tasks.
- [`demo`]: the bridge with both sandboxes in one process.
- [`metrics`]: Prometheus metrics.
*/

pub mod app;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod runtime;
pub mod service;
