//! A minimal driver: one tokio task runs a `Session`, executes its commands through the real
//! Salesforce adapter and a recording bot, and feeds every result back. It follows the core's
//! driving contract and nothing more (no store, no outbox): enough to test the adapter and the
//! core together against the sandbox.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use handover_core::ports::{BotAddress, BotPort, SalesforcePort};
use handover_core::*;
use handover_salesforce::MiawClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What reached the user and the Flow.
#[derive(Default)]
pub struct RecordingBot {
    pub delivered: Mutex<Vec<BotDelivery>>,
}

#[async_trait]
impl BotPort for RecordingBot {
    async fn deliver(
        &self,
        _address: &BotAddress,
        delivery: &BotDelivery,
    ) -> Result<(), DeliveryFailure> {
        self.delivered.lock().unwrap().push(delivery.clone());
        Ok(())
    }
}

impl RecordingBot {
    /// Agent texts the user received, in order.
    pub fn texts(&self) -> Vec<String> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .filter_map(|d| match d {
                BotDelivery::Notify(Notification::Agent(AgentMessage {
                    content: MessageContent::Text(text),
                    ..
                })) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// The terminal status, if the Flow got one.
    pub fn outcome(&self) -> Option<Outcome> {
        self.delivered.lock().unwrap().iter().find_map(|d| match d {
            BotDelivery::Inject(StatusUpdate {
                status: HandoverStatus::Ended(outcome),
                ..
            }) => Some(outcome.clone()),
            _ => None,
        })
    }

    pub fn active(&self) -> bool {
        self.delivered.lock().unwrap().iter().any(|d| {
            matches!(
                d,
                BotDelivery::Inject(StatusUpdate {
                    status: HandoverStatus::Active { .. },
                    ..
                })
            )
        })
    }
}

/// Where a running session stands, updated after every input.
pub type Status = Arc<Mutex<(Phase, Option<Outcome>)>>;

pub struct Running<B: ?Sized = RecordingBot> {
    pub inputs: mpsc::UnboundedSender<Input>,
    pub bot: Arc<B>,
    pub status: Status,
    pub observations: Arc<Mutex<Vec<Observation>>>,
    pub conversation: ConversationId,
    task: JoinHandle<Session>,
}

impl<B: ?Sized> Running<B> {
    pub fn say(&self, id: &str, text: &str) {
        let message = UserMessage {
            id: BotMessageId::new(id).unwrap(),
            text: text.to_owned(),
            attachments: Vec::new(),
        };
        self.inputs.send(Input::UserMessage(message)).unwrap();
    }

    pub fn send(&self, input: Input) {
        self.inputs.send(input).unwrap();
    }

    pub fn observed(&self, wanted: &Observation) -> usize {
        self.observations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| *o == wanted)
            .count()
    }

    pub fn observed_matching(&self, wanted: impl Fn(&Observation) -> bool) -> usize {
        self.observations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| wanted(o))
            .count()
    }

    /// Waits for the session to finish and returns it.
    pub async fn finished(&mut self, limit: Duration) -> Session {
        tokio::time::timeout(limit, &mut self.task)
            .await
            .expect("the session finished in time")
            .unwrap()
    }
}

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp::from_unix_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// Short timers so that the tests run in seconds.
pub fn quick_config() -> SessionConfig {
    let quick = |initial: u64, max: u64, attempts: u32| RetryPolicy {
        initial: Duration::from_millis(initial),
        max: Duration::from_millis(max),
        max_attempts: attempts,
    };
    SessionConfig {
        safety_poll_interval: Duration::from_secs(2),
        stream_watchdog: Duration::from_millis(1500),
        stream_connect_timeout: Duration::from_secs(2),
        stream_backoff: quick(50, 500, u32::MAX),
        retry: quick(50, 500, 8),
        renewal_retry: quick(100, 1000, u32::MAX),
        ..SessionConfig::default()
    }
}

pub fn request(settings: HandoverSettings) -> HandoverRequest {
    HandoverRequest {
        handover_id: HandoverId::from_random_bytes(fastrand::u128(..).to_le_bytes()),
        conversation_id: ConversationId::from_random_bytes(fastrand::u128(..).to_le_bytes()),
        transcript: Vec::new(),
        settings,
        copilot_url: None,
        deployment: None,
    }
}

