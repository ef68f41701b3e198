//! What only PostgreSQL does: several instances contending for leases, and `LISTEN/NOTIFY`
//! waking the lease holder when another instance accepts an input. Runs when
//! `HANDOVER_TEST_DATABASE_URL` is set (each test in a database of its own); otherwise it says
//! loudly that it was skipped.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use handover_core::ports::{BotAddress, Commit, Lease, SessionStore, StoreError, Version};
use handover_core::*;
use handover_store::{Keyring, SqlStore};

fn keys() -> Keyring {
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    Keyring::parse(&format!("k1:{key}")).unwrap()
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// A database of its own for one test, dropped at the end.
struct Database {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl Database {
    async fn create(test: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var("HANDOVER_TEST_DATABASE_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: HANDOVER_TEST_DATABASE_URL is not set (.ci/run sets it)"
            );
            return None;
        };
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("PostgreSQL at HANDOVER_TEST_DATABASE_URL is reachable");
        let name = format!(
            "handover_test_{}",
            HandoverId::from_random_bytes(random_bytes())
                .to_string()
                .replace('-', "")
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }

    async fn drop(self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }
}

fn new_session() -> Session {
    let request = HandoverRequest {
        handover_id: HandoverId::from_random_bytes(random_bytes()),
        conversation_id: ConversationId::from_random_bytes(random_bytes()),
        transcript: Vec::new(),
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    };
    Session::new(request, SessionConfig::default())
}

fn address(i: usize) -> BotAddress {
    BotAddress {
        endpoint_url: "https://endpoint.example".to_owned(),
        url_token: "url-token".to_owned(),
        user_id: format!("user-{i}"),
        session_id: "session".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_share_a_thousand_sessions_with_one_owner_each_and_fenced_takeovers() {
    const SESSIONS: usize = 1000;
    const INSTANCES: usize = 4;
    let Some(database) = Database::create("four_instances_share_a_thousand_sessions").await else {
        return;
    };
    let setup = SqlStore::connect(&database.url, keys()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let session = new_session();
        let admitted = setup
            .admit(
                &RequestId::new("r").unwrap(),
                &session,
                &address(i),
                Timestamp::from_unix_millis(1_000),
            )
            .await
            .unwrap();
        assert_eq!(admitted, Admission::Started(session.handover_id()));
        ids.push(session.handover_id());
    }
    // Four instances, each with its own pool, race for every session at once.
    let ttl = Duration::from_secs(30);
    let at = Timestamp::from_unix_millis(2_000);
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Arc::new(
            SqlStore::connect(&database.url, keys()).await.unwrap(),
        ));
    }
    let race = |owner: String, store: Arc<SqlStore>, ids: Vec<HandoverId>, at: Timestamp| async move {
        let mut won = BTreeMap::new();
        for id in ids {
            if let Some(lease) = store.acquire_lease(id, &owner, at, ttl).await.unwrap() {
                won.insert(id, lease);
            }
        }
        won
    };
    let tasks: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let mut order = ids.clone();
            order.rotate_left(n * SESSIONS / INSTANCES);
            tokio::spawn(race(format!("instance-{n}"), store.clone(), order, at))
        })
        .collect();
    let mut owners: BTreeMap<HandoverId, Vec<(String, Lease)>> = BTreeMap::new();
    for (n, task) in tasks.into_iter().enumerate() {
        for (id, lease) in task.await.unwrap() {
            owners
                .entry(id)
                .or_default()
                .push((format!("instance-{n}"), lease));
        }
    }
    assert_eq!(owners.len(), SESSIONS, "every session has an owner");
    let doubled = owners.values().filter(|o| o.len() != 1).count();
    assert_eq!(doubled, 0, "no session has two owners");
    let per_instance: BTreeMap<&str, usize> =
        owners.values().fold(BTreeMap::new(), |mut counts, o| {
            *counts.entry(o[0].0.as_str()).or_default() += 1;
            counts
        });
    assert_eq!(
        per_instance.len(),
        INSTANCES,
        "the work is shared: {per_instance:?}"
    );

    // Instance 0 dies. Once its leases lapse, the other three take its sessions over, each
    // takeover with a larger fencing token, and the dead instance's writes are refused.
    let orphans: Vec<HandoverId> = owners
        .iter()
        .filter(|(_, o)| o[0].0 == "instance-0")
        .map(|(id, _)| *id)
        .collect();
    let later = at + ttl + Duration::from_millis(1);
    let tasks: Vec<_> = (1..INSTANCES)
        .map(|n| {
            let mut order = orphans.clone();
            order.rotate_left(n * orphans.len() / INSTANCES);
            tokio::spawn(race(
                format!("instance-{n}"),
                instances[n].clone(),
                order,
                later,
            ))
        })
        .collect();
    let mut taken: BTreeMap<HandoverId, usize> = BTreeMap::new();
    for task in tasks {
        for (id, lease) in task.await.unwrap() {
            let before = &owners[&id][0].1;
            assert!(
                lease.fencing > before.fencing,
                "a takeover hands over a larger token"
            );
            *taken.entry(id).or_default() += 1;
        }
    }
    assert_eq!(taken.len(), orphans.len(), "every orphan was taken over");
    assert!(taken.values().all(|n| *n == 1), "by exactly one instance");
    let victim = orphans[0];
    let stale = &owners[&victim][0].1;
    let loaded = instances[0].load(victim).await.unwrap().unwrap();
    let error = instances[0]
        .commit(Commit {
            session: &loaded.session,
            expected: loaded.version,
            fencing: stale.fencing,
            outbox: &[],
            done: &[],
            inbox_through: None,
            now: later,
        })
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::Fenced);
    assert_eq!(
        instances[1].load(victim).await.unwrap().unwrap().version,
        Version(1),
        "nothing was written"
    );
    drop(instances);
    drop(setup);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_accepted_by_one_instance_wakes_the_holder_on_another_at_once() {
    let Some(database) = Database::create("an_input_wakes_the_holder").await else {
        return;
    };
    let holder = SqlStore::connect(&database.url, keys()).await.unwrap();
    let api = SqlStore::connect(&database.url, keys()).await.unwrap();
    let session = new_session();
    let id = session.handover_id();
    holder
        .admit(
            &RequestId::new("r").unwrap(),
            &session,
            &address(0),
            Timestamp::from_unix_millis(1),
        )
        .await
        .unwrap();
    let mut listener = holder
        .inbox_listener()
        .await
        .unwrap()
        .expect("PostgreSQL listens");
    let input = Input::UserMessage(UserMessage {
        id: BotMessageId::new("m1").unwrap(),
        text: "hello".to_owned(),
        attachments: Vec::new(),
    });
    let position = api.append_input(id, &input).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.next())
        .await
        .expect("woken within 5 s")
        .unwrap();
    assert_eq!(woken, id);
    assert_eq!(
        holder.pending_inputs(id).await.unwrap(),
        [(position, input)]
    );
    drop(listener);
    drop(holder);
    drop(api);
    database.drop().await;
}
