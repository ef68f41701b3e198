//! API keys: bearer tokens, compared in constant time.

use std::fmt;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// One API key the bridge accepts.
#[derive(Clone)]
pub struct ApiKey {
    /// A name for logs ("cognigy-prod"); never the key.
    pub name: String,
    /// SHA-256 of the key: the key itself is not kept.
    digest: [u8; 32],
    /// Whether it may list and force-close handovers.
    pub admin: bool,
}

impl ApiKey {
    /// The shortest key accepted: long enough that guessing is hopeless.
    pub const MIN_LEN: usize = 16;

    /// A key for the Flow's calls.
    pub fn new(name: impl Into<String>, key: &str) -> Result<Self, ApiKeyError> {
        Self::build(name.into(), key, false)
    }

    /// A key that may also use the admin routes.
    pub fn admin(name: impl Into<String>, key: &str) -> Result<Self, ApiKeyError> {
        Self::build(name.into(), key, true)
    }

    fn build(name: String, key: &str, admin: bool) -> Result<Self, ApiKeyError> {
        if key.chars().count() < Self::MIN_LEN {
            return Err(ApiKeyError { name });
        }
        Ok(Self {
            name,
            digest: Sha256::digest(key.as_bytes()).into(),
            admin,
        })
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// A key too short to be safe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("API key {name:?} is shorter than {min} characters", min = ApiKey::MIN_LEN)]
pub struct ApiKeyError {
    /// The key's name.
    pub name: String,
}

/// Who called: the matching key's name and rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub name: String,
    pub admin: bool,
}

/// Checks the bearer token against every key. The presented token is hashed first and every
/// key is compared, so neither the time taken nor an early exit tells anything about how close
/// a guess was or which key it resembled.
pub(crate) fn authenticate(keys: &[ApiKey], headers: &HeaderMap) -> Result<Caller, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found: Option<&ApiKey> = None;
    for key in keys {
        if bool::from(key.digest.ct_eq(&digest)) {
            found = Some(key);
        }
    }
    found
        .map(|key| Caller {
            name: key.name.clone(),
            admin: key.admin,
        })
        .ok_or_else(ApiError::unauthorized)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_a_configured_bearer_key_passes() {
        let keys = [
            ApiKey::new("flow", "flow-key-0123456789").unwrap(),
            ApiKey::admin("ops", "admin-key-0123456789").unwrap(),
        ];
        let flow = authenticate(&keys, &headers("Bearer flow-key-0123456789")).unwrap();
        assert_eq!(flow.name, "flow");
        assert!(!flow.admin);
        assert!(
            authenticate(&keys, &headers("bearer admin-key-0123456789"))
                .unwrap()
                .admin
        );
        for wrong in [
            "Bearer flow-key-012345678",
            "Basic flow-key-0123456789",
            "flow-key-0123456789",
            "Bearer ",
        ] {
            assert!(authenticate(&keys, &headers(wrong)).is_err(), "{wrong}");
        }
        assert!(authenticate(&keys, &HeaderMap::new()).is_err());
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_show_in_debug() {
        assert!(ApiKey::new("weak", "short").is_err());
        let key = ApiKey::new("flow", "flow-key-0123456789").unwrap();
        assert!(!format!("{key:?}").contains("flow-key"));
    }
}
