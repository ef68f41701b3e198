//! One test per scenario of the behaviour catalogue (`docs/scenarios.md`), named after its id.
//! Each drives a simulated handover and compares the log of inputs (`>`) and commands (`<`)
//! with the expected one, or asserts on what the agent and the user received.
//!
//! Update the expected logs with `UPDATE_EXPECT=1 cargo test -p handover-core`, then read the
//! diff: the logs are the specification.

#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)]

use std::time::Duration;

use expect_test::expect;
use handover_core::sim::{Sim, SimConfig, Target};
use handover_core::*;

mod support;
use support::*;

fn salesforce_requests_after(sim: &Sim, from: Timestamp) -> Vec<&SalesforceRequest> {
    sim.history()
        .iter()
        .filter(|(at, _)| *at >= from)
        .filter_map(|(_, command)| match command {
            Command::Salesforce(call) => Some(&call.request),
            Command::Bot(_) | Command::Record(_) => None,
        })
        .collect()
}

/// Salesforce requests issued after the terminal status.
fn salesforce_requests_after_the_end(sim: &Sim) -> Vec<&SalesforceRequest> {
    let end = sim
        .history()
        .iter()
        .position(|(_, c)| {
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
        })
        .expect("the handover ended");
    sim.history()[end..]
        .iter()
        .filter_map(|(_, command)| match command {
            Command::Salesforce(call) => Some(&call.request),
            Command::Bot(_) | Command::Record(_) => None,
        })
        .collect()
}

// ---- A. Starting -------------------------------------------------------------------------------

