//! [`Session`]: one handover, from the start request to the last cleanup call.

mod ending;
mod entries;
mod lanes;
mod token;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::backoff::Jitter;
use crate::bot::{BotDelivery, HandoverStatus, Outcome, ProviderEvent, StatusUpdate, UserMessage};
use crate::dedupe::{EntryDedupe, RecentSet};
use crate::ids::{BotMessageId, CallId, ClientEntryId, ConversationId, EventId, HandoverId};
use crate::io::{BotCall, Command, Input, Observation, SalesforceCall};
use crate::pacing::Pacer;
use crate::salesforce::{Credential, OutboundBody, OutboundMessage, SalesforceRequest, Subject};
use crate::settings::{HandoverRequest, RoutingAttributes, SessionConfig};
use crate::time::Timestamp;
use crate::timer::{Timer, TimerTable};
use crate::transcript;

/// How many of the user's recent Salesforce message ids a session keeps for receipts (they
/// arrive within seconds; the session is stored whole, so the list stays short).
const SENT_REMEMBERED: usize = 16;

/// Where a handover stands. Waiting phases are named after what they wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Phase {
    /// Created; waiting for [`Input::Start`].
    Requested,
    /// Waiting for an access token.
    MintingToken,
    /// Waiting for the event stream, so that no early event is missed.
    OpeningStream,
    /// Waiting for Salesforce to create the conversation.
    CreatingConversation,
    /// Queued or being routed; no agent yet.
    Queued,
    /// An agent is assigned.
    WithAgent,
    /// The agent was removed by a transfer; waiting for the next agent.
    Transferring,
    /// The agent left and the handover stays open (End Chat When Agent Leaves is off). A user
    /// message re-routes the conversation.
    AgentLeft,
    /// The agent marked the session inactive. Not an end: a user message re-routes it.
    Inactive,
    /// Salesforce ended the handover; a final backfill makes sure nothing before the end is
    /// lost.
    Ending,
    /// Over. The terminal status and the cleanup calls may still be in flight.
    Ended,
}

impl Phase {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::MintingToken => "minting_token",
            Self::OpeningStream => "opening_stream",
            Self::CreatingConversation => "creating_conversation",
            Self::Queued => "queued",
            Self::WithAgent => "with_agent",
            Self::Transferring => "transferring",
            Self::AgentLeft => "agent_left",
            Self::Inactive => "inactive",
            Self::Ending => "ending",
            Self::Ended => "ended",
        }
    }

    fn is_live(self) -> bool {
        !matches!(self, Self::Ending | Self::Ended)
    }
}

/// One handover: a pure state machine with inputs in, commands out and time passed in.
/// See the crate documentation for the driving contract.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Session {
    config: SessionConfig,
    request: HandoverRequest,
    routing_attributes: RoutingAttributes,
    phase: Phase,
    now: Timestamp,
    next_call: u64,
    jitter: Jitter,
    timers: TimerTable,
    calls: BTreeMap<CallId, Pending>,
    control_retry: Option<(RetryOp, u32)>,
    /// The conversation must still be closed, but the token was refused: the close (this
    /// attempt) waits for a renewed token.
    #[cfg_attr(feature = "serde", serde(default))]
    close_after_renewal: Option<u32>,
    token: TokenState,
    conversation: ConversationState,
    stream: StreamState,
    last_event_id: Option<EventId>,
    backfill: Option<Backfill>,
    /// Every entry up to this server time has been listed by a completed backfill.
    backfill_horizon: Option<Timestamp>,
    /// How Salesforce reads the entries list's time bounds, once a page has shown it.
    #[cfg_attr(feature = "serde", serde(default))]
    bounds: BoundsReading,
    /// A backfill ran out of pages before it met the horizon: the next one goes on below.
    #[cfg_attr(feature = "serde", serde(default))]
    deep: Option<DeepBackfill>,
    /// Listings that failed in a row (their retries back off).
    #[cfg_attr(feature = "serde", serde(default))]
    listing_failures: u32,
    dedupe: EntryDedupe,
    /// Entries from the stream waiting for the listing that puts them in server order.
    #[cfg_attr(feature = "serde", serde(default))]
    held: Vec<HeldEntry>,
    /// Stretches of the conversation that could not be listed in full (for the outcome).
    #[cfg_attr(feature = "serde", serde(default))]
    missed: Vec<crate::bot::MissedEntries>,
    user_messages: RecentSet<BotMessageId>,
    /// The Salesforce ids of the user's most recent messages (and the identifiers Salesforce
    /// gave them, once seen), with the Flow's id of each: receipts name these.
    #[cfg_attr(feature = "serde", serde(default))]
    sent: VecDeque<(crate::ids::EntryId, BotMessageId)>,
    outbound: Outbound,
    bot: BotLane,
    agents: Agents,
    user_present: bool,
    user_typing: bool,
    typing_seq: u64,
    presence_seq: u64,
    status_seq: u64,
    queue: QueueState,
    refused: Vec<BotMessageId>,
    ending: Option<Ending>,
    outcome: Option<Outcome>,
}

