//! A deterministic simulation of a handover: a [`Session`] driven against a fake Salesforce
//! ([`FakeSalesforce`]) and a fake bot platform ([`FakeBot`]) on a virtual clock.
//!
//! Tests script what the user, the agent and the network do; the simulation executes every
//! command the session returns, feeds the results back (after an optional latency), fires
//! timers, sends stream pings, and keeps a readable log of every input and command. Nothing
//! here does I/O or reads a clock, so hours of handover run in microseconds.
//!
//! ```
//! use handover_core::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig::default());
//! sim.start();
//! sim.agent_joins("Jane");
//! sim.agent_says("Hi");
//! assert_eq!(sim.bot.texts(), vec!["Hi"]);
//! ```

mod render;
mod salesforce;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use salesforce::{FakeSalesforce, Fault, LoggedEntry, Target};

use crate::bot::{BotDelivery, DeliveryFailure, HandoverStatus, Notification, UserMessage};
use crate::ids::{BotMessageId, CallId, ConversationId, HandoverId};
use crate::io::{Command, Input};
use crate::salesforce::{FileRef, MessageContent, SalesforceRequest, StreamClosed, StreamEvent};
use crate::session::Session;
use crate::settings::{CopilotUrl, HandoverRequest, HandoverSettings, SessionConfig};
use crate::time::Timestamp;
use crate::transcript::TranscriptTurn;

/// How to set up a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The handover's node settings.
    pub settings: HandoverSettings,
    /// The operator configuration.
    pub config: SessionConfig,
    /// The bot transcript.
    pub transcript: Vec<TranscriptTurn>,
    /// The Agent Copilot URL.
    pub copilot_url: Option<CopilotUrl>,
    /// How long Salesforce's tokens live.
    pub token_lifetime: Duration,
    /// Whether identity tokens verify.
    pub identity_accepted: bool,
    /// Delay before every result and stream event reaches the session.
    pub latency: Duration,
    /// Stream keep-alive interval (`None`: no pings).
    pub ping_interval: Option<Duration>,
    /// Seeds the handover and conversation ids.
    pub seed: u8,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            settings: HandoverSettings::default(),
            config: SessionConfig::default(),
            transcript: Vec::new(),
            copilot_url: None,
            token_lifetime: Duration::from_secs(6 * 3600),
            identity_accepted: true,
            latency: Duration::ZERO,
            ping_interval: Some(Duration::from_secs(30)),
            seed: 1,
        }
    }
}

/// A fake bot platform: records what reaches the user and the Flow.
#[derive(Clone, Debug, Default)]
pub struct FakeBot {
    faults: VecDeque<DeliveryFailure>,
    /// Deliveries accepted, in order.
    pub delivered: Vec<BotDelivery>,
    /// Agent typing shown to the user.
    pub typing: Vec<bool>,
}

impl FakeBot {
    /// Fails the next delivery (not typing) with `failure`.
    pub fn fail_next(&mut self, failure: DeliveryFailure) {
        self.faults.push_back(failure);
    }

    fn deliver(&mut self, delivery: &BotDelivery) -> Result<(), DeliveryFailure> {
        if let BotDelivery::Typing { on } = delivery {
            self.typing.push(*on);
            return Ok(());
        }
        if let Some(failure) = self.faults.pop_front() {
            return Err(failure);
        }
        self.delivered.push(delivery.clone());
        Ok(())
    }

    /// The texts of the agent messages the user received, in order.
    pub fn texts(&self) -> Vec<&str> {
        self.delivered
            .iter()
            .filter_map(|delivery| match delivery {
                BotDelivery::Notify(Notification::Agent(message)) => match &message.content {
                    MessageContent::Text(text) => Some(text.as_str()),
                    MessageContent::Attachments { .. }
                    | MessageContent::Choices { .. }
                    | MessageContent::Link { .. }
                    | MessageContent::Other { .. } => None,
                },
                BotDelivery::Notify(Notification::Notice { .. })
                | BotDelivery::Inject(_)
                | BotDelivery::Typing { .. } => None,
            })
            .collect()
    }

