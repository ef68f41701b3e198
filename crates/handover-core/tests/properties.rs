//! Model-based property tests of the session: random scripts of user messages, agent events,
//! duplicates, replays, stream drops and silences, events withheld from the stream (messages,
//! joins, ends), reconnects while the agent keeps writing, bursts sharing one millisecond,
//! either reading of the entries list's time bounds, token trouble, failures and elapsed time,
//! run against the simulation, with the invariants checked after every step and a reference
//! model of what may end a handover.
//!
//! CI runs 10,000 cases. Set `PROPTEST_CASES` for more (or fewer) locally.

#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use handover_core::sim::{Sim, SimConfig, Target};
use handover_core::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

#[derive(Clone, Debug)]
struct Setup {
    forward_events: bool,
    end_when_agent_leaves: bool,
    legacy_switch: bool,
    forward_while_queued: bool,
    transcript_turns: usize,
    verified: bool,
    agent_change_notification: bool,
    token_lifetime: Duration,
    latency: Duration,
    /// The entries list reads its time bounds as exclusive.
    exclusive_bounds: bool,
    /// Pages of 5 entries, so that bursts crowd a millisecond past what pages hold.
    small_pages: bool,
}

impl Setup {
    /// Every option off, short guest tokens, pages of 5: what the regression cases vary from.
    fn plain(latency: Duration) -> Self {
        Self {
            forward_events: false,
            end_when_agent_leaves: false,
            legacy_switch: false,
            forward_while_queued: true,
            transcript_turns: 0,
            verified: false,
            agent_change_notification: false,
            token_lifetime: Duration::from_secs(120),
            latency,
            exclusive_bounds: false,
            small_pages: true,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum SendFault {
    Transient,
    RateLimited,
    TimeoutAfterApplying,
    NoMessagingSession,
    Rejected,
}

#[derive(Clone, Debug)]
enum Step {
    UserSays,
    Burst(usize),
    UserLeaves,
    UserReturns,
    UserTyping(bool),
    AgentJoins,
    AgentSays,
    AgentSaysWithheld,
    AgentJoinsWithheld,
    AgentEndsWithheld,
    /// Agent messages sharing one millisecond; every `withhold_every`-th is withheld.
    AgentBurst {
        count: usize,
        withhold_every: usize,
    },
    /// The stream drops and the agent keeps writing (every third message withheld) while the
    /// bridge reconnects and lists what it missed.
    DropAndTalk(usize),
    AgentTyping,
    SystemSays,
    Transfer,
    AgentLeaves,
    AgentEnds,
    MarkInactive,
    CustomerSideClose,
    RoutingFails,
    QueuePosition(u32),
    DropStream,
    SilenceStream,
    StreamRejectsToken,
    RevokeTokens,
    IdentityStopsWorking,
    ReplayDuplicates(usize),
    UnknownEvent,
    MalformedEvent,
    FailSend(SendFault),
    FailBot {
        rejected: bool,
    },
    FailRoutingStatus,
    /// The next entries listing fails (503); held entries wait for its retry.
    FailListing,
    UserCancels,
    FlowCloses,
    /// The bridge restarts: the session goes through a JSON round trip, the stream
    /// connection is lost, and the session is told that it resumed.
    Restart,
    Advance(Duration),
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<[bool; 9]>(),
        prop_oneof![Just(0usize), Just(3), Just(80), Just(700)],
        prop_oneof![Just(120u64), Just(900), Just(3600), Just(6 * 3600)],
        prop_oneof![Just(0u64), Just(30), Just(1500)],
    )
        .prop_map(|(flags, transcript_turns, lifetime, latency)| Setup {
            exclusive_bounds: flags[7],
            small_pages: flags[8],
            forward_events: flags[0],
            end_when_agent_leaves: flags[1],
            legacy_switch: flags[2] && flags[3],
            forward_while_queued: !(flags[4] && flags[5]),
            transcript_turns,
            verified: flags[6],
            agent_change_notification: flags[5],
            token_lifetime: Duration::from_secs(lifetime),
            latency: Duration::from_millis(latency),
        })
}

fn step() -> impl Strategy<Value = Step> {
    let send_fault = prop_oneof![
        Just(SendFault::Transient),
        Just(SendFault::RateLimited),
        Just(SendFault::TimeoutAfterApplying),
        Just(SendFault::NoMessagingSession),
        Just(SendFault::Rejected),
    ];
    let advance = prop_oneof![
        4 => (1u64..2_000).prop_map(Duration::from_millis),
        3 => (2u64..100).prop_map(Duration::from_secs),
        2 => (100u64..400).prop_map(Duration::from_secs),
        1 => (400u64..4_000).prop_map(Duration::from_secs),
    ];
    prop_oneof![
        12 => Just(Step::UserSays),
        2 => (5usize..30).prop_map(Step::Burst),
        2 => Just(Step::UserLeaves),
        2 => Just(Step::UserReturns),
        1 => any::<bool>().prop_map(Step::UserTyping),
        6 => Just(Step::AgentJoins),
        12 => Just(Step::AgentSays),
        3 => Just(Step::AgentSaysWithheld),
        1 => Just(Step::AgentJoinsWithheld),
        1 => Just(Step::AgentEndsWithheld),
        2 => (2usize..14, 0usize..4)
            .prop_map(|(count, withhold_every)| Step::AgentBurst { count, withhold_every }),
        2 => (1usize..8).prop_map(Step::DropAndTalk),
        1 => Just(Step::AgentTyping),
        2 => Just(Step::SystemSays),
        2 => Just(Step::Transfer),
        2 => Just(Step::AgentLeaves),
        1 => Just(Step::AgentEnds),
        2 => Just(Step::MarkInactive),
        1 => Just(Step::CustomerSideClose),
        1 => Just(Step::RoutingFails),
        1 => (1u32..12).prop_map(Step::QueuePosition),
        3 => Just(Step::DropStream),
        2 => Just(Step::SilenceStream),
        1 => Just(Step::StreamRejectsToken),
        1 => Just(Step::RevokeTokens),
        1 => Just(Step::IdentityStopsWorking),
        3 => (1usize..8).prop_map(Step::ReplayDuplicates),
        1 => Just(Step::UnknownEvent),
        1 => Just(Step::MalformedEvent),
        4 => send_fault.prop_map(Step::FailSend),
        3 => Just(Step::FailBot { rejected: false }),
        1 => Just(Step::FailBot { rejected: true }),
        1 => Just(Step::FailRoutingStatus),
        2 => Just(Step::FailListing),
        1 => Just(Step::UserCancels),
        1 => Just(Step::FlowCloses),
        2 => Just(Step::Restart),
        10 => advance.prop_map(Step::Advance),
    ]
}

/// What the script did, as far as it matters for what may end the handover.
#[derive(Debug, Default)]
struct Reference {
    said: Vec<(BotMessageId, String)>,
    agent_ever_joined: bool,
    agent_ended: bool,
    customer_closed: bool,
    user_cancelled: bool,
    flow_closed: bool,
    routing_failed: bool,
    agent_left: bool,
    token_trouble: bool,
    /// Identity tokens stopped verifying: a verified user's token cannot be renewed.
    identity_stopped: bool,
    failures_injected: bool,
    /// Entries listings made to fail: past the retry budget the final backfill gives up.
    listing_failures: u32,
}

fn run_case(setup: Setup, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut log = String::new();
    let result = run_case_logged(setup, steps, &mut log);
    // `PROPERTIES_LOG=1` prints the simulation's log of a failing case (the shrunk one last).
    if result.is_err() && std::env::var_os("PROPERTIES_LOG").is_some() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{log}");
        }
    }
    result
}