/// What a call in flight was for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Pending {
    Mint {
        renewal: bool,
        attempt: u32,
    },
    Continue {
        attempt: u32,
    },
    Create {
        attempt: u32,
    },
    Send,
    Backfill,
    RoutingStatus,
    Close {
        attempt: u32,
    },
    BestEffort,
    /// The bot lane's delivery in flight.
    Bot,
    /// Agent typing toward the user; not retried.
    BotTyping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum RetryOp {
    Mint { renewal: bool },
    Continue,
    Create,
    Close,
}

#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct TokenState {
    current: Option<Token>,
    /// The token was refused (401) before its expiry; waiting for a continuation or renewal.
    refused: bool,
    /// Minted for a verified subject, so it can be renewed by minting again.
    verified: bool,
    /// A renewal mint is in flight or scheduled.
    renewing: bool,
}

#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Token {
    credential: Credential,
    subject: Subject,
    /// Not used from this moment on (the expiry minus the safety margin).
    usable_until: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum ConversationState {
    NotCreated,
    /// A create call is in flight. If the handover ends meanwhile, the conversation is
    /// closed as soon as it exists.
    Creating {
        close_when_created: bool,
    },
    Created,
}

#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct StreamState {
    connection: Connection,
    /// Reconnects since the stream was last open.
    attempt: u32,
    opened_once: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Connection {
    #[default]
    Closed,
    Connecting(CallId),
    Open(CallId),
}

impl Connection {
    fn call(self) -> Option<CallId> {
        match self {
            Self::Closed => None,
            Self::Connecting(call) | Self::Open(call) => Some(call),
        }
    }
}

/// Messages toward Salesforce: one at a time, in order, paced.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Outbound {
    ready: VecDeque<OutboundItem>,
    /// User messages held until an agent joins (forward-while-queued off).
    held: VecDeque<OutboundItem>,
    in_flight: Option<(CallId, OutboundItem)>,
    not_before: Option<Timestamp>,
    pacer: Pacer,
}

#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct OutboundItem {
    message: OutboundMessage,
    /// For a file: the link message sent instead if Salesforce refuses the upload.
    fallback: Option<OutboundMessage>,
    origin: Origin,
    attempt: u32,
    new_session: bool,
    pacing_reported: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Origin {
    Transcript,
    User(BotMessageId),
    Presence,
}

/// Deliveries to the bot platform: one at a time, in order.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct BotLane {
    ready: VecDeque<BotItem>,
    in_flight: Option<(CallId, BotItem)>,
    attempt: u32,
    not_before: Option<Timestamp>,
    /// Deliveries given up on, kept for inspection.
    failed: Vec<BotDelivery>,
}

#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct BotItem {
    delivery: BotDelivery,
    /// The agent entry to acknowledge as delivered once this succeeds.
    acknowledge: Option<crate::ids::EntryId>,
}

