//! The runtime with mocked ports (mockall) where a precise failure sequence matters more than a
//! realistic server: the first Notify fails, is retried, and the next agent message is not
//! delivered before it (S41, through the real runtime and store).

#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use handover_app::metrics::Metrics;
use handover_app::runtime::{Parts, Runtime, now};
use handover_core::ports::{BotAddress, BotPort, EventStream, SalesforcePort, SessionStore};
use handover_core::*;
use handover_store::{Keyring, MemoryStore};
use mockall::{Sequence, mock};

/// Salesforce that answers every call (a hand-written fake: mockall's expectations do not
/// fit `Option<&T>` arguments of `async_trait` methods) and streams a script once.
struct Salesforce {
    script: std::sync::Mutex<Option<Vec<StreamEvent>>>,
}

#[async_trait]
impl SalesforcePort for Salesforce {
    async fn execute(
        &self,
        _credential: Option<&Credential>,
        request: &SalesforceRequest,
    ) -> Result<SalesforceResponse, CallFailure> {
        Ok(match request {
            SalesforceRequest::MintToken(_) | SalesforceRequest::RenewToken(_) => {
                SalesforceResponse::Token(IssuedToken {
                    token: AccessToken::new("token"),
                    expires_at: Timestamp::from_unix_millis(
                        now().as_unix_millis() + 6 * 3600 * 1000,
                    ),
                    subject: Subject::Anonymous("v2/iamessage/ANON/x".to_owned()),
                    last_event_id: None,
                })
            }
            SalesforceRequest::ListEntries { .. } => SalesforceResponse::Entries(Vec::new()),
            SalesforceRequest::FetchRoutingStatus { .. } => {
                SalesforceResponse::RoutingStatus(RoutingStatus::Routed)
            }
            _ => SalesforceResponse::Done,
        })
    }

    async fn open_stream(
        &self,
        _credential: &Credential,
        _last_event_id: Option<&EventId>,
    ) -> Result<Box<dyn EventStream>, CallFailure> {
        let events = self.script.lock().unwrap().take().unwrap_or_default();
        Ok(Box::new(Scripted(events.into())))
    }
}

mock! {
    Bot {}
    #[async_trait]
    impl BotPort for Bot {
        async fn deliver(&self, address: &BotAddress, delivery: &BotDelivery) -> Result<(), DeliveryFailure>;
    }
}

/// A stream that delivers `events`, then stays open and silent.
struct Scripted(std::collections::VecDeque<StreamEvent>);

#[async_trait]
impl EventStream for Scripted {
    async fn next_event(&mut self) -> Option<StreamEvent> {
        match self.0.pop_front() {
            Some(event) => Some(event),
            None => std::future::pending().await,
        }
    }
}

fn entry(conversation: ConversationId, id: &str, role: Role, payload: EntryPayload) -> StreamEvent {
    StreamEvent::Entry {
        event_id: Some(EventId::new(id).unwrap()),
        entry: ConversationEntry {
            conversation_id: conversation,
            identifier: EntryId::new(id).unwrap(),
            sender: Sender {
                role,
                display_name: Some("Jane".to_owned()),
                subject: Some("005x".to_owned()),
            },
            server_time: None,
            message_id: None,
            payload,
        },
    }
}

fn agent_text(delivery: &BotDelivery, text: &str) -> bool {
    matches!(
        delivery,
        BotDelivery::Notify(Notification::Agent(AgentMessage { content: MessageContent::Text(t), .. })) if t == text
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s41_a_failed_notify_is_retried_and_the_next_message_waits_for_it() {
    let conversation = ConversationId::from_random_bytes([3; 16]);
    let events = vec![
        entry(
            conversation,
            "1",
            Role::Agent,
            EntryPayload::ParticipantChanged(vec![ParticipantChange {
                operation: ParticipantOperation::Add,
                role: Role::Agent,
                display_name: Some("Jane".to_owned()),
                subject: Some("005x".to_owned()),
            }]),
        ),
        entry(
            conversation,
            "2",
            Role::Agent,
            EntryPayload::Message(MessageContent::Text("first".to_owned())),
        ),
        entry(
            conversation,
            "3",
            Role::Agent,
            EntryPayload::Message(MessageContent::Text("second".to_owned())),
        ),
    ];
    let salesforce = Salesforce {
        script: std::sync::Mutex::new(Some(events)),
    };

    let delivered = Arc::new(AtomicUsize::new(0));
    let mut bot = MockBot::new();
    let mut order = Sequence::new();
    bot.expect_deliver()
        .withf(|_, d| agent_text(d, "first"))
        .times(1)
        .in_sequence(&mut order)
        .returning(|_, _| Err(DeliveryFailure::Transient("502 Bad Gateway".to_owned())));
    let count = delivered.clone();
    bot.expect_deliver()
        .withf(|_, d| agent_text(d, "first"))
        .times(1)
        .in_sequence(&mut order)
        .returning(move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    let count = delivered.clone();
    bot.expect_deliver()
        .withf(|_, d| agent_text(d, "second"))
        .times(1)
        .in_sequence(&mut order)
        .returning(move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    // Statuses (queue, active) and notices are not part of the sequence.
    bot.expect_deliver()
        .withf(|_, d| !matches!(d, BotDelivery::Notify(Notification::Agent(_))))
        .returning(|_, _| Ok(()));

    let key = "k:".to_owned() + &"AAAA".repeat(10) + "AAA=";
    let store = Arc::new(MemoryStore::new(Keyring::parse(&key).unwrap()));
    let mut config = SessionConfig::default();
    config.retry.initial = Duration::from_millis(20);
    let runtime = Runtime::new(Parts {
        store: store.clone(),
        deployments: BTreeMap::from([(
            "main".to_owned(),
            Arc::new(salesforce) as Arc<dyn SalesforcePort>,
        )]),
        default_deployment: "main".to_owned(),
        bot: Arc::new(bot),
        session_config: config.clone(),
        owner: "test".to_owned(),
        lease_ttl: Duration::from_secs(30),
        inbox_poll: Duration::from_secs(1),
        metrics: Metrics::new(),
        log_text: false,
        max_live: 1,
    });
    let request = HandoverRequest {
        handover_id: HandoverId::from_random_bytes([4; 16]),
        conversation_id: conversation,
        transcript: Vec::new(),
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    };
    let session = Session::new(request, config);
    let address = BotAddress {
        endpoint_url: "https://endpoint.example".to_owned(),
        url_token: "t".to_owned(),
        user_id: "u".to_owned(),
        session_id: "s".to_owned(),
    };
    let id = session.handover_id();
    store
        .admit(&RequestId::new("r").unwrap(), &session, &address, now())
        .await
        .unwrap();
    let room = runtime.take_room().expect("room for the first handover");
    assert!(
        runtime.take_room().is_none(),
        "max_live 1: no room for a second"
    );
    runtime.drive(id, true, room);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both messages delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The state the driver committed agrees: nothing is pending toward the user.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stored = store.load(id).await.unwrap().unwrap();
    assert_eq!(stored.session.phase(), Phase::WithAgent);
    assert!(stored.session.failed_bot_deliveries().is_empty());
    runtime.shutdown(Duration::from_secs(5)).await;
}
