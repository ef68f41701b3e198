//! One conformance suite for every store: memory, SQLite (a file), and PostgreSQL when
//! `HANDOVER_TEST_DATABASE_URL` is set (each test gets a database of its own, dropped at the
//! end). Without that variable the PostgreSQL tests say loudly that they were skipped;
//! `.ci/run` sets it and fails if PostgreSQL is unreachable.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::wildcard_enum_match_arm
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use handover_core::ports::{BotAddress, Commit, FencingToken, SessionStore, StoreError, Version};
use handover_core::sim::{Sim, SimConfig};
use handover_core::*;
use handover_store::{Keyring, MemoryStore, SqlStore, Summary, SummaryFilter};

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.SECRET-ACCESS-TOKEN-PAYLOAD.signature";
const URL_TOKEN: &str = "secret-endpoint-url-token-0042";
/// Times of the tests (2030), far from the purge test's (1970), which shares PostgreSQL.
const NOW: u64 = 1_900_000_000_000;

fn keys(spec: &[(&str, u8)]) -> Keyring {
    let spec: Vec<String> = spec
        .iter()
        .map(|(id, byte)| {
            format!(
                "{id}:{}",
                base64::engine::general_purpose::STANDARD.encode([*byte; 32])
            )
        })
        .collect();
    Keyring::parse(&spec.join(",")).unwrap()
}

fn now(offset_ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(NOW + offset_ms)
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn address() -> BotAddress {
    BotAddress {
        endpoint_url: "https://endpoint.example".to_owned(),
        url_token: URL_TOKEN.to_owned(),
        user_id: format!("user-{}", HandoverId::from_random_bytes(random_bytes())),
        session_id: "session-1".to_owned(),
    }
}

fn session() -> Session {
    let request = HandoverRequest {
        handover_id: HandoverId::from_random_bytes(random_bytes()),
        conversation_id: ConversationId::from_random_bytes(random_bytes()),
        transcript: vec![TranscriptTurn::user(
            "my card number is 4111 1111 1111 1111",
        )],
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    };
    Session::new(request, SessionConfig::default())
}

/// A started session that holds a token: `Start`, then the mint's result. Returns the
/// commands of both steps.
fn started() -> (Session, Vec<Command>, Vec<Command>) {
    let mut session = session();
    let first = session.handle(Input::Start, now(0));
    let mint = first
        .iter()
        .find_map(|c| match c {
            Command::Salesforce(call)
                if matches!(call.request, SalesforceRequest::MintToken(_)) =>
            {
                Some(call.id)
            }
            _ => None,
        })
        .unwrap();
    let issued = IssuedToken {
        token: AccessToken::new(TOKEN),
        expires_at: now(6 * 3600 * 1000),
        subject: Subject::Anonymous("v2/iamessage/ANON/x".to_owned()),
        last_event_id: None,
    };
    let second = session.handle(
        Input::Salesforce {
            call: mint,
            result: Ok(SalesforceResponse::Token(issued)),
        },
        now(10),
    );
    (session, first, second)
}

/// The Flow closes the handover, and every call it makes then succeeds, until it is finished.
fn close(session: &mut Session, at: Timestamp) {
    let mut commands = session.handle(Input::FlowClosed, at);
    for _ in 0..50 {
        if session.is_finished() {
            return;
        }
        let mut next = Vec::new();
        for command in commands {
            let input = match command {
                Command::Salesforce(call) => {
                    let result = match call.request {
                        SalesforceRequest::MintToken(_)
                        | SalesforceRequest::RenewToken(_)
                        | SalesforceRequest::ContinueToken => {
                            SalesforceResponse::Token(IssuedToken {
                                token: AccessToken::new(TOKEN),
                                expires_at: now(6 * 3600 * 1000),
                                subject: Subject::Anonymous("v2/iamessage/ANON/x".to_owned()),
                                last_event_id: None,
                            })
                        }
                        SalesforceRequest::ListEntries { .. } => {
                            SalesforceResponse::Entries(Vec::new())
                        }
                        SalesforceRequest::OpenStream { .. } | SalesforceRequest::CloseStream => {
                            continue;
                        }
                        _ => SalesforceResponse::Done,
                    };
                    Input::Salesforce {
                        call: call.id,
                        result: Ok(result),
                    }
                }
                Command::Bot(call) => Input::Bot {
                    call: call.id,
                    result: Ok(()),
                },
                Command::Record(_) => continue,
            };
            next.extend(session.handle(input, at));
        }
        commands = next;
    }
    assert!(
        session.is_finished(),
        "the handover finishes: {:?}",
        session.phase()
    );
}

/// A commit of the state alone.
fn plain(
    session: &Session,
    expected: Version,
    fencing: FencingToken,
    now: Timestamp,
) -> Commit<'_> {
    Commit {
        session,
        expected,
        fencing,
        outbox: &[],
        done: &[],
        inbox_through: None,
        now,
    }
}