fn run_case_logged(setup: Setup, steps: Vec<Step>, log: &mut String) -> Result<(), TestCaseError> {
    let mut sim = start_case(&setup);
    let result = play_case(&setup, steps, &mut sim);
    *log = sim.take_log();
    result
}

fn start_case(setup: &Setup) -> Sim {
    let mut config = SimConfig {
        token_lifetime: setup.token_lifetime,
        latency: setup.latency,
        ..SimConfig::default()
    };
    config.settings.forward_events = setup.forward_events;
    config.settings.end_when_agent_leaves = setup.end_when_agent_leaves;
    config.settings.forward_while_queued = setup.forward_while_queued;
    config.settings.agent_change_notification = setup.agent_change_notification;
    config.config.disable_end_on_agent_leave = setup.legacy_switch;
    config.settings.send_transcript = setup.transcript_turns > 0;
    config.transcript = (0..setup.transcript_turns)
        .map(|i| TranscriptTurn::user(format!("turn {i} {}", "t".repeat(100))))
        .collect();
    if setup.verified {
        config.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
    }
    if setup.small_pages {
        config.config.backfill_page_size = 5;
    }
    let mut sim = Sim::new(config);
    sim.salesforce.exclusive_bounds = setup.exclusive_bounds;
    sim
}

fn play_case(setup: &Setup, steps: Vec<Step>, sim: &mut Sim) -> Result<(), TestCaseError> {
    let ends_on_leave = setup.end_when_agent_leaves && !setup.legacy_switch;
    let mut reference = Reference::default();
    sim.start();
    check(sim, &reference, setup)?;
    let mut said = 0;
    let mut agents = 0;
    for step in steps {
        let live_before = !matches!(sim.session.phase(), Phase::Ending | Phase::Ended);
        // The simulation ignores agent actions on a conversation that does not exist (yet).
        let server_acts = sim.salesforce.created() && !sim.salesforce.closed();
        match step {
            Step::UserSays => {
                said += 1;
                let text = format!("u{said}");
                let id = sim.user_says(&text);
                if live_before {
                    reference.said.push((id, text));
                }
            }
            Step::Burst(count) => {
                for _ in 0..count {
                    said += 1;
                    let text = format!("u{said}");
                    let live = !matches!(sim.session.phase(), Phase::Ending | Phase::Ended);
                    let id = sim.user_says(&text);
                    if live {
                        reference.said.push((id, text));
                    }
                    sim.advance(Duration::from_millis(100));
                }
            }
            Step::UserLeaves => sim.user_leaves(),
            Step::UserReturns => sim.user_returns(),
            Step::UserTyping(on) => sim.user_typing(on),
            Step::AgentJoins => {
                agents += 1;
                reference.agent_ever_joined |= server_acts;
                sim.agent_joins(&format!("Agent {agents}"));
            }
            Step::AgentSays => sim.agent_says("a"),
            Step::AgentSaysWithheld => sim.agent_says_withheld("w"),
            Step::AgentJoinsWithheld => {
                agents += 1;
                reference.agent_ever_joined |= server_acts;
                sim.agent_joins_withheld(&format!("Agent {agents}"));
            }
            Step::AgentEndsWithheld => {
                // The agent's removal comes on the stream; the end may be read from it first.
                reference.agent_ended |= server_acts;
                reference.agent_left |= server_acts;
                sim.agent_ends_withheld();
            }
            Step::AgentBurst {
                count,
                withhold_every,
            } => sim.agent_burst(count, withhold_every),
            Step::DropAndTalk(count) => {
                sim.drop_stream();
                for n in 0..count {
                    if n % 3 == 2 {
                        sim.agent_says_withheld("dw");
                    } else {
                        sim.agent_says("d");
                    }
                    sim.advance(Duration::from_millis(400));
                }
            }
            Step::AgentTyping => sim.agent_typing(true),
            Step::SystemSays => sim.system_says("s"),
            Step::Transfer => sim.transfer(),
            Step::AgentLeaves => {
                reference.agent_left |= server_acts;
                sim.agent_leaves();
            }
            Step::AgentEnds => {
                // The agent's removal comes first; if the end is then superseded by a new
                // session (a resend after a 417 that the listing shows), the removal decides.
                reference.agent_ended |= server_acts;
                reference.agent_left |= server_acts;
                sim.agent_ends();
            }
            Step::MarkInactive => sim.mark_inactive(),
            Step::CustomerSideClose => {
                reference.customer_closed |= server_acts;
                sim.customer_side_close();
            }
            Step::RoutingFails => {
                reference.routing_failed |= server_acts;
                sim.routing_fails();
            }
            Step::QueuePosition(position) => sim.queue_position(position),
            Step::DropStream => sim.drop_stream(),
            Step::SilenceStream => sim.silence_stream(),
            Step::StreamRejectsToken => {
                reference.token_trouble = true;
                sim.stream_rejects_token();
            }
            Step::RevokeTokens => {
                reference.token_trouble = true;
                sim.salesforce.revoke_all_tokens();
            }
            Step::IdentityStopsWorking => {
                reference.identity_stopped = true;
                sim.salesforce.identity_accepted = false;
            }
            Step::ReplayDuplicates(count) => sim.replay_duplicates(count),
            Step::UnknownEvent => sim.stream_unknown_event("CONVERSATION_NEW_THING"),
            Step::MalformedEvent => sim.stream_malformed_event(),
            Step::FailSend(fault) => {
                reference.failures_injected = true;
                let salesforce = &mut sim.salesforce;
                match fault {
                    SendFault::Transient => {
                        salesforce.fail_next(Target::Send, CallFailure::Transient("503".into()))
                    }
                    SendFault::RateLimited => {
                        salesforce.fail_next(Target::Send, CallFailure::RateLimited)
                    }
                    SendFault::TimeoutAfterApplying => {
                        salesforce.fail_next_after_applying(
                            Target::Send,
                            CallFailure::Transient("timeout".into()),
                        );
                    }
                    SendFault::NoMessagingSession => {
                        salesforce.fail_next(Target::Send, CallFailure::NoMessagingSession)
                    }
                    SendFault::Rejected => salesforce.fail_next(
                        Target::Send,
                        CallFailure::Rejected {
                            status: 400,
                            message: "no".into(),
                        },
                    ),
                }
            }
            Step::FailBot { rejected } => {
                reference.failures_injected = true;
                sim.bot.fail_next(if rejected {
                    DeliveryFailure::Rejected {
                        status: 404,
                        message: "unknown URL token".into(),
                    }
                } else {
                    DeliveryFailure::Transient("502".into())
                });
            }
            Step::FailListing => {
                reference.failures_injected = true;
                reference.listing_failures += 1;
                sim.salesforce
                    .fail_next(Target::ListEntries, CallFailure::Transient("503".into()));
            }
            Step::FailRoutingStatus => {
                sim.salesforce.fail_next(
                    Target::RoutingStatus,
                    CallFailure::Transient("timeout".into()),
                );
            }
            Step::UserCancels => {
                reference.user_cancelled = true;
                sim.user_cancels();
                if live_before {
                    let outcome = sim.session.outcome().map(|o| o.reason);
                    prop_assert!(
                        matches!(
                            outcome,
                            Some(EndReason::CancelledByUser | EndReason::UserClosed)
                        ),
                        "a cancel ends a live handover at once, got {outcome:?}"
                    );
                }
            }
            Step::FlowCloses => {
                reference.flow_closed = true;
                sim.flow_closes();
                if live_before {
                    prop_assert_eq!(
                        sim.session.outcome().map(|o| o.reason),
                        Some(EndReason::ClosedByFlow)
                    );
                }
            }
            Step::Restart => sim.restart(round_trip),
            Step::Advance(duration) => sim.advance(duration),
        }
        check(sim, &reference, setup)?;
        if let Some(outcome) = sim.session.outcome() {
            check_reason(outcome.reason, &reference, sim, setup, ends_on_leave)?;
        }
    }
    // Let retries, polls, reconnects and timers play out with no further faults.
    // "Still polling" means the session could still read Salesforce at the very end.
    sim.advance(Duration::from_secs(12 * 60));
    let listings_before = sim.salesforce.listings;
    sim.advance(Duration::from_secs(3 * 60));
    check(sim, &reference, setup)?;
    // Liveness: a handover that is still live after a quiet quarter of an hour has its stream
    // (not only the safety poll), whatever restarts and drops happened. Unless its token is
    // refused or cannot be renewed: then it only waits for the grace period.
    let token_usable = !reference.token_trouble && !reference.identity_stopped;
    if token_usable && !matches!(sim.session.phase(), Phase::Ending | Phase::Ended) {
        prop_assert!(
            sim.salesforce.stream_connected(),
            "a live handover keeps its stream connected (phase {:?})",
            sim.session.phase()
        );
    }
    check_nothing_lost(
        sim,
        &reference,
        setup,
        sim.salesforce.listings > listings_before,
    )?;
    if let Some(outcome) = sim.session.outcome() {
        check_reason(outcome.reason, &reference, sim, setup, ends_on_leave)?;
        prop_assert_eq!(terminal_keys(sim).len(), 1, "exactly one terminal status");
    }
    Ok(())
}

