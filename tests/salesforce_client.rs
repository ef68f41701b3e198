//! The Salesforce adapter's REST calls against the MIAW sandbox over real HTTP: every call's
//! happy path and every error status, mapped into what the core does about it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use handover_core::*;
use handover_salesforce::EntryWindow;
use miaw_sandbox::{IdentityKey, SandboxConfig};
use reqwest::Method;
use serde_json::{Value, json};
use support::Miaw;

fn id(purpose: &str) -> ClientEntryId {
    ClientEntryId::derive(
        ConversationId::from_random_bytes([9; 16]),
        purpose,
        &[&fastrand::u64(..).to_be_bytes()],
    )
}

fn conversation() -> ConversationId {
    ConversationId::from_random_bytes(fastrand::u128(..).to_le_bytes())
}

fn attributes() -> RoutingAttributes {
    [("issueType", "Billing")].into_iter().collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_guest_token_carries_its_expiry_and_subject() {
    let miaw = Miaw::start(SandboxConfig::default()).await;
    let issued = miaw.client.mint_guest().await.unwrap();
    let hours =
        (issued.expires_at.as_unix_millis() / 1000).saturating_sub(now_secs()) as f64 / 3600.0;
    assert!((5.9..=6.0).contains(&hours), "{hours}");
    assert!(
        matches!(&issued.subject, Subject::Anonymous(s) if s.starts_with("v2/iamessage/ANON/"))
    );
    assert_eq!(
        issued.last_event_id.as_ref().map(EventId::as_str),
        Some("0")
    );
    assert!(
        !format!("{issued:?}").contains(issued.token.expose_secret()),
        "the token never shows in Debug"
    );
}

#[tokio::test]
async fn the_silent_guest_fallback_of_the_verified_flow_is_detected() {
    let secret = b"identity-secret";
    let config = SandboxConfig {
        identity_keys: vec![IdentityKey::Oct {
            kid: None,
            k: URL_SAFE_NO_PAD.encode(secret),
        }],
        ..SandboxConfig::default()
    };
    let miaw = Miaw::start(config).await;
    let sign = |claims: Value| {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()).as_ref())
        )
    };
    let good = IdentityToken::new(sign(
        json!({ "sub": "customer-7", "exp": now_secs() + 300 }),
    ));
    let issued = miaw.client.mint_verified(&good).await.unwrap();
    assert_eq!(
        issued.subject,
        Subject::Verified("v2/iamessage/AUTH/SandboxKeyset/uid:customer-7".to_owned())
    );
    let expired = IdentityToken::new(sign(json!({ "sub": "customer-7", "exp": now_secs() - 10 })));
    let issued = miaw.client.mint_verified(&expired).await.unwrap();
    assert!(
        matches!(issued.subject, Subject::Anonymous(_)),
        "a 200 with a guest token is the fallback"
    );
    // Revoking works for the verified token only.
    let verified = miaw.client.mint_verified(&good).await.unwrap();
    miaw.client.revoke(&verified.token).await.unwrap();
    assert_eq!(
        CallFailure::from(miaw.client.continuation(&verified.token).await.unwrap_err()),
        CallFailure::Unauthorized
    );
}

#[tokio::test]
async fn a_continuation_token_keeps_the_expiry() {
    let miaw = Miaw::start(SandboxConfig::default()).await;
    let issued = miaw.client.mint_guest().await.unwrap();
    let continued = miaw.client.continuation(&issued.token).await.unwrap();
    assert_ne!(continued.token, issued.token);
    assert_eq!(continued.expires_at, issued.expires_at);
}

