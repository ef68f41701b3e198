//! A SQLite database written by an earlier version opens with this one: its migrations apply
//! on top, and every stored value still reads. `fixtures/v1.db` was written by the first
//! version of the schema (`write_the_v1_fixture`, run by hand with `--ignored` only when a new
//! fixture is wanted; never rewrite an existing one). Its key is for tests only.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use base64::Engine as _;
use handover_core::ports::{BotAddress, Commit, SessionStore, Version};
use handover_core::*;
use handover_store::{Keyring, SqlStore};

const TOKEN: &str = "fixture-access-token";

fn fixture_keys() -> Keyring {
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    Keyring::parse(&format!("fixture:{key}")).unwrap()
}

fn handover_id() -> HandoverId {
    HandoverId::from_random_bytes([7; 16])
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn at(millis: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + millis)
}

#[tokio::test]
async fn a_v1_database_opens_migrates_and_reads() {
    let copy = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("v1-copy-{}.db", std::process::id()));
    std::fs::copy(fixture("v1.db"), &copy).unwrap();
    let store = SqlStore::connect(&format!("sqlite://{}", copy.display()), fixture_keys())
        .await
        .unwrap();
    let stored = store
        .load(handover_id())
        .await
        .unwrap()
        .expect("the handover is there");
    assert_eq!(stored.session.phase(), Phase::OpeningStream);
    assert_eq!(stored.address.url_token, "fixture-url-token");
    assert!(
        serde_json::to_string(&stored.session)
            .unwrap()
            .contains(TOKEN)
    );
    let pending = store.pending_commands(handover_id()).await.unwrap();
    assert!(
        matches!(
            &pending[..],
            [Command::Salesforce(SalesforceCall {
                request: SalesforceRequest::MintToken(_),
                ..
            })]
        ),
        "{pending:?}"
    );
    let inputs = store.pending_inputs(handover_id()).await.unwrap();
    assert!(matches!(&inputs[..], [(1, Input::UserMessage(m))] if m.text == "written by v1"));
    // And it keeps working: a write on top of the old data.
    let lease = store
        .acquire_lease(
            handover_id(),
            "next-version",
            at(10_000),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap()
        .unwrap();
    let version = store
        .commit(Commit {
            session: &stored.session,
            expected: stored.version,
            fencing: lease.fencing,
            outbox: &[],
            done: &[],
            inbox_through: Some(1),
            now: at(10_001),
        })
        .await
        .unwrap();
    assert_eq!(version, Version(stored.version.0 + 1));
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", copy.display()));
    }
}

/// Writes `fixtures/v1.db`. Run by hand: `cargo test -p handover-store --test migration --
/// --ignored write_the_v1_fixture`.
#[tokio::test]
#[ignore = "writes the checked-in fixture; run by hand only for a new schema version"]
async fn write_the_v1_fixture() {
    let path = fixture("v1.db");
    let _ = std::fs::remove_file(&path);
    let store = SqlStore::connect(&format!("sqlite://{}", path.display()), fixture_keys())
        .await
        .unwrap();
    let request = HandoverRequest {
        handover_id: handover_id(),
        conversation_id: ConversationId::from_random_bytes([8; 16]),
        transcript: vec![TranscriptTurn::user("hello")],
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    };
    let mut session = Session::new(request, SessionConfig::default());
    let address = BotAddress {
        endpoint_url: "https://endpoint.example".to_owned(),
        url_token: "fixture-url-token".to_owned(),
        user_id: "fixture-user".to_owned(),
        session_id: "fixture-session".to_owned(),
    };
    store
        .admit(
            &RequestId::new("fixture-request").unwrap(),
            &session,
            &address,
            at(0),
        )
        .await
        .unwrap();
    let lease = store
        .acquire_lease(
            handover_id(),
            "v1",
            at(1),
            std::time::Duration::from_secs(1),
        )
        .await
        .unwrap()
        .unwrap();
    let first = session.handle(Input::Start, at(2));
    // The token arrives for a second mint; the first stays pending in the outbox.
    let issued = IssuedToken {
        token: AccessToken::new(TOKEN),
        expires_at: at(6 * 3600 * 1000),
        subject: Subject::Anonymous("v2/iamessage/ANON/fixture".to_owned()),
        last_event_id: None,
    };
    let mint = match &first[..] {
        [Command::Salesforce(call), ..] => call.id,
        other => panic!("{other:?}"),
    };
    let mut replayed = session.clone();
    let _ = replayed.handle(
        Input::Salesforce {
            call: mint,
            result: Ok(SalesforceResponse::Token(issued)),
        },
        at(3),
    );
    store
        .commit(Commit {
            session: &replayed,
            expected: Version(1),
            fencing: lease.fencing,
            outbox: &first,
            done: &[],
            inbox_through: None,
            now: at(4),
        })
        .await
        .unwrap();
    store
        .append_input(
            handover_id(),
            &Input::UserMessage(UserMessage {
                id: BotMessageId::new("m1").unwrap(),
                text: "written by v1".to_owned(),
                attachments: Vec::new(),
            }),
        )
        .await
        .unwrap();
    // Fold the write-ahead log into the file, so that the fixture is one file.
    drop(store);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM").execute(&pool).await.unwrap();
    pool.close().await;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
