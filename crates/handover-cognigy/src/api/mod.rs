//! The bridge's inbound HTTP API, `/v1`: what a Cognigy Flow's HTTP Request nodes call.
//!
//! Every route but `/v1/openapi.json` needs an API key. Bodies are JSON, limited in size, and
//! checked field by field; the answer to a bad one names the field. The API keeps no state:
//! it turns requests into calls of [`Handovers`] and answers at once (202), so a Flow's 8 s
//! HTTP timeout is never near.

mod auth;
mod error;
mod handlers;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::auth::{ApiKey, ApiKeyError};
use self::auth::{Caller, authenticate};
use self::error::ApiError;
use crate::service::Handovers;

/// How the API behaves.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The keys it accepts. With none, every request but the OpenAPI document gets 401.
    pub keys: Vec<ApiKey>,
    /// The largest request body, in bytes (default 1 MiB: a long transcript fits).
    pub max_body_bytes: usize,
    /// How many handovers a list returns at most (default 100).
    pub max_list: usize,
    /// The longest user message, in characters (default 10,000: far above a chat line, far
    /// below a flood that would take Salesforce's 22 messages a minute hours to carry).
    pub max_message_chars: usize,
    /// Where a start's `endpointUrl` may point (the Cognigy client's own policy; Cognigy's
    /// SaaS domains by default). A start with another one gets 400 and nothing is stored.
    pub endpoint_hosts: handover_egress::EgressPolicy,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_list: 100,
            max_message_chars: 10_000,
            endpoint_hosts: crate::notify::endpoint_policy(
                &crate::notify::COGNIGY_SAAS_ENDPOINT_HOSTS,
            ),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub service: Arc<dyn Handovers>,
    pub config: Arc<ApiConfig>,
}

impl ApiState {
    /// The caller, or 401.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        authenticate(&self.config.keys, headers)
    }

    /// An admin caller, or 401/403.
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let caller = self.caller(headers)?;
        if caller.admin {
            Ok(caller)
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// The API as an axum router (state applied), serving `/v1/…` and `/v1/openapi.json`. Any
/// other path answers 404 with the `no_route` code.
pub fn router(service: Arc<dyn Handovers>, config: ApiConfig) -> Router {
    let (routes, openapi) = documented_routes();
    let state = ApiState {
        service,
        config: Arc::new(config),
    };
    let document = Arc::new(openapi);
    routes
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// The OpenAPI document of the API, as served at `/v1/openapi.json`.
pub fn openapi() -> OpenApi {
    documented_routes().1
}

/// The routes and their document, built together so that neither can have a route the other
/// lacks.
fn documented_routes() -> (Router<ApiState>, OpenApi) {
    let mut openapi = OpenApi::default();
    openapi.info = InfoBuilder::new()
        .title("Handover bridge API")
        .version("1")
        .description(Some(
            "Hands a Cognigy.AI conversation over to a Salesforce MIAW agent. Start a \
             handover, forward the user's messages and presence, read its status. Agent \
             messages reach the user through Cognigy Notify; statuses reach the Flow through \
             Inject.",
        ))
        .build();
    let (router, mut openapi) = OpenApiRouter::<ApiState>::with_openapi(openapi)
        .routes(routes!(handlers::start, handlers::list))
        .routes(routes!(handlers::get))
        .routes(routes!(handlers::message))
        .routes(routes!(handlers::user_connected))
        .routes(routes!(handlers::user_disconnected))
        .routes(routes!(handlers::typing))
        .routes(routes!(handlers::cancel))
        .routes(routes!(handlers::close))
        .routes(routes!(handlers::force_close))
        .split_for_parts();
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    (router, openapi)
}

/// A JSON body read with the size limit and parsed so that an error names the field.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        parse(&bytes).map(Self)
    }
}

/// Parses `bytes` as `T`. Syntax errors say where; wrong fields say which. Every body is a
/// JSON object: serde would otherwise take an array as the fields in order.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => {
            let what = match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(serde_json::Value::Array(_)) => "an array",
                Ok(serde_json::Value::String(_)) => "a string",
                Ok(serde_json::Value::Number(_)) => "a number",
                Ok(serde_json::Value::Bool(_)) => "a boolean",
                Ok(serde_json::Value::Null) => "null",
                Ok(serde_json::Value::Object(_)) | Err(_) => "not JSON",
            };
            return Err(ApiError::invalid_json(format!(
                "The body must be a JSON object, not {what}."
            )));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                // serde appends " at line L column C"; the path says more.
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(head, _)| head)
                    .to_owned();
                let (field, message) = missing_field(&path, &message)
                    .unwrap_or_else(|| (path.clone(), format!("{path}: {message}")));
                ApiError::field(field, message)
            }
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                ApiError::invalid_json(format!("The body is not valid JSON: {inner}"))
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::invalid_json(format!("The body is not valid JSON: {error}")))?;
    Ok(value)
}

/// serde reports a missing field at its parent's path; name the field itself.
fn missing_field(path: &str, message: &str) -> Option<(String, String)> {
    let field = message
        .strip_prefix("missing field `")?
        .split('`')
        .next()?
        .to_owned();
    let full = if path == "." {
        field
    } else {
        format!("{path}.{field}")
    };
    Some((full.clone(), format!("{full} is required")))
}