#[tokio::test]
async fn conversations_messages_and_their_error_statuses() {
    let miaw = Miaw::start(SandboxConfig::default()).await;
    let (token, conversation) = miaw.guest_conversation(&attributes()).await;
    let details = miaw.conversation(conversation).await;
    assert_eq!(
        details["routingAttributes"],
        json!({ "issueType": "Billing" })
    );
    let again = miaw
        .client
        .create_conversation(&token, conversation, &attributes())
        .await
        .unwrap_err();
    assert_eq!(CallFailure::from(again), CallFailure::Conflict);
    assert_eq!(
        miaw.client
            .routing_status(&token, conversation)
            .await
            .unwrap(),
        RoutingStatus::Initial
    );

    let message = id("m");
    miaw.client
        .send_text(&token, conversation, message, "hello", None)
        .await
        .unwrap();
    let repeat = miaw
        .client
        .send_text(&token, conversation, message, "hello", None)
        .await
        .unwrap_err();
    assert_eq!(
        CallFailure::from(repeat),
        CallFailure::Conflict,
        "a retry of an accepted message is a 409"
    );
    assert_eq!(miaw.user_texts(conversation).await, ["hello"]);

    // No messaging session: 417, then a resend as a new session is accepted.
    miaw.act(conversation, "accept", json!({})).await;
    miaw.act(conversation, "end", json!({})).await;
    let refused = miaw
        .client
        .send_text(&token, conversation, id("m2"), "still there?", None)
        .await
        .unwrap_err();
    assert_eq!(CallFailure::from(refused), CallFailure::NoMessagingSession);
    miaw.client
        .send_text(
            &token,
            conversation,
            id("m2"),
            "still there?",
            Some(&attributes()),
        )
        .await
        .unwrap();
    assert_eq!(
        miaw.conversation(conversation).await["sessionStatus"],
        "Waiting"
    );

    // 404 for a conversation that does not exist; a 400 keeps Salesforce's message.
    let missing = miaw
        .client
        .send_text(&token, self::conversation(), id("m3"), "x", None)
        .await
        .unwrap_err();
    assert_eq!(CallFailure::from(missing), CallFailure::NotFound);
    let wrong = handover_salesforce::MiawClient::new(handover_salesforce::MiawConfig::new(
        miaw.sandbox.url(),
        "00D5e000000SBOX",
        "Nope",
    ))
    .unwrap();
    let error = CallFailure::from(wrong.mint_guest().await.unwrap_err());
    assert!(
        matches!(&error, CallFailure::Rejected { status: 400, message } if message.starts_with("Invalid deployment")),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_22nd_message_of_a_minute_is_the_last_and_429_is_retryable() {
    let miaw = Miaw::start(SandboxConfig::default()).await;
    let (token, conversation) = miaw.guest_conversation(&attributes()).await;
    for i in 0..22 {
        miaw.client
            .send_text(&token, conversation, id("burst"), &format!("m{i}"), None)
            .await
            .unwrap();
    }
    let failure = CallFailure::from(
        miaw.client
            .send_text(&token, conversation, id("burst"), "m22", None)
            .await
            .unwrap_err(),
    );
    assert_eq!(failure, CallFailure::RateLimited);
    assert!(failure.is_retryable());
}

#[tokio::test]
async fn an_expired_token_is_401_on_rest_and_on_the_stream() {
    let miaw = Miaw::start(SandboxConfig::default()).await;
    let issued = miaw.client.mint_guest().await.unwrap();
    miaw.control(Method::POST, "tokens/expire", json!({})).await;
    let failure = CallFailure::from(miaw.client.continuation(&issued.token).await.unwrap_err());
    assert_eq!(failure, CallFailure::Unauthorized);
    let failure = CallFailure::from(miaw.client.connect(&issued.token, None).await.unwrap_err());
    assert_eq!(failure, CallFailure::Unauthorized);
}

#[tokio::test]
async fn files_are_uploaded_and_oversize_or_refused_ones_fail_before_or_at_upload() {
    let config = SandboxConfig {
        max_file_bytes: 5 * 1024 * 1024,
        ..SandboxConfig::default()
    };
    let miaw = Miaw::start_with(config, |c| c.max_file_bytes = 1000).await;
    let (token, conversation) = miaw.guest_conversation(&attributes()).await;
    miaw.act(conversation, "accept", json!({})).await;
    // Files the user "sent", hosted by the sandbox's file server.
    let small = FileRef {
        url: miaw
            .host_file(conversation, "receipt.pdf", "application/pdf", &[b'%'; 100])
            .await,
        name: "receipt.pdf".to_owned(),
        mime_type: Some("application/pdf".to_owned()),
        size: None,
    };
    miaw.client
        .send_file(&token, conversation, id("f"), &small, None)
        .await
        .unwrap();
    let refused = async |file: &FileRef| {
        let error = miaw
            .client
            .send_file(&token, conversation, id("f"), file, None)
            .await
            .unwrap_err();
        CallFailure::from(error)
    };
    assert_eq!(miaw.user_texts(conversation).await, ["file:receipt.pdf"]);

    let declared = FileRef {
        size: Some(2000),
        ..small.clone()
    };
    let failure = refused(&declared).await;
    assert_eq!(
        failure,
        CallFailure::PayloadTooLarge,
        "checked before any upload"
    );
    let big = FileRef {
        url: miaw
            .host_file(conversation, "big.pdf", "application/pdf", &[0; 4000])
            .await,
        size: None,
        ..small.clone()
    };
    let failure = refused(&big).await;
    assert_eq!(
        failure,
        CallFailure::PayloadTooLarge,
        "found while downloading"
    );
    let exe = FileRef {
        url: miaw
            .host_file(conversation, "tool.exe", "application/x-msdownload", b"MZ")
            .await,
        name: "tool.exe".to_owned(),
        mime_type: Some("application/x-msdownload".to_owned()),
        size: None,
    };
    let failure = refused(&exe).await;
    assert_eq!(failure, CallFailure::UnsupportedMediaType);
    let gone = FileRef {
        url: format!("{}/files/nope", miaw.sandbox.url()),
        ..small
    };
    let failure = refused(&gone).await;
    assert!(
        matches!(failure, CallFailure::Rejected { .. }),
        "{failure:?}"
    );
    assert_eq!(
        miaw.user_texts(conversation).await,
        ["file:receipt.pdf"],
        "nothing else was uploaded"
    );
}

#[tokio::test]
async fn typing_receipts_listings_close_and_end_of_session() {
    let miaw = Miaw::start(SandboxConfig::default()).await;
    let (token, conversation) = miaw.guest_conversation(&attributes()).await;
    miaw.act(conversation, "accept", json!({ "agent": "Jane" }))
        .await;
    let agent = miaw
        .act(conversation, "messages", json!({ "text": "Hi" }))
        .await;
    let agent_entry = EntryId::new(agent["identifier"].as_str().unwrap()).unwrap();
    miaw.client
        .typing(&token, conversation, id("t"), true)
        .await
        .unwrap();
    let receipt = Acknowledgement {
        id: id("a"),
        entry: agent_entry.clone(),
        kind: AcknowledgementKind::Delivered,
    };
    miaw.client
        .acknowledge(&token, conversation, &[receipt])
        .await
        .unwrap();

    let entries = miaw
        .client
        .list_entries(&token, conversation, EntryWindow::default(), 50)
        .await
        .unwrap();
    let times: Vec<_> = entries.iter().map(|e| e.server_time.unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let kinds: Vec<String> = entries
        .iter()
        .map(|e| format!("{:?}", std::mem::discriminant(&e.payload)))
        .collect();
    assert_eq!(entries.len(), 7, "{kinds:?}");
    assert_eq!(
        entries[4].payload,
        EntryPayload::Message(MessageContent::Text("Hi".to_owned()))
    );
    assert_eq!(entries[4].identifier, agent_entry);
    assert_eq!(entries[5].payload, EntryPayload::TypingStarted);
    assert_eq!(
        entries[6].payload,
        EntryPayload::DeliveryAcknowledged {
            acknowledged: Some(agent_entry)
        }
    );
    // Paging back: the newest two at or before the third.
    let back = EntryWindow {
        before: entries[2].server_time,
        from: None,
    };
    let page = miaw
        .client
        .list_entries(&token, conversation, back, 2)
        .await
        .unwrap();
    assert_eq!(page, entries[1..3]);
    // Paging forward: the oldest two from the fourth on, still oldest first.
    let forward = EntryWindow {
        before: None,
        from: entries[3].server_time,
    };
    let page = miaw
        .client
        .list_entries(&token, conversation, forward, 2)
        .await
        .unwrap();
    assert_eq!(page, entries[3..5]);
    assert_eq!(miaw.client.decode_failures(), 0);

    miaw.client.end_session(&token, conversation).await.unwrap();
    assert_eq!(
        miaw.conversation(conversation).await["sessionStatus"],
        "Ended"
    );
    miaw.client
        .close_conversation(&token, conversation)
        .await
        .unwrap();
    assert_eq!(miaw.conversation(conversation).await["closed"], true);
}

#[tokio::test]
async fn slow_or_unavailable_salesforce_is_a_transient_failure_that_names_no_token() {
    let miaw = Miaw::start_with(SandboxConfig::default(), |c| {
        c.request_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let token = miaw.client.mint_guest().await.unwrap().token;
    let conversation = conversation();
    miaw.faults(json!({ "latency_ms": 1000 })).await;
    let error = miaw
        .client
        .create_conversation(&token, conversation, &attributes())
        .await
        .unwrap_err();
    let rendered = format!("{error} {error:?}");
    let failure = CallFailure::from(error);
    assert!(matches!(failure, CallFailure::Transient(_)), "{failure:?}");
    assert!(!rendered.contains(token.expose_secret()), "{rendered}");

    miaw.faults(json!({ "error_rate_5xx": 1.0 })).await;
    let error = miaw
        .client
        .create_conversation(&token, conversation, &attributes())
        .await
        .unwrap_err();
    let rendered = format!("{error} {error:?}");
    let failure = CallFailure::from(error);
    assert!(
        matches!(&failure, CallFailure::Transient(m) if m.contains("503")),
        "{failure:?}"
    );
    assert!(failure.is_retryable());
    assert!(!rendered.contains(token.expose_secret()), "{rendered}");
    let injected = miaw
        .control(Method::GET, "faults/injected", Value::Null)
        .await;
    assert_eq!(injected["503"], 1);
}

/// A file host on loopback that counts what it served: `/file`, `/to/{host}` (a redirect to
/// `/file` on that host name), and `/hop/{n}` (a chain of n redirects).
async fn file_host() -> (String, u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::extract::{Path, State};
    use axum::response::{IntoResponse, Redirect};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new()
        .route(
            "/file",
            axum::routing::get(|State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                ([("content-type", "application/pdf")], vec![b'%'; 64]).into_response()
            }),
        )
        .route(
            "/to/{host}",
            axum::routing::get(move |Path(host): Path<String>| async move {
                Redirect::temporary(&format!("http://{host}:{port}/file"))
            }),
        )
        .route(
            "/hop/{n}",
            axum::routing::get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    Redirect::temporary("/file")
                } else {
                    Redirect::temporary(&format!("/hop/{}", n - 1))
                }
            }),
        )
        .with_state(hits.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://127.0.0.1:{port}"), port, hits)
}

#[tokio::test]
async fn attachments_come_only_from_allowed_public_hosts_and_every_redirect_is_checked() {
    use std::sync::atomic::Ordering;
    let (base, port, hits) = file_host().await;
    let file = |url: String| FileRef {
        url,
        name: "receipt.pdf".to_owned(),
        mime_type: Some("application/pdf".to_owned()),
        size: None,
    };
    let refused = async |miaw: &Miaw, url: String| {
        let (token, conversation) = miaw.guest_conversation(&attributes()).await;
        let error = miaw
            .client
            .send_file(&token, conversation, id("f"), &file(url), None)
            .await
            .unwrap_err();
        let text = error.to_string();
        let failure = CallFailure::from(error);
        assert!(
            matches!(failure, CallFailure::Rejected { .. }),
            "a refusal is final, so the agent gets the link: {failure:?}"
        );
        text
    };

    // Production defaults: no list, but no private addresses, by literal or by name.
    let production = Miaw::start_with(SandboxConfig::default(), |c| {
        c.attachments = handover_salesforce::AttachmentPolicy::default();
    })
    .await;
    let text = refused(&production, format!("{base}/file")).await;
    assert!(text.contains("127.0.0.1 is not a public address"), "{text}");
    let text = refused(&production, format!("http://localhost:{port}/file")).await;
    assert!(text.contains("localhost is not a public address"), "{text}");
    let text = refused(
        &production,
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    )
    .await;
    assert!(text.contains("not a public address"), "{text}");
    let text = refused(&production, "file:///etc/passwd".to_owned()).await;
    assert!(text.contains("http or https"), "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was fetched");

    // An allow-list (with private addresses allowed, for the loopback host of the test).
    let listed = Miaw::start_with(SandboxConfig::default(), |c| {
        c.attachments = handover_salesforce::AttachmentPolicy {
            allowed_hosts: vec!["127.0.0.1".to_owned()],
            allow_private_addresses: true,
            max_redirects: 3,
        };
    })
    .await;
    let (token, conversation) = listed.guest_conversation(&attributes()).await;
    listed.act(conversation, "accept", json!({})).await;
    listed
        .client
        .send_file(
            &token,
            conversation,
            id("ok"),
            &file(format!("{base}/file")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the listed host served it");
    assert_eq!(listed.user_texts(conversation).await, ["file:receipt.pdf"]);
    let text = refused(&listed, format!("http://localhost:{port}/file")).await;
    assert!(
        text.contains("localhost is not on the allow-list"),
        "{text}"
    );
    // A listed host redirecting to an unlisted one: the redirect is not followed.
    let text = refused(&listed, format!("{base}/to/localhost")).await;
    assert!(
        text.contains("localhost is not on the allow-list"),
        "{text}"
    );
    // Redirects within the list are followed, up to the limit.
    listed
        .client
        .send_file(
            &token,
            conversation,
            id("hops"),
            &file(format!("{base}/hop/2")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let text = refused(&listed, format!("{base}/hop/5")).await;
    assert!(text.contains("redirects more than 3 times"), "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "no refused URL was fetched");
}