fn json(session: &Session) -> String {
    serde_json::to_string(session).unwrap()
}

// ---- backends ---------------------------------------------------------------------------------

enum Fixture {
    Memory(Box<MemoryStore>),
    Sqlite(PathBuf),
    Postgres {
        admin: String,
        name: String,
        url: String,
    },
}

enum Opened {
    Memory(MemoryStore),
    Sql(SqlStore),
}

impl Opened {
    fn store(&self) -> &dyn SessionStore {
        match self {
            Self::Memory(store) => store,
            Self::Sql(store) => store,
        }
    }

    async fn summaries(&self, filter: &SummaryFilter) -> Vec<Summary> {
        match self {
            Self::Memory(store) => store.summaries(filter).unwrap(),
            Self::Sql(store) => store.summaries(filter).await.unwrap(),
        }
    }

    async fn raw_values(&self) -> Vec<Vec<u8>> {
        match self {
            Self::Memory(store) => store.sealed_values(),
            Self::Sql(store) => store.raw_values().await.unwrap(),
        }
    }
}

impl Fixture {
    async fn new(kind: &str, test: &str) -> Option<Self> {
        match kind {
            "memory" => Some(Self::Memory(Box::new(MemoryStore::new(keys(&[("k1", 1)]))))),
            "sqlite" => {
                let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                    "store-{test}-{}.db",
                    HandoverId::from_random_bytes(random_bytes())
                ));
                Some(Self::Sqlite(path))
            }
            _ => {
                let Ok(admin) = std::env::var("HANDOVER_TEST_DATABASE_URL") else {
                    // Written to the process's stderr directly: the test harness captures `eprintln!`.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED postgres::{test}: HANDOVER_TEST_DATABASE_URL is not set (.ci/run sets it)"
                    );
                    return None;
                };
                let name = format!(
                    "handover_test_{}",
                    HandoverId::from_random_bytes(random_bytes())
                        .to_string()
                        .replace('-', "")
                );
                let connection = sqlx_admin(&admin).await;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&connection)
                    .await
                    .unwrap();
                let (base, _) = admin.rsplit_once('/').unwrap();
                let url = format!("{base}/{name}");
                Some(Self::Postgres { admin, name, url })
            }
        }
    }

    async fn open(&self, keys: Keyring) -> Result<Opened, StoreError> {
        match self {
            Self::Memory(store) => Ok(Opened::Memory(store.reopen(keys))),
            Self::Sqlite(path) => SqlStore::connect(&format!("sqlite://{}", path.display()), keys)
                .await
                .map(Opened::Sql),
            Self::Postgres { url, .. } => SqlStore::connect(url, keys).await.map(Opened::Sql),
        }
    }

    async fn finish(self) {
        match self {
            Self::Memory(_) => {}
            Self::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Self::Postgres { admin, name, .. } => {
                let connection = sqlx_admin(&admin).await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&connection)
                    .await;
            }
        }
    }
}

async fn sqlx_admin(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("PostgreSQL at HANDOVER_TEST_DATABASE_URL is reachable")
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::run("memory", stringify!($test), super::$test).await; })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::run("sqlite", stringify!($test), super::$test).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::run("postgres", stringify!($test), super::$test).await; })*
        }
    };
}

async fn run<F, Fut>(kind: &str, test: &str, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Some(fixture) = Fixture::new(kind, test).await else {
        return;
    };
    let fixture = body(fixture).await;
    fixture.finish().await;
}

