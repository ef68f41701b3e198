//! A whole handover driven by a plain blocking loop: no async runtime, no threads, a virtual
//! clock, and fake Salesforce and bot ports written against the port traits.
//!
//! It shows what any embedding runtime does with a `Session`: feed inputs, execute the
//! returned commands through the ports, feed the results back, and sleep until
//! `poll_timeout`. Run it with `cargo run -p handover-core --example blocking_loop`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm
)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use handover_core::ports::{BotAddress, BotPort, EventStream, SalesforcePort};
use handover_core::*;

fn main() {
    let salesforce = FakeSalesforce::default();
    let bot = ConsoleBot;
    let address = BotAddress {
        endpoint_url: "https://endpoint-trial.cognigy.ai".to_owned(),
        url_token: "url-token".to_owned(),
        user_id: "user-42".to_owned(),
        session_id: "session-7".to_owned(),
    };
    let request = HandoverRequest {
        handover_id: HandoverId::from_random_bytes([7; 16]),
        conversation_id: ConversationId::from_random_bytes([8; 16]),
        transcript: vec![
            TranscriptTurn::user("Where is my order?"),
            TranscriptTurn::bot("Let me connect you with a colleague."),
        ],
        settings: HandoverSettings {
            send_transcript: true,
            locale: Some("en_US".to_owned()),
            ..HandoverSettings::default()
        },
        copilot_url: None,
        deployment: None,
    };
    let mut session = Session::new(request, SessionConfig::default());

    // The embedder owns the clock. Here it is virtual: it jumps to the next deadline.
    let start = Timestamp::from_unix_secs(1_700_000_000);
    let mut now = start;
    let mut inputs = VecDeque::from([Input::Start]);
    let mut stream: Option<(CallId, Box<dyn EventStream>)> = None;
    // What the agent and the user do, and when.
    let mut script: VecDeque<(u64, Action)> = VecDeque::from([
        (5, Action::AgentJoins),
        (
            8,
            Action::AgentSays("Hi, I'm Jane. Let me look up your order."),
        ),
        (20, Action::UserSays("It's order 1234.")),
        (40, Action::AgentSays("It ships tomorrow. Anything else?")),
        (50, Action::UserSays("No, thanks!")),
        (60, Action::AgentEnds),
    ]);

    while !session.is_finished() {
        // 1. Feed every pending input and execute every command it returns.
        while let Some(input) = inputs.pop_front() {
            for command in session.handle(input, now) {
                match command {
                    Command::Salesforce(call) => match &call.request {
                        SalesforceRequest::OpenStream { last_event_id } => {
                            let credential = call.credential.as_ref().unwrap();
                            let opened = block_on(
                                salesforce.open_stream(credential, last_event_id.as_ref()),
                            );
                            let event = match opened {
                                Ok(events) => {
                                    stream = Some((call.id, events));
                                    StreamEvent::Opened
                                }
                                Err(_) => StreamEvent::Closed(StreamClosed::Dropped),
                            };
                            inputs.push_back(Input::Stream {
                                stream: call.id,
                                event,
                            });
                        }
                        SalesforceRequest::CloseStream => {
                            stream = None;
                            inputs.push_back(Input::Salesforce {
                                call: call.id,
                                result: Ok(SalesforceResponse::Done),
                            });
                        }
                        request => {
                            let result =
                                block_on(salesforce.execute(call.credential.as_ref(), request));
                            inputs.push_back(Input::Salesforce {
                                call: call.id,
                                result,
                            });
                        }
                    },
                    Command::Bot(call) => {
                        let result = block_on(bot.deliver(&address, &call.delivery));
                        inputs.push_back(Input::Bot {
                            call: call.id,
                            result,
                        });
                    }
                    Command::Record(observation) => println!("  (metric: {observation:?})"),
                }
            }
            // 2. Whatever the stream has delivered by now goes in too.
            if let Some((id, events)) = &mut stream {
                while let Some(event) = poll_once(events.next_event()).flatten() {
                    inputs.push_back(Input::Stream { stream: *id, event });
                }
            }
        }

        // 3. Sleep until the session's next deadline or the next scripted action.
        let next_action = script
            .front()
            .map(|(at, _)| start + Duration::from_secs(*at));
        let next_timer = session.poll_timeout().map(|(at, _)| at);
        let Some(wake) = [next_action, next_timer].into_iter().flatten().min() else {
            break;
        };
        now = now.max(wake);
        if next_action.is_some_and(|at| at <= now) {
            let (_, action) = script.pop_front().unwrap();
            match action {
                Action::AgentJoins => salesforce.agent_joins("Jane"),
                Action::AgentSays(text) => salesforce.agent_says(text),
                Action::AgentEnds => salesforce.agent_ends(),
                Action::UserSays(text) => {
                    println!("user  > {text}");
                    let id = BotMessageId::new(format!("m{}", now.as_unix_millis())).unwrap();
                    inputs.push_back(Input::UserMessage(UserMessage {
                        id,
                        text: text.to_owned(),
                        attachments: vec![],
                    }));
                }
            }
            if let Some((id, events)) = &mut stream {
                while let Some(event) = poll_once(events.next_event()).flatten() {
                    inputs.push_back(Input::Stream { stream: *id, event });
                }
            }
        }
        if next_timer.is_some_and(|at| at <= now) {
            inputs.push_back(Input::Timeout);
        }
    }
    let outcome = session.outcome().unwrap();
    assert_eq!(
        outcome.reason,
        EndReason::AgentEnded,
        "the example ends as scripted"
    );
    println!(
        "handover over after {}s: {} ({})",
        now.saturating_duration_since(start).as_secs(),
        outcome.status().as_str(),
        outcome.reason
    );
}

