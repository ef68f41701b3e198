//! The HTTP surface: Salesforce's REST and SSE endpoints, files, the control API and the
//! console, with CORS for browser clients.

mod control;
mod rest;
mod sse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, OptionalFromRequest};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::world::{ApiError, Followup, World};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    /// REST calls failed on purpose with 503, and with 429.
    injected: [AtomicU64; 2],
}

impl Shared {
    /// Shared state around a world.
    pub(crate) fn new(world: World) -> Arc<Self> {
        Arc::new(Self {
            world: Mutex::new(world),
            injected: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// How many REST calls failed on purpose: (503s, 429s).
    pub(crate) fn injected(&self) -> (u64, u64) {
        (
            self.injected[0].load(Ordering::Relaxed),
            self.injected[1].load(Ordering::Relaxed),
        )
    }

    /// The world, locked. Never held across an `await`.
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a bug in the sandbox; keep serving anyway.
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) type State = axum::extract::State<Arc<Shared>>;

/// The whole router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            header::ACCEPT,
            HeaderName::from_static("x-org-id"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-requested-with"),
        ])
        .expose_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    Router::new()
        .merge(rest::routes())
        .merge(sse::routes())
        .merge(control::routes())
        .layer(cors)
        .with_state(shared)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

/// The current time in epoch milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The bearer token of a request.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A JSON body parsed strictly: Salesforce rejects unknown properties with 400, and so does
/// the sandbox, with serde's message naming the field.
pub(crate) struct StrictJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|error| {
            ApiError::new(400, format!("Could not read the request body: {error}"))
        })?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|error| ApiError::new(400, format!("Invalid request body: {error}")))
    }
}

/// An optional strict JSON body: an empty body is `None`.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|error| {
            ApiError::new(400, format!("Could not read the request body: {error}"))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(|value| Some(Self(value)))
            .map_err(|error| ApiError::new(400, format!("Invalid request body: {error}")))
    }
}

/// Applies REST faults: added latency, then a random 503 or 429.
pub(crate) async fn chaos(shared: &Shared, conversation: Option<&str>) -> Result<(), ApiError> {
    let faults = shared.world().faults_for(conversation);
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.error_rate_5xx > 0.0 && fastrand::f64() < faults.error_rate_5xx {
        shared.injected[0].fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(503, "Service unavailable (injected fault)."));
    }
    if faults.error_rate_429 > 0.0 && fastrand::f64() < faults.error_rate_429 {
        shared.injected[1].fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(429, "Too many requests (injected fault)."));
    }
    Ok(())
}

/// Runs the scripted agent's next moves in the background.
pub(crate) fn schedule(shared: &Arc<Shared>, followups: Vec<Followup>) {
    for followup in followups {
        let shared = shared.clone();
        tokio::spawn(async move {
            match followup {
                Followup::Accept {
                    conversation,
                    agent,
                } => {
                    tokio::time::sleep(Duration::from_millis(agent.accept_after_ms)).await;
                    let result =
                        shared
                            .world()
                            .agent_accepts(now_ms(), &conversation, &agent.name, false);
                    if let Err(error) = result {
                        tracing::debug!(%conversation, message = %error.message, "scripted accept skipped");
                    }
                }
                Followup::Reply {
                    conversation,
                    text,
                    agent,
                } => {
                    tokio::time::sleep(Duration::from_millis(agent.reply_after_ms)).await;
                    let reply = agent.reply_template.replace("{text}", &text);
                    let mut world = shared.world();
                    let content = crate::world::AgentContent::Text(reply);
                    match world.agent_sends(now_ms(), &conversation, content, "Agent") {
                        Ok(_) => {
                            if world.scripted_reply_sent(&conversation, &agent) {
                                let _ = world.agent_ends(now_ms(), &conversation);
                            }
                        }
                        // Say so: a benchmark or test waiting for this reply must be able to
                        // tell a skipped reply from a lost one.
                        Err(error) => tracing::warn!(
                            %conversation,
                            message = %error.message,
                            "scripted reply skipped"
                        ),
                    }
                }
            }
        });
    }
}