conformance!(
    starts_follow_the_start_gate,
    a_stale_version_is_a_conflict,
    the_outbox_survives_a_crash_and_empties_as_results_arrive,
    the_inbox_keeps_order_and_forgets_what_was_applied,
    deduplication_state_survives_a_restart,
    nothing_secret_is_stored_in_plain_text,
    keys_rotate_and_a_wrong_key_is_a_clear_error,
    leases_have_one_holder_and_fence_the_previous_one,
    a_restarted_instance_frees_only_the_leases_under_its_own_name,
    ended_handovers_are_purged_after_retention,
    lists_filter_by_cognigy_session_and_liveness_newest_first,
);

/// Shared pacing slots exist on the SQL stores only (the memory store serves one process, whose
/// client paces by itself).
mod shared_slots {
    #[tokio::test]
    async fn sqlite() {
        super::run(
            "sqlite",
            "shared_slots",
            super::slots_are_spaced_evenly_whichever_instance_books_them,
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::run(
            "postgres",
            "shared_slots",
            super::slots_are_spaced_evenly_whichever_instance_books_them,
        )
        .await;
    }
}

/// Two instances book 2 × 10 slots of one key at once, and slots of another key: slot k of a key
/// is k intervals after its first, whoever booked it, and keys do not share slots. A booking
/// says how long to wait from its own moment, so slot k's wait lies within
/// `[k·interval − elapsed, k·interval]`, where `elapsed` is the time all bookings took (give or
/// take the millisecond the clocks are read to).
async fn slots_are_spaced_evenly_whichever_instance_books_them(fixture: Fixture) -> Fixture {
    let Opened::Sql(first) = fixture.open(keys(&[("k1", 1)])).await.unwrap() else {
        panic!("a SQL fixture");
    };
    let Opened::Sql(second) = fixture.open(keys(&[("k1", 1)])).await.unwrap() else {
        panic!("a SQL fixture");
    };
    let interval = Duration::from_secs(60);
    let started = std::time::Instant::now();
    let book = |store: SqlStore, key: &'static str| async move {
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(store.reserve_slot(key, interval).await.unwrap());
        }
        waits
    };
    let (a, b, other) = tokio::join!(
        book(first.clone(), "org-1"),
        book(second.clone(), "org-1"),
        book(second.clone(), "org-2"),
    );
    let elapsed = started.elapsed() + Duration::from_millis(2);
    let mut waits: Vec<Duration> = a.into_iter().chain(b).collect();
    waits.sort();
    for (k, wait) in waits.iter().enumerate() {
        let due = interval * u32::try_from(k).unwrap();
        assert!(
            *wait <= due && *wait + elapsed >= due,
            "slot {k} of org-1: wait {wait:?}, due {due:?} after the first, bookings took {elapsed:?}"
        );
    }
    for (k, wait) in other.iter().enumerate() {
        let due = interval * u32::try_from(k).unwrap();
        assert!(
            *wait <= due && *wait + elapsed >= due,
            "slot {k} of org-2: wait {wait:?}"
        );
    }
    // A restart keeps the schedule: the next booking comes after the 20 already booked.
    drop((first, second));
    let Opened::Sql(again) = fixture.open(keys(&[("k1", 1)])).await.unwrap() else {
        panic!("a SQL fixture");
    };
    let next = again.reserve_slot("org-1", interval).await.unwrap();
    let due = interval * 20;
    let elapsed = started.elapsed() + Duration::from_millis(2);
    assert!(
        next <= due && next + elapsed >= due,
        "after a restart: {next:?}, {elapsed:?} after the first booking"
    );
    fixture
}

// ---- the suite --------------------------------------------------------------------------------