enum Action {
    AgentJoins,
    AgentSays(&'static str),
    AgentEnds,
    UserSays(&'static str),
}

/// Polls a future once. The fake ports never wait, so their futures are ready at once; a
/// stream with nothing to say is `Pending`, which here means "nothing yet".
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    poll_once(future).expect("the fake ports answer at once")
}

/// Prints what the user would see and what the Flow would hear.
struct ConsoleBot;

#[async_trait]
impl BotPort for ConsoleBot {
    async fn deliver(
        &self,
        _address: &BotAddress,
        delivery: &BotDelivery,
    ) -> Result<(), DeliveryFailure> {
        match delivery {
            BotDelivery::Notify(Notification::Agent(message)) => {
                let name = message.sender_name.as_deref().unwrap_or("agent");
                if let MessageContent::Text(text) = &message.content {
                    println!("{name:>5} > {text}");
                }
            }
            BotDelivery::Notify(Notification::Notice { text, .. }) => println!("notice: {text}"),
            BotDelivery::Inject(update) => match &update.status {
                HandoverStatus::Ended(outcome) => {
                    println!("flow  : {} ({})", outcome.status().as_str(), outcome.reason)
                }
                HandoverStatus::Active { agent_name } => {
                    println!("flow  : active ({})", agent_name.as_deref().unwrap_or("-"))
                }
                other => println!("flow  : {other:?}"),
            },
            BotDelivery::Typing { .. } => {}
        }
        Ok(())
    }
}

/// A minimal Salesforce: one conversation, an agent who follows the script, a stream that
/// delivers every entry, and tokens that never expire within the example.
#[derive(Clone, Default)]
struct FakeSalesforce {
    state: Arc<Mutex<World>>,
}

#[derive(Default)]
struct World {
    conversation: Option<ConversationId>,
    entries: Vec<ConversationEntry>,
    undelivered: VecDeque<StreamEvent>,
}

impl FakeSalesforce {
    fn append(&self, role: Role, name: &str, payload: EntryPayload) {
        let mut world = self.state.lock().unwrap();
        let Some(conversation_id) = world.conversation else {
            return;
        };
        let entry = ConversationEntry {
            conversation_id,
            identifier: EntryId::new(format!("entry-{}", world.entries.len() + 1)).unwrap(),
            sender: Sender {
                role,
                display_name: Some(name.to_owned()),
                subject: Some(format!("{name}-subject")),
            },
            server_time: None,
            message_id: None,
            payload,
        };
        world.entries.push(entry.clone());
        let event_id = EventId::new(world.entries.len().to_string()).unwrap();
        world.undelivered.push_back(StreamEvent::Entry {
            event_id: Some(event_id),
            entry,
        });
    }

