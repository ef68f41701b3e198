//! Behaviours of the session beyond the numbered scenarios: the phases, the driving contract,
//! failure paths, and the edges of every rule.

#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)]

use std::time::Duration;

use expect_test::expect;
use handover_core::sim::{Sim, Target};
use handover_core::*;

mod support;
use support::*;

fn request() -> HandoverRequest {
    HandoverRequest {
        handover_id: HandoverId::from_random_bytes([1; 16]),
        conversation_id: ConversationId::from_random_bytes([2; 16]),
        transcript: Vec::new(),
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    }
}

#[test]
fn the_phases_of_a_handover_in_order() {
    let mut sim = sim_with(|c| c.latency = Duration::from_millis(10));
    let mut phases = vec![sim.session.phase()];
    let mut note = |sim: &Sim| {
        let phase = sim.session.phase();
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
    };
    sim.start();
    for _ in 0..5 {
        note(&sim);
        sim.advance(Duration::from_millis(10));
    }
    // Each agent event waits one listing (a round trip) for its place in the conversation.
    sim.agent_joins("Jane");
    sim.advance(Duration::from_millis(30));
    note(&sim);
    sim.transfer();
    sim.advance(Duration::from_millis(40));
    note(&sim);
    sim.agent_joins("Raj");
    sim.advance(Duration::from_millis(30));
    note(&sim);
    sim.mark_inactive();
    sim.advance(Duration::from_millis(30));
    note(&sim);
    sim.user_says("back");
    sim.advance(Duration::from_millis(40));
    note(&sim);
    sim.agent_joins("Ana");
    sim.advance(Duration::from_millis(30));
    note(&sim);
    sim.agent_ends();
    sim.advance(Duration::from_millis(20));
    note(&sim);
    sim.advance(Duration::from_millis(50));
    note(&sim);
    assert_eq!(
        phases,
        vec![
            Phase::Requested,
            Phase::MintingToken,
            Phase::OpeningStream,
            Phase::CreatingConversation,
            Phase::Queued,
            Phase::WithAgent,
            Phase::Transferring,
            Phase::WithAgent,
            Phase::Inactive,
            Phase::Queued,
            Phase::WithAgent,
            Phase::Ending,
            Phase::Ended,
        ]
    );
    assert!(sim.session.is_finished());
    assert_eq!(
        sim.session.poll_timeout(),
        None,
        "nothing left to wake up for"
    );
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut session = Session::new(request(), SessionConfig::default());
    let later = Timestamp::from_unix_secs(2_000);
    let _ = session.handle(Input::Start, later);
    let mint = CallId::from_raw(1);
    let token = IssuedToken {
        token: AccessToken::new("t"),
        expires_at: Timestamp::from_unix_secs(2_000 + 3600),
        subject: Subject::Anonymous("anon".to_owned()),
        last_event_id: None,
    };
    // The clock steps back an hour: deadlines stay where they were.
    let earlier = Timestamp::from_unix_secs(1_000);
    let commands = session.handle(
        Input::Salesforce {
            call: mint,
            result: Ok(SalesforceResponse::Token(token)),
        },
        earlier,
    );
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::Salesforce(SalesforceCall {
            request: SalesforceRequest::OpenStream { .. },
            ..
        })
    )));
    let (deadline, timer) = session.poll_timeout().unwrap();
    assert_eq!(
        (deadline, timer),
        (later + secs(15), Timer::StreamConnectTimeout)
    );
}

#[test]
fn an_early_or_spurious_timeout_does_nothing() {
    let mut sim = with_agent(|_| {});
    let before = sim.history().len();
    sim.input(Input::Timeout);
    sim.input(Input::Timeout);
    assert_eq!(sim.history().len(), before);
}

#[test]
fn results_nobody_waits_for_are_counted_and_ignored() {
    let mut sim = with_agent(|_| {});
    sim.input(Input::Salesforce {
        call: CallId::from_raw(999),
        result: Ok(SalesforceResponse::Done),
    });
    sim.input(Input::Bot {
        call: CallId::from_raw(998),
        result: Ok(()),
    });
    expect![[r#"
        0:00:00 > sf#999 ok
        0:00:00 < record stale-result
        0:00:00 > bot#998 ok
        0:00:00 < record stale-result
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.session.phase(), Phase::WithAgent);
}

#[test]
fn a_replayed_user_message_is_sent_once() {
    let mut sim = with_agent(|_| {});
    let id = sim.user_says("only once");
    sim.user_says_with_id(id, "only once");
    assert_eq!(sim.salesforce.accepted().len(), 1);
    assert!(sim.take_log().contains("record duplicate-user-message"));
}

#[test]
fn empty_user_messages_are_ignored() {
    let mut sim = with_agent(|_| {});
    sim.user_says("   ");
    assert!(sim.salesforce.accepted().is_empty());
    assert!(sim.take_log().contains("record ignored empty user message"));
}

#[test]
fn a_long_user_message_is_split_like_the_transcript() {
    let mut sim = with_agent(|_| {});
    let text = "word ".repeat(1500);
    sim.user_says(&text);
    let sent: Vec<String> = sim
        .salesforce
        .accepted()
        .iter()
        .map(|m| match &m.body {
            OutboundBody::Text(text) => text.clone(),
            OutboundBody::File(_) => String::new(),
        })
        .collect();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|chunk| chunk.chars().count() <= 3000));
    assert_eq!(sent.concat(), text);
}

