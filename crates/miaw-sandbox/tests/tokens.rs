//! Access tokens: guest, verified (and the silent guest fallback), continuation, revoke,
//! expiry, validation and the org rate limit.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use miaw_sandbox::{IdentityKey, SandboxConfig};
use reqwest::{Method, StatusCode};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "/iamessage/api/v2/authorization/unauthenticated/access-token";
const VERIFIED: &str = "/iamessage/api/v2/authorization/authenticated/access-token";
const CONTINUATION: &str = "/iamessage/api/v2/authorization/continuation-access-token";

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn test_key() -> RsaKeyPair {
    let pem = include_str!("identity-test-key.pem");
    let base64: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .unwrap();
    RsaKeyPair::from_pkcs8(&der).unwrap()
}

fn jwk(key: &RsaKeyPair) -> IdentityKey {
    let public: ring::signature::RsaPublicKeyComponents<Vec<u8>> = key.public().into();
    IdentityKey::Rsa {
        kid: Some("test".to_owned()),
        n: URL_SAFE_NO_PAD.encode(&public.n),
        e: URL_SAFE_NO_PAD.encode(&public.e),
    }
}

fn identity_token(key: &RsaKeyPair, subject: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"test"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(json!({ "sub": subject, "iss": "test-idp", "exp": now + exp_offset }).to_string());
    let input = format!("{header}.{payload}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn verified_body(identity: &str) -> Value {
    let mut body = token_body();
    body["authorizationType"] = json!("JWT");
    body["customerIdentityToken"] = json!(identity);
    body
}

#[tokio::test]
async fn a_guest_token_is_a_jwt_with_the_guest_lifetime() {
    let harness = Harness::start().await;
    let (token, body) = harness.guest().await;
    let claims = claims(&token);
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        360 * 60
    );
    let subject = body["context"]["endUser"]["subject"].as_str().unwrap();
    assert!(subject.starts_with("v2/iamessage/ANON/"), "{subject}");
    assert_eq!(body["lastEventId"], "0");
}

#[tokio::test]
async fn a_verified_token_needs_an_identity_token_that_verifies() {
    let key = test_key();
    let config = SandboxConfig {
        identity_keys: vec![jwk(&key)],
        identity_issuer: Some("test-idp".to_owned()),
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let good = identity_token(&key, "customer-42", 300);
    let response = harness
        .call(Method::POST, VERIFIED, None, Some(verified_body(&good)))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["context"]["endUser"]["subject"],
        "v2/iamessage/AUTH/SandboxKeyset/uid:customer-42"
    );
    let claims = claims(body["accessToken"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60 * 60
    );

    // A bad identity token silently yields a guest token, with 200, like Salesforce.
    for bad in [
        identity_token(&key, "customer-42", -10),
        format!("{good}x"),
        "garbage".to_owned(),
    ] {
        let response = harness
            .call(Method::POST, VERIFIED, None, Some(verified_body(&bad)))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let subject = body["context"]["endUser"]["subject"].as_str().unwrap();
        assert!(subject.starts_with("v2/iamessage/ANON/"), "{subject}");
    }
}

#[tokio::test]
async fn a_continuation_token_keeps_the_subject_and_the_expiry() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let response = harness
        .call(Method::GET, CONTINUATION, Some(&token), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let continued = body["accessToken"].as_str().unwrap();
    assert_ne!(continued, token);
    let (old, new) = (claims(&token), claims(continued));
    assert_eq!(old["sub"], new["sub"]);
    assert_eq!(old["exp"], new["exp"], "the expiry is not extended");
    assert_ne!(old["clientId"], new["clientId"]);
}

#[tokio::test]
async fn only_a_verified_token_can_be_revoked_and_then_stops_working() {
    let key = test_key();
    let config = SandboxConfig {
        identity_keys: vec![jwk(&key)],
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (guest, _) = harness.guest().await;
    let response = harness
        .call(Method::DELETE, VERIFIED, Some(&guest), None)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = harness
        .call(
            Method::POST,
            VERIFIED,
            None,
            Some(verified_body(&identity_token(&key, "u", 300))),
        )
        .await;
    let token = response.json::<Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = harness
        .call(Method::DELETE, VERIFIED, Some(&token), None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = harness
        .call(Method::GET, CONTINUATION, Some(&token), None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_token_gets_401_on_rest_and_on_the_stream() {
    let config = SandboxConfig {
        guest_token_lifetime_secs: 1,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    let (token, _) = harness.guest().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = harness
        .call(Method::GET, CONTINUATION, Some(&token), None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Jwt is expired");
    let response = harness
        .open_stream(&token, None, miaw_sandbox::DEFAULT_ORG_ID)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_can_be_expired_now_through_the_control_api() {
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let response = harness
        .call(Method::POST, "/control/tokens/expire", None, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = harness
        .call(Method::GET, CONTINUATION, Some(&token), None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // New tokens work.
    let (fresh, _) = harness.guest().await;
    assert_eq!(
        harness
            .call(Method::GET, CONTINUATION, Some(&fresh), None)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_requests_are_validated_strictly() {
    let harness = Harness::start().await;
    let cases = [
        (
            json!({"orgId": "00D5e000000SBOX", "esDeveloperName": "Nope", "capabilitiesVersion": "1", "platform": "Web"}),
            "Invalid deployment",
        ),
        (
            json!({"orgId": "00D000000000XXX", "esDeveloperName": "Handover_Sandbox", "capabilitiesVersion": "1", "platform": "Web"}),
            "Invalid deployment",
        ),
        (
            json!({"orgId": "00D5e000000SBOX", "esDeveloperName": "Handover_Sandbox", "capabilitiesVersion": "260", "platform": "Web"}),
            "capabilitiesVersion",
        ),
        (
            json!({"orgId": "00D5e000000SBOX", "esDeveloperName": "Handover_Sandbox", "capabilitiesVersion": "1", "platform": "Fax"}),
            "platform",
        ),
        (
            json!({"orgId": "00D5e000000SBOX", "esDeveloperName": "Handover_Sandbox", "capabilitiesVersion": "1", "platform": "Web", "extra": 1}),
            "unknown field `extra`",
        ),
        (
            json!({"esDeveloperName": "Handover_Sandbox", "capabilitiesVersion": "1", "platform": "Web"}),
            "missing field `orgId`",
        ),
    ];
    for (body, expected) in cases {
        let response = harness
            .call(Method::POST, TOKEN, None, Some(body.clone()))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let message = response.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains(expected),
            "{message} should mention {expected}"
        );
    }
    // An 18-character org id is accepted and cut to 15, as Salesforce keys on the 15.
    let mut body = token_body();
    body["orgId"] = json!("00D5e000000SBOXAAA");
    assert_eq!(
        harness
            .call(Method::POST, TOKEN, None, Some(body))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_requests_are_limited_per_org_per_minute() {
    let config = SandboxConfig {
        token_requests_per_minute: 3,
        ..SandboxConfig::default()
    };
    let harness = Harness::with_config(config).await;
    for _ in 0..3 {
        harness.guest().await;
    }
    let response = harness
        .call(Method::POST, TOKEN, None, Some(token_body()))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
}
