//! JSON Web Tokens: the sandbox's access tokens (HS256, signed with a key made at start) and
//! the verification of customer identity tokens (RS256 or HS256 with configured keys).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::IdentityKey;

/// The claims of a sandbox access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The subject: `v2/iamessage/ANON/…` or `v2/iamessage/AUTH/…`.
    pub(crate) sub: String,
    /// The 15-character org id.
    #[serde(rename = "orgId")]
    pub(crate) org_id: String,
    /// The deployment.
    #[serde(rename = "esDeveloperName")]
    pub(crate) developer_name: String,
    /// A fresh client id per token (continuation tokens get a new one).
    #[serde(rename = "clientId")]
    pub(crate) client_id: String,
    /// The token's own id.
    pub(crate) jti: String,
    /// Issued at, seconds since the epoch.
    pub(crate) iat: u64,
    /// The sandbox's issue counter, so that "expire every token issued so far" is exact.
    pub(crate) seq: u64,
    /// Expiry, seconds since the epoch.
    pub(crate) exp: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past `exp`.
    #[error("Jwt is expired")]
    Expired,
}

/// Signs and verifies access tokens.
pub(crate) struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// A signer with a random key.
    pub(crate) fn random() -> Self {
        let mut secret = [0u8; 32];
        fastrand::fill(&mut secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// The compact JWT for `claims`.
    pub(crate) fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{header}.{payload}");
        let tag = hmac::sign(&self.key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of a token this signer issued, if its signature holds and it has not
    /// expired at `now_secs`.
    pub(crate) fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, JwtError> {
        let (input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| JwtError::Malformed)?;
        hmac::verify(&self.key, input.as_bytes(), &signature)
            .map_err(|_| JwtError::BadSignature)?;
        let (_, payload) = input.split_once('.').ok_or(JwtError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| JwtError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
        if now_secs >= claims.exp {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }
}

/// The subject (`sub`) of a customer identity token, if it verifies against one of `keys`,
/// has not expired and carries the expected issuer. Anything else yields `None`, which the
/// sandbox, like Salesforce, answers with a guest token.
pub(crate) fn verify_identity(
    token: &str,
    keys: &[IdentityKey],
    issuer: Option<&str>,
    now_secs: u64,
) -> Option<String> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let input = format!("{}.{payload}", token.split('.').next()?);
    let kid = header.get("kid").and_then(Value::as_str);
    let verified = keys.iter().any(|key| {
        let key_kid = match key {
            IdentityKey::Rsa { kid, .. } | IdentityKey::Oct { kid, .. } => kid.as_deref(),
        };
        if kid.is_some() && key_kid.is_some() && kid != key_kid {
            return false;
        }
        match (key, header.get("alg").and_then(Value::as_str)) {
            (IdentityKey::Rsa { n, e, .. }, Some("RS256")) => {
                let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
                    return false;
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        input.as_bytes(),
                        &signature,
                    )
                    .is_ok()
            }
            (IdentityKey::Oct { k, .. }, Some("HS256")) => {
                let Ok(secret) = URL_SAFE_NO_PAD.decode(k) else {
                    return false;
                };
                let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
                hmac::verify(&key, input.as_bytes(), &signature).is_ok()
            }
            _ => false,
        }
    });
    if !verified {
        return None;
    }
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims.get("exp").and_then(Value::as_u64)?;
    if now_secs >= exp {
        return None;
    }
    if let Some(issuer) = issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer)
    {
        return None;
    }
    claims.get("sub").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "v2/iamessage/ANON/x".to_owned(),
            org_id: "00D5e000000SBOX".to_owned(),
            developer_name: "Handover_Sandbox".to_owned(),
            client_id: "c".to_owned(),
            jti: "j".to_owned(),
            iat: 0,
            seq: 0,
            exp,
        }
    }

    #[test]
    fn access_tokens_round_trip_expire_and_resist_tampering() {
        let signer = Signer::random();
        let token = signer.sign(&claims(100));
        assert_eq!(signer.verify(&token, 99), Ok(claims(100)));
        assert_eq!(signer.verify(&token, 100), Err(JwtError::Expired));
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert!(signer.verify(&tampered, 0).is_err());
        assert_eq!(
            Signer::random().verify(&token, 0),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn hs256_identity_tokens_verify_with_the_shared_key() {
        let secret = b"identity-secret";
        let key = IdentityKey::Oct {
            kid: None,
            k: URL_SAFE_NO_PAD.encode(secret),
        };
        let sign = |claims: &str| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        };
        let good = sign(r#"{"sub":"user-1","exp":100,"iss":"idp"}"#);
        assert_eq!(
            verify_identity(&good, std::slice::from_ref(&key), Some("idp"), 50).as_deref(),
            Some("user-1")
        );
        assert_eq!(
            verify_identity(&good, std::slice::from_ref(&key), Some("other"), 50),
            None
        );
        assert_eq!(
            verify_identity(&good, std::slice::from_ref(&key), None, 100),
            None,
            "expired"
        );
        assert_eq!(verify_identity("not.a.jwt", &[key], None, 0), None);
    }
}