/// What a store does to a session: serialize it, and read it back in another process. The
/// restored session must serialize to the same bytes.
fn round_trip(session: &Session) -> Session {
    let stored = serde_json::to_string(session).expect("a session serializes");
    let restored: Session = serde_json::from_str(&stored).expect("a stored session reads back");
    assert_eq!(
        serde_json::to_string(&restored).expect("serializes again"),
        stored,
        "the round trip loses nothing"
    );
    restored
}

fn is_relayable(entry: &ConversationEntry) -> bool {
    matches!(&entry.payload, EntryPayload::Message(content) if !content.is_empty())
        && entry.sender.role.is_relayed()
}

fn relayed_entries(sim: &Sim) -> Vec<EntryId> {
    sim.bot
        .delivered
        .iter()
        .filter_map(|delivery| match delivery {
            BotDelivery::Notify(Notification::Agent(message)) => Some(message.entry.clone()),
            BotDelivery::Notify(Notification::Notice { .. })
            | BotDelivery::Inject(_)
            | BotDelivery::Typing { .. } => None,
        })
        .collect()
}

/// When each agent entry was first handed to the bot platform.
fn first_relay_times(sim: &Sim) -> BTreeMap<EntryId, Timestamp> {
    let mut times = BTreeMap::new();
    for (at, command) in sim.history() {
        if let Command::Bot(BotCall {
            delivery: BotDelivery::Notify(Notification::Agent(message)),
            ..
        }) = command
        {
            times.entry(message.entry.clone()).or_insert(*at);
        }
    }
    times
}