    fn agent_joins(&self, name: &str) {
        let change = ParticipantChange {
            operation: ParticipantOperation::Add,
            role: Role::Agent,
            display_name: Some(name.to_owned()),
            subject: Some(format!("{name}-subject")),
        };
        self.append(
            Role::Agent,
            name,
            EntryPayload::ParticipantChanged(vec![change]),
        );
    }

    fn agent_says(&self, text: &str) {
        self.append(
            Role::Agent,
            "Jane",
            EntryPayload::Message(MessageContent::Text(text.to_owned())),
        );
    }

    fn agent_ends(&self) {
        let payload = EntryPayload::SessionStatusChanged {
            status: SessionStatus::Ended,
            ended_by: Some(Role::Agent),
        };
        self.append(Role::System, "Automated Process", payload);
    }
}

#[async_trait]
impl SalesforcePort for FakeSalesforce {
    async fn execute(
        &self,
        _credential: Option<&Credential>,
        request: &SalesforceRequest,
    ) -> Result<SalesforceResponse, CallFailure> {
        match request {
            SalesforceRequest::MintToken(_)
            | SalesforceRequest::RenewToken(_)
            | SalesforceRequest::ContinueToken => Ok(SalesforceResponse::Token(IssuedToken {
                token: AccessToken::new("example-token"),
                expires_at: Timestamp::from_unix_secs(1_700_000_000 + 6 * 3600),
                subject: Subject::Anonymous("v2/iamessage/ANON/example".to_owned()),
                last_event_id: None,
            })),
            SalesforceRequest::CreateConversation {
                conversation_id, ..
            } => {
                self.state.lock().unwrap().conversation = Some(*conversation_id);
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::SendMessage { message, .. } => {
                if let OutboundBody::Text(text) = &message.body {
                    for line in text.lines() {
                        println!("agent sees: {line}");
                    }
                }
                Ok(SalesforceResponse::Done)
            }
            SalesforceRequest::ListEntries { .. } => Ok(SalesforceResponse::Entries(
                self.state.lock().unwrap().entries.clone(),
            )),
            SalesforceRequest::FetchRoutingStatus { .. } => Ok(SalesforceResponse::RoutingStatus(
                RoutingStatus::NeedsRouting,
            )),
            SalesforceRequest::SendTyping { .. }
            | SalesforceRequest::Acknowledge { .. }
            | SalesforceRequest::CloseConversation { .. }
            | SalesforceRequest::RevokeToken
            | SalesforceRequest::CloseStream => Ok(SalesforceResponse::Done),
            SalesforceRequest::OpenStream { .. } => Err(CallFailure::Rejected {
                status: 400,
                message: "use open_stream".to_owned(),
            }),
        }
    }

    async fn open_stream(
        &self,
        _credential: &Credential,
        _last_event_id: Option<&EventId>,
    ) -> Result<Box<dyn EventStream>, CallFailure> {
        Ok(Box::new(FakeStream {
            salesforce: self.clone(),
        }))
    }
}

struct FakeStream {
    salesforce: FakeSalesforce,
}

#[async_trait]
impl EventStream for FakeStream {
    async fn next_event(&mut self) -> Option<StreamEvent> {
        let state = self.salesforce.state.clone();
        std::future::poll_fn(
            move |_| match state.lock().unwrap().undelivered.pop_front() {
                Some(event) => Poll::Ready(Some(event)),
                None => Poll::Pending,
            },
        )
        .await
    }
}