#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Agents {
    present: BTreeMap<String, Option<String>>,
    ever_joined: bool,
    last_name: Option<String>,
    /// The Flow has been told `active` and nothing has since taken it back.
    flow_active: bool,
    /// A transfer routing result arrived since the agent was last present.
    transfer_seen: bool,
    /// The routing-status call that decides whether a removal was a transfer.
    removal_check: Option<CallId>,
}

#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct QueueState {
    position: Option<u32>,
    wait: Option<Duration>,
    last_sent: Option<crate::bot::QueueUpdate>,
}

/// A backfill under way: the entries listed so far, oldest first.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Backfill {
    call: CallId,
    /// The handover ends once this backfill is relayed.
    last: bool,
    pages: u32,
    /// The page in flight.
    #[cfg_attr(feature = "serde", serde(default))]
    step: PageStep,
    /// Entries per page.
    #[cfg_attr(feature = "serde", serde(default = "default_page_limit"))]
    limit: u32,
    /// The newest entry listed.
    newest: Option<Timestamp>,
    collected: Vec<crate::salesforce::ConversationEntry>,
    /// While a crowded millisecond is listed forward: its oldest entry that the pages going
    /// back listed. A forward page that reaches it leaves no gap.
    #[cfg_attr(feature = "serde", serde(default))]
    crowded_anchor: Option<crate::ids::EntryId>,
}

#[cfg(feature = "serde")]
fn default_page_limit() -> u32 {
    SessionConfig::default().backfill_page_size
}

/// Whether `startTimestamp` and `endTimestamp` include entries at the bound itself.
/// Salesforce does not document it; pages are built to lose nothing either way, and to cost
/// fewer calls once a page has shown which it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum BoundsReading {
    #[default]
    Unknown,
    Inclusive,
    Exclusive,
}

/// Where a backfill that ran out of pages stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct DeepBackfill {
    /// The oldest millisecond listed so far: the next backfill lists through it, going back.
    resume_below: Timestamp,
    /// The newest entry listed above it: the horizon once the pages below meet the old one.
    listed_through: Timestamp,
}

/// An entry from the stream waiting for a listing.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct HeldEntry {
    entry: crate::salesforce::ConversationEntry,
    /// Listings that came back without it.
    passes: u32,
}

/// Which page of a backfill is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum PageStep {
    /// The newest entries through the millisecond `before` (`None`: the newest of all).
    Back { before: Option<Timestamp> },
    /// A page going back brought nothing new: the millisecond `at` holds more entries than a
    /// page. Its oldest ones, listed forward from the millisecond before (an exclusive
    /// reading of `startTimestamp` needs that), then (`second`) from `at` itself if the
    /// reading proved inclusive and the millisecond before crowded the page.
    Crowded { at: Timestamp, second: bool },
    /// Below a crowded millisecond: first with the bound an exclusive reading of
    /// `endTimestamp` needs, then (`second`) with the one an inclusive reading needs.
    Below { crowded: Timestamp, second: bool },
}

impl Default for PageStep {
    fn default() -> Self {
        Self::Back { before: None }
    }
}

#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Ending {
    reason: crate::bot::EndReason,
    detail: Option<String>,
}

impl Session {
    /// A handover in phase [`Phase::Requested`]. Feed [`Input::Start`] to begin.
    pub fn new(request: HandoverRequest, config: SessionConfig) -> Self {
        let routing_attributes = request.effective_routing_attributes(&config.copilot_attribute);
        let seed_bytes = request.conversation_id.as_uuid().as_u64_pair();
        Self {
            jitter: Jitter::new(seed_bytes.0 ^ seed_bytes.1.rotate_left(17)),
            dedupe: EntryDedupe::new(config.dedupe_capacity),
            held: Vec::new(),
            missed: Vec::new(),
            user_messages: RecentSet::new(config.dedupe_capacity),
            sent: VecDeque::new(),
            outbound: Outbound {
                ready: VecDeque::new(),
                held: VecDeque::new(),
                in_flight: None,
                not_before: None,
                pacer: Pacer::new(config.pacing_max_messages, config.pacing_window),
            },
            config,
            request,
            routing_attributes,
            phase: Phase::Requested,
            now: Timestamp::EPOCH,
            next_call: 1,
            timers: TimerTable::default(),
            calls: BTreeMap::new(),
            control_retry: None,
            close_after_renewal: None,
            token: TokenState::default(),
            conversation: ConversationState::NotCreated,
            stream: StreamState::default(),
            last_event_id: None,
            backfill: None,
            backfill_horizon: None,
            bounds: BoundsReading::Unknown,
            deep: None,
            listing_failures: 0,
            bot: BotLane::default(),
            agents: Agents::default(),
            user_present: true,
            user_typing: false,
            typing_seq: 0,
            presence_seq: 0,
            status_seq: 0,
            queue: QueueState::default(),
            refused: Vec::new(),
            ending: None,
            outcome: None,
        }
    }