fn terminal_keys(sim: &Sim) -> BTreeSet<String> {
    sim.history()
        .iter()
        .filter_map(|(_, command)| match command {
            Command::Bot(BotCall {
                delivery:
                    BotDelivery::Inject(StatusUpdate {
                        key,
                        status: HandoverStatus::Ended(_),
                    }),
                ..
            }) => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// The invariants, checked after every step.
fn check(sim: &Sim, reference: &Reference, setup: &Setup) -> Result<(), TestCaseError> {
    let log = sim.salesforce.log();
    let position: BTreeMap<&EntryId, (usize, bool)> = log
        .iter()
        .enumerate()
        .map(|(index, logged)| (&logged.entry.identifier, (index, logged.withheld)))
        .collect();

    // No entry relayed twice. Relayed in server order, withheld entries included: the stream's
    // entries wait for the listing that shows what came before them. Only when the session
    // reports that it relayed entries without that listing (the hold bound passed, or no
    // listing could be had) may an entry the stream withheld come late.
    let relayed = relayed_entries(sim);
    let unique: BTreeSet<_> = relayed.iter().collect();
    prop_assert_eq!(
        unique.len(),
        relayed.len(),
        "an entry was relayed twice: {:?}",
        relayed
    );
    let released = sim
        .history()
        .iter()
        .any(|(_, command)| matches!(command, Command::Record(Observation::HoldReleased { .. })));
    // A backfill that could not reach back to the previous one relays what it found, and
    // says so: then anything may come late.
    let incomplete = sim
        .history()
        .iter()
        .any(|(_, command)| matches!(command, Command::Record(Observation::BackfillIncomplete)));
    // Within a millisecond the entries list cannot page through (reported as missed), the
    // place of an entry only the stream brought is unknown.
    let missed = sim.session.missed_entries();
    let mut last = None;
    for entry in &relayed {
        let (index, withheld) = position[entry];
        let in_gap = log[index]
            .entry
            .server_time
            .is_some_and(|time| missed.iter().any(|m| m.from <= time && time <= m.to));
        let may_be_late = (withheld && released) || in_gap || incomplete;
        if !may_be_late {
            prop_assert!(
                last.is_none_or(|last| index > last),
                "relayed out of server order: {:?}",
                relayed
            );
            last = Some(index);
        }
    }

    // Bounded delay: with no failure injected and a usable token, an agent message reaches
    // the bot platform within one long safety poll (120 s) plus the hold (5 s), plus round
    // trips of the fake's latency: a backfill's pages (at most 20) and the deliveries queued
    // before it in the bot lane (one at a time).
    if !reference.failures_injected && !reference.token_trouble && !reference.identity_stopped {
        let config = SessionConfig::default();
        let bound = config.safety_poll_interval + config.stream_hold + setup.latency * 60;
        let relayed_at: BTreeMap<EntryId, Timestamp> = first_relay_times(sim);
        for logged in log {
            if let (Some(at), Some(recorded)) = (
                relayed_at.get(&logged.entry.identifier),
                logged.entry.server_time,
            ) {
                prop_assert!(
                    at.saturating_duration_since(recorded) <= bound,
                    "{:?} took {:?} to reach the user (bound {:?})",
                    logged.entry.identifier,
                    at.saturating_duration_since(recorded),
                    bound
                );
            }
        }
    }

    // Exactly one terminal status, at most, ever; an ended handover has an outcome.
    prop_assert!(terminal_keys(sim).len() <= 1);
    prop_assert_eq!(
        sim.session.phase() == Phase::Ended,
        sim.session.outcome().is_some()
    );

    // Nothing sent after the end but cleanup: closing (with a renewed token if Salesforce
    // refused the one there was, a bounded number of times) and revoking.
    if let Some(mark) = sim.end_mark() {
        let mut renewals = 0;
        for (_, command) in &sim.history()[mark.history_len..] {
            if let Command::Salesforce(call) = command {
                prop_assert!(
                    matches!(
                        call.request,
                        SalesforceRequest::CloseConversation { .. }
                            | SalesforceRequest::RevokeToken
                            | SalesforceRequest::CloseStream
                            | SalesforceRequest::RenewToken(MintKind::Verified(_))
                    ),
                    "after the end: {:?}",
                    call.request
                );
                if matches!(call.request, SalesforceRequest::RenewToken(_)) {
                    renewals += 1;
                }
            }
        }
        prop_assert!(
            renewals <= SessionConfig::default().retry.max_attempts,
            "{renewals} renewals after the end to close the conversation"
        );
        for entry in &relayed {
            prop_assert!(
                position[entry].0 < mark.server_log_len,
                "relayed an entry from after the end"
            );
        }
    }
    let first_terminal = sim.history().iter().position(|(_, c)| {
        matches!(
            c,
            Command::Bot(BotCall {
                delivery: BotDelivery::Inject(StatusUpdate {
                    status: HandoverStatus::Ended(_),
                    ..
                }),
                ..
            })
        )
    });
    if let Some(first) = first_terminal {
        let Command::Bot(terminal) = &sim.history()[first].1 else {
            unreachable!()
        };
        for (_, command) in &sim.history()[first..] {
            if let Command::Bot(call) = command {
                prop_assert_eq!(
                    &call.delivery,
                    &terminal.delivery,
                    "a delivery after the terminal status"
                );
            }
        }
    }

    // Never more than 22 messages toward Salesforce in any 60 seconds.
    let sends: Vec<Timestamp> = sim.send_times();
    for window in sends.windows(23) {
        prop_assert!(window[22].saturating_duration_since(window[0]) >= Duration::from_secs(60));
    }

    // No command uses an expired token.
    for (at, command) in sim.history() {
        if let Command::Salesforce(SalesforceCall {
            credential: Some(credential),
            ..
        }) = command
        {
            prop_assert!(*at < credential.expires_at);
        }
    }

    // The agent sees each user message at most once, in the order the user wrote them.
    let order: BTreeMap<&str, usize> = reference
        .said
        .iter()
        .enumerate()
        .map(|(i, (_, text))| (text.as_str(), i))
        .collect();
    let mut last_user = None;
    let mut seen = BTreeSet::new();
    for message in sim.salesforce.accepted() {
        if let OutboundBody::Text(text) = &message.body
            && let Some(&index) = order.get(text.as_str())
        {
            prop_assert!(seen.insert(index), "the agent saw {} twice", text);
            prop_assert!(
                last_user.is_none_or(|last| index > last),
                "user messages out of order"
            );
            last_user = Some(index);
        }
    }
    let _ = setup;
    Ok(())
}

/// An end must have a cause in the script.
fn check_reason(
    reason: EndReason,
    reference: &Reference,
    sim: &Sim,
    setup: &Setup,
    ends_on_leave: bool,
) -> Result<(), TestCaseError> {
    let old_enough = sim.elapsed() >= setup.token_lifetime.mul_f64(0.8);
    let caused = match reason {
        EndReason::AgentEnded => reference.agent_ended,
        EndReason::UserClosed => reference.customer_closed || reference.user_cancelled,
        EndReason::ClosedByFlow => reference.flow_closed,
        EndReason::CancelledByUser => reference.user_cancelled,
        EndReason::RoutingFailed => reference.routing_failed,
        EndReason::AgentLeft => reference.agent_left && ends_on_leave,
        EndReason::TokenExpired => reference.token_trouble || old_enough,
        // A failure, or a conversation that vanished while the token could not read why.
        EndReason::ProviderError => {
            reference.failures_injected || (reference.customer_closed && reference.token_trouble)
        }
    };
    prop_assert!(caused, "ended {reason} without a cause: {reference:?}");
    Ok(())
}

/// Once everything has played out: nothing the agent wrote and nothing the user wrote is lost.
fn check_nothing_lost(
    sim: &Sim,
    reference: &Reference,
    setup: &Setup,
    still_polling: bool,
) -> Result<(), TestCaseError> {
    let relayed: BTreeSet<EntryId> = relayed_entries(sim).into_iter().collect();
    let failed: BTreeSet<EntryId> = sim
        .session
        .failed_bot_deliveries()
        .iter()
        .filter_map(|d| match d {
            BotDelivery::Notify(Notification::Agent(message)) => Some(message.entry.clone()),
            _ => None,
        })
        .collect();
    let log = sim.salesforce.log();
    let must_have_arrived = match sim.session.outcome().map(|o| o.reason) {
        // Still live and still talking to Salesforce: everything so far.
        None if still_polling => log.len(),
        // Salesforce ended it: everything before the end, thanks to the final backfill.
        // (Unless the token was refused, or cannot be renewed and may expire while the final
        // backfill pages: then nothing can be read any more.)
        Some(EndReason::AgentEnded | EndReason::UserClosed)
            if !reference.user_cancelled
                && !reference.token_trouble
                && !reference.identity_stopped
                && reference.listing_failures < SessionConfig::default().retry.max_attempts =>
        {
            log.iter()
                .position(|logged| {
                    matches!(
                        logged.entry.payload,
                        EntryPayload::CloseConversation
                            | EntryPayload::SessionStatusChanged {
                                status: SessionStatus::Ended,
                                ..
                            }
                    )
                })
                .unwrap_or(log.len())
        }
        _ => 0,
    };
    // A millisecond with more entries than the entries list can page through is reported,
    // never passed over in silence.
    let missed = sim.session.missed_entries();
    if let Some(outcome) = sim.session.outcome() {
        prop_assert_eq!(
            &outcome.missed,
            &missed.to_vec(),
            "the outcome reports every gap"
        );
    }
    let in_gap = |entry: &ConversationEntry| {
        entry
            .server_time
            .is_some_and(|time| missed.iter().any(|m| m.from <= time && time <= m.to))
    };
    for logged in &log[..must_have_arrived] {
        if is_relayable(&logged.entry) && !in_gap(&logged.entry) {
            prop_assert!(
                relayed.contains(&logged.entry.identifier)
                    || failed.contains(&logged.entry.identifier),
                "agent message {:?} never reached the user",
                logged.entry.identifier
            );
        }
    }

    let accepted: BTreeSet<String> = sim
        .salesforce
        .accepted()
        .iter()
        .filter_map(|m| match &m.body {
            OutboundBody::Text(text) => Some(text.clone()),
            OutboundBody::File(_) => None,
        })
        .collect();
    let refused: BTreeSet<&BotMessageId> = sim.session.refused_messages().iter().collect();
    let held = !setup.forward_while_queued && !reference.agent_ever_joined;
    for (id, text) in &reference.said {
        if accepted.contains(text) || refused.contains(id) {
            continue;
        }
        match sim.session.outcome() {
            Some(outcome) => prop_assert!(
                outcome.undelivered.contains(id) || outcome.unconfirmed.contains(id),
                "user message {id} is neither delivered nor reported: {outcome:?}"
            ),
            None => prop_assert!(
                held || !still_polling,
                "user message {id} is stuck in a live handover"
            ),
        }
    }
    Ok(())
}

#[test]
fn session_invariants_hold_for_random_scripts() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(10_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    });
    let strategy = (setup(), proptest::collection::vec(step(), 1..40));
    let result = runner.run(&strategy, |(setup, steps)| run_case(setup, steps));
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Found by the property test: a final backfill joined a routine listing already under way,
/// whose snapshot predated a withheld agent message, so the message was lost at the end.
#[test]
fn regression_the_final_backfill_lists_what_exists_after_the_end_signal() {
    let setup = Setup {
        forward_events: false,
        end_when_agent_leaves: false,
        legacy_switch: false,
        forward_while_queued: true,
        transcript_turns: 700,
        verified: false,
        agent_change_notification: false,
        token_lifetime: Duration::from_secs(900),
        latency: Duration::from_millis(1500),
        exclusive_bounds: false,
        small_pages: false,
    };
    let steps = vec![
        Step::Advance(Duration::from_secs(100)),
        Step::DropStream,
        Step::Burst(15),
        Step::Burst(25),
        Step::AgentSaysWithheld,
        Step::CustomerSideClose,
    ];
    if let Err(error) = run_case(setup, steps) {
        panic!("{error}");
    }
}

/// Found by the property test: a backfill whose second page was refused (the token had been
/// revoked) relayed its first page, whose entries were newer than one the stream had not
/// brought yet, so that one came after them.
#[test]
fn regression_a_backfill_that_fails_midway_relays_none_of_its_pages() {
    let setup = Setup {
        verified: true,
        ..Setup::plain(Duration::from_millis(1500))
    };
    let steps = vec![
        Step::Advance(Duration::from_secs(3)),
        Step::UserLeaves,
        Step::QueuePosition(1),
        Step::UserLeaves,
        Step::UserLeaves,
        Step::DropAndTalk(4),
        Step::RevokeTokens,
        Step::Restart,
    ];
    if let Err(error) = run_case(setup, steps) {
        panic!("{error}");
    }
}

/// Found by the property test: after a long silent stream more entries waited than a backfill
/// may page through, and every later backfill started again from the newest, so the oldest
/// ones were never listed. Now the next backfill goes on below where the last one stopped.
#[test]
fn regression_a_backfill_out_of_pages_is_continued_below_until_nothing_is_left_unlisted() {
    let setup = Setup::plain(Duration::from_millis(30));
    let steps = vec![
        Step::DropAndTalk(3),
        Step::SilenceStream,
        Step::AgentJoins,
        Step::UserSays,
        Step::Burst(5),
        Step::UserSays,
        Step::AgentEndsWithheld,
        Step::AgentBurst {
            count: 5,
            withhold_every: 0,
        },
        Step::AgentJoins,
        Step::Burst(23),
        Step::AgentJoins,
    ];
    if let Err(error) = run_case(setup, steps) {
        panic!("{error}");
    }
}