    /// The statuses the Flow received, in order.
    pub fn statuses(&self) -> Vec<&HandoverStatus> {
        self.delivered
            .iter()
            .filter_map(|delivery| match delivery {
                BotDelivery::Inject(update) => Some(&update.status),
                BotDelivery::Notify(_) | BotDelivery::Typing { .. } => None,
            })
            .collect()
    }
}

/// The simulation.
#[derive(Debug)]
pub struct Sim {
    /// The session under test.
    pub session: Session,
    /// The fake Salesforce.
    pub salesforce: FakeSalesforce,
    /// The fake bot platform.
    pub bot: FakeBot,
    epoch: Timestamp,
    now: Timestamp,
    pending: BTreeMap<(Timestamp, u64), Input>,
    sequence: u64,
    latency: Duration,
    ping_interval: Option<Duration>,
    next_ping: Option<Timestamp>,
    next_user_message: u64,
    log: Vec<String>,
    history: Vec<(Timestamp, Command)>,
    ended: Option<EndMark>,
}

/// Where the simulation stood when the session reached [`Phase::Ended`](crate::Phase::Ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndMark {
    /// The length of [`Sim::history`] after the input that ended the handover.
    pub history_len: usize,
    /// The length of the server's log at that moment.
    pub server_log_len: usize,
}

/// An upper bound on steps at one instant; more means the session livelocks.
const MAX_STEPS_PER_INSTANT: usize = 100_000;

impl Sim {
    /// A simulation of a handover that has not started yet.
    pub fn new(config: SimConfig) -> Self {
        let request = HandoverRequest {
            handover_id: HandoverId::from_random_bytes([config.seed; 16]),
            conversation_id: ConversationId::from_random_bytes([config.seed.wrapping_add(100); 16]),
            transcript: config.transcript,
            settings: config.settings,
            copilot_url: config.copilot_url,
            deployment: None,
        };
        let mut salesforce = FakeSalesforce::new(request.conversation_id);
        salesforce.token_lifetime = config.token_lifetime;
        salesforce.identity_accepted = config.identity_accepted;
        let epoch = Timestamp::from_unix_secs(1_700_000_000);
        Self {
            session: Session::new(request, config.config),
            salesforce,
            bot: FakeBot::default(),
            epoch,
            now: epoch,
            pending: BTreeMap::new(),
            sequence: 0,
            latency: config.latency,
            ping_interval: config.ping_interval,
            next_ping: None,
            next_user_message: 1,
            log: Vec::new(),
            history: Vec::new(),
            ended: None,
        }
    }

    /// Where things stood when the handover ended, once it has.
    pub fn end_mark(&self) -> Option<EndMark> {
        self.ended
    }

    /// The current virtual time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }

    /// Every command the session issued, with the time it was issued.
    pub fn history(&self) -> &[(Timestamp, Command)] {
        &self.history
    }

    /// When each message toward Salesforce was sent (every attempt).
    pub fn send_times(&self) -> Vec<Timestamp> {
        self.history
            .iter()
            .filter(|(_, command)| {
                matches!(
                    command,
                    Command::Salesforce(crate::io::SalesforceCall {
                        request: SalesforceRequest::SendMessage { .. },
                        ..
                    })
                )
            })
            .map(|(at, _)| *at)
            .collect()
    }

    /// The log since the last call, one line per input and command.
    pub fn take_log(&mut self) -> String {
        let mut text = self.log.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        self.log.clear();
        text
    }

    // ---- the Flow and the user --------------------------------------------------------------

    /// Starts the handover.
    pub fn start(&mut self) {
        self.input(Input::Start);
    }

    /// The user writes `text`; returns the bot message id used.
    pub fn user_says(&mut self, text: &str) -> BotMessageId {
        let id = self.next_message_id();
        self.user_says_with_id(id.clone(), text);
        id
    }

    /// The user writes `text` with a given bot message id (to replay a message).
    pub fn user_says_with_id(&mut self, id: BotMessageId, text: &str) {
        self.input(Input::UserMessage(UserMessage {
            id,
            text: text.to_owned(),
            attachments: Vec::new(),
        }));
    }