    /// Processes one input at `now` and returns the commands to execute, in order.
    ///
    /// Never panics on input: anything unexpected is ignored and reported as a
    /// [`Command::Record`].
    #[must_use = "every returned command must be executed"]
    pub fn handle(&mut self, input: Input, now: Timestamp) -> Vec<Command> {
        // Time never goes backwards inside the session.
        let now = now.max(self.now);
        self.now = now;
        let mut out = Vec::new();
        match input {
            Input::Start => self.on_start(&mut out),
            Input::UserMessage(message) => self.on_user_message(&mut out, now, message),
            Input::UserConnected => self.on_presence(&mut out, now, true),
            Input::UserDisconnected => self.on_presence(&mut out, now, false),
            Input::UserTyping { on } => self.on_user_typing(&mut out, now, on),
            Input::UserCancelled => self.on_user_cancelled(&mut out, now),
            Input::FlowClosed => self.on_flow_closed(&mut out, now),
            Input::Salesforce { call, result } => self.on_salesforce(&mut out, now, call, result),
            Input::Stream { stream, event } => self.on_stream(&mut out, now, stream, event),
            Input::Bot { call, result } => self.on_bot_result(&mut out, now, call, result),
            Input::Timeout => self.on_timeout(&mut out, now),
            Input::Resumed => self.on_resumed(&mut out, now),
        }
        out
    }

    /// The next deadline and its reason, or `None` when nothing is scheduled. When it passes,
    /// feed [`Input::Timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Timestamp, Timer)> {
        self.timers.next()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How the handover ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The handover's id.
    pub fn handover_id(&self) -> HandoverId {
        self.request.handover_id
    }

    /// The MIAW conversation's id.
    pub fn conversation_id(&self) -> ConversationId {
        self.request.conversation_id
    }

    /// The Salesforce deployment the handover names (`None`: the default one).
    pub fn deployment(&self) -> Option<&str> {
        self.request.deployment.as_deref()
    }

    /// The last SSE event id seen, for `Last-Event-Id`.
    pub fn last_event_id(&self) -> Option<&EventId> {
        self.last_event_id.as_ref()
    }

    /// The routing attributes sent with the conversation.
    pub fn routing_attributes(&self) -> &RoutingAttributes {
        &self.routing_attributes
    }

    /// User messages Salesforce refused for good so far (also listed in the outcome).
    pub fn refused_messages(&self) -> &[BotMessageId] {
        &self.refused
    }

    /// Stretches of the conversation that could not be listed in full so far (also listed in
    /// the outcome).
    pub fn missed_entries(&self) -> &[crate::bot::MissedEntries] {
        &self.missed
    }

    /// Deliveries to the bot platform that were given up on, kept for inspection (S41).
    pub fn failed_bot_deliveries(&self) -> &[BotDelivery] {
        &self.bot.failed
    }