/// Starts a handover whose deliveries are recorded, and drives it until it is finished.
pub fn start(client: MiawClient, request: HandoverRequest, config: SessionConfig) -> Running {
    let address = BotAddress {
        endpoint_url: "https://endpoint.example".to_owned(),
        url_token: "url-token".to_owned(),
        user_id: "user".to_owned(),
        session_id: "session".to_owned(),
    };
    start_with(
        client,
        Arc::new(RecordingBot::default()),
        address,
        request,
        config,
    )
}

/// Starts a handover that delivers through `bot` to `address`, and drives it until it is
/// finished.
pub fn start_with<B: BotPort + 'static>(
    client: MiawClient,
    bot: Arc<B>,
    address: BotAddress,
    request: HandoverRequest,
    config: SessionConfig,
) -> Running<B> {
    let conversation = request.conversation_id;
    let (inputs, mut inbox) = mpsc::unbounded_channel::<Input>();
    let observations = Arc::new(Mutex::new(Vec::new()));
    let status: Status = Arc::new(Mutex::new((Phase::Requested, None)));
    let feedback = inputs.clone();
    let task = {
        let bot = bot.clone();
        let observations = observations.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let mut session = Session::new(request, config);
            let mut stream: Option<JoinHandle<()>> = None;
            feedback.send(Input::Start).unwrap();
            loop {
                let deadline = session.poll_timeout().map(|(at, _)| at);
                let input = match deadline {
                    Some(at) => {
                        let wait = at.saturating_duration_since(now());
                        tokio::select! {
                            input = inbox.recv() => input,
                            () = tokio::time::sleep(wait) => Some(Input::Timeout),
                        }
                    }
                    None => inbox.recv().await,
                };
                let Some(input) = input else { break };
                for command in session.handle(input, now()) {
                    match command {
                        Command::Salesforce(call) => match call.request.clone() {
                            SalesforceRequest::OpenStream { last_event_id } => {
                                if let Some(old) = stream.take() {
                                    old.abort();
                                }
                                let client = client.clone();
                                let feedback = feedback.clone();
                                let credential = call.credential.clone();
                                stream = Some(tokio::spawn(async move {
                                    let Some(credential) = credential else { return };
                                    let send = |event| {
                                        let _ = feedback.send(Input::Stream {
                                            stream: call.id,
                                            event,
                                        });
                                    };
                                    match client
                                        .open_stream(&credential, last_event_id.as_ref())
                                        .await
                                    {
                                        Ok(mut events) => {
                                            send(StreamEvent::Opened);
                                            while let Some(event) = events.next_event().await {
                                                send(event);
                                            }
                                            send(StreamEvent::Closed(StreamClosed::Dropped));
                                        }
                                        Err(CallFailure::Unauthorized) => {
                                            send(StreamEvent::Closed(StreamClosed::Unauthorized))
                                        }
                                        Err(_) => send(StreamEvent::Closed(StreamClosed::Dropped)),
                                    }
                                }));
                            }
                            SalesforceRequest::CloseStream => {
                                if let Some(old) = stream.take() {
                                    old.abort();
                                }
                                let _ = feedback.send(Input::Salesforce {
                                    call: call.id,
                                    result: Ok(SalesforceResponse::Done),
                                });
                            }
                            request => {
                                let client = client.clone();
                                let feedback = feedback.clone();
                                tokio::spawn(async move {
                                    let result =
                                        client.execute(call.credential.as_ref(), &request).await;
                                    let _ = feedback.send(Input::Salesforce {
                                        call: call.id,
                                        result,
                                    });
                                });
                            }
                        },
                        Command::Bot(call) => {
                            let bot = bot.clone();
                            let feedback = feedback.clone();
                            let address = address.clone();
                            tokio::spawn(async move {
                                let result = bot.deliver(&address, &call.delivery).await;
                                let _ = feedback.send(Input::Bot {
                                    call: call.id,
                                    result,
                                });
                            });
                        }
                        Command::Record(observation) => {
                            observations.lock().unwrap().push(observation)
                        }
                    }
                }
                *status.lock().unwrap() = (session.phase(), session.outcome().cloned());
                if session.is_finished() {
                    break;
                }
            }
            if let Some(old) = stream.take() {
                old.abort();
            }
            session
        })
    };
    Running {
        inputs,
        bot,
        status,
        observations,
        conversation,
        task,
    }
}