    /// The user sends a file.
    pub fn user_sends_file(&mut self, name: &str, size: u64) -> BotMessageId {
        let id = self.next_message_id();
        self.input(Input::UserMessage(UserMessage {
            id: id.clone(),
            text: String::new(),
            attachments: vec![FileRef {
                url: format!("https://files.example/{name}"),
                name: name.to_owned(),
                mime_type: Some("application/pdf".to_owned()),
                size: Some(size),
            }],
        }));
        id
    }

    fn next_message_id(&mut self) -> BotMessageId {
        let id = BotMessageId::new(format!("m{}", self.next_user_message)).expect("not empty");
        self.next_user_message += 1;
        id
    }

    /// The user leaves the chat.
    pub fn user_leaves(&mut self) {
        self.input(Input::UserDisconnected);
    }

    /// The user comes back.
    pub fn user_returns(&mut self) {
        self.input(Input::UserConnected);
    }

    /// The user types, or stops.
    pub fn user_typing(&mut self, on: bool) {
        self.input(Input::UserTyping { on });
    }

    /// The user cancels.
    pub fn user_cancels(&mut self) {
        self.input(Input::UserCancelled);
    }

    /// The Flow closes the handover.
    pub fn flow_closes(&mut self) {
        self.input(Input::FlowClosed);
    }

    // ---- the agent and Salesforce -----------------------------------------------------------

    /// Something happens at Salesforce. Nothing happens to a conversation that does not exist
    /// yet or no longer does.
    fn server<T>(
        &mut self,
        act: impl FnOnce(&mut FakeSalesforce, Timestamp, &mut Vec<StreamEvent>) -> T,
    ) {
        if !self.salesforce.created() || self.salesforce.closed() {
            self.log_line("(no conversation at Salesforce to act on)".to_owned());
            return;
        }
        let mut events = Vec::new();
        act(&mut self.salesforce, self.now, &mut events);
        self.stream_events(events);
        self.settle();
    }

    /// An agent accepts the work.
    pub fn agent_joins(&mut self, name: &str) {
        self.server(|sf, now, out| sf.agent_joins(now, name, out));
    }

    /// The agent writes.
    pub fn agent_says(&mut self, text: &str) {
        self.agent_sends(MessageContent::Text(text.to_owned()));
    }

    /// The agent sends any content.
    pub fn agent_sends(&mut self, content: MessageContent) {
        self.server(|sf, now, out| sf.agent_says(now, content, false, out));
    }

    /// The agent writes, but the stream never delivers it (only the entries list has it).
    pub fn agent_says_withheld(&mut self, text: &str) {
        let content = MessageContent::Text(text.to_owned());
        self.server(|sf, now, out| sf.agent_says(now, content, true, out));
    }

    /// The agent writes `count` messages recorded in one millisecond; every
    /// `withhold_every`-th (if not zero) never comes on the stream.
    pub fn agent_burst(&mut self, count: usize, withhold_every: usize) {
        self.server(|sf, now, out| sf.agent_burst(now, count, withhold_every, out));
    }

    /// An agent accepts the work, but the stream never delivers the join.
    pub fn agent_joins_withheld(&mut self, name: &str) {
        self.server(|sf, now, out| sf.agent_joins_withheld(now, name, out));
    }

    /// The agent ends the session, but the stream never delivers the session's end (the
    /// agent's removal does come).
    pub fn agent_ends_withheld(&mut self) {
        self.server(|sf, now, out| sf.agent_ends_withheld(now, out));
    }

    /// An automated message (role System).
    pub fn system_says(&mut self, text: &str) {
        self.server(|sf, now, out| sf.system_says(now, text, out));
    }

    /// The agent types, or stops.
    pub fn agent_typing(&mut self, on: bool) {
        self.server(|sf, now, out| sf.agent_typing(now, on, out));
    }

    /// The agent transfers the conversation (removed, routing result Transfer, status
    /// TRANSFER).
    pub fn transfer(&mut self) {
        self.server(|sf, now, out| sf.transfer(now, out));
    }

    /// The agent leaves (removed, status NEEDS_ROUTING), without ending the session.
    pub fn agent_leaves(&mut self) {
        self.server(|sf, now, out| sf.agent_leaves(now, out));
    }

    /// The agent ends the messaging session (removed, then SessionStatusChanged Ended).
    pub fn agent_ends(&mut self) {
        self.server(|sf, now, out| sf.agent_ends(now, out));
    }