#[test]
fn s01_guest_handover() {
    let mut sim = sim_with(|c| c.settings.locale = Some("en_US".to_owned()));
    sim.start();
    sim.agent_joins("Jane");
    sim.agent_says("Hi");
    expect![[r#"
        0:00:00 > start
        0:00:00 < sf#1 mint-token guest
        0:00:00 > sf#1 token t1 guest expires 6:00:00
        0:00:00 < sf#2 open-stream after 0 [t1]
        0:00:00 > stream#2 opened
        0:00:00 < sf#3 create-conversation {language=en_US} [t1]
        0:00:00 > sf#3 ok
        0:00:00 > stream#2 e1 Router routing Initial
        0:00:00 < sf#4 list-entries [t1]
        0:00:00 > sf#4 1 entries
        0:00:00 > stream#2 e2 Agent(Jane) participant add Agent
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > stream#2 e3 System session Active
        0:00:00 > sf#5 3 entries
        0:00:00 < bot#6 inject active agent=Jane
        0:00:00 > bot#6 ok
        0:00:00 > stream#2 e4 Agent(Jane) message "Hi"
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify "Hi" from Agent(Jane)
        0:00:00 > bot#8 ok
        0:00:00 < sf#9 acknowledge delivered e4 [t1]
        0:00:00 > sf#9 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s02_transcript_as_first_messages() {
    // 75 turns of 99 characters each ("Customer: " or "Bot: " plus text): about 7,500
    // characters once rendered.
    let transcript: Vec<_> = (0..75)
        .map(|i| {
            let text = format!("{i:02} {}", "x".repeat(85));
            if i % 2 == 0 {
                TranscriptTurn::user(text)
            } else {
                TranscriptTurn::bot(text)
            }
        })
        .collect();
    let rendered = transcript::render(&transcript);
    assert!((7000..8000).contains(&rendered.chars().count()));
    let mut sim = sim_with(|c| {
        c.settings.send_transcript = true;
        c.transcript = transcript;
        c.latency = Duration::from_millis(50);
    });
    sim.start();
    // The user writes while the handover is still being set up.
    sim.user_says("Are you there?");
    sim.run_until_quiet(secs(5));

    let sent = texts_sent(&sim);
    assert_eq!(sent.len(), 4, "{sent:#?}");
    assert_eq!(
        sent[..3].concat(),
        rendered,
        "the chunks join back to the transcript"
    );
    for chunk in &sent[..3] {
        assert!(chunk.chars().count() <= 3000);
    }
    assert!(
        sent[0].ends_with('\n') && sent[1].ends_with('\n'),
        "split at line boundaries"
    );
    assert_eq!(
        sent[3], "Are you there?",
        "the live message follows the transcript"
    );
}

#[test]
fn s03_transcript_off_sends_nothing_before_the_first_user_message() {
    let mut sim = sim_with(|c| c.transcript = vec![TranscriptTurn::user("hello bot")]);
    sim.start();
    sim.agent_joins("Jane");
    sim.advance(secs(60));
    assert!(sim.salesforce.accepted().is_empty());
    sim.user_says("hello agent");
    assert_eq!(texts_sent(&sim), vec!["hello agent"]);
}

#[test]
fn s04_routing_attributes_pass_through_and_language_wins_over_the_locale() {
    let mut sim = sim_with(|c| {
        c.settings.locale = Some("en_US".to_owned());
        c.settings.routing_attributes = [("language", "es_MX"), ("issueType", "Billing")]
            .into_iter()
            .collect();
    });
    sim.start();
    expect![[r#"
        0:00:00 > start
        0:00:00 < sf#1 mint-token guest
        0:00:00 > sf#1 token t1 guest expires 6:00:00
        0:00:00 < sf#2 open-stream after 0 [t1]
        0:00:00 > stream#2 opened
        0:00:00 < sf#3 create-conversation {issueType=Billing, language=es_MX} [t1]
        0:00:00 > sf#3 ok
        0:00:00 > stream#2 e1 Router routing Initial
        0:00:00 < sf#4 list-entries [t1]
        0:00:00 > sf#4 1 entries
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s05_verified_user_gets_an_authenticated_token() {
    let mut sim = sim_with(|c| c.settings.identity_token = Some(IdentityToken::new("idp-jwt")));
    sim.start();
    sim.agent_joins("Jane");
    expect![[r#"
        0:00:00 > start
        0:00:00 < sf#1 mint-token verified
        0:00:00 > sf#1 token t1 verified expires 6:00:00
        0:00:00 < sf#2 open-stream after 0 [t1]
        0:00:00 > stream#2 opened
        0:00:00 < sf#3 create-conversation {} [t1]
        0:00:00 > sf#3 ok
        0:00:00 > stream#2 e1 Router routing Initial
        0:00:00 < sf#4 list-entries [t1]
        0:00:00 > sf#4 1 entries
        0:00:00 > stream#2 e2 Agent(Jane) participant add Agent
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > stream#2 e3 System session Active
        0:00:00 > sf#5 3 entries
        0:00:00 < bot#6 inject active agent=Jane
        0:00:00 > bot#6 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s05_verified_user_silent_fallback_continues_as_guest_and_is_reported() {
    let mut sim = sim_with(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.settings.forward_events = true;
        c.identity_accepted = false;
    });
    sim.start();
    expect![[r#"
        0:00:00 > start
        0:00:00 < sf#1 mint-token verified
        0:00:00 > sf#1 token t1 guest expires 6:00:00
        0:00:00 < record verified-fallback-to-guest
        0:00:00 < bot#2 inject event verified-user-fell-back-to-guest
        0:00:00 < sf#3 open-stream after 0 [t1]
        0:00:00 > bot#2 ok
        0:00:00 > stream#3 opened
        0:00:00 < sf#4 create-conversation {} [t1]
        0:00:00 > sf#4 ok
        0:00:00 > stream#3 e1 Router routing Initial
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > sf#5 1 entries
        0:00:00 < bot#6 inject event routing Initial
        0:00:00 > bot#6 ok
    "#]]
    .assert_eq(&sim.take_log());
    sim.agent_joins("Jane");
    assert_eq!(
        sim.session.phase(),
        Phase::WithAgent,
        "the handover carries on as a guest"
    );
}

#[test]
fn s06_copilot_url_travels_as_a_routing_attribute() {
    let url = CopilotUrl::build(
        "ai-copilot-trial.cognigy.ai",
        "user 1",
        "session-1",
        "token/1",
    )
    .unwrap();
    let mut sim = sim_with(|c| {
        c.copilot_url = Some(url);
        c.config.copilot_attribute = "Copilot_URL".to_owned();
    });
    sim.start();
    let create = salesforce_requests_after(&sim, sim.now())
        .into_iter()
        .find_map(|request| match request {
            SalesforceRequest::CreateConversation {
                routing_attributes, ..
            } => Some(routing_attributes.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        create.get("Copilot_URL"),
        Some(
            "https://ai-copilot-trial.cognigy.ai/?userId=user%201&sessionId=session-1&URLToken=token%2F1"
        )
    );
    // Longer than a Salesforce parameter holds: refused before anything starts.
    assert!(matches!(
        CopilotUrl::build(
            "ai-copilot-trial.cognigy.ai",
            &"9".repeat(200),
            "session-1",
            "token"
        ),
        Err(CopilotUrlError::TooLong { max: 255, .. })
    ));
}

#[test]
fn s07_duplicate_start_is_idempotent() {
    let mut gate = StartGate::default();
    let request = RequestId::new("req-1").unwrap();
    let first = HandoverId::from_random_bytes([1; 16]);
    let second = HandoverId::from_random_bytes([2; 16]);
    assert_eq!(
        gate.admit(request.clone(), first),
        Admission::Started(first)
    );
    assert_eq!(
        gate.admit(request.clone(), second),
        Admission::Duplicate(first)
    );
    // Still the same handover after it ended.
    gate.ended(first);
    assert_eq!(gate.admit(request, second), Admission::Duplicate(first));

    // A repeated Start for the same session creates no second conversation.
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.start();
    let creates = salesforce_requests_after(&sim, Timestamp::EPOCH)
        .into_iter()
        .filter(|r| matches!(r, SalesforceRequest::CreateConversation { .. }))
        .count();
    assert_eq!(creates, 1);
    assert!(sim.take_log().contains("ignored repeated start"));
}

#[test]
fn s08_second_start_while_active_is_a_conflict() {
    let mut gate = StartGate::default();
    let live = HandoverId::from_random_bytes([1; 16]);
    gate.admit(RequestId::new("req-1").unwrap(), live);
    let other = HandoverId::from_random_bytes([2; 16]);
    assert_eq!(
        gate.check(&RequestId::new("req-2").unwrap()),
        Some(Admission::Conflict(live))
    );
    assert_eq!(
        gate.admit(RequestId::new("req-2").unwrap(), other),
        Admission::Conflict(live)
    );
    assert_eq!(gate.live(), Some(live));
}

// ---- B. Messages -------------------------------------------------------------------------------

#[test]
fn s09_user_messages_while_queued_are_forwarded_in_order() {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.user_says("one");
    sim.user_says("two");
    assert_eq!(sim.session.phase(), Phase::Queued);
    assert_eq!(texts_sent(&sim), vec!["one", "two"]);
}

#[test]
fn s09_user_messages_can_be_held_until_the_agent_joins() {
    let mut sim = sim_with(|c| c.settings.forward_while_queued = false);
    sim.start();
    sim.user_says("one");
    sim.user_says("two");
    assert!(sim.salesforce.accepted().is_empty());
    sim.take_log();
    sim.agent_joins("Jane");
    expect![[r#"
        0:00:00 > stream#2 e2 Agent(Jane) participant add Agent
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > stream#2 e3 System session Active
        0:00:00 > sf#5 3 entries
        0:00:00 < sf#6 send "one" id=ebf42e92 [t1]
        0:00:00 < bot#7 inject active agent=Jane
        0:00:00 > sf#6 ok
        0:00:00 < sf#8 send "two" id=898f550e [t1]
        0:00:00 > stream#2 e4 EndUser(Guest) message "one"
        0:00:00 > stream#2 e5 Agent delivered
        0:00:00 > bot#7 ok
        0:00:00 > sf#8 ok
        0:00:00 > stream#2 e6 EndUser(Guest) message "two"
        0:00:00 > stream#2 e7 Agent delivered
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(texts_sent(&sim), vec!["one", "two"]);
}

#[test]
fn s10_user_writes_while_active_and_the_echo_is_not_relayed() {
    let mut sim = with_agent(|_| {});
    sim.user_says("I have a billing question");
    expect![[r#"
        0:00:00 > user says "I have a billing question" (m1)
        0:00:00 < sf#7 send "I have a billing question" id=ebf42e92 [t1]
        0:00:00 > sf#7 ok
        0:00:00 > stream#2 e4 EndUser(Guest) message "I have a billing question"
        0:00:00 > stream#2 e5 Agent delivered
    "#]]
    .assert_eq(&sim.take_log());
    assert!(
        sim.bot.texts().is_empty(),
        "the user's own echo never comes back"
    );
}

#[test]
fn s11_burst_is_paced_to_22_per_minute_and_nothing_is_lost() {
    let mut sim = with_agent(|_| {});
    let mut sent_ids = Vec::new();
    for i in 0..30 {
        sent_ids.push(sim.user_says(&format!("message {i}")));
        sim.advance(Duration::from_millis(333));
    }
    sim.run_until_quiet(secs(300));
    let expected: Vec<_> = (0..30).map(|i| format!("message {i}")).collect();
    assert_eq!(texts_sent(&sim), expected, "all 30, in order, once each");
    let send_times: Vec<Timestamp> = sim.send_times();
    assert_eq!(send_times.len(), 30);
    for window in send_times.windows(23) {
        assert!(
            window[22].saturating_duration_since(window[0]) >= secs(60),
            "23 sends within a minute: {window:?}"
        );
    }
    let delays = sim
        .history()
        .iter()
        .filter(|(_, c)| *c == Command::Record(Observation::PacingDelay))
        .count();
    assert_eq!(delays, 8, "each message that waited is counted once");
}

#[test]
fn s12_a_failed_send_is_retried_with_the_same_message_id() {
    let mut sim = with_agent(|_| {});
    sim.salesforce.fail_next(
        Target::Send,
        CallFailure::Transient("503 Service Unavailable".to_owned()),
    );
    // The second attempt times out after Salesforce took the message: the third gets 409.
    sim.salesforce
        .fail_next_after_applying(Target::Send, CallFailure::Transient("timeout".to_owned()));
    sim.user_says("Hello?");
    sim.run_until_quiet(secs(60));
    expect![[r#"
        0:00:00 > user says "Hello?" (m1)
        0:00:00 < sf#7 send "Hello?" id=ebf42e92 [t1]
        0:00:00 > sf#7 failed: transient failure: 503 Service Unavailable
        0:00:00.997 timeout SendReady
        0:00:00.997 < sf#8 send "Hello?" id=ebf42e92 [t1]
        0:00:00.997 > sf#8 failed: transient failure: timeout
        0:00:00.997 > stream#2 e4 EndUser(Guest) message "Hello?"
        0:00:00.997 > stream#2 e5 Agent delivered
        0:00:02.289 timeout SendReady
        0:00:02.289 < sf#9 send "Hello?" id=ebf42e92 [t1]
        0:00:02.289 > sf#9 failed: conflict
        0:00:30 timeout SafetyPoll
        0:00:30 < sf#10 list-entries [t1]
        0:00:30 > sf#10 5 entries
        0:01:00 timeout SafetyPoll
        0:01:00 < sf#11 list-entries [t1]
        0:01:00 > sf#11 5 entries
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(texts_sent(&sim), vec!["Hello?"], "the agent sees it once");
}

#[test]
fn s13_no_messaging_session_resends_with_a_new_session() {
    let mut sim = with_agent(|c| {
        c.settings.routing_attributes = [("issueType", "Billing")].into_iter().collect();
    });
    sim.salesforce
        .fail_next(Target::Send, CallFailure::NoMessagingSession);
    sim.user_says("Still there?");
    expect![[r#"
        0:00:00 > user says "Still there?" (m1)
        0:00:00 < sf#7 send "Still there?" id=ebf42e92 [t1]
        0:00:00 > sf#7 failed: no messaging session
        0:00:00 < sf#8 send "Still there?" id=ebf42e92 new-session [t1]
        0:00:00 > sf#8 ok
        0:00:00 > stream#2 e4 EndUser(Guest) message "Still there?"
        0:00:00 > stream#2 e5 Agent delivered
    "#]]
    .assert_eq(&sim.take_log());
    let new_session = sim.history().iter().find_map(|(_, c)| match c {
        Command::Salesforce(SalesforceCall {
            request:
                SalesforceRequest::SendMessage {
                    new_session: Some(a),
                    ..
                },
            ..
        }) => Some(a.clone()),
        _ => None,
    });
    assert_eq!(
        new_session.unwrap().get("issueType"),
        Some("Billing"),
        "with the routing attributes"
    );
    assert_eq!(texts_sent(&sim), vec!["Still there?"]);
}

#[test]
fn s14_attachments_that_salesforce_cannot_take_go_as_links() {
    let mut sim = with_agent(|_| {});
    sim.user_sends_file("small.pdf", 1024);
    sim.user_sends_file("huge.pdf", 6 * 1024 * 1024);
    sim.salesforce
        .fail_next(Target::Send, CallFailure::UnsupportedMediaType);
    sim.user_sends_file("odd.xyz", 10);
    expect![[r#"
        0:00:00 > user says "" (m1) + file small.pdf
        0:00:00 < sf#7 send file small.pdf id=d95ffe1d [t1]
        0:00:00 > sf#7 ok
        0:00:00 > stream#2 e4 EndUser(Guest) message "small.pdf"
        0:00:00 > stream#2 e5 Agent delivered
        0:00:00 > user says "" (m2) + file huge.pdf
        0:00:00 < record file-sent-as-link
        0:00:00 < sf#8 send "huge.pdf: https://files.example/huge.pdf" id=071eaec6 [t1]
        0:00:00 > sf#8 ok
        0:00:00 > stream#2 e6 EndUser(Guest) message "huge.pdf: https://files.example/huge.pdf"
        0:00:00 > stream#2 e7 Agent delivered
        0:00:00 > user says "" (m3) + file odd.xyz
        0:00:00 < sf#9 send file odd.xyz id=820f3fa3 [t1]
        0:00:00 > sf#9 failed: unsupported media type
        0:00:00 < record file-sent-as-link
        0:00:00 < sf#10 send "odd.xyz: https://files.example/odd.xyz" id=8a7cc9e0 [t1]
        0:00:00 > sf#10 ok
        0:00:00 > stream#2 e8 EndUser(Guest) message "odd.xyz: https://files.example/odd.xyz"
        0:00:00 > stream#2 e9 Agent delivered
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(
        texts_sent(&sim),
        vec![
            "file:small.pdf",
            "huge.pdf: https://files.example/huge.pdf",
            "odd.xyz: https://files.example/odd.xyz",
        ]
    );
}

#[test]
fn s15_agent_text_reaches_the_user_with_name_and_stable_id_and_empty_events_do_not() {
    let mut sim = with_agent(|_| {});
    sim.agent_says("How can I help?");
    sim.agent_says("   ");
    sim.agent_sends(MessageContent::Attachments {
        text: None,
        files: vec![],
    });
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) message "How can I help?"
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify "How can I help?" from Agent(Jane)
        0:00:00 > bot#8 ok
        0:00:00 < sf#9 acknowledge delivered e4 [t1]
        0:00:00 > sf#9 ok
        0:00:00 > stream#2 e5 Agent(Jane) message "   "
        0:00:00 < sf#10 list-entries [t1]
        0:00:00 > sf#10 5 entries
        0:00:00 < record empty-agent-message
        0:00:00 > stream#2 e6 Agent(Jane) message files [] text none
        0:00:00 < sf#11 list-entries [t1]
        0:00:00 > sf#11 6 entries
        0:00:00 < record empty-agent-message
    "#]]
    .assert_eq(&sim.take_log());
    let BotDelivery::Notify(Notification::Agent(message)) = &sim.bot.delivered[1] else {
        panic!("expected the agent message, got {:?}", sim.bot.delivered);
    };
    assert_eq!(message.sender_name.as_deref(), Some("Jane"));
    assert_eq!(
        message.entry.as_str(),
        "e4",
        "the entry id is the stable message id"
    );
}

#[test]
fn s16_agent_attachment_reaches_the_user_as_a_file() {
    let mut sim = with_agent(|_| {});
    sim.agent_sends(MessageContent::Attachments {
        text: Some("Here is the form".to_owned()),
        files: vec![Attachment {
            name: "form.pdf".to_owned(),
            url: "https://files.example/form.pdf".to_owned(),
            mime_type: Some("application/pdf".to_owned()),
        }],
    });
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) message files ["form.pdf"] text "Here is the form"
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify files ["form.pdf"] text "Here is the form" from Agent(Jane)
        0:00:00 > bot#8 ok
        0:00:00 < sf#9 acknowledge delivered e4 [t1]
        0:00:00 > sf#9 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s17_agent_choices_reach_the_user_and_the_pick_returns_as_text() {
    let mut sim = with_agent(|_| {});
    sim.agent_sends(MessageContent::Choices {
        text: "Which product?".to_owned(),
        style: ChoiceStyle::QuickReplies,
        options: vec![
            ChoiceOption {
                id: Some("a".to_owned()),
                title: "Phone".to_owned(),
            },
            ChoiceOption {
                id: Some("b".to_owned()),
                title: "Tablet".to_owned(),
            },
        ],
    });
    sim.user_says("Tablet");
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) message QuickReplies "Which product?" ["Phone", "Tablet"]
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify QuickReplies "Which product?" ["Phone", "Tablet"] from Agent(Jane)
        0:00:00 > bot#8 ok
        0:00:00 < sf#9 acknowledge delivered e4 [t1]
        0:00:00 > sf#9 ok
        0:00:00 > user says "Tablet" (m1)
        0:00:00 < sf#10 send "Tablet" id=ebf42e92 [t1]
        0:00:00 > sf#10 ok
        0:00:00 > stream#2 e5 EndUser(Guest) message "Tablet"
        0:00:00 > stream#2 e6 Agent delivered
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s18_automated_messages_reach_the_user_like_agent_messages() {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.take_log();
    sim.system_says("Welcome! An agent will be with you shortly.");
    expect![[r#"
        0:00:00 > stream#2 e2 System(Automated Process) message "Welcome! An agent will be with you sh"…(43 chars)
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > sf#5 2 entries
        0:00:00 < bot#6 notify "Welcome! An agent will be with you sh"…(43 chars) from System(Automated Process)
        0:00:00 > bot#6 ok
        0:00:00 < sf#7 acknowledge delivered e2 [t1]
        0:00:00 > sf#7 ok
    "#]].assert_eq(&sim.take_log());
}

#[test]
fn s19_agent_typing_is_shown_and_never_injected() {
    let mut sim = with_agent(|_| {});
    sim.agent_typing(true);
    sim.agent_typing(false);
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) typing started
        0:00:00 < bot#7 typing on
        0:00:00 > bot#7 ok
        0:00:00 > stream#2 e5 Agent(Jane) typing stopped
        0:00:00 < bot#8 typing off
        0:00:00 > bot#8 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.typing, vec![true, false]);
}

#[test]
fn s20_user_typing_becomes_started_and_stopped_indicators() {
    let mut sim = with_agent(|_| {});
    sim.user_typing(true);
    sim.advance(secs(2));
    sim.user_typing(true);
    sim.advance(secs(10));
    expect![[r#"
        0:00:00 > user typing on
        0:00:00 < sf#7 typing started [t1]
        0:00:00 > sf#7 ok
        0:00:02 > user typing on
        0:00:07 timeout TypingIdle
        0:00:07 < sf#8 typing stopped [t1]
        0:00:07 > sf#8 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.salesforce.typing, vec![true, false]);
}

#[test]
fn s21_receipts_acknowledge_delivered_agent_messages() {
    let mut sim = with_agent(|_| {});
    sim.agent_says("Hello");
    assert_eq!(
        sim.salesforce.acknowledged,
        vec![EntryId::new("e4").unwrap()]
    );
    // Salesforce's receipts of the user's messages are not injected by default…
    sim.user_says("Hi");
    assert!(
        !sim.bot
            .statuses()
            .iter()
            .any(|s| matches!(s, HandoverStatus::Event(_)))
    );
}

#[test]
fn s21_receipts_of_user_messages_are_forwarded_with_forward_events_on() {
    let mut sim = with_agent(|c| c.settings.forward_events = true);
    sim.user_says("Hi");
    expect![[r#"
        0:00:00 > user says "Hi" (m1)
        0:00:00 < sf#10 send "Hi" id=ebf42e92 [t1]
        0:00:00 > sf#10 ok
        0:00:00 > stream#2 e4 EndUser(Guest) message "Hi"
        0:00:00 > stream#2 e5 Agent delivered
        0:00:00 < bot#11 inject event delivered
        0:00:00 > bot#11 ok
    "#]]
    .assert_eq(&sim.take_log());
}

/// An entry of the customer's on the stream, as Salesforce would record it.
fn customer_entry(
    sim: &Sim,
    identifier: &str,
    message_id: Option<&str>,
    payload: EntryPayload,
) -> Input {
    Input::Stream {
        stream: CallId::from_raw(2),
        event: StreamEvent::Entry {
            event_id: None,
            entry: ConversationEntry {
                conversation_id: sim.session.conversation_id(),
                identifier: EntryId::new(identifier).unwrap(),
                sender: Sender {
                    role: if matches!(payload, EntryPayload::Message(_)) {
                        Role::EndUser
                    } else {
                        Role::Agent
                    },
                    display_name: None,
                    subject: None,
                },
                server_time: None,
                message_id: message_id.map(|id| EntryId::new(id).unwrap()),
                payload,
            },
        },
    }
}

fn receipts(sim: &Sim) -> Vec<(String, Option<String>)> {
    sim.bot
        .statuses()
        .into_iter()
        .filter_map(|status| match status {
            HandoverStatus::Event(
                ProviderEvent::Delivered { entry, message }
                | ProviderEvent::Read { entry, message },
            ) => Some((
                entry
                    .as_ref()
                    .map_or_else(String::new, |e| e.as_str().to_owned()),
                message.as_ref().map(|m| m.as_str().to_owned()),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn s21_receipts_name_the_flows_message_whether_or_not_salesforce_keeps_the_bridges_id() {
    let mut sim = with_agent(|c| c.settings.forward_events = true);
    let first = sim.user_says("Hi");
    let sent = sim.salesforce.accepted().last().unwrap().id.to_string();
    sim.take_log();
    // Salesforce gives the entry an identifier of its own; `abstractMessage.id` is the
    // bridge's, and the receipt names the new identifier.
    let echo = customer_entry(
        &sim,
        "0Mw-entry-1",
        Some(&sent),
        EntryPayload::Message(MessageContent::Text("Hi".to_owned())),
    );
    sim.input(echo);
    let receipt = customer_entry(
        &sim,
        "ack-1",
        None,
        EntryPayload::DeliveryAcknowledged {
            acknowledged: Some(EntryId::new("0Mw-entry-1").unwrap()),
        },
    );
    sim.input(receipt);
    assert!(sim.take_log().contains("record own-echo by MessageId"));

    // Salesforce keeps the bridge's id as the entry's identifier.
    let second = sim.user_says("Again");
    let sent_again = sim.salesforce.accepted().last().unwrap().id.to_string();
    let echo = customer_entry(
        &sim,
        &sent_again,
        None,
        EntryPayload::Message(MessageContent::Text("Again".to_owned())),
    );
    sim.input(echo);
    let receipt = customer_entry(
        &sim,
        "ack-2",
        None,
        EntryPayload::ReadAcknowledged {
            acknowledged: Some(EntryId::new(&sent_again).unwrap()),
        },
    );
    sim.input(receipt);
    assert!(sim.take_log().contains("record own-echo by Identifier"));
    sim.run_until_quiet(secs(5));

    let named: Vec<(String, Option<String>)> = receipts(&sim)
        .into_iter()
        .filter(|(_, message)| message.is_some())
        .collect();
    assert_eq!(
        named,
        vec![
            ("0Mw-entry-1".to_owned(), Some(first.as_str().to_owned())),
            (sent_again, Some(second.as_str().to_owned())),
        ]
    );
    // The sim's own echoes carry neither id: their receipts name no message of the Flow's.
    assert!(receipts(&sim).iter().any(|(_, message)| message.is_none()));
    assert!(sim.bot.texts().is_empty(), "no echo went back to the user");
}

// ---- C. Presence -------------------------------------------------------------------------------

#[test]
fn s22_user_leaves_and_returns_and_repeats_give_one_notice() {
    let mut sim = with_agent(|_| {});
    sim.user_leaves();
    sim.user_leaves();
    sim.user_returns();
    sim.user_returns();
    expect![[r#"
        0:00:00 > user leaves
        0:00:00 < sf#7 send "User left the conversation" id=af6a4753 [t1]
        0:00:00 > sf#7 ok
        0:00:00 > stream#2 e4 EndUser(Guest) message "User left the conversation"
        0:00:00 > stream#2 e5 Agent delivered
        0:00:00 > user leaves
        0:00:00 > user returns
        0:00:00 < sf#8 send "User joined the conversation" id=b5a04274 [t1]
        0:00:00 > sf#8 ok
        0:00:00 > stream#2 e6 EndUser(Guest) message "User joined the conversation"
        0:00:00 > stream#2 e7 Agent delivered
        0:00:00 > user returns
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(
        texts_sent(&sim),
        vec![USER_DISCONNECTED_TEXT, USER_CONNECTED_TEXT]
    );
}

#[test]
fn s23_notices_that_are_off_are_not_sent() {
    let mut sim = with_agent(|c| c.settings.user_disconnected_message = false);
    sim.user_leaves();
    sim.user_returns();
    assert_eq!(texts_sent(&sim), vec![USER_CONNECTED_TEXT]);

    let mut sim = with_agent(|c| c.settings.user_connected_message = false);
    sim.user_leaves();
    sim.user_returns();
    assert_eq!(texts_sent(&sim), vec![USER_DISCONNECTED_TEXT]);
}

// ---- D. The agent's side -----------------------------------------------------------------------

#[test]
fn s24_transfer_is_not_an_end() {
    // Even with End Chat When Agent Leaves on, a transfer never ends the handover.
    let mut sim = with_agent(|c| {
        c.settings.end_when_agent_leaves = true;
        c.settings.agent_change_notification = true;
    });
    sim.transfer();
    sim.agent_joins("Raj");
    sim.agent_says("Hi, Raj here.");
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) participant remove Agent
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > stream#2 e5 Router routing Transfer
        0:00:00 > sf#7 5 entries
        0:00:00 < sf#8 routing-status [t1]
        0:00:00 > sf#8 routing status Transfer
        0:00:00 > stream#2 e6 Agent(Raj) participant add Agent
        0:00:00 < sf#9 list-entries [t1]
        0:00:00 > sf#9 6 entries
        0:00:00 < bot#10 notify notice "You are now chatting with Raj."
        0:00:00 > bot#10 ok
        0:00:00 > stream#2 e7 Agent(Raj) message "Hi, Raj here."
        0:00:00 < sf#11 list-entries [t1]
        0:00:00 > sf#11 7 entries
        0:00:00 < bot#12 notify "Hi, Raj here." from Agent(Raj)
        0:00:00 > bot#12 ok
        0:00:00 < sf#13 acknowledge delivered e7 [t1]
        0:00:00 > sf#13 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.session.phase(), Phase::WithAgent);
    assert!(terminal_statuses(&sim).is_empty());
}

#[test]
fn s24_removal_with_routing_status_transfer_is_not_an_end() {
    // The routing result is late: only the routing status says "transfer".
    let mut sim = with_agent(|c| c.settings.end_when_agent_leaves = true);
    sim.salesforce.fail_next(
        Target::RoutingStatus,
        CallFailure::Transient("timeout".to_owned()),
    );
    sim.agent_leaves();
    assert_eq!(
        sim.session.phase(),
        Phase::AgentLeft,
        "an unknown status never ends it"
    );
    assert!(terminal_statuses(&sim).is_empty());
}

#[test]
fn s25_agent_leaves_and_the_handover_stays_open_by_default() {
    let mut sim = with_agent(|_| {});
    sim.agent_leaves();
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) participant remove Agent
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < sf#8 routing-status [t1]
        0:00:00 > sf#8 routing status NeedsRouting
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.session.phase(), Phase::AgentLeft);
    // Still listening: a message from Salesforce still reaches the user.
    sim.system_says("An agent will be with you shortly.");
    assert_eq!(sim.bot.texts(), vec!["An agent will be with you shortly."]);
}

#[test]
fn s25_agent_leaves_ends_the_handover_when_asked_to() {
    let mut sim = with_agent(|c| c.settings.end_when_agent_leaves = true);
    sim.agent_leaves();
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) participant remove Agent
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < sf#8 routing-status [t1]
        0:00:00 > sf#8 routing status NeedsRouting
        0:00:00 < bot#9 inject completed/agent_left
        0:00:00 < sf#10 close-stream
        0:00:00 < sf#11 close-conversation [t1]
        0:00:00 > bot#9 ok
        0:00:00 > sf#10 ok
        0:00:00 > sf#11 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["completed/agent_left"]);
}

#[test]
fn s25_the_legacy_switch_keeps_the_handover_open() {
    let mut sim = with_agent(|c| {
        c.settings.end_when_agent_leaves = true;
        c.config.disable_end_on_agent_leave = true;
    });
    sim.agent_leaves();
    assert_eq!(sim.session.phase(), Phase::AgentLeft);
    assert!(terminal_statuses(&sim).is_empty());
}

#[test]
fn s26_agent_ends_the_session() {
    let mut sim = with_agent(|_| {});
    sim.agent_says("Goodbye!");
    sim.take_log();
    sim.agent_ends();
    sim.run_until_quiet(secs(600));
    expect![[r#"
        0:00:00 > stream#2 e5 Agent(Jane) participant remove Agent
        0:00:00 < sf#10 list-entries [t1]
        0:00:00 > stream#2 e6 System session Ended
        0:00:00 > sf#10 6 entries
        0:00:00 < sf#11 routing-status [t1]
        0:00:00 < sf#12 list-entries [t1]
        0:00:00 > sf#11 routing status NeedsRouting
        0:00:00 > sf#12 6 entries
        0:00:00 < bot#13 inject completed/agent_ended
        0:00:00 < sf#14 close-stream
        0:00:00 > bot#13 ok
        0:00:00 > sf#14 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["completed/agent_ended"]);
    assert!(sim.session.is_finished());
    // Nothing more is sent to Salesforce: closing our own stream connection is all.
    let after = salesforce_requests_after_the_end(&sim);
    assert!(
        after
            .iter()
            .all(|r| matches!(r, SalesforceRequest::CloseStream)),
        "{after:?}"
    );
    // Later events and user input are ignored.
    sim.user_says("hello?");
    assert!(sim.salesforce.accepted().is_empty());
}

#[test]
fn s27_inactive_is_not_an_end_and_a_user_message_reroutes() {
    let mut sim = with_agent(|_| {});
    sim.mark_inactive();
    assert_eq!(sim.session.phase(), Phase::Inactive);
    sim.user_says("I'm back");
    sim.agent_joins("Raj");
    expect![[r#"
        0:00:00 > stream#2 e4 System session Inactive
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > stream#2 e5 Agent(Jane) participant remove Agent
        0:00:00 > sf#7 5 entries
        0:00:00 > user says "I'm back" (m1)
        0:00:00 < sf#8 send "I'm back" id=ebf42e92 [t1]
        0:00:00 > sf#8 ok
        0:00:00 > stream#2 e6 EndUser(Guest) message "I'm back"
        0:00:00 > stream#2 e7 Agent delivered
        0:00:00 > stream#2 e8 System session Waiting
        0:00:00 < sf#9 list-entries [t1]
        0:00:00 > sf#9 8 entries
        0:00:00 > stream#2 e9 Agent(Raj) participant add Agent
        0:00:00 < sf#10 list-entries [t1]
        0:00:00 > stream#2 e10 System session Active
        0:00:00 > sf#10 10 entries
        0:00:00 < bot#11 inject active agent=Raj
        0:00:00 > bot#11 ok
    "#]]
    .assert_eq(&sim.take_log());
    let actives = sim
        .bot
        .statuses()
        .iter()
        .filter(|s| matches!(s, HandoverStatus::Active { .. }))
        .count();
    assert_eq!(actives, 2, "the Flow gets `active` again");
    assert!(terminal_statuses(&sim).is_empty());
}

#[test]
fn s28_routing_failure_is_an_error_and_closes_the_conversation() {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.take_log();
    sim.routing_fails();
    expect![[r#"
        0:00:00 > stream#2 e2 Router routing Initial failed RoutingError
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > sf#5 2 entries
        0:00:00 < bot#6 inject error/routing_failed
        0:00:00 < sf#7 close-stream
        0:00:00 < sf#8 close-conversation [t1]
        0:00:00 > bot#6 ok
        0:00:00 > sf#7 ok
        0:00:00 > sf#8 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["error/routing_failed"]);
    assert!(sim.salesforce.closed());
}

#[test]
fn s29_queue_updates_reach_the_flow() {
    let mut sim = sim_with(|c| {
        c.settings.queue.position = true;
        c.settings.queue.estimated_wait_time = true;
        c.settings.queue.alternative = Some(QueueAlternative {
            max_position: Some(5),
            max_wait: None,
            text: "It may take a while.".to_owned(),
        });
    });
    sim.start();
    sim.take_log();
    sim.queue_position(3);
    sim.wait_estimate(secs(120));
    sim.queue_position(3);
    sim.queue_position(7);
    expect![[r#"
        0:00:00 > stream#2 e2 Router queue position 3
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > sf#5 2 entries
        0:00:00 < bot#6 inject queue position=3
        0:00:00 > bot#6 ok
        0:00:00 > stream#2 e3 Router routing Initial wait 2m
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 3 entries
        0:00:00 < bot#8 inject queue position=3 wait=2m
        0:00:00 > bot#8 ok
        0:00:00 > stream#2 e4 Router queue position 3
        0:00:00 < sf#9 list-entries [t1]
        0:00:00 > sf#9 4 entries
        0:00:00 > stream#2 e5 Router queue position 7
        0:00:00 < sf#10 list-entries [t1]
        0:00:00 > sf#10 5 entries
        0:00:00 < bot#11 inject queue text="It may take a while."
        0:00:00 > bot#11 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s29_queue_updates_are_off_by_default() {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.queue_position(3);
    assert!(sim.bot.statuses().is_empty());
}

#[test]
fn s30_closed_from_the_customer_side() {
    let mut sim = with_agent(|_| {});
    sim.customer_side_close();
    sim.run_until_quiet(secs(60));
    expect![[r#"
        0:00:00 > stream#2 e4 EndUser close-conversation
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < sf#8 list-entries [t1]
        0:00:00 > sf#8 4 entries
        0:00:00 < bot#9 inject completed/user_closed
        0:00:00 < sf#10 close-stream
        0:00:00 > bot#9 ok
        0:00:00 > sf#10 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["completed/user_closed"]);
}

// ---- E. The Flow's side ------------------------------------------------------------------------

#[test]
fn s31_cancel_while_queued() {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.take_log();
    sim.user_cancels();
    expect![[r#"
        0:00:00 > user cancels
        0:00:00 < bot#5 inject cancelled/cancelled_by_user
        0:00:00 < sf#6 close-stream
        0:00:00 < sf#7 close-conversation [t1]
        0:00:00 > bot#5 ok
        0:00:00 > sf#6 ok
        0:00:00 > sf#7 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["cancelled/cancelled_by_user"]);
    assert!(sim.salesforce.closed());
}

#[test]
fn s31_cancel_while_the_conversation_is_being_created_still_closes_it() {
    let mut sim = sim_with(|c| c.latency = Duration::from_millis(100));
    sim.start();
    sim.advance(Duration::from_millis(250));
    assert_eq!(sim.session.phase(), Phase::CreatingConversation);
    sim.user_cancels();
    sim.run_until_quiet(secs(10));
    assert!(sim.salesforce.closed(), "closed as soon as it existed");
    assert_eq!(terminal_statuses(&sim), vec!["cancelled/cancelled_by_user"]);
    assert!(sim.session.is_finished());
}

#[test]
fn s32_flow_closes_the_handover() {
    let mut sim = with_agent(|_| {});
    sim.flow_closes();
    sim.flow_closes();
    // A late event on the old stream is ignored.
    sim.input(Input::Stream {
        stream: CallId::from_raw(2),
        event: StreamEvent::Entry {
            event_id: None,
            entry: ConversationEntry {
                conversation_id: sim.session.conversation_id(),
                identifier: EntryId::new("late-1").unwrap(),
                sender: Sender {
                    role: Role::Agent,
                    display_name: Some("Jane".to_owned()),
                    subject: None,
                },
                server_time: Some(sim.now()),
                message_id: None,
                payload: EntryPayload::Message(MessageContent::Text(
                    "Are you still there?".to_owned(),
                )),
            },
        },
    });
    expect![[r#"
        0:00:00 > flow closes
        0:00:00 < bot#7 inject completed/closed_by_flow
        0:00:00 < sf#8 close-stream
        0:00:00 < sf#9 close-conversation [t1]
        0:00:00 > bot#7 ok
        0:00:00 > sf#8 ok
        0:00:00 > sf#9 ok
        0:00:00 > flow closes
        0:00:00 < record ignored-after-end
        0:00:00 > stream#2 late-1 Agent(Jane) message "Are you still there?"
        0:00:00 < record ignored-after-end
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["completed/closed_by_flow"]);
    assert!(sim.bot.texts().is_empty());
}

#[test]
fn s33_a_new_handover_in_the_same_bot_session_gets_a_new_conversation() {
    let mut gate = StartGate::default();
    let first = sim_with(|c| c.seed = 1);
    let Admission::Started(first_id) =
        gate.admit(RequestId::new("r1").unwrap(), first.session.handover_id())
    else {
        panic!("the first start is admitted");
    };
    let mut first = first;
    first.start();
    first.agent_joins("Jane");
    first.agent_ends();
    first.run_until_quiet(secs(60));
    assert_eq!(terminal_statuses(&first), vec!["completed/agent_ended"]);
    gate.ended(first_id);

    let mut second = sim_with(|c| c.seed = 2);
    assert_eq!(
        gate.admit(RequestId::new("r2").unwrap(), second.session.handover_id()),
        Admission::Started(second.session.handover_id())
    );
    assert_ne!(
        first.session.conversation_id(),
        second.session.conversation_id()
    );
    second.start();
    second.agent_joins("Raj");
    second.agent_says("Welcome back");
    assert_eq!(second.bot.texts(), vec!["Welcome back"]);
}

// ---- F. Time and tokens ------------------------------------------------------------------------

/// Every Salesforce call that carried a token was issued safely before that token expired.
fn assert_no_call_used_an_expired_token(sim: &Sim) {
    for (at, command) in sim.history() {
        if let Command::Salesforce(SalesforceCall {
            credential: Some(credential),
            request,
            ..
        }) = command
        {
            assert!(
                *at < credential.expires_at,
                "{request:?} at {at:?} with a token expiring {:?}",
                credential.expires_at
            );
        }
    }
}

#[test]
fn s34_a_guest_handover_ends_while_its_token_can_still_close_it() {
    let mut sim = with_agent(|c| c.token_lifetime = secs(3600));
    sim.advance(secs(3400));
    assert_eq!(
        sim.session.phase(),
        Phase::WithAgent,
        "nothing happens before the end is near"
    );
    sim.take_log();
    sim.advance(secs(200));
    expect![[r#"
        0:57:00 timeout SafetyPoll
        0:57:00 < sf#120 list-entries [t1]
        0:57:00 > sf#120 3 entries
        0:57:30 timeout SafetyPoll
        0:57:30 < sf#121 list-entries [t1]
        0:57:30 > sf#121 3 entries
        0:58:00 timeout TokenRenewal
        0:58:00 < bot#122 inject completed/token_expired
        0:58:00 < sf#123 close-stream
        0:58:00 < sf#124 close-conversation [t1]
        0:58:00 > bot#122 ok
        0:58:00 > sf#123 ok
        0:58:00 > sf#124 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["completed/token_expired"]);
    assert!(sim.salesforce.closed(), "closed on both sides");
    assert_no_call_used_an_expired_token(&sim);
}

#[test]
fn s34_a_verified_token_is_renewed_and_the_handover_carries_on() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
    });
    sim.advance(secs(3400));
    sim.take_log();
    sim.advance(secs(400));
    sim.agent_says("still here");
    expect![[r#"
        0:57:00 timeout SafetyPoll
        0:57:00 < sf#120 list-entries [t1]
        0:57:00 > sf#120 3 entries
        0:57:30 timeout SafetyPoll
        0:57:30 < sf#121 list-entries [t1]
        0:57:30 > sf#121 3 entries
        0:58:00 timeout TokenRenewal
        0:58:00 < sf#122 renew-token verified
        0:58:00 < sf#123 list-entries [t1]
        0:58:00 > sf#122 token t2 verified expires 1:58:00
        0:58:00 < record token-renewed
        0:58:00 < record stream-reconnect NewToken
        0:58:00 < sf#124 open-stream after 3 [t2]
        0:58:00 > sf#123 3 entries
        0:58:00 > stream#124 opened
        0:58:00 < sf#125 list-entries [t2]
        0:58:00 > sf#125 3 entries
        0:58:30 timeout SafetyPoll
        0:58:30 < sf#126 list-entries [t2]
        0:58:30 > sf#126 3 entries
        0:59:00 timeout SafetyPoll
        0:59:00 < sf#127 list-entries [t2]
        0:59:00 > sf#127 3 entries
        0:59:30 timeout SafetyPoll
        0:59:30 < sf#128 list-entries [t2]
        0:59:30 > sf#128 3 entries
        1:00:00 timeout SafetyPoll
        1:00:00 < sf#129 list-entries [t2]
        1:00:00 > sf#129 3 entries
        1:00:30 timeout SafetyPoll
        1:00:30 < sf#130 list-entries [t2]
        1:00:30 > sf#130 3 entries
        1:01:00 timeout SafetyPoll
        1:01:00 < sf#131 list-entries [t2]
        1:01:00 > sf#131 3 entries
        1:01:30 timeout SafetyPoll
        1:01:30 < sf#132 list-entries [t2]
        1:01:30 > sf#132 3 entries
        1:02:00 timeout SafetyPoll
        1:02:00 < sf#133 list-entries [t2]
        1:02:00 > sf#133 3 entries
        1:02:30 timeout SafetyPoll
        1:02:30 < sf#134 list-entries [t2]
        1:02:30 > sf#134 3 entries
        1:03:00 timeout SafetyPoll
        1:03:00 < sf#135 list-entries [t2]
        1:03:00 > sf#135 3 entries
        1:03:20 > stream#124 e4 Agent(Jane) message "still here"
        1:03:20 < sf#136 list-entries [t2]
        1:03:20 > sf#136 4 entries
        1:03:20 < bot#137 notify "still here" from Agent(Jane)
        1:03:20 > bot#137 ok
        1:03:20 < sf#138 acknowledge delivered e4 [t2]
        1:03:20 > sf#138 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.texts(), vec!["still here"]);
    assert!(terminal_statuses(&sim).is_empty());
    assert_no_call_used_an_expired_token(&sim);
}

#[test]
fn s34_when_renewal_fails_the_handover_ends_after_the_grace_period() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
        c.config.token_grace = secs(30 * 60);
    });
    // The identity provider stops vouching for the user: renewals come back anonymous.
    sim.salesforce.identity_accepted = false;
    sim.advance(secs(3590));
    let message = sim.user_says("anyone?");
    sim.advance(secs(29 * 60));
    assert!(
        terminal_statuses(&sim).is_empty(),
        "the grace period has not run out"
    );
    sim.take_log();
    sim.advance(secs(2 * 60));
    expect![[r#"
        1:29:00 timeout SafetyPoll
        1:29:30 timeout SafetyPoll
        1:30:00 timeout TokenGrace
        1:30:00 < bot#140 inject completed/token_expired undelivered=m1
        1:30:00 < record close-skipped
        1:30:00 > bot#140 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(terminal_statuses(&sim), vec!["completed/token_expired"]);
    let outcome = sim.session.outcome().unwrap();
    assert_eq!(
        outcome.undelivered,
        vec![message],
        "the stranded message is reported"
    );
    assert_no_call_used_an_expired_token(&sim);
    let renewals = sim
        .salesforce
        .requests
        .iter()
        .filter(|r| {
            matches!(
                r,
                SalesforceRequest::MintToken(_) | SalesforceRequest::RenewToken(_)
            )
        })
        .count();
    // The identity is refused (guest tokens come back), so asking again soon would only spend
    // the org's token budget: plain backoff, 5 s doubling to 5 min.
    assert!(
        (5..=20).contains(&renewals),
        "renewal retries back off: {renewals} mints"
    );
}

#[test]
fn s35_a_withheld_message_arrives_by_the_safety_poll() {
    let mut sim = with_agent(|_| {});
    sim.agent_says_withheld("Did you get this?");
    assert!(sim.bot.texts().is_empty());
    sim.advance(secs(120));
    expect![[r#"
        0:00:30 timeout SafetyPoll
        0:00:30 < sf#7 list-entries [t1]
        0:00:30 > sf#7 4 entries
        0:00:30 < bot#8 notify "Did you get this?" from Agent(Jane)
        0:00:30 < record backfilled 1
        0:00:30 > bot#8 ok
        0:00:30 < sf#9 acknowledge delivered e4 [t1]
        0:00:30 > sf#9 ok
        0:01:00 timeout SafetyPoll
        0:01:00 < sf#10 list-entries [t1]
        0:01:00 > sf#10 4 entries
        0:01:30 timeout SafetyPoll
        0:01:30 < sf#11 list-entries [t1]
        0:01:30 > sf#11 4 entries
        0:02:00 timeout SafetyPoll
        0:02:00 < sf#12 list-entries [t1]
        0:02:00 > sf#12 4 entries
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.texts(), vec!["Did you get this?"]);
}

#[test]
fn s35_a_withheld_message_arrives_at_once_after_a_reconnect() {
    let mut sim = with_agent(|_| {});
    sim.agent_says_withheld("Did you get this?");
    sim.drop_stream();
    sim.advance(secs(5));
    assert_eq!(sim.bot.texts(), vec!["Did you get this?"]);
    assert!(sim.elapsed() < secs(120));
}

#[test]
fn s36_a_silent_stream_is_replaced_and_nothing_is_lost() {
    let mut sim = with_agent(|_| {});
    sim.advance(secs(60));
    sim.silence_stream();
    sim.agent_says("one");
    sim.agent_says("two");
    sim.take_log();
    sim.advance(secs(120));
    expect![[r#"
        0:01:30 timeout SafetyPoll
        0:01:30 < sf#9 list-entries [t1]
        0:01:30 > sf#9 5 entries
        0:01:30 < bot#10 notify "one" from Agent(Jane)
        0:01:30 < record backfilled 2
        0:01:30 > bot#10 ok
        0:01:30 < sf#11 acknowledge delivered e4 [t1]
        0:01:30 < bot#12 notify "two" from Agent(Jane)
        0:01:30 > sf#11 ok
        0:01:30 > bot#12 ok
        0:01:30 < sf#13 acknowledge delivered e5 [t1]
        0:01:30 > sf#13 ok
        0:02:00 timeout SafetyPoll
        0:02:00 < sf#14 list-entries [t1]
        0:02:00 > sf#14 5 entries
        0:02:30 timeout StreamWatchdog
        0:02:30 < record stream-reconnect Silent
        0:02:30 < sf#15 open-stream after 3 [t1]
        0:02:30 < sf#16 list-entries [t1]
        0:02:30 > stream#15 opened
        0:02:30 > stream#15 e4 Agent(Jane) message "one"
        0:02:30 < record duplicate-entry
        0:02:30 > stream#15 e5 Agent(Jane) message "two"
        0:02:30 < record duplicate-entry
        0:02:30 > sf#16 5 entries
        0:03:00 timeout SafetyPoll
        0:03:00 < sf#17 list-entries [t1]
        0:03:00 > sf#17 5 entries
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.texts(), vec!["one", "two"]);
}

#[test]
fn s37_a_dropped_stream_reconnects_replays_and_delivers_each_message_once() {
    let mut sim = with_agent(|_| {});
    sim.agent_says("before");
    sim.drop_stream();
    sim.agent_says("while down 1");
    sim.agent_says("while down 2");
    sim.take_log();
    sim.advance(secs(5));
    expect![[r#"
        0:00:00.997 timeout StreamReconnect
        0:00:00.997 < record stream-reconnect Dropped
        0:00:00.997 < sf#10 open-stream after 4 [t1]
        0:00:00.997 > stream#10 opened
        0:00:00.997 < sf#11 list-entries [t1]
        0:00:00.997 > stream#10 e5 Agent(Jane) message "while down 1"
        0:00:00.997 > stream#10 e6 Agent(Jane) message "while down 2"
        0:00:00.997 > sf#11 6 entries
        0:00:00.997 < bot#12 notify "while down 1" from Agent(Jane)
        0:00:00.997 > bot#12 ok
        0:00:00.997 < sf#13 acknowledge delivered e5 [t1]
        0:00:00.997 < bot#14 notify "while down 2" from Agent(Jane)
        0:00:00.997 > sf#13 ok
        0:00:00.997 > bot#14 ok
        0:00:00.997 < sf#15 acknowledge delivered e6 [t1]
        0:00:00.997 > sf#15 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(
        sim.bot.texts(),
        vec!["before", "while down 1", "while down 2"]
    );
}

#[test]
fn s37_reconnect_backoff_grows_and_is_capped_at_30_seconds() {
    let mut sim = with_agent(|_| {});
    for _ in 0..12 {
        sim.salesforce.fail_next(
            Target::OpenStream,
            CallFailure::Transient("connection refused".to_owned()),
        );
    }
    sim.drop_stream();
    sim.run_until_quiet(secs(600));
    let opens: Vec<Timestamp> = sim
        .history()
        .iter()
        .filter(|(_, c)| {
            matches!(
                c,
                Command::Salesforce(SalesforceCall {
                    request: SalesforceRequest::OpenStream { .. },
                    ..
                })
            )
        })
        .map(|(at, _)| *at)
        .collect();
    // The first open, twelve failed reconnects, one that holds.
    assert_eq!(opens.len(), 14, "{opens:?}");
    let gaps: Vec<Duration> = opens[1..]
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .collect();
    assert!(gaps.iter().all(|gap| *gap <= secs(30)), "{gaps:?}");
    assert!(
        gaps[0] < secs(3) && gaps.iter().rev().take(3).all(|gap| *gap >= secs(15)),
        "{gaps:?}"
    );
    assert_eq!(sim.session.phase(), Phase::WithAgent);
}

#[test]
fn s38_401_on_the_stream_uses_a_continuation_token() {
    let mut sim = with_agent(|_| {});
    sim.stream_rejects_token();
    sim.agent_says("after the 401");
    expect![[r#"
        0:00:00 > stream#2 closed: unauthorized
        0:00:00 < record token-unusable
        0:00:00 < sf#7 continuation-token [t1]
        0:00:00 > sf#7 token t2 guest expires 6:00:00
        0:00:00 < record token-continued
        0:00:00 < record stream-reconnect Unauthorized
        0:00:00 < sf#8 open-stream after 3 [t2]
        0:00:00 > stream#8 opened
        0:00:00 < sf#9 list-entries [t2]
        0:00:00 > sf#9 3 entries
        0:00:00 > stream#8 e4 Agent(Jane) message "after the 401"
        0:00:00 < sf#10 list-entries [t2]
        0:00:00 > sf#10 4 entries
        0:00:00 < bot#11 notify "after the 401" from Agent(Jane)
        0:00:00 > bot#11 ok
        0:00:00 < sf#12 acknowledge delivered e4 [t2]
        0:00:00 > sf#12 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.texts(), vec!["after the 401"]);
}

#[test]
fn s38_a_refused_guest_token_ends_the_handover_without_hammering() {
    let mut sim = with_agent(|_| {});
    sim.salesforce.revoke_all_tokens();
    sim.stream_rejects_token();
    sim.run_until_quiet(secs(3600));
    assert_eq!(terminal_statuses(&sim), vec!["completed/token_expired"]);
    let continuations = sim
        .salesforce
        .requests
        .iter()
        .filter(|r| matches!(r, SalesforceRequest::ContinueToken))
        .count();
    assert_eq!(continuations, 8, "one try per attempt of the retry budget");
    let opens = sim
        .salesforce
        .requests
        .iter()
        .filter(|r| matches!(r, SalesforceRequest::OpenStream { .. }))
        .count();
    assert_eq!(opens, 1, "no reconnect loop with a refused token");
    assert!(sim.take_log().contains("record close-skipped"));
}

#[test]
fn s38_a_refused_verified_token_ends_one_grace_period_after_the_refusal() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
        c.config.token_grace = secs(10 * 60);
    });
    // Ten minutes in, Salesforce stops honouring the token (revoked, or expired early on its
    // side), and the identity provider no longer vouches for the user.
    sim.advance(secs(600));
    sim.salesforce.identity_accepted = false;
    sim.salesforce.revoke_all_tokens();
    sim.stream_rejects_token();
    sim.advance(secs(9 * 60));
    assert!(
        terminal_statuses(&sim).is_empty(),
        "renewal is still being tried within the grace period"
    );
    sim.advance(secs(2 * 60));
    assert_eq!(
        terminal_statuses(&sim),
        vec!["completed/token_expired"],
        "the grace period counts from the refusal, not from the token's expiry 50 min later"
    );
    assert_no_call_used_an_expired_token(&sim);
}

#[test]
fn s38_renewal_keeps_trying_within_a_short_grace_period_and_gets_through() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
        c.config.token_grace = secs(20);
    });
    sim.advance(secs(600));
    // The org's token limit is reached: the first four renewals get 429.
    for _ in 0..4 {
        sim.salesforce
            .fail_next(Target::Mint, CallFailure::RateLimited);
    }
    sim.salesforce.revoke_all_tokens();
    sim.stream_rejects_token();
    sim.advance(secs(19));
    assert!(
        terminal_statuses(&sim).is_empty(),
        "the fifth renewal landed inside the 20 s grace period, not after a 5-10-20-40 s backoff"
    );
    sim.agent_says("after the renewal");
    sim.advance(secs(60));
    assert_eq!(sim.bot.texts(), vec!["after the renewal"]);
    assert_eq!(sim.session.phase(), Phase::WithAgent);
}

#[test]
fn s38_a_refused_verified_token_is_renewed_and_the_handover_carries_on() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
        c.config.token_grace = secs(10 * 60);
    });
    sim.advance(secs(600));
    sim.salesforce.revoke_all_tokens();
    sim.stream_rejects_token();
    sim.advance(secs(5));
    sim.agent_says("after the renewal");
    sim.advance(secs(3600));
    assert_eq!(sim.bot.texts(), vec!["after the renewal"]);
    assert!(terminal_statuses(&sim).is_empty(), "the handover goes on");
    assert_eq!(sim.session.phase(), Phase::WithAgent);
}

#[test]
fn s38_a_user_close_while_a_refused_token_is_being_renewed_closes_once_renewed() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
        c.config.token_grace = secs(10 * 60);
    });
    sim.advance(secs(600));
    // The token is refused and the first renewals meet the org's token limit: the user
    // leaves while there is no usable token.
    for _ in 0..2 {
        sim.salesforce
            .fail_next(Target::Mint, CallFailure::RateLimited);
    }
    sim.salesforce.revoke_all_tokens();
    sim.stream_rejects_token();
    sim.user_cancels();
    assert_eq!(terminal_statuses(&sim), vec!["completed/user_closed"]);
    sim.run_until_quiet(secs(600));
    assert!(
        sim.salesforce.closed(),
        "the conversation is closed with the renewed token, not left to the agent"
    );
    assert!(sim.session.is_finished());
    assert_no_call_used_an_expired_token(&sim);
}

#[test]
fn s38_a_close_refused_with_401_is_retried_with_a_renewed_token() {
    let mut sim = with_agent(|c| {
        c.settings.identity_token = Some(IdentityToken::new("idp-jwt"));
        c.token_lifetime = secs(3600);
    });
    sim.advance(secs(600));
    // Salesforce stops honouring the token, and the close is the first call to learn it.
    sim.salesforce.revoke_all_tokens();
    sim.flow_closes();
    sim.run_until_quiet(secs(600));
    assert_eq!(terminal_statuses(&sim), vec!["completed/closed_by_flow"]);
    assert!(sim.salesforce.closed());
    assert!(sim.session.is_finished());
}

#[test]
fn s38_a_guest_close_refused_with_401_is_skipped_not_retried() {
    let mut sim = with_agent(|_| {});
    sim.salesforce.revoke_all_tokens();
    sim.flow_closes();
    sim.run_until_quiet(secs(600));
    assert_eq!(terminal_statuses(&sim), vec!["completed/closed_by_flow"]);
    assert!(
        !sim.salesforce.closed(),
        "a refused guest token can close nothing"
    );
    assert!(sim.take_log().contains("record close-skipped"));
    assert!(sim.session.is_finished());
}

// ---- G. Robustness -----------------------------------------------------------------------------

#[test]
fn s39_unknown_event_types_are_counted_and_the_stream_goes_on() {
    let mut sim = with_agent(|_| {});
    sim.stream_unknown_event("CONVERSATION_SOMETHING_NEW");
    sim.agent_says("still works");
    expect![[r#"
        0:00:00 > stream#2 unknown event CONVERSATION_SOMETHING_NEW
        0:00:00 < record unknown-event CONVERSATION_SOMETHING_NEW
        0:00:00 > stream#2 e4 Agent(Jane) message "still works"
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify "still works" from Agent(Jane)
        0:00:00 > bot#8 ok
        0:00:00 < sf#9 acknowledge delivered e4 [t1]
        0:00:00 > sf#9 ok
    "#]]
    .assert_eq(&sim.take_log());
}

#[test]
fn s39_unknown_entry_types_are_counted_too() {
    let mut sim = with_agent(|_| {});
    sim.input(Input::Stream {
        stream: CallId::from_raw(2),
        event: StreamEvent::Entry {
            event_id: None,
            entry: ConversationEntry {
                conversation_id: sim.session.conversation_id(),
                identifier: EntryId::new("x-1").unwrap(),
                sender: Sender {
                    role: Role::System,
                    display_name: None,
                    subject: None,
                },
                server_time: None,
                message_id: None,
                payload: EntryPayload::Unknown {
                    entry_type: "FlagRaise".to_owned(),
                },
            },
        },
    });
    assert!(
        sim.take_log()
            .contains("record unknown-entry-type FlagRaise")
    );
    assert_eq!(sim.session.phase(), Phase::WithAgent);
}

#[test]
fn s40_a_malformed_event_is_counted_and_the_entry_recovered_by_backfill() {
    let mut sim = with_agent(|_| {});
    // Salesforce sent the message, but its frame arrived garbled.
    sim.agent_says_withheld("garbled on the way");
    sim.stream_malformed_event();
    expect![[r#"
        0:00:00 > stream#2 malformed event: entryPayload is not valid JSON
        0:00:00 < record malformed-event
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify "garbled on the way" from Agent(Jane)
        0:00:00 < record backfilled 1
        0:00:00 > bot#8 ok
        0:00:00 < sf#9 acknowledge delivered e4 [t1]
        0:00:00 > sf#9 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.texts(), vec!["garbled on the way"]);
}

#[test]
fn s42_a_restart_keeps_the_token_and_reopens_the_stream_from_the_last_event_id() {
    let mut sim = with_agent(|_| {});
    sim.agent_says("before the restart");
    sim.user_says("Are you there?");
    let mints_before = mints(&sim);
    sim.take_log();
    sim.restart(|session| {
        let stored = serde_json::to_vec(session).unwrap();
        serde_json::from_slice(&stored).unwrap()
    });
    sim.agent_says("after the restart");
    expect![[r#"
        0:00:00 restart
        0:00:00 > resumed after a restart
        0:00:00 < record resumed
        0:00:00 < record stream-reconnect Resumed
        0:00:00 < sf#11 open-stream after 6 [t1]
        0:00:00 > stream#11 opened
        0:00:00 < sf#12 list-entries [t1]
        0:00:00 > sf#12 6 entries
        0:00:00 > stream#11 e7 Agent(Jane) message "after the restart"
        0:00:00 < sf#13 list-entries [t1]
        0:00:00 > sf#13 7 entries
        0:00:00 < bot#14 notify "after the restart" from Agent(Jane)
        0:00:00 > bot#14 ok
        0:00:00 < sf#15 acknowledge delivered e7 [t1]
        0:00:00 > sf#15 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(mints(&sim), mints_before, "no token is minted again");
    assert_eq!(
        sim.bot.texts(),
        vec!["before the restart", "after the restart"]
    );
    assert_eq!(texts_sent(&sim), vec!["Are you there?"]);
}

fn mints(sim: &Sim) -> usize {
    sim.salesforce
        .requests
        .iter()
        .filter(|r| {
            matches!(
                r,
                SalesforceRequest::MintToken(_) | SalesforceRequest::RenewToken(_)
            )
        })
        .count()
}

#[test]
fn s41_a_failing_notify_is_retried_and_later_messages_wait_behind_it() {
    let mut sim = with_agent(|_| {});
    sim.bot
        .fail_next(DeliveryFailure::Transient("502 Bad Gateway".to_owned()));
    sim.bot
        .fail_next(DeliveryFailure::Transient("502 Bad Gateway".to_owned()));
    sim.agent_says("first");
    sim.agent_says("second");
    sim.run_until_quiet(secs(60));
    expect![[r#"
        0:00:00 > stream#2 e4 Agent(Jane) message "first"
        0:00:00 < sf#7 list-entries [t1]
        0:00:00 > sf#7 4 entries
        0:00:00 < bot#8 notify "first" from Agent(Jane)
        0:00:00 > bot#8 failed: transient failure: 502 Bad Gateway
        0:00:00 < record bot-delivery-failed will-retry
        0:00:00 > stream#2 e5 Agent(Jane) message "second"
        0:00:00 < sf#9 list-entries [t1]
        0:00:00 > sf#9 5 entries
        0:00:00.997 timeout BotRetry
        0:00:00.997 < bot#10 notify "first" from Agent(Jane)
        0:00:00.997 > bot#10 failed: transient failure: 502 Bad Gateway
        0:00:00.997 < record bot-delivery-failed will-retry
        0:00:02.289 timeout BotRetry
        0:00:02.289 < bot#11 notify "first" from Agent(Jane)
        0:00:02.289 > bot#11 ok
        0:00:02.289 < sf#12 acknowledge delivered e4 [t1]
        0:00:02.289 < bot#13 notify "second" from Agent(Jane)
        0:00:02.289 > sf#12 ok
        0:00:02.289 > bot#13 ok
        0:00:02.289 < sf#14 acknowledge delivered e5 [t1]
        0:00:02.289 > sf#14 ok
        0:00:30 timeout SafetyPoll
        0:00:30 < sf#15 list-entries [t1]
        0:00:30 > sf#15 5 entries
        0:01:00 timeout SafetyPoll
        0:01:00 < sf#16 list-entries [t1]
        0:01:00 > sf#16 5 entries
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(sim.bot.texts(), vec!["first", "second"]);
}

#[test]
fn s41_after_the_retry_budget_the_handover_ends_with_an_error_and_keeps_the_messages() {
    let mut sim = with_agent(|_| {});
    for _ in 0..8 {
        sim.bot
            .fail_next(DeliveryFailure::Transient("503".to_owned()));
    }
    sim.agent_says("first");
    sim.agent_says("second");
    sim.run_until_quiet(secs(600));
    assert_eq!(terminal_statuses(&sim), vec!["error/provider_error"]);
    let kept: Vec<_> = sim
        .session
        .failed_bot_deliveries()
        .iter()
        .map(|d| match d {
            BotDelivery::Notify(Notification::Agent(m)) => format!("{:?}", m.content),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kept, vec![r#"Text("first")"#, r#"Text("second")"#]);
    assert!(
        sim.salesforce.closed(),
        "the agent learns the conversation is over"
    );
}

// ---- H. Order and completeness when Salesforce withholds events ------------------------------

/// The texts Salesforce's log holds for agent messages, in server order.
fn agent_texts_in_server_order(sim: &Sim) -> Vec<String> {
    sim.salesforce
        .log()
        .iter()
        .filter_map(
            |logged| match (&logged.entry.sender.role, &logged.entry.payload) {
                (Role::Agent, EntryPayload::Message(MessageContent::Text(text))) => {
                    Some(text.clone())
                }
                _ => None,
            },
        )
        .collect()
}

fn observed(sim: &Sim, what: impl Fn(&Observation) -> bool) -> usize {
    sim.history()
        .iter()
        .filter(|(_, command)| matches!(command, Command::Record(o) if what(o)))
        .count()
}

#[test]
fn s45_after_a_reconnect_the_new_streams_entries_wait_for_the_backfill_and_merge_in_order() {
    // Every result and event takes 300 ms, so the backfill that the reconnect starts is still
    // paging while the new stream delivers what the agent writes next.
    let mut sim = with_agent(|c| {
        c.latency = Duration::from_millis(300);
        c.config.backfill_page_size = 5;
    });
    sim.advance(secs(2));
    sim.agent_says("1");
    sim.advance(secs(2));
    sim.drop_stream();
    // Written while the stream is down; the stream's replay will leave out every third.
    for n in 2..=13 {
        if n % 3 == 0 {
            sim.agent_says_withheld(&n.to_string());
        } else {
            sim.agent_says(&n.to_string());
        }
    }
    // Reconnect within the backoff, then the agent keeps writing on the new stream while the
    // backfill pages back through what was missed.
    for n in 14..=20 {
        sim.advance(Duration::from_millis(250));
        sim.agent_says(&n.to_string());
    }
    sim.advance(secs(20));
    let expected = agent_texts_in_server_order(&sim);
    assert_eq!(expected.len(), 20);
    assert_eq!(
        sim.bot.texts(),
        expected,
        "every message once, in server order"
    );
    assert_eq!(
        observed(&sim, |o| matches!(o, Observation::HoldReleased { .. })),
        0
    );
    assert!(
        observed(&sim, |o| matches!(o, Observation::Backfilled { .. })) > 0,
        "the withheld ones came from the entries list"
    );
}

#[test]
fn s45_a_hold_past_its_bound_releases_what_it_has_and_the_rest_comes_late() {
    // A listing that takes longer than the hold (5 s): the stream's entries go as they are,
    // and the withheld one before them comes when the listing does.
    let mut sim = sim_with(|c| c.latency = secs(6));
    sim.start();
    sim.advance(secs(30));
    sim.agent_joins("Jane");
    sim.advance(secs(20));
    let released = |sim: &Sim| observed(sim, |o| matches!(o, Observation::HoldReleased { .. }));
    // (The join itself waited past the bound.)
    let released_before = released(&sim);
    sim.agent_says_withheld("withheld");
    sim.agent_says("streamed");
    // The entry arrives after 6 s and may wait 5 s; its listing would answer 6 s later.
    sim.advance(Duration::from_millis(10_900));
    assert!(sim.bot.texts().is_empty());
    sim.advance(Duration::from_millis(100));
    assert_eq!(
        sim.bot.texts(),
        vec!["streamed"],
        "released at the bound, not later"
    );
    assert_eq!(
        released(&sim),
        released_before + 1,
        "the release is reported"
    );
    sim.advance(secs(10));
    assert_eq!(
        sim.bot.texts(),
        vec!["streamed", "withheld"],
        "late, never lost"
    );
}

#[test]
fn s45_a_failed_listing_is_asked_again_and_only_the_bound_releases_without_it() {
    let mut sim = with_agent(|_| {});
    sim.agent_says_withheld("first");
    let unavailable = || CallFailure::Transient("503".to_owned());
    sim.salesforce.fail_next(Target::ListEntries, unavailable());
    sim.agent_says("second");
    assert!(sim.bot.texts().is_empty(), "waiting for the listing");
    sim.advance(Duration::from_millis(250));
    assert_eq!(
        sim.bot.texts(),
        vec!["first", "second"],
        "asked again, in order"
    );
    let released = |sim: &Sim| observed(sim, |o| matches!(o, Observation::HoldReleased { .. }));
    assert_eq!(released(&sim), 0);
    // A listing that keeps failing: the entries go at the bound, and say so.
    for _ in 0..10 {
        sim.salesforce.fail_next(Target::ListEntries, unavailable());
    }
    sim.agent_says("third");
    sim.advance(Duration::from_millis(4_900));
    assert_eq!(sim.bot.texts().len(), 2);
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.bot.texts(), vec!["first", "second", "third"]);
    assert_eq!(released(&sim), 1);
}

#[test]
fn s46_a_withheld_join_is_found_by_the_agents_first_message_and_comes_first() {
    let mut sim = sim_with(|_| {});
    sim.start();
    sim.take_log();
    sim.agent_joins_withheld("Jane");
    sim.agent_says("Hi, I am Jane");
    expect![[r#"
        0:00:00 > stream#2 e3 Agent(Jane) message "Hi, I am Jane"
        0:00:00 < sf#5 list-entries [t1]
        0:00:00 > sf#5 3 entries
        0:00:00 < bot#6 inject active agent=Jane
        0:00:00 < record backfilled 1
        0:00:00 > bot#6 ok
        0:00:00 < bot#7 notify "Hi, I am Jane" from Agent(Jane)
        0:00:00 > bot#7 ok
        0:00:00 < sf#8 acknowledge delivered e3 [t1]
        0:00:00 > sf#8 ok
    "#]]
    .assert_eq(&sim.take_log());
    assert_eq!(
        sim.elapsed(),
        Duration::ZERO,
        "at once, not at the next safety poll"
    );
}

#[test]
fn s46_a_withheld_session_end_is_found_by_the_agents_removal() {
    let mut sim = sim_with(|c| c.latency = Duration::from_millis(100));
    sim.start();
    sim.advance(secs(1));
    sim.agent_joins("Jane");
    sim.advance(secs(1));
    let before = sim.elapsed();
    sim.agent_ends_withheld();
    sim.advance(secs(2));
    assert_eq!(terminal_statuses(&sim), vec!["completed/agent_ended"]);
    assert!(
        sim.elapsed() - before <= secs(3),
        "within a round trip or two, not 2 minutes"
    );
}

#[test]
fn s46_with_an_agent_there_the_safety_poll_comes_every_30_seconds() {
    let mut sim = with_agent(|_| {});
    sim.agent_says_withheld("the last thing the agent said");
    sim.advance(secs(29));
    assert!(sim.bot.texts().is_empty());
    sim.advance(secs(1));
    assert_eq!(sim.bot.texts(), vec!["the last thing the agent said"]);
    // Without an agent the poll keeps its long interval.
    let mut queued = sim_with(|_| {});
    queued.start();
    // The routing result's own listing.
    assert_eq!(queued.salesforce.listings, 1);
    queued.advance(secs(31));
    assert_eq!(queued.salesforce.listings, 1);
    queued.advance(secs(90));
    assert_eq!(queued.salesforce.listings, 2);
}

#[test]
fn s47_paging_loses_nothing_under_either_reading_of_the_bounds() {
    for exclusive in [false, true] {
        let mut sim = with_agent(|c| c.config.backfill_page_size = 5);
        sim.salesforce.exclusive_bounds = exclusive;
        // Two entries in the millisecond where one page ends and the next begins.
        sim.drop_stream();
        for n in 1..=4 {
            sim.agent_says_withheld(&format!("older {n}"));
        }
        sim.agent_burst(3, 1);
        for n in 1..=4 {
            sim.agent_says_withheld(&format!("newer {n}"));
        }
        sim.advance(secs(10));
        let expected = agent_texts_in_server_order(&sim);
        assert_eq!(expected.len(), 11);
        assert_eq!(sim.bot.texts(), expected, "exclusive bounds: {exclusive}");
        assert!(sim.session.missed_entries().is_empty());
    }
}

#[test]
fn s48_a_millisecond_fuller_than_a_page_is_listed_from_both_ends() {
    for exclusive in [false, true] {
        let mut sim = with_agent(|c| c.config.backfill_page_size = 5);
        sim.salesforce.exclusive_bounds = exclusive;
        sim.drop_stream();
        // Eight entries in one millisecond, none on the stream: the newest five come going
        // back, the oldest five going forward from that millisecond.
        sim.agent_burst(8, 1);
        sim.advance(secs(10));
        let expected = agent_texts_in_server_order(&sim);
        assert_eq!(sim.bot.texts(), expected, "exclusive bounds: {exclusive}");
        assert!(sim.session.missed_entries().is_empty());
    }
}

#[test]
fn s48_what_no_page_can_reach_is_reported_in_the_outcome_not_dropped_in_silence() {
    let mut sim = with_agent(|c| c.config.backfill_page_size = 5);
    sim.drop_stream();
    // Twelve in one millisecond: two pages of five cannot reach the middle two.
    sim.agent_burst(12, 1);
    sim.advance(secs(10));
    assert_eq!(sim.bot.texts().len(), 10);
    let missed = sim.session.missed_entries().to_vec();
    assert_eq!(missed.len(), 1);
    let burst_time = sim
        .salesforce
        .log()
        .last()
        .unwrap()
        .entry
        .server_time
        .unwrap();
    assert_eq!(
        missed[0],
        MissedEntries {
            from: burst_time,
            to: burst_time
        }
    );
    assert_eq!(
        observed(&sim, |o| matches!(o, Observation::EntriesMissed { .. })),
        1,
        "reported once, for the operator's log"
    );
    sim.agent_ends();
    sim.advance(secs(5));
    let outcome = sim.session.outcome().unwrap();
    assert_eq!(outcome.reason, EndReason::AgentEnded);
    assert_eq!(outcome.missed, missed, "the Flow hears of the gap");
}

/// S13 with the end never seen on the stream (it has gone silent): the bridge learns of it
/// only from a listing where a new messaging session, opened by its own resend, already
/// follows it. That end is over; the new agent is heard.
#[test]
fn s13_an_end_seen_late_is_superseded_by_the_new_session_the_resend_opened() {
    let mut sim = with_agent(|_| {});
    sim.silence_stream();
    sim.agent_ends();
    sim.user_says("Still there?");
    assert_eq!(texts_sent(&sim), vec!["Still there?"]);
    sim.agent_joins("Sam");
    sim.agent_says("Sam here");
    // The next safety poll (30 s with an agent) lists it all.
    sim.advance(secs(40));
    assert_eq!(sim.bot.texts(), vec!["Sam here"]);
    assert_eq!(
        terminal(&sim),
        None,
        "the old session's end ends nothing now"
    );
    assert_eq!(sim.session.phase(), Phase::WithAgent);
}