#[test]
fn pacing_counts_transcript_chunks_too() {
    let transcript: Vec<_> = (0..30)
        .map(|i| TranscriptTurn::user(format!("{i} {}", "y".repeat(2980))))
        .collect();
    let mut sim = sim_with(|c| {
        c.settings.send_transcript = true;
        c.transcript = transcript;
        // Thirty whole messages: above the default cap, which keeps the newest 16,000.
        c.config.max_transcript_chars = 100_000;
    });
    sim.start();
    sim.user_says("and now me");
    sim.run_until_quiet(secs(300));
    let sends: Vec<Timestamp> = sim.send_times();
    assert_eq!(sends.len(), 31);
    for window in sends.windows(23) {
        assert!(window[22].saturating_duration_since(window[0]) >= secs(60));
    }
    let last = sim.salesforce.accepted().last().unwrap();
    assert_eq!(last.body, OutboundBody::Text("and now me".to_owned()));
}

#[test]
fn a_message_salesforce_refuses_is_reported_not_dropped() {
    let mut sim = with_agent(|c| c.settings.forward_events = true);
    sim.salesforce.fail_next(
        Target::Send,
        CallFailure::Rejected {
            status: 400,
            message: "text too long".to_owned(),
        },
    );
    let refused = sim.user_says("refused");
    sim.user_says("accepted");
    expect![[r#"
        0:00:00 > user says "refused" (m1)
        0:00:00 < sf#10 send "refused" id=ebf42e92 [t1]
        0:00:00 > sf#10 failed: rejected with status 400: text too long
        0:00:00 < record message-refused m1
        0:00:00 < bot#11 inject event message-refused m1
        0:00:00 > bot#11 ok
        0:00:00 > user says "accepted" (m2)
        0:00:00 < sf#12 send "accepted" id=898f550e [t1]
        0:00:00 > sf#12 ok
        0:00:00 > stream#2 e4 EndUser(Guest) message "accepted"
        0:00:00 > stream#2 e5 Agent delivered
        0:00:00 < bot#13 inject event delivered
        0:00:00 > bot#13 ok
    "#]]
    .assert_eq(&sim.take_log());
    sim.flow_closes();
    assert_eq!(sim.session.outcome().unwrap().undelivered, vec![refused]);
}

#[test]
fn a_second_417_for_the_same_message_is_a_refusal() {
    let mut sim = with_agent(|_| {});
    sim.salesforce
        .fail_next(Target::Send, CallFailure::NoMessagingSession);
    sim.salesforce
        .fail_next(Target::Send, CallFailure::NoMessagingSession);
    let id = sim.user_says("hello?");
    sim.flow_closes();
    assert_eq!(sim.session.outcome().unwrap().undelivered, vec![id]);
}

#[test]
fn salesforce_failing_every_send_ends_the_handover_with_the_messages_listed() {
    let mut sim = with_agent(|_| {});
    for _ in 0..8 {
        sim.salesforce
            .fail_next(Target::Send, CallFailure::Transient("500".to_owned()));
    }
    let first = sim.user_says("one");
    let second = sim.user_says("two");
    sim.run_until_quiet(secs(600));
    assert_eq!(terminal(&sim).as_deref(), Some("error/provider_error"));
    assert_eq!(
        sim.session.outcome().unwrap().undelivered,
        vec![first, second]
    );
}

#[test]
fn a_failing_token_mint_is_retried_then_reported() {
    let mut sim = sim_with(|_| {});
    sim.salesforce
        .fail_next(Target::Mint, CallFailure::RateLimited);
    sim.start();
    sim.run_until_quiet(secs(60));
    assert_eq!(sim.session.phase(), Phase::Queued, "the retry got a token");

    let mut sim = sim_with(|_| {});
    sim.salesforce.fail_next(
        Target::Mint,
        CallFailure::Rejected {
            status: 400,
            message: "invalid deployment".to_owned(),
        },
    );
    sim.start();
    expect![[r#"
        0:00:00 > start
        0:00:00 < sf#1 mint-token guest
        0:00:00 > sf#1 failed: rejected with status 400: invalid deployment
        0:00:00 < bot#2 inject error/provider_error
        0:00:00 > bot#2 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn a_conversation_that_cannot_be_created_is_an_error() {
    let mut sim = sim_with(|_| {});
    sim.salesforce
        .fail_next(Target::Create, CallFailure::Transient("timeout".to_owned()));
    sim.salesforce.fail_next(
        Target::Create,
        CallFailure::Rejected {
            status: 400,
            message: "bad routing attribute".to_owned(),
        },
    );
    sim.start();
    sim.run_until_quiet(secs(60));
    assert_eq!(terminal(&sim).as_deref(), Some("error/provider_error"));
    let detail = sim.session.outcome().unwrap().detail.clone().unwrap();
    assert!(detail.contains("bad routing attribute"), "{detail}");
}

#[test]
fn a_stream_that_never_opens_does_not_hold_the_conversation_back() {
    let mut sim = sim_with(|_| {});
    for _ in 0..3 {
        sim.salesforce.fail_next(
            Target::OpenStream,
            CallFailure::Transient("refused".to_owned()),
        );
    }
    sim.start();
    sim.advance(secs(20));
    assert!(
        sim.salesforce.created(),
        "created after the connect timeout"
    );
    sim.agent_joins("Jane");
    sim.agent_says("hello");
    sim.run_until_quiet(secs(130));
    assert_eq!(
        sim.bot.texts(),
        vec!["hello"],
        "replay or backfill delivers it"
    );
}

#[test]
fn user_typing_is_only_sent_while_an_agent_is_there() {
    let mut sim = sim_with(|_| {});
    sim.start();
    sim.user_typing(true);
    assert!(sim.salesforce.typing.is_empty());
    sim.agent_joins("Jane");
    sim.user_typing(true);
    sim.user_says("done typing");
    assert_eq!(
        sim.salesforce.typing,
        vec![true, false],
        "a message ends the typing"
    );
}

#[test]
fn presence_notices_do_not_summon_an_agent_to_an_inactive_conversation() {
    let mut sim = with_agent(|_| {});
    sim.mark_inactive();
    sim.user_leaves();
    assert!(sim.salesforce.accepted().is_empty());
    assert_eq!(sim.session.phase(), Phase::Inactive);
}

#[test]
fn entries_of_other_conversations_are_ignored() {
    let mut sim = with_agent(|_| {});
    sim.input(Input::Stream {
        stream: CallId::from_raw(2),
        event: StreamEvent::Entry {
            event_id: Some(EventId::new("77").unwrap()),
            entry: ConversationEntry {
                conversation_id: ConversationId::from_random_bytes([9; 16]),
                identifier: EntryId::new("other-1").unwrap(),
                sender: Sender {
                    role: Role::Agent,
                    display_name: None,
                    subject: None,
                },
                server_time: None,
                message_id: None,
                payload: EntryPayload::Message(MessageContent::Text("not for you".to_owned())),
            },
        },
    });
    assert!(sim.bot.texts().is_empty());
    assert!(sim.take_log().contains("record foreign-conversation"));
    assert_eq!(
        sim.session.last_event_id().map(EventId::as_str),
        Some("77"),
        "the stream position still moves"
    );
}

#[test]
fn chatbot_messages_are_relayed_and_supervisor_whispers_are_not() {
    let mut sim = with_agent(|_| {});
    for (role, text) in [(Role::Chatbot, "bot says"), (Role::Supervisor, "whisper")] {
        sim.input(Input::Stream {
            stream: CallId::from_raw(2),
            event: StreamEvent::Entry {
                event_id: None,
                entry: ConversationEntry {
                    conversation_id: sim.session.conversation_id(),
                    identifier: EntryId::new(text).unwrap(),
                    sender: Sender {
                        role,
                        display_name: None,
                        subject: None,
                    },
                    server_time: None,
                    message_id: None,
                    payload: EntryPayload::Message(MessageContent::Text(text.to_owned())),
                },
            },
        });
    }
    assert_eq!(sim.bot.texts(), vec!["bot says"]);
}

#[test]
fn a_verified_token_is_revoked_when_the_handover_ends() {
    let mut sim = with_agent(|c| c.settings.identity_token = Some(IdentityToken::new("idp")));
    sim.flow_closes();
    expect![[r#"
        0:00:00 > flow closes
        0:00:00 < bot#7 inject completed/closed_by_flow
        0:00:00 < sf#8 close-stream
        0:00:00 < sf#9 close-conversation [t1]
        0:00:00 > bot#7 ok
        0:00:00 > sf#8 ok
        0:00:00 > sf#9 ok
        0:00:00 < sf#10 revoke-token [t1]
        0:00:00 > sf#10 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn the_final_backfill_relays_a_message_withheld_just_before_the_end() {
    let mut sim = with_agent(|_| {});
    sim.agent_says_withheld("Thanks, bye!");
    sim.agent_ends();
    let delivered: Vec<String> = sim
        .bot
        .delivered
        .iter()
        .filter_map(|d| match d {
            BotDelivery::Notify(Notification::Agent(m)) => Some(format!("notify {:?}", m.content)),
            BotDelivery::Inject(StatusUpdate {
                status: HandoverStatus::Ended(o),
                ..
            }) => Some(format!("ended {}", o.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered,
        vec![r#"notify Text("Thanks, bye!")"#, "ended agent_ended"]
    );
}

#[test]
fn a_rejected_bot_delivery_ends_the_handover_at_once() {
    let mut sim = with_agent(|_| {});
    sim.bot.fail_next(DeliveryFailure::Rejected {
        status: 404,
        message: "no endpoint for this URL token".to_owned(),
    });
    sim.agent_says("hello");
    assert_eq!(terminal(&sim).as_deref(), Some("error/provider_error"));
    assert_eq!(sim.session.failed_bot_deliveries().len(), 1);
}

#[test]
fn the_routing_status_check_is_dropped_when_another_agent_joins_first() {
    let mut sim = sim_with(|c| {
        c.settings.end_when_agent_leaves = true;
        c.latency = Duration::from_millis(100);
    });
    sim.start();
    sim.advance(secs(1));
    sim.agent_joins("Jane");
    sim.advance(secs(1));
    assert_eq!(sim.session.phase(), Phase::WithAgent);
    sim.agent_leaves();
    // Raj is assigned at once. Jane's removal and his join wait for the listing that puts
    // them in order, so both are taken in together: the routing status that Jane's removal
    // asks for is still on its way when Raj is there.
    sim.advance(Duration::from_millis(50));
    sim.agent_joins("Raj");
    sim.advance(Duration::from_millis(160));
    assert_eq!(sim.session.phase(), Phase::WithAgent);
    let asked = sim.history().iter().any(|(_, command)| {
        matches!(
            command,
            Command::Salesforce(SalesforceCall {
                request: SalesforceRequest::FetchRoutingStatus { .. },
                ..
            })
        )
    });
    assert!(asked, "the removal asked for the routing status");
    sim.advance(Duration::from_millis(300));
    assert_eq!(sim.session.phase(), Phase::WithAgent);
    assert_eq!(terminal(&sim), None);
}

#[test]
fn session_config_validation_names_the_field() {
    let config = SessionConfig {
        retry: RetryPolicy {
            initial: secs(0),
            max: secs(1),
            max_attempts: 3,
        },
        ..SessionConfig::default()
    };
    assert_eq!(config.validate().unwrap_err().field, "retry");
}

#[test]
fn a_backfill_reaches_back_page_by_page_and_relays_in_order() {
    let mut sim = with_agent(|_| {});
    let texts: Vec<String> = (0..120).map(|i| format!("message {i}")).collect();
    for text in &texts {
        sim.agent_says_withheld(text);
        sim.advance(Duration::from_millis(10));
    }
    sim.take_log();
    // With an agent there, the safety poll comes every 30 s.
    sim.advance(secs(30));
    let log = sim.take_log();
    assert_eq!(
        log.matches("list-entries").count(),
        3,
        "three pages of 50, each reaching one millisecond past the one before:\n{log}"
    );
    assert_eq!(
        sim.bot.texts(),
        texts.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[test]
fn a_file_refused_for_any_reason_goes_as_a_link() {
    let mut sim = with_agent(|_| {});
    sim.salesforce.fail_next(
        Target::Send,
        CallFailure::Rejected {
            status: 400,
            message: "could not download the attachment".to_owned(),
        },
    );
    sim.user_sends_file("receipt.pdf", 10);
    let sent: Vec<_> = sim
        .salesforce
        .accepted()
        .iter()
        .map(|m| m.body.clone())
        .collect();
    assert_eq!(
        sent,
        vec![OutboundBody::Text(
            "receipt.pdf: https://files.example/receipt.pdf".to_owned()
        )]
    );
}