    /// The agent marks the customer inactive.
    pub fn mark_inactive(&mut self) {
        self.server(|sf, now, out| sf.mark_inactive(now, out));
    }

    /// The conversation is closed from the customer side (another client of the subject).
    pub fn customer_side_close(&mut self) {
        self.server(|sf, now, out| sf.customer_side_close(now, out));
    }

    /// Initial routing fails.
    pub fn routing_fails(&mut self) {
        self.server(|sf, now, out| sf.routing_fails(now, out));
    }

    /// A queue position update.
    pub fn queue_position(&mut self, position: u32) {
        self.server(|sf, now, out| sf.queue_position(now, position, out));
    }

    /// A routing result with an estimated wait.
    pub fn wait_estimate(&mut self, wait: Duration) {
        self.server(|sf, now, out| sf.wait_estimate(now, wait, out));
    }

    // ---- the network ------------------------------------------------------------------------

    /// The stream connection drops.
    pub fn drop_stream(&mut self) {
        if let Some(stream) = self.salesforce.stream.take() {
            self.stream_event(stream, StreamEvent::Closed(StreamClosed::Dropped));
            self.settle();
        }
    }

    /// The bridge restarts, or another instance takes the handover over: the session is
    /// restored with `restore` (a store's round trip), the old process's stream connection is
    /// gone, and the session is told that it resumed. Results of calls that were in flight
    /// still arrive, as they do when the outbox runs those commands again.
    pub fn restart(&mut self, restore: impl FnOnce(&Session) -> Session) {
        self.session = restore(&self.session);
        self.log_line("restart".to_owned());
        if let Some(old) = self.salesforce.stream.take() {
            self.pending.retain(
                |_, input| !matches!(input, Input::Stream { stream, .. } if *stream == old),
            );
        }
        self.salesforce.silent = false;
        self.next_ping = None;
        self.input(Input::Resumed);
    }

    /// The stream stays connected but goes silent: no events, no pings.
    pub fn silence_stream(&mut self) {
        self.salesforce.silent = true;
    }

    /// Salesforce closes the stream with 401 although the token has not expired.
    pub fn stream_rejects_token(&mut self) {
        if let Some(stream) = self.salesforce.stream.take() {
            self.stream_event(stream, StreamEvent::Closed(StreamClosed::Unauthorized));
            self.settle();
        }
    }

    /// The stream delivers the last `count` streamed entries again, newest first.
    pub fn replay_duplicates(&mut self, count: usize) {
        let Some(stream) = self.salesforce.stream else {
            return;
        };
        for logged in self.salesforce.recent_streamed(count).into_iter().rev() {
            self.stream_event(
                stream,
                StreamEvent::Entry {
                    event_id: Some(logged.event_id),
                    entry: logged.entry,
                },
            );
        }
        self.settle();
    }

    /// The stream delivers an event of a type this version does not know.
    pub fn stream_unknown_event(&mut self, name: &str) {
        if let Some(stream) = self.salesforce.stream {
            let event = StreamEvent::Unknown {
                event_id: None,
                name: name.to_owned(),
            };
            self.stream_event(stream, event);
            self.settle();
        }
    }

    /// The stream delivers an event that cannot be decoded.
    pub fn stream_malformed_event(&mut self) {
        if let Some(stream) = self.salesforce.stream {
            let event = StreamEvent::Malformed {
                event_id: None,
                reason: "entryPayload is not valid JSON".to_owned(),
            };
            self.stream_event(stream, event);
            self.settle();
        }
    }

    // ---- time -------------------------------------------------------------------------------

    /// Lets `duration` pass, processing everything that falls due in order.
    pub fn advance(&mut self, duration: Duration) {
        let target = self.now + duration;
        loop {
            self.settle();
            let next_ping = self
                .next_ping
                .filter(|_| self.salesforce.stream.is_some() && !self.salesforce.silent);
            let next = [
                self.pending.keys().next().map(|(at, _)| *at),
                self.session.poll_timeout().map(|(at, _)| at),
                next_ping,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&next| next <= target) else {
                break;
            };
            self.now = self.now.max(next);
            if next_ping == Some(next) {
                self.next_ping = self.ping_interval.map(|interval| next + interval);
                if let Some(stream) = self.salesforce.stream {
                    self.feed_quietly(Input::Stream {
                        stream,
                        event: StreamEvent::Ping,
                    });
                }
            }
        }
        self.now = target;
        self.settle();
    }