    /// Whether the handover is over and nothing is left to do: the terminal status is
    /// delivered (or given up on) and the cleanup calls have finished. A driver can stop here.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Ended
            && self.bot.in_flight.is_none()
            && self.bot.ready.is_empty()
            && self.control_retry.is_none()
            && self.close_after_renewal.is_none()
            && !self
                .calls
                .values()
                .any(|pending| matches!(pending, Pending::Close { .. } | Pending::Create { .. }))
    }

    // ---- bot-side inputs ------------------------------------------------------------------

    fn on_start(&mut self, out: &mut Vec<Command>) {
        if self.phase != Phase::Requested {
            record(
                out,
                Observation::Ignored {
                    what: "repeated start",
                },
            );
            return;
        }
        if self.request.settings.send_transcript {
            let text = transcript::render_capped(
                &self.request.transcript,
                self.config.max_transcript_chars,
            );
            let chunks = transcript::split(&text, self.config.max_message_chars);
            for (index, chunk) in chunks.into_iter().enumerate() {
                if chunk.trim().is_empty() {
                    continue;
                }
                let id = self.client_id("transcript", &[&(index as u64).to_be_bytes()]);
                self.outbound.ready.push_back(OutboundItem::new(
                    id,
                    OutboundBody::Text(chunk.to_owned()),
                    Origin::Transcript,
                ));
            }
        }
        self.phase = Phase::MintingToken;
        self.mint(out, false, 1);
    }

    fn on_user_message(&mut self, out: &mut Vec<Command>, now: Timestamp, message: UserMessage) {
        if !self.phase.is_live() {
            record(out, Observation::IgnoredAfterEnd);
            return;
        }
        if self.user_messages.contains(&message.id) {
            record(out, Observation::DuplicateUserMessage);
            return;
        }
        if message.text.trim().is_empty() && message.attachments.is_empty() {
            record(
                out,
                Observation::Ignored {
                    what: "empty user message",
                },
            );
            return;
        }
        self.user_messages.insert(message.id.clone());
        if self.user_typing {
            self.stop_typing(out, now);
        }
        let origin = Origin::User(message.id.clone());
        let bot_id = message.id.as_str().as_bytes();
        let mut items = Vec::new();
        if !message.text.trim().is_empty() {
            for (index, chunk) in transcript::split(&message.text, self.config.max_message_chars)
                .into_iter()
                .enumerate()
            {
                let id = self.client_id("user", &[bot_id, &(index as u64).to_be_bytes()]);
                items.push(OutboundItem::new(
                    id,
                    OutboundBody::Text(chunk.to_owned()),
                    origin.clone(),
                ));
            }
        }
        for (index, file) in message.attachments.into_iter().enumerate() {
            let index = (index as u64).to_be_bytes();
            if file
                .size
                .is_some_and(|size| size > self.config.max_file_bytes)
            {
                record(out, Observation::FileSentAsLink);
                let id = self.client_id("file-link", &[bot_id, &index]);
                items.push(OutboundItem::new(id, link_body(&file), origin.clone()));
            } else {
                let id = self.client_id("file", &[bot_id, &index]);
                let fallback = OutboundMessage {
                    id: self.client_id("file-link", &[bot_id, &index]),
                    body: link_body(&file),
                };
                let mut item = OutboundItem::new(id, OutboundBody::File(file), origin.clone());
                item.fallback = Some(fallback);
                items.push(item);
            }
        }
        for item in &items {
            let ids = std::iter::once(item.message.id).chain(item.fallback.as_ref().map(|f| f.id));
            for id in ids {
                self.remember_sent(&id.to_string(), &message.id);
            }
        }
        self.enqueue_outbound(out, now, items);
    }

    /// Remembers that Salesforce knows the user's message `message` as `id`.
    fn remember_sent(&mut self, id: &str, message: &BotMessageId) {
        let Ok(id) = crate::ids::EntryId::new(id) else {
            return;
        };
        if self.sent.len() == SENT_REMEMBERED {
            self.sent.pop_front();
        }
        self.sent.push_back((id, message.clone()));
    }

    /// The Flow's id of the user's message Salesforce knows as `id`, if it is a recent one.
    fn sent_message(&self, id: &crate::ids::EntryId) -> Option<&BotMessageId> {
        self.sent
            .iter()
            .rev()
            .find(|(known, _)| known == id)
            .map(|(_, message)| message)
    }

    fn on_presence(&mut self, out: &mut Vec<Command>, now: Timestamp, connected: bool) {
        if !self.phase.is_live() {
            record(out, Observation::IgnoredAfterEnd);
            return;
        }
        if self.user_present == connected {
            return;
        }
        self.user_present = connected;
        let settings = &self.request.settings;
        let enabled = if connected {
            settings.user_connected_message
        } else {
            settings.user_disconnected_message
        };
        if !enabled {
            return;
        }
        // A customer message re-routes an inactive or abandoned conversation; a presence
        // notice must not summon an agent.
        if matches!(self.phase, Phase::Inactive | Phase::AgentLeft) {
            record(
                out,
                Observation::Ignored {
                    what: "presence notice without an agent",
                },
            );
            return;
        }
        self.presence_seq += 1;
        let id = self.client_id("presence", &[&self.presence_seq.to_be_bytes()]);
        let text = if connected {
            USER_CONNECTED_TEXT
        } else {
            USER_DISCONNECTED_TEXT
        };
        let item = OutboundItem::new(id, OutboundBody::Text(text.to_owned()), Origin::Presence);
        self.enqueue_outbound(out, now, vec![item]);
    }

    fn on_user_typing(&mut self, out: &mut Vec<Command>, now: Timestamp, on: bool) {
        // Typing is only worth showing to an agent who is there.
        if self.phase != Phase::WithAgent {
            if !on && self.user_typing {
                self.stop_typing(out, now);
            }
            return;
        }
        if on {
            self.timers
                .set(Timer::TypingIdle, now + self.config.typing_idle);
            if !self.user_typing {
                self.user_typing = true;
                self.send_typing(out, now, true);
            }
        } else if self.user_typing {
            self.stop_typing(out, now);
        }
    }

    fn stop_typing(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        self.user_typing = false;
        self.timers.clear(Timer::TypingIdle);
        if self.phase.is_live() {
            self.send_typing(out, now, false);
        }
    }

    fn send_typing(&mut self, out: &mut Vec<Command>, now: Timestamp, typing: bool) {
        let Some(credential) = self.credential(now) else {
            return;
        };
        self.typing_seq += 1;
        let id = self.client_id("typing", &[&self.typing_seq.to_be_bytes()]);
        let request = SalesforceRequest::SendTyping {
            conversation_id: self.request.conversation_id,
            id,
            typing,
        };
        self.call_salesforce(out, Pending::BestEffort, Some(credential), request);
    }

    fn on_user_cancelled(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.phase.is_live() {
            record(out, Observation::IgnoredAfterEnd);
            return;
        }
        // Cancelling only exists while queued; once an agent has been there, the customer
        // is ending the chat.
        let reason = if self.agents.ever_joined {
            crate::bot::EndReason::UserClosed
        } else {
            crate::bot::EndReason::CancelledByUser
        };
        self.end(out, now, reason, None, true);
    }

    fn on_flow_closed(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if !self.phase.is_live() {
            record(out, Observation::IgnoredAfterEnd);
            return;
        }
        self.end(out, now, crate::bot::EndReason::ClosedByFlow, None, true);
    }

    // ---- timers -----------------------------------------------------------------------------

    fn on_timeout(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        for timer in self.timers.take_due(now) {
            match timer {
                Timer::TokenExpiry => self.on_token_expiry(out, now),
                Timer::TokenGrace => self.on_token_grace(out, now),
                Timer::TokenRenewal => self.on_token_renewal_due(out, now),
                Timer::ControlRetry => self.on_control_retry(out, now),
                Timer::StreamConnectTimeout => {
                    if self.phase == Phase::OpeningStream {
                        self.create_conversation(out, now, 1);
                    }
                }
                Timer::StreamReconnect => {
                    if self.phase.is_live() && self.stream.connection == Connection::Closed {
                        self.open_stream(out, now, Some(crate::io::ReconnectReason::Dropped));
                    }
                }
                Timer::StreamWatchdog => {
                    if self.phase.is_live() && self.stream.connection != Connection::Closed {
                        self.open_stream(out, now, Some(crate::io::ReconnectReason::Silent));
                    }
                }
                Timer::SafetyPoll => {
                    if self.phase.is_live() {
                        self.request_backfill(out, now, false);
                        self.timers
                            .set(Timer::SafetyPoll, now + self.safety_poll_interval());
                    }
                }
                Timer::StreamHold => self.release_stream_hold(out, now),
                Timer::ListingRetry => self.retry_listing(out, now),
                Timer::TypingIdle => {
                    if self.user_typing {
                        self.stop_typing(out, now);
                    }
                }
                Timer::SendReady => self.pump_outbound(out, now),
                Timer::BotRetry => self.pump_bot(out, now),
            }
        }
    }

    // ---- plumbing ---------------------------------------------------------------------------

    /// How often the entries list is read whatever the stream does: more often while an
    /// agent is with the user, when a withheld message matters most.
    fn safety_poll_interval(&self) -> Duration {
        if self.phase == Phase::WithAgent {
            self.config
                .safety_poll_with_agent
                .min(self.config.safety_poll_interval)
        } else {
            self.config.safety_poll_interval
        }
    }

    fn next_call_id(&mut self) -> CallId {
        let id = CallId::from_raw(self.next_call);
        self.next_call += 1;
        id
    }

    fn call_salesforce(
        &mut self,
        out: &mut Vec<Command>,
        pending: Pending,
        credential: Option<Credential>,
        request: SalesforceRequest,
    ) -> CallId {
        let id = self.next_call_id();
        self.calls.insert(id, pending);
        out.push(Command::Salesforce(SalesforceCall {
            id,
            credential,
            request,
        }));
        id
    }

    fn call_bot(
        &mut self,
        out: &mut Vec<Command>,
        pending: Pending,
        delivery: BotDelivery,
    ) -> CallId {
        let id = self.next_call_id();
        self.calls.insert(id, pending);
        out.push(Command::Bot(BotCall { id, delivery }));
        id
    }

    fn client_id(&self, purpose: &str, parts: &[&[u8]]) -> ClientEntryId {
        ClientEntryId::derive(self.request.conversation_id, purpose, parts)
    }

    /// Queues a status for the Flow.
    fn inject(&mut self, out: &mut Vec<Command>, now: Timestamp, status: HandoverStatus) {
        self.status_seq += 1;
        let key = format!("{}/status/{}", self.request.handover_id, self.status_seq);
        let delivery = BotDelivery::Inject(StatusUpdate { key, status });
        self.enqueue_bot(out, now, delivery, None);
    }

    /// Forwards a provider event to the Flow when the handover asks for it.
    fn forward(&mut self, out: &mut Vec<Command>, now: Timestamp, event: ProviderEvent) {
        if self.request.settings.forward_events {
            self.inject(out, now, HandoverStatus::Event(event));
        }
    }

    fn delay(&mut self, attempt: u32) -> Duration {
        let policy = self.config.retry.clone();
        self.jitter.delay(&policy, attempt)
    }
}

/// The notice the agent sees when the user comes back ("Enable User Connects Message").
pub const USER_CONNECTED_TEXT: &str = "User joined the conversation";
/// The notice the agent sees when the user leaves ("Enable User Disconnects Message").
pub const USER_DISCONNECTED_TEXT: &str = "User left the conversation";

impl OutboundItem {
    fn new(id: ClientEntryId, body: OutboundBody, origin: Origin) -> Self {
        Self {
            message: OutboundMessage { id, body },
            fallback: None,
            origin,
            attempt: 0,
            new_session: false,
            pacing_reported: false,
        }
    }
}

fn link_body(file: &crate::salesforce::FileRef) -> OutboundBody {
    OutboundBody::Text(format!("{}: {}", file.name, file.url))
}

fn record(out: &mut Vec<Command>, observation: Observation) {
    out.push(Command::Record(observation));
}