async fn starts_follow_the_start_gate(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let address = address();
    let first = session();
    let request = RequestId::new("input-1").unwrap();
    assert_eq!(
        store
            .admit(&request, &first, &address, now(0))
            .await
            .unwrap(),
        Admission::Started(first.handover_id())
    );
    let again = session();
    assert_eq!(
        store
            .admit(&request, &again, &address, now(1))
            .await
            .unwrap(),
        Admission::Duplicate(first.handover_id()),
        "S07: the same request is the same handover"
    );
    let other = RequestId::new("input-2").unwrap();
    assert_eq!(
        store.admit(&other, &again, &address, now(2)).await.unwrap(),
        Admission::Conflict(first.handover_id()),
        "S08: one live handover per Cognigy session"
    );
    assert!(
        store.load(again.handover_id()).await.unwrap().is_none(),
        "nothing was stored for them"
    );
    // Another Cognigy session is independent.
    let elsewhere = BotAddress {
        session_id: "session-2".to_owned(),
        ..address.clone()
    };
    assert!(matches!(
        store
            .admit(&other, &again, &elsewhere, now(3))
            .await
            .unwrap(),
        Admission::Started(_)
    ));
    // Once the first handover finishes, the next start is a new handover.
    let mut finished = store.load(first.handover_id()).await.unwrap().unwrap();
    let lease = store
        .acquire_lease(first.handover_id(), "a", now(4), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let _ = finished.session.handle(Input::Start, now(5));
    close(&mut finished.session, now(6));
    store
        .commit(plain(
            &finished.session,
            finished.version,
            lease.fencing,
            now(7),
        ))
        .await
        .unwrap();
    let third = session();
    let request = RequestId::new("input-3").unwrap();
    assert_eq!(
        store
            .admit(&request, &third, &address, now(8))
            .await
            .unwrap(),
        Admission::Started(third.handover_id())
    );
    assert_eq!(
        store
            .live_handovers()
            .await
            .unwrap()
            .iter()
            .filter(|id| **id == third.handover_id() || **id == first.handover_id())
            .count(),
        1
    );
    fixture
}

async fn a_stale_version_is_a_conflict(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let (session, _, _) = started();
    store
        .admit(&RequestId::new("r").unwrap(), &session, &address(), now(0))
        .await
        .unwrap();
    let id = session.handover_id();
    let lease = store
        .acquire_lease(id, "a", now(0), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let loaded = store.load(id).await.unwrap().unwrap();
    assert_eq!(loaded.version, Version(1));
    let commit = |expected| Commit {
        session: &loaded.session,
        expected,
        fencing: lease.fencing,
        outbox: &[],
        done: &[],
        inbox_through: None,
        now: now(1),
    };
    assert_eq!(store.commit(commit(Version(1))).await.unwrap(), Version(2));
    assert_eq!(
        store.commit(commit(Version(1))).await.unwrap_err(),
        StoreError::Conflict { stored: Version(2) }
    );
    assert_eq!(store.load(id).await.unwrap().unwrap().version, Version(2));
    let missing = session_with_id(HandoverId::from_random_bytes(random_bytes()));
    let error = store
        .commit(plain(&missing, Version(1), lease.fencing, now(2)))
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::NotFound(missing.handover_id()));
    fixture
}

fn session_with_id(id: HandoverId) -> Session {
    let request = HandoverRequest {
        handover_id: id,
        conversation_id: ConversationId::from_random_bytes(random_bytes()),
        transcript: Vec::new(),
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    };
    Session::new(request, SessionConfig::default())
}

async fn the_outbox_survives_a_crash_and_empties_as_results_arrive(fixture: Fixture) -> Fixture {
    let mut session = session();
    let id = session.handover_id();
    let address = address();
    // Step 1: Start asks for a token; the process dies before the call is made.
    let first = session.handle(Input::Start, now(0));
    {
        let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
        let store = opened.store();
        store
            .admit(&RequestId::new("r").unwrap(), &session, &address, now(0))
            .await
            .unwrap();
        let lease = store
            .acquire_lease(id, "a", now(0), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        store
            .commit(Commit {
                session: &session,
                expected: Version(1),
                fencing: lease.fencing,
                outbox: &first,
                done: &[],
                inbox_through: None,
                now: now(1),
            })
            .await
            .unwrap();
    }
    // Step 2: another process takes over and runs the pending command again.
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let pending = store.pending_commands(id).await.unwrap();
    assert_eq!(
        pending,
        first
            .iter()
            .filter(|c| !matches!(c, Command::Record(_)))
            .cloned()
            .collect::<Vec<_>>()
    );
    let mint = mint_call(&pending);
    let mut loaded = store.load(id).await.unwrap().unwrap();
    let lease = store
        .acquire_lease(id, "b", now(60_000), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let issued = IssuedToken {
        token: AccessToken::new(TOKEN),
        expires_at: now(6 * 3600 * 1000),
        subject: Subject::Anonymous("v2/iamessage/ANON/x".to_owned()),
        last_event_id: None,
    };
    let second = loaded.session.handle(
        Input::Salesforce {
            call: mint,
            result: Ok(SalesforceResponse::Token(issued)),
        },
        now(60_001),
    );
    let stream = second
        .iter()
        .find_map(|c| match c {
            Command::Salesforce(call)
                if matches!(call.request, SalesforceRequest::OpenStream { .. }) =>
            {
                Some(call.id)
            }
            _ => None,
        })
        .expect("the stream opens next");
    let third = loaded.session.handle(
        Input::Stream {
            stream,
            event: StreamEvent::Opened,
        },
        now(60_002),
    );
    let mut outbox = second.clone();
    outbox.extend(third.iter().cloned());
    let version = store
        .commit(Commit {
            session: &loaded.session,
            expected: loaded.version,
            fencing: lease.fencing,
            outbox: &outbox,
            done: &[mint],
            inbox_through: None,
            now: now(60_003),
        })
        .await
        .unwrap();
    // The stream is the process's own and is not stored; the conversation's creation is.
    let pending = store.pending_commands(id).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let Command::Salesforce(create) = &pending[0] else {
        panic!("{pending:?}")
    };
    assert!(matches!(
        create.request,
        SalesforceRequest::CreateConversation { .. }
    ));
    assert_eq!(
        create.credential.as_ref().map(|c| c.token.expose_secret()),
        Some(TOKEN),
        "with its token"
    );
    // Its result arrives: nothing is pending any more.
    let _ = loaded.session.handle(
        Input::Salesforce {
            call: create.id,
            result: Ok(SalesforceResponse::Done),
        },
        now(60_004),
    );
    store
        .commit(Commit {
            session: &loaded.session,
            expected: version,
            fencing: lease.fencing,
            outbox: &[],
            done: &[create.id],
            inbox_through: None,
            now: now(60_005),
        })
        .await
        .unwrap();
    assert!(store.pending_commands(id).await.unwrap().is_empty());
    fixture
}

fn mint_call(commands: &[Command]) -> CallId {
    commands
        .iter()
        .find_map(|c| match c {
            Command::Salesforce(call)
                if matches!(call.request, SalesforceRequest::MintToken(_)) =>
            {
                Some(call.id)
            }
            _ => None,
        })
        .unwrap()
}

async fn the_inbox_keeps_order_and_forgets_what_was_applied(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let (session, _, _) = started();
    let id = session.handover_id();
    store
        .admit(&RequestId::new("r").unwrap(), &session, &address(), now(0))
        .await
        .unwrap();
    let message = |n: u32| {
        Input::UserMessage(UserMessage {
            id: BotMessageId::new(format!("m{n}")).unwrap(),
            text: format!("text {n}"),
            attachments: Vec::new(),
        })
    };
    let mut positions = Vec::new();
    for input in [message(1), Input::UserDisconnected, message(2)] {
        positions.push(store.append_input(id, &input).await.unwrap());
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let pending = store.pending_inputs(id).await.unwrap();
    assert_eq!(
        pending.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(),
        [message(1), Input::UserDisconnected, message(2)]
    );
    let lease = store
        .acquire_lease(id, "a", now(1), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store
        .commit(Commit {
            session: &session,
            expected: Version(1),
            fencing: lease.fencing,
            outbox: &[],
            done: &[],
            inbox_through: Some(positions[1]),
            now: now(2),
        })
        .await
        .unwrap();
    // An input appended meanwhile is not lost, and positions keep growing.
    let later = store.append_input(id, &Input::UserConnected).await.unwrap();
    assert!(later > positions[2]);
    let pending = store.pending_inputs(id).await.unwrap();
    assert_eq!(
        pending,
        [(positions[2], message(2)), (later, Input::UserConnected)]
    );
    let unknown = HandoverId::from_random_bytes(random_bytes());
    assert_eq!(
        store
            .append_input(unknown, &Input::UserConnected)
            .await
            .unwrap_err(),
        StoreError::NotFound(unknown)
    );
    let mut ended = session.clone();
    close(&mut ended, now(3));
    store
        .commit(plain(&ended, Version(2), lease.fencing, now(4)))
        .await
        .unwrap();
    assert_eq!(
        store
            .append_input(id, &Input::UserConnected)
            .await
            .unwrap_err(),
        StoreError::Ended(id)
    );
    fixture
}

async fn deduplication_state_survives_a_restart(fixture: Fixture) -> Fixture {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.agent_joins("Jane");
    sim.agent_says("already relayed");
    let entry = sim.salesforce.log().last().unwrap().entry.clone();
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let mut address = address();
    address.session_id = format!("sim-{}", sim.session.handover_id());
    store
        .admit(
            &RequestId::new("r").unwrap(),
            &sim.session,
            &address,
            now(0),
        )
        .await
        .unwrap();
    let mut loaded = store
        .load(sim.session.handover_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        json(&loaded.session),
        json(&sim.session),
        "the whole state round-trips"
    );
    let commands = loaded.session.handle(
        Input::Stream {
            stream: CallId::from_raw(999_999),
            event: StreamEvent::Entry {
                event_id: None,
                entry,
            },
        },
        sim.now(),
    );
    assert!(
        commands.contains(&Command::Record(Observation::DuplicateEntry)),
        "the restored session knows the entry: {commands:?}"
    );
    assert!(
        !commands.iter().any(|c| matches!(c, Command::Bot(_))),
        "and does not relay it again"
    );
    fixture
}

async fn nothing_secret_is_stored_in_plain_text(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let (session, first, second) = started();
    let id = session.handover_id();
    let address = address();
    store
        .admit(&RequestId::new("r").unwrap(), &session, &address, now(0))
        .await
        .unwrap();
    let lease = store
        .acquire_lease(id, "a", now(0), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let outbox: Vec<Command> = first.into_iter().chain(second).collect();
    store
        .commit(Commit {
            session: &session,
            expected: Version(1),
            fencing: lease.fencing,
            outbox: &outbox,
            done: &[],
            inbox_through: None,
            now: now(1),
        })
        .await
        .unwrap();
    let secret_message = Input::UserMessage(UserMessage {
        id: BotMessageId::new("m1").unwrap(),
        text: "my IBAN is DE44500105175407324931".to_owned(),
        attachments: Vec::new(),
    });
    store.append_input(id, &secret_message).await.unwrap();
    let values = opened.raw_values().await;
    assert!(!values.is_empty());
    for needle in [
        TOKEN.as_bytes(),
        b"SECRET-ACCESS-TOKEN",
        URL_TOKEN.as_bytes(),
        b"DE44500105175407324931",
        // The whole number: four digits alone turn up in a random handover id now and then.
        b"4111 1111 1111 1111",
    ] {
        assert!(
            !values
                .iter()
                .any(|value| value.windows(needle.len()).any(|w| w == needle)),
            "{} appears in plain text",
            String::from_utf8_lossy(needle)
        );
    }
    if let Fixture::Sqlite(path) = &fixture {
        // Not in the database file or its write-ahead log either.
        for suffix in ["", "-wal"] {
            let bytes = std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default();
            assert!(
                !bytes.windows(19).any(|w| w == b"SECRET-ACCESS-TOKEN"),
                "the token is in the file{suffix}"
            );
        }
    }
    let loaded = store.load(id).await.unwrap().unwrap();
    assert_eq!(json(&loaded.session), json(&session));
    assert!(
        json(&loaded.session).contains(TOKEN),
        "the token itself comes back"
    );
    assert_eq!(loaded.address, address);
    fixture
}

async fn keys_rotate_and_a_wrong_key_is_a_clear_error(fixture: Fixture) -> Fixture {
    let (session, _, _) = started();
    let id = session.handover_id();
    {
        let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
        opened
            .store()
            .admit(&RequestId::new("r").unwrap(), &session, &address(), now(0))
            .await
            .unwrap();
    }
    // Rotation: k2 is new, k1 stays readable; writes use k2.
    {
        let opened = fixture.open(keys(&[("k2", 2), ("k1", 1)])).await.unwrap();
        let store = opened.store();
        let loaded = store.load(id).await.unwrap().unwrap();
        assert_eq!(json(&loaded.session), json(&session));
        let lease = store
            .acquire_lease(id, "a", now(1), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        store
            .commit(plain(
                &loaded.session,
                loaded.version,
                lease.fencing,
                now(2),
            ))
            .await
            .unwrap();
    }
    // Without k2 the session no longer opens, and the error says which key is missing.
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    match opened.store().load(id).await.unwrap_err() {
        StoreError::Corrupt(message) => assert!(
            message.contains("\"k2\"") && message.contains("not configured"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // A different key under the right id: a clear error, not garbage.
    let opened = fixture.open(keys(&[("k2", 9)])).await.unwrap();
    match opened.store().load(id).await.unwrap_err() {
        StoreError::Corrupt(message) => {
            assert!(
                message.contains("does not open with key \"k2\""),
                "{message}"
            );
            assert!(!message.contains(TOKEN));
        }
        other => panic!("{other:?}"),
    }
    fixture
}

async fn a_restarted_instance_frees_only_the_leases_under_its_own_name(
    fixture: Fixture,
) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let ttl = Duration::from_secs(30);
    let mut held = Vec::new();
    for owner in ["pod-0", "pod-0", "pod-1"] {
        let (session, _, _) = started();
        let id = session.handover_id();
        store
            .admit(
                &RequestId::new(format!("r-{id}")).unwrap(),
                &session,
                &address(),
                now(0),
            )
            .await
            .unwrap();
        let lease = store
            .acquire_lease(id, owner, now(0), ttl)
            .await
            .unwrap()
            .unwrap();
        held.push((id, lease));
    }
    // pod-0 was killed and starts again under its name, well before its leases lapse.
    assert_eq!(store.release_leases_of("pod-0").await.unwrap(), 2);
    assert_eq!(store.release_leases_of("pod-0").await.unwrap(), 0);
    for (id, old) in &held[..2] {
        let back = store
            .acquire_lease(*id, "pod-0", now(1_000), ttl)
            .await
            .unwrap()
            .expect("its own handover, at once");
        assert!(back.fencing > old.fencing, "the previous run is fenced off");
        let stale = store.renew_lease(*id, old, now(1_001), ttl).await;
        assert_eq!(stale.unwrap_err(), StoreError::Fenced);
    }
    // pod-1's lease is untouched.
    let (other, _) = &held[2];
    assert!(
        store
            .acquire_lease(*other, "pod-0", now(1_000), ttl)
            .await
            .unwrap()
            .is_none()
    );
    fixture
}

async fn leases_have_one_holder_and_fence_the_previous_one(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let (session, _, _) = started();
    let id = session.handover_id();
    store
        .admit(&RequestId::new("r").unwrap(), &session, &address(), now(0))
        .await
        .unwrap();
    let ttl = Duration::from_secs(10);
    // Two owners race: exactly one wins.
    let (a, b) = tokio::join!(
        store.acquire_lease(id, "a", now(0), ttl),
        store.acquire_lease(id, "b", now(0), ttl)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.is_some() != b.is_some(),
        "exactly one holder: {a:?} {b:?}"
    );
    let (holder, other) = match (a, b) {
        (Some(lease), None) => (lease, "b"),
        (None, Some(lease)) => (lease, "a"),
        other => panic!("exactly one holder: {other:?}"),
    };
    assert!(
        store
            .acquire_lease(id, other, now(5_000), ttl)
            .await
            .unwrap()
            .is_none(),
        "still held"
    );
    let holder = store
        .renew_lease(id, &holder, now(9_000), ttl)
        .await
        .unwrap();
    assert!(
        store
            .acquire_lease(id, other, now(15_000), ttl)
            .await
            .unwrap()
            .is_none(),
        "renewed"
    );
    // The holder dies; after the lease lapses the other takes over with a larger token.
    let taken = store
        .acquire_lease(id, other, now(19_001), ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.fencing > holder.fencing);
    // The old holder's writes and renewals are refused.
    let stale = plain(&session, Version(1), holder.fencing, now(19_002));
    assert_eq!(store.commit(stale).await.unwrap_err(), StoreError::Fenced);
    assert_eq!(
        store
            .renew_lease(id, &holder, now(19_003), ttl)
            .await
            .unwrap_err(),
        StoreError::Fenced
    );
    let fresh = Commit {
        fencing: taken.fencing,
        ..stale
    };
    assert_eq!(store.commit(fresh).await.unwrap(), Version(2));
    // Releasing lets the next one in at once, again with a larger token.
    store.release_lease(id, &taken).await.unwrap();
    let next = store
        .acquire_lease(id, "c", now(19_004), ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(next.fencing > taken.fencing);
    let unknown = HandoverId::from_random_bytes(random_bytes());
    assert_eq!(
        store
            .acquire_lease(unknown, "a", now(0), ttl)
            .await
            .unwrap_err(),
        StoreError::NotFound(unknown)
    );
    fixture
}

async fn ended_handovers_are_purged_after_retention(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    // 1970 times: far from every other test's, which may share the database.
    let at = Timestamp::from_unix_millis;
    let address = address();
    let mut ended = session();
    let live = session();
    store
        .admit(&RequestId::new("a").unwrap(), &ended, &address, at(1_000))
        .await
        .unwrap();
    let lease = store
        .acquire_lease(ended.handover_id(), "x", at(1_000), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let _ = ended.handle(Input::Start, at(1_100));
    close(&mut ended, at(1_200));
    store
        .commit(plain(&ended, Version(1), lease.fencing, at(1_300)))
        .await
        .unwrap();
    let other = BotAddress {
        session_id: "session-live".to_owned(),
        ..address.clone()
    };
    store
        .admit(&RequestId::new("b").unwrap(), &live, &other, at(1_400))
        .await
        .unwrap();
    assert_eq!(store.purge_ended(at(1_300)).await.unwrap(), 0, "not yet");
    assert_eq!(store.purge_ended(at(1_301)).await.unwrap(), 1);
    assert!(store.load(ended.handover_id()).await.unwrap().is_none());
    assert!(
        store.load(live.handover_id()).await.unwrap().is_some(),
        "live handovers stay"
    );
    fixture
}

async fn lists_filter_by_cognigy_session_and_liveness_newest_first(fixture: Fixture) -> Fixture {
    let opened = fixture.open(keys(&[("k1", 1)])).await.unwrap();
    let store = opened.store();
    let first = address();
    let second = BotAddress {
        session_id: "session-2".to_owned(),
        ..first.clone()
    };
    let (older, newer) = (session(), session());
    store
        .admit(&RequestId::new("a").unwrap(), &older, &first, now(1))
        .await
        .unwrap();
    store
        .admit(&RequestId::new("b").unwrap(), &newer, &second, now(2))
        .await
        .unwrap();
    let mut ended = store.load(older.handover_id()).await.unwrap().unwrap();
    let lease = store
        .acquire_lease(older.handover_id(), "a", now(3), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let _ = ended.session.handle(Input::Start, now(4));
    close(&mut ended.session, now(5));
    store
        .commit(plain(&ended.session, ended.version, lease.fencing, now(6)))
        .await
        .unwrap();
    let mine = |filter: SummaryFilter| SummaryFilter {
        user_id: Some(first.user_id.clone()),
        limit: 10,
        ..filter
    };
    let all = opened.summaries(&mine(SummaryFilter::default())).await;
    assert_eq!(
        all.iter().map(|s| s.handover_id).collect::<Vec<_>>(),
        [newer.handover_id(), older.handover_id()]
    );
    assert_eq!(all[1].phase, Phase::Ended);
    assert_eq!(
        all[1].outcome.as_ref().map(|o| o.reason),
        Some(EndReason::ClosedByFlow)
    );
    let live = opened
        .summaries(&mine(SummaryFilter {
            live: Some(true),
            ..SummaryFilter::default()
        }))
        .await;
    assert_eq!(
        live.iter().map(|s| s.handover_id).collect::<Vec<_>>(),
        [newer.handover_id()]
    );
    let by_session = opened
        .summaries(&mine(SummaryFilter {
            session_id: Some("session-2".to_owned()),
            ..SummaryFilter::default()
        }))
        .await;
    assert_eq!(by_session.len(), 1);
    assert_eq!(by_session[0].session_id, "session-2");
    let one = opened
        .summaries(&SummaryFilter {
            user_id: Some(first.user_id.clone()),
            limit: 1,
            ..SummaryFilter::default()
        })
        .await;
    assert_eq!(one.len(), 1);
    fixture
}
