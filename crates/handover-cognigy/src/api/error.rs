//! API errors: one JSON shape, a stable code, the field at fault.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use handover_core::HandoverId;

use super::wire::{ErrorBody, ErrorDetail};
use crate::service::ServiceError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                field: None,
                handover_id: None,
            },
            retry_after: None,
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send a valid API key as `Authorization: Bearer <key>`.",
        )
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This route needs an admin API key.",
        )
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The body is larger than {limit} bytes."),
        )
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This route does not take that method; /v1/openapi.json lists the ones it takes.",
        )
    }

    /// A user message longer than the configured limit.
    pub(crate) fn text_too_long(limit: usize) -> Self {
        let mut error = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!("text is longer than {limit} characters (api.max_message_chars)."),
        );
        error.detail.field = Some("text".to_owned());
        error
    }

    pub(crate) fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// A field with a wrong value; `field` is its path in the body.
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::BAD_REQUEST, "invalid_field", message);
        error.detail.field = Some(field.into());
        error
    }

    pub(crate) fn unknown_handover(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("There is no handover {id}."),
        )
    }

    /// A handover id in the path that cannot even be read (bad percent-encoding, not UTF-8).
    pub(crate) fn unreadable_handover() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is no handover with this id: it is not readable text.",
        )
    }

    pub(crate) fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "There is no such route; see /v1/openapi.json.",
        )
    }

    pub(crate) fn conflict(live: HandoverId) -> Self {
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "conflict",
            "This Cognigy session already has a live handover.",
        );
        error.detail.handover_id = Some(live.to_string());
        error
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(id) => Self::unknown_handover(&id.to_string()),
            ServiceError::Ended(id) => {
                let mut error = Self::new(
                    StatusCode::CONFLICT,
                    "ended",
                    "The handover has ended and takes no more input.",
                );
                error.detail.handover_id = Some(id.to_string());
                error
            }
            ServiceError::UnknownDeployment(name) => Self::field(
                "deployment",
                format!("No Salesforce deployment is configured under the name {name:?}."),
            ),
            ServiceError::Unavailable(reason) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("The bridge cannot take this now: {reason}"),
            ),
            ServiceError::AtCapacity { max_live } => {
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "at_capacity",
                    format!(
                        "This instance drives its limit of {max_live} live handovers. \
                         Nothing was started; try again later or on another instance."
                    ),
                );
                error.retry_after = Some(AT_CAPACITY_RETRY_AFTER_SECS);
                error
            }
        }
    }
}

/// `Retry-After` of an `at_capacity` answer: handovers last minutes, so soon is pointless.
const AT_CAPACITY_RETRY_AFTER_SECS: u32 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