    /// Runs until nothing is pending and no timer is due for `limit`, or `limit` passes.
    pub fn run_until_quiet(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        while self.now < deadline {
            let next = [
                self.pending.keys().next().map(|(at, _)| *at),
                self.session.poll_timeout().map(|(at, _)| at),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(next) if next <= deadline => {
                    let step = next.saturating_duration_since(self.now);
                    self.advance(step);
                }
                Some(_) | None => break,
            }
        }
    }

    // ---- the engine -------------------------------------------------------------------------

    /// Feeds `input` now, then processes everything due.
    pub fn input(&mut self, input: Input) {
        self.feed(input);
        self.settle();
    }

    fn settle(&mut self) {
        for _ in 0..MAX_STEPS_PER_INSTANT {
            let due = self
                .pending
                .keys()
                .next()
                .copied()
                .filter(|(at, _)| *at <= self.now);
            if let Some(key) = due {
                if let Some(input) = self.pending.remove(&key) {
                    self.feed(input);
                }
                continue;
            }
            if let Some((at, timer)) = self.session.poll_timeout()
                && at <= self.now
            {
                self.log_line(format!("timeout {timer:?}"));
                self.dispatch(Input::Timeout);
                continue;
            }
            return;
        }
        panic!("the session did not settle within {MAX_STEPS_PER_INSTANT} steps: a livelock");
    }

    fn feed(&mut self, input: Input) {
        let line = render::input(&input, self.epoch, &self.salesforce);
        self.log_line(format!("> {line}"));
        self.dispatch(input);
    }

    fn feed_quietly(&mut self, input: Input) {
        self.dispatch(input);
    }

    fn dispatch(&mut self, input: Input) {
        let commands = self.session.handle(input, self.now);
        let ended_now =
            self.ended.is_none() && self.session.phase() == crate::session::Phase::Ended;
        if ended_now {
            let history_len = self.history.len() + commands.len();
            self.ended = Some(EndMark {
                history_len,
                server_log_len: self.salesforce.log().len(),
            });
        }
        for command in commands {
            let line = render::command(&command, self.epoch, &self.salesforce);
            self.log_line(format!("< {line}"));
            self.history.push((self.now, command.clone()));
            self.execute(command);
        }
    }

    fn log_line(&mut self, line: String) {
        let time = render::time(self.epoch, self.now);
        self.log.push(format!("{time} {line}"));
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Salesforce(call) => {
                let mut events = Vec::new();
                let is_open = matches!(call.request, SalesforceRequest::OpenStream { .. });
                let result = self.salesforce.handle(
                    self.now,
                    call.id,
                    call.credential.as_ref(),
                    &call.request,
                    &mut events,
                );
                if let Some(result) = result {
                    self.schedule(Input::Salesforce {
                        call: call.id,
                        result,
                    });
                }
                if is_open {
                    if events.first() == Some(&StreamEvent::Opened) {
                        self.next_ping = self
                            .ping_interval
                            .map(|interval| self.now + self.latency + interval);
                    }
                    for event in events {
                        self.stream_event(call.id, event);
                    }
                } else {
                    self.stream_events(events);
                }
            }
            Command::Bot(call) => {
                let result = self.bot.deliver(&call.delivery);
                self.schedule(Input::Bot {
                    call: call.id,
                    result,
                });
            }
            Command::Record(_) => {}
        }
    }

    fn stream_events(&mut self, events: Vec<StreamEvent>) {
        if let Some(stream) = self.salesforce.stream {
            for event in events {
                self.stream_event(stream, event);
            }
        }
    }

    fn stream_event(&mut self, stream: CallId, event: StreamEvent) {
        self.schedule(Input::Stream { stream, event });
    }

    fn schedule(&mut self, input: Input) {
        self.sequence += 1;
        self.pending
            .insert((self.now + self.latency, self.sequence), input);
    }
}
