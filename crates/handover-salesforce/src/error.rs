//! Errors of the Salesforce adapter, grouped by culprit, and their mapping into the core's
//! `CallFailure` at the edge.

use handover_core::CallFailure;

/// Why a call to Salesforce failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SalesforceError {
    /// The request did not get an answer: connection, TLS, timeout.
    #[error("transport: {0}")]
    Transport(String),
    /// Salesforce answered with an error status.
    #[error("Salesforce answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The `message` of the body, or the start of the body.
        message: String,
    },
    /// Salesforce answered 2xx with a body this adapter cannot read.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The request could not be made (a bad base URL, an attachment that cannot be fetched).
    #[error("invalid request: {0}")]
    Request(String),
}

impl From<SalesforceError> for CallFailure {
    fn from(error: SalesforceError) -> Self {
        match error {
            SalesforceError::Transport(message) => Self::Transient(message),
            SalesforceError::Status { status, message } => match status {
                401 => Self::Unauthorized,
                404 => Self::NotFound,
                409 => Self::Conflict,
                413 => Self::PayloadTooLarge,
                415 => Self::UnsupportedMediaType,
                417 => Self::NoMessagingSession,
                429 => Self::RateLimited,
                408 | 500..=599 => Self::Transient(format!("{status}: {message}")),
                _ => Self::Rejected { status, message },
            },
            SalesforceError::Decode(message) | SalesforceError::Request(message) => {
                Self::Rejected { status: 0, message }
            }
        }
    }
}

impl SalesforceError {
    pub(crate) fn transport(error: reqwest::Error) -> Self {
        // reqwest's message names the URL, never a header: no token can leak through it.
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        Self::Transport(format!("request {kind}: {}", error.without_url()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_core_does_about_them() {
        let status = |status| {
            CallFailure::from(SalesforceError::Status {
                status,
                message: "m".to_owned(),
            })
        };
        assert_eq!(status(401), CallFailure::Unauthorized);
        assert_eq!(status(417), CallFailure::NoMessagingSession);
        assert_eq!(status(429), CallFailure::RateLimited);
        assert_eq!(status(413), CallFailure::PayloadTooLarge);
        assert_eq!(status(415), CallFailure::UnsupportedMediaType);
        assert_eq!(status(409), CallFailure::Conflict);
        assert_eq!(status(404), CallFailure::NotFound);
        assert!(status(503).is_retryable());
        assert!(status(408).is_retryable());
        assert_eq!(
            status(400),
            CallFailure::Rejected {
                status: 400,
                message: "m".to_owned()
            }
        );
        assert!(CallFailure::from(SalesforceError::Transport("t".to_owned())).is_retryable());
    }
}
