//! The chaos run: many handovers through real `handover` processes while the sandboxes
//! misbehave and the bridge is killed, then an account, from the sandboxes' own records, of
//! what was lost, doubled or left hanging.
//!
//! Every choice the harness makes (which sessions transfer, go inactive, stall, lose their
//! token, how each ends, when an instance dies, which faults rotate in) comes from one seeded
//! generator, so a seed names a schedule. The random 5xx/429 draws inside the sandboxes and
//! the interleaving of concurrent work are not replayed exactly.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::procs::{self, Binaries, BridgeSettings, Process};

/// What `handover-harness chaos` is asked for.
#[derive(Debug, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Handovers in the run.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// User messages and agent messages per handover (each way).
    #[arg(long, default_value_t = 10)]
    messages: usize,
    /// Nominal length of the run; settling may take a little longer.
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Bridge instances: one on SQLite, several on PostgreSQL (`--database-url`).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// `kill -9` followed by a restart, this many times (with several instances, one more
    /// instance is killed for good halfway).
    #[arg(long, default_value_t = 2)]
    kills: usize,
    /// The schedule's seed (random if not given; the report prints it).
    #[arg(long)]
    seed: Option<u64>,
    /// Where `handover`, `miaw-sandbox` and `cognigy-sandbox` are.
    #[arg(long)]
    bin_dir: PathBuf,
    /// A folder for configuration, databases and logs (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
    /// A PostgreSQL server URL whose user may create databases (needed with `--instances`
    /// above 1). The run creates and later drops a database of its own.
    #[arg(long, env = "HANDOVER_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Also write the report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The bridges' log filter (`info`, `debug`, `trace`, or a `tracing` directive). The log
    /// scan then covers that level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The bridges' `salesforce.stream_hold_ms` (their default if not given). `0` relays
    /// stream entries on arrival, to see what the account reports without the hold.
    #[arg(long)]
    stream_hold_ms: Option<u64>,
}

const API_KEY: &str = "chaos-flow-key-0123456789abcdef";
const ADMIN_KEY: &str = "chaos-admin-key-0123456789abcdef";
const URL_TOKEN: &str = "sandbox-url-token";
const IDENTITY_KID: &str = "chaos";
/// How long a handover may take to settle or end once asked before it counts as stuck.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// The grace period the bridge gets for refused verified tokens.
const TOKEN_GRACE_SECS: u64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum EndKind {
    AgentEnds,
    UserCloses,
    FlowCloses,
    GraceExpiry,
}

impl EndKind {
    fn name(self) -> &'static str {
        match self {
            Self::AgentEnds => "agent ends",
            Self::UserCloses => "user closes",
            Self::FlowCloses => "Flow closes",
            Self::GraceExpiry => "token refused, grace runs out",
        }
    }

    /// The terminal status and reason the Flow should hear.
    fn expected(self) -> &'static str {
        match self {
            Self::AgentEnds => "completed/agent_ended",
            Self::UserCloses => "completed/user_closed",
            Self::FlowCloses => "completed/closed_by_flow",
            Self::GraceExpiry => "completed/token_expired",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Agent(usize),
    User(usize),
}

/// One handover's part of the schedule.
#[derive(Clone, Debug)]
struct Plan {
    index: usize,
    start_after: Duration,
    gap: Duration,
    verified: bool,
    end: EndKind,
    steps: Vec<Step>,
    /// After this step the agent transfers to another agent.
    transfer_after: Option<usize>,
    /// After this step the agent goes inactive; the next step is the user's, which re-routes.
    inactive_after: Option<usize>,
    /// After this step Salesforce refuses the (verified) token; renewal works.
    token_refused_after: Option<usize>,
    /// After this step the conversation's stream stalls for a while.
    stall_after: Option<usize>,
    /// After this step the stream carries junk: an unknown event and data that is not JSON.
    junk_after: Option<usize>,
    /// The agent messages (by `k`) Salesforce keeps off the stream: only the entries list has
    /// them, and what the agent writes after them must not overtake them.
    withheld: Vec<usize>,
}

fn plans(args: &ChaosArgs, rng: &mut fastrand::Rng, length: Duration) -> Vec<Plan> {
    // Starts are spread so that mints stay within the org's 200 a minute at 1,000 handovers in
    // 10 minutes (with renewals on top).
    let starts = length.mul_f64(0.65);
    let phase = length.mul_f64(0.22);
    let gap = phase / u32::try_from(2 * args.messages.max(1)).unwrap_or(u32::MAX);
    (0..args.sessions)
        .map(|index| {
            let verified = rng.f64() < 0.2;
            let end = match rng.u32(0..100) {
                0..30 => EndKind::AgentEnds,
                30..55 => EndKind::UserCloses,
                55..80 => EndKind::FlowCloses,
                _ if verified => EndKind::GraceExpiry,
                _ => EndKind::AgentEnds,
            };
            let mut steps: Vec<Step> = (0..args.messages)
                .flat_map(|k| [Step::Agent(k), Step::User(k)])
                .collect();
            // Shuffle while keeping each side's own order.
            let mut agent = 0;
            let mut user = 0;
            for step in &mut steps {
                let agent_left = args.messages - agent;
                let user_left = args.messages - user;
                let take_agent = user_left == 0 || (agent_left > 0 && rng.bool());
                if take_agent {
                    *step = Step::Agent(agent);
                    agent += 1;
                } else {
                    *step = Step::User(user);
                    user += 1;
                }
            }
            let some = |rng: &mut fastrand::Rng, share: f64| {
                (rng.f64() < share && steps.len() > 2).then(|| rng.usize(0..steps.len() - 1))
            };
            let transfer_after = some(rng, 0.15);
            // Inactivity only right before a user step, which is what re-routes it.
            let inactive_after = some(rng, 0.15).and_then(|at| {
                (at..steps.len() - 1).find(|&i| matches!(steps[i + 1], Step::User(_)))
            });
            let token_refused_after = if verified && end != EndKind::GraceExpiry {
                some(rng, 0.5)
            } else {
                None
            };
            let stall_after = some(rng, 0.1);
            let junk_after = some(rng, 0.1);
            let withheld = (0..args.messages).filter(|_| rng.f64() < 0.1).collect();
            Plan {
                index,
                start_after: starts.mul_f64(rng.f64()),
                gap,
                verified,
                end,
                steps,
                transfer_after,
                inactive_after,
                token_refused_after,
                stall_after,
                junk_after,
                withheld,
            }
        })
        .collect()
}

fn agent_text(index: usize, k: usize) -> String {
    format!("agent says {k} to chaos user {index}")
}

fn user_text(index: usize, k: usize) -> String {
    format!("chaos user {index} says {k}")
}

fn session_id(index: usize) -> String {
    format!("chaos-session-{index}")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A bridge instance: where it answers and whether the harness believes it is up.
#[derive(Debug)]
struct Slot {
    url: String,
    up: AtomicBool,
}

/// What the sessions share.
struct Run {
    http: reqwest::Client,
    miaw: String,
    cognigy: String,
    slots: Vec<Slot>,
    calls: Mutex<Calls>,
    identity_secret: Vec<u8>,
    /// Requests the bridge refused with a 4xx, as `path: status body`.
    refusals: Mutex<Vec<String>>,
    /// Harness steps that could not be done (the sandbox would not take an agent message…).
    troubles: Mutex<Vec<String>>,
    api_retries: AtomicU64,
}

/// The Cognigy sandbox's record, read incrementally.
#[derive(Default)]
struct Calls {
    after: u64,
    by_session: HashMap<String, Vec<Value>>,
}

impl Run {
    fn live_bridge(&self, attempt: usize) -> Option<&Slot> {
        let up: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|slot| slot.up.load(Ordering::Relaxed))
            .collect();
        (!up.is_empty()).then(|| up[attempt % up.len()])
    }

    /// A call to the bridge's API on any live instance, retried (same body, so the same
    /// request or message id) through outages and 5xx until it is answered or `SETTLE_LIMIT`
    /// passes. A 4xx outside `ok` is a refusal and is recorded.
    async fn api(&self, path: &str, body: Option<&Value>, ok: &[u16]) -> anyhow::Result<Value> {
        let started = Instant::now();
        let mut attempt = fastrand::usize(..);
        loop {
            attempt += 1;
            if let Some(slot) = self.live_bridge(attempt) {
                let url = format!("{}{path}", slot.url);
                let request = match body {
                    Some(body) => self.http.post(url).json(body),
                    None => self.http.get(url),
                };
                // A transport error (the instance is down) is retried like a 5xx.
                if let Ok(response) = request.bearer_auth(API_KEY).send().await {
                    let status = response.status().as_u16();
                    let value: Value = response.json().await.unwrap_or(Value::Null);
                    if ok.contains(&status) {
                        return Ok(value);
                    }
                    if (400..500).contains(&status) && status != 429 {
                        let refusal = format!("{path}: {status} {value}");
                        self.refusals.lock().await.push(refusal.clone());
                        bail!(refusal);
                    }
                }
            }
            if started.elapsed() > SETTLE_LIMIT {
                bail!("{path}: no instance answered within {SETTLE_LIMIT:?}");
            }
            self.api_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An agent action at the MIAW sandbox, retried until it is taken (a conversation may not
    /// exist yet, or may be between agents).
    async fn agent(&self, conversation: &str, action: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!(
            "{}/control/conversations/{conversation}/{action}",
            self.miaw
        );
        let started = Instant::now();
        loop {
            let response = self.http.post(&url).json(body).send().await?;
            if response.status().is_success() {
                return Ok(());
            }
            if started.elapsed() > SETTLE_LIMIT {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                bail!("{action} on {conversation}: {status} {text}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A call to the MIAW sandbox's control API that must succeed.
    async fn control_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<()> {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.miaw))
            .json(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("{method} {path}: {}", response.status());
        }
        Ok(())
    }

    async fn control(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        self.control_call(reqwest::Method::POST, path, body).await
    }

    async fn miaw_conversation(&self, conversation: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!(
                "{}/control/conversations/{conversation}",
                self.miaw
            ))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn trouble(&self, what: String) {
        self.troubles.lock().await.push(what);
    }

    /// Reads the Cognigy sandbox's calls since the last read.
    async fn collect(&self) -> anyhow::Result<()> {
        let after = self.calls.lock().await.after;
        let answer: Value = self
            .http
            .get(format!("{}/control/calls?after={after}", self.cognigy))
            .send()
            .await?
            .json()
            .await?;
        let mut calls = self.calls.lock().await;
        for call in answer["calls"].as_array().into_iter().flatten() {
            let seq = call["seq"].as_u64().unwrap_or(0);
            if seq <= calls.after {
                continue;
            }
            calls.after = seq;
            if let Some(session) = call["body"]["sessionId"].as_str() {
                calls
                    .by_session
                    .entry(session.to_owned())
                    .or_default()
                    .push(call.clone());
            }
        }
        Ok(())
    }

    async fn session_calls(&self, session: &str) -> Vec<Value> {
        self.calls
            .lock()
            .await
            .by_session
            .get(session)
            .cloned()
            .unwrap_or_default()
    }

    fn identity_token(&self, user: &str, valid_for: Duration) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(json!({ "alg": "HS256", "typ": "JWT", "kid": IDENTITY_KID })
            .to_string()
            .as_bytes());
        let now = unix_secs();
        let claims = b64(json!({
            "sub": user,
            "iat": now,
            "exp": now + valid_for.as_secs(),
        })
        .to_string()
        .as_bytes());
        let input = format!("{header}.{claims}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.identity_secret);
        let signature = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

/// What one session did, for the account.
#[derive(Debug, Default)]
struct Outcome {
    handover: Option<String>,
    conversation: Option<String>,
    user_sent: Vec<String>,
    agent_sent: Vec<String>,
    ended_at: Option<Instant>,
    identity_expires: Option<u64>,
}

/// A delivery as the Cognigy sandbox recorded it: the id the bridge gave it and when.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    at_ms: u64,
}

/// A terminal status the Flow got (`status/reason`), with its update id.
fn terminal_of(call: &Value) -> Option<(String, Delivery)> {
    if call["kind"] != "inject" || call["status"] != 200 {
        return None;
    }
    let handover = &call["body"]["data"]["handover"];
    let reason = handover["reason"].as_str()?;
    Some((
        format!("{}/{reason}", handover["status"].as_str().unwrap_or("?")),
        Delivery {
            id: handover["updateId"].as_str().unwrap_or("").to_owned(),
            at_ms: call["atMs"].as_u64().unwrap_or(0),
        },
    ))
}

fn delivered_texts(calls: &[Value]) -> HashMap<String, Vec<Delivery>> {
    let mut texts: HashMap<String, Vec<Delivery>> = HashMap::new();
    for call in calls {
        if call["kind"] == "notify"
            && call["status"] == 200
            && let Some(text) = call["body"]["text"].as_str()
        {
            texts.entry(text.to_owned()).or_default().push(Delivery {
                id: call["body"]["data"]["handover"]["messageId"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                at_ms: call["atMs"].as_u64().unwrap_or(0),
            });
        }
    }
    texts
}

/// The longest a bridge may take from a delivery's answer to the commit that records it.
/// A process killed inside that window delivers again after the restart (at least once); the
/// delivery carries the same id, so the receiver can tell.
const COMMIT_WINDOW_MS: u64 = 5_000;

/// Sorts the repeats of one delivery: `(explained, unexplained)`. A repeat is explained when
/// it carries the first delivery's id and a `kill -9` fell between the two, within
/// `COMMIT_WINDOW_MS` of the first. Anything else (another id, no kill) is a duplicate.
fn repeats(deliveries: &[Delivery], kills_ms: &[u64]) -> (usize, usize) {
    let Some(first) = deliveries.first() else {
        return (0, 0);
    };
    let mut explained = 0;
    let mut unexplained = 0;
    for again in &deliveries[1..] {
        let killed_between = kills_ms.iter().any(|&kill| {
            first.at_ms <= kill && kill <= again.at_ms && kill - first.at_ms <= COMMIT_WINDOW_MS
        });
        if again.id == first.id && !first.id.is_empty() && killed_between {
            explained += 1;
        } else {
            unexplained += 1;
        }
    }
    (explained, unexplained)
}

/// The texts of `role`'s messages in a sandbox conversation, in the order Salesforce recorded
/// them.
fn texts_at_salesforce(conversation: &Value, role: &str) -> Vec<String> {
    conversation["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["entryType"] == "Message" && entry["sender"]["role"] == role)
        .filter_map(|entry| {
            entry["entryPayload"]["abstractMessage"]["staticContent"]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The agent texts the user got, each at its first delivery, in the order they came.
fn first_deliveries(calls: &[Value]) -> Vec<String> {
    let mut notified: Vec<(u64, usize, &str)> = calls
        .iter()
        .enumerate()
        .filter(|(_, call)| call["kind"] == "notify" && call["status"] == 200)
        .filter_map(|(index, call)| {
            let text = call["body"]["text"].as_str()?;
            Some((call["atMs"].as_u64().unwrap_or(0), index, text))
        })
        .collect();
    notified.sort_unstable();
    let mut seen = std::collections::HashSet::new();
    notified
        .into_iter()
        .filter(|(_, _, text)| seen.insert(*text))
        .map(|(_, _, text)| text.to_owned())
        .collect()
}

/// How many of `arrived` came after something that was later at the source (`source` in the
/// source's order); texts the source does not have are passed over.
fn out_of_order(source: &[String], arrived: &[String]) -> usize {
    let place: HashMap<&str, usize> = source
        .iter()
        .enumerate()
        .map(|(index, text)| (text.as_str(), index))
        .collect();
    let mut newest = None;
    let mut late = 0;
    for text in arrived {
        let Some(&at) = place.get(text.as_str()) else {
            continue;
        };
        match newest {
            Some(newest) if at < newest => late += 1,
            _ => newest = Some(at),
        }
    }
    late
}

fn user_texts_at_salesforce(conversation: &Value) -> HashMap<String, usize> {
    let mut texts = HashMap::new();
    for entry in conversation["entries"].as_array().into_iter().flatten() {
        if entry["entryType"] == "Message"
            && entry["sender"]["role"] == "EndUser"
            && let Some(text) =
                entry["entryPayload"]["abstractMessage"]["staticContent"]["text"].as_str()
        {
            *texts.entry(text.to_owned()).or_insert(0) += 1;
        }
    }
    texts
}

async fn run_session(run: Arc<Run>, plan: Plan, origin: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    tokio::time::sleep_until((origin + plan.start_after).into()).await;
    if let Err(error) = drive_session(&run, &plan, &mut outcome).await {
        run.trouble(format!("session {}: {error:#}", plan.index))
            .await;
    }
    outcome
}

async fn drive_session(run: &Run, plan: &Plan, outcome: &mut Outcome) -> anyhow::Result<()> {
    let session = session_id(plan.index);
    let user = format!("chaos-user-{}", plan.index);
    let mut settings = json!({});
    if plan.verified {
        // A Grace-expiry session's identity token lapses early, so that renewal fails.
        let valid_for = if plan.end == EndKind::GraceExpiry {
            Duration::from_secs(45)
        } else {
            Duration::from_secs(3 * 3600)
        };
        settings["identityToken"] = run.identity_token(&user, valid_for).into();
        outcome.identity_expires = Some(unix_secs() + valid_for.as_secs());
    }
    let body = json!({
        "requestId": format!("chaos-request-{}", plan.index),
        "userId": user,
        "sessionId": session,
        "URLToken": URL_TOKEN,
        "endpointUrl": run.cognigy,
        "settings": settings,
    });
    let started = run.api("/v1/handovers", Some(&body), &[200, 202]).await?;
    let handover = started["handoverId"]
        .as_str()
        .context("no handoverId in the answer")?
        .to_owned();
    outcome.handover = Some(handover.clone());
    let view = run
        .api(&format!("/v1/handovers/{handover}"), None, &[200])
        .await?;
    let conversation = view["conversationId"]
        .as_str()
        .context("no conversationId in the view")?
        .to_owned();
    outcome.conversation = Some(conversation.clone());
    let agent_name = |n: u32| json!({ "agent": format!("Agent {}-{n}", plan.index) });
    run.agent(&conversation, "accept", &agent_name(1)).await?;

    let mut reroute = false;
    for (i, step) in plan.steps.iter().enumerate() {
        tokio::time::sleep(plan.gap.mul_f64(0.5 + fastrand::f64())).await;
        match *step {
            Step::Agent(k) => {
                let text = agent_text(plan.index, k);
                let withheld = plan.withheld.contains(&k);
                run.agent(
                    &conversation,
                    "messages",
                    &json!({ "text": text, "withheld": withheld }),
                )
                .await?;
                outcome.agent_sent.push(text);
            }
            Step::User(k) => {
                let text = user_text(plan.index, k);
                let body =
                    json!({ "messageId": format!("chaos-{}-{k}", plan.index), "text": text });
                run.api(
                    &format!("/v1/handovers/{handover}/messages"),
                    Some(&body),
                    &[200, 202],
                )
                .await?;
                outcome.user_sent.push(text);
                if reroute {
                    // The user's message re-routed the inactive conversation: someone accepts.
                    reroute = false;
                    run.agent(&conversation, "accept", &agent_name(3)).await?;
                }
            }
        }
        if plan.transfer_after == Some(i) {
            run.agent(
                &conversation,
                "transfer",
                &json!({ "to": format!("Agent {}-2", plan.index) }),
            )
            .await?;
        }
        if plan.inactive_after == Some(i) {
            run.agent(&conversation, "inactive", &json!({})).await?;
            reroute = true;
        }
        if plan.token_refused_after == Some(i) {
            expire_token(run, &conversation).await?;
        }
        if plan.junk_after == Some(i) {
            let events = format!("/control/conversations/{conversation}/events");
            run.control(
                &events,
                &json!({ "event": "CONVERSATION_SOMETHING_NEW", "data": { "x": 1 } }),
            )
            .await?;
            run.control(
                &events,
                &json!({ "event": "CONVERSATION_MESSAGE", "data": "{not json", "raw": true }),
            )
            .await?;
        }
        if plan.stall_after == Some(i) {
            let path = format!("/control/conversations/{conversation}/faults");
            run.control_call(reqwest::Method::PUT, &path, &json!({ "stall": true }))
                .await?;
            let run_path = path.clone();
            let http = run.http.clone();
            let miaw = run.miaw.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let _ = http
                    .put(format!("{miaw}{run_path}"))
                    .json(&json!({}))
                    .send()
                    .await;
            });
        }
    }

    // Everything sent arrives before the end, or it counts as lost.
    let started = Instant::now();
    loop {
        run.collect().await.ok();
        let delivered = delivered_texts(&run.session_calls(&session).await);
        let at_salesforce = user_texts_at_salesforce(&run.miaw_conversation(&conversation).await?);
        let agent_done = outcome.agent_sent.iter().all(|t| delivered.contains_key(t));
        let user_done = outcome
            .user_sent
            .iter()
            .all(|t| at_salesforce.contains_key(t));
        if agent_done && user_done {
            break;
        }
        if started.elapsed() > SETTLE_LIMIT {
            run.trouble(format!(
                "session {}: not settled after {SETTLE_LIMIT:?} (agent→user done: {agent_done}, user→agent done: {user_done})",
                plan.index
            ))
            .await;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    match plan.end {
        EndKind::AgentEnds => run.agent(&conversation, "end", &json!({})).await?,
        EndKind::UserCloses => {
            run.api(
                &format!("/v1/handovers/{handover}/cancel"),
                Some(&json!({})),
                &[200, 202],
            )
            .await?;
        }
        EndKind::FlowCloses => {
            run.api(
                &format!("/v1/handovers/{handover}/close"),
                Some(&json!({})),
                &[200, 202],
            )
            .await?;
        }
        EndKind::GraceExpiry => {
            // Renewal must fail, so the identity token has to have lapsed first.
            if let Some(expires) = outcome.identity_expires {
                let wait = (expires + 1).saturating_sub(unix_secs());
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            expire_token(run, &conversation).await?;
        }
    }
    outcome.ended_at = Some(Instant::now());
    Ok(())
}

async fn expire_token(run: &Run, conversation: &str) -> anyhow::Result<()> {
    let details = run.miaw_conversation(conversation).await?;
    let subject = details["subject"]
        .as_str()
        .context("the conversation has no subject")?
        .to_owned();
    run.control("/control/tokens/expire", &json!({ "subject": subject }))
        .await
}

/// The faults that rotate through the run (on top of drops every few seconds and the REST
/// error rates, which are always on).
fn fault_phase(rng: &mut fastrand::Rng) -> (Value, CognigyFaults) {
    let mut miaw = json!({
        "drop_every_ms": 4000 + rng.u64(0..3000),
        "error_rate_5xx": 0.05,
        "error_rate_429": 0.02,
    });
    match rng.u32(0..6) {
        0 => miaw["duplicate_frames"] = true.into(),
        1 => miaw["split_frames"] = true.into(),
        2 => miaw["coalesce_frames"] = true.into(),
        3 => {
            miaw["duplicate_frames"] = true.into();
            miaw["split_frames"] = true.into();
        }
        4 => miaw["withhold_next_events"] = 3.into(),
        _ => miaw["garble_next_events"] = 3.into(),
    }
    // A burst is an outage of Notify and Inject for 1–4 s (every call fails), a bad spell is
    // 3% of calls failing for the whole phase.
    let cognigy = if rng.bool() {
        CognigyFaults::Outage(Duration::from_millis(1000 + rng.u64(0..3000)))
    } else {
        CognigyFaults::Flaky(0.03)
    };
    (miaw, cognigy)
}

#[derive(Clone, Copy, Debug)]
enum CognigyFaults {
    Outage(Duration),
    Flaky(f64),
}

/// Runs the chaos and prints the account; an error if anything was lost, doubled or stuck.
pub(crate) async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    if args.instances == 0 || args.sessions == 0 || args.messages == 0 {
        bail!("--instances, --sessions and --messages must be at least 1");
    }
    let binaries = Binaries::for_run(&args.bin_dir, &args.work_dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(256)
        .build()?;

    let mut identity_secret = vec![0u8; 32];
    rng.fill(&mut identity_secret);
    let miaw_config = format!(
        "ping_interval_ms = 2000\n\
         [[identity_keys]]\nkty = \"oct\"\nkid = \"{IDENTITY_KID}\"\nk = \"{}\"\n",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&identity_secret)
    );
    let (mut miaw, mut cognigy) =
        procs::sandboxes(&binaries, &args.work_dir, &miaw_config, &http).await?;

    let database = if args.instances > 1 {
        let url = args.database_url.clone().context(
            "several instances need PostgreSQL: pass --database-url or set HANDOVER_TEST_DATABASE_URL",
        )?;
        Some(Database::create(&url, seed).await?)
    } else {
        None
    };
    let mut key = [0u8; 32];
    rng.fill(&mut key);
    let settings = BridgeSettings {
        store_url: database.as_ref().map_or_else(
            || format!("sqlite://{}/chaos.db", args.work_dir.join("data").display()),
            |db| db.url.clone(),
        ),
        store_keys: format!(
            "k1:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        api_key: API_KEY.to_owned(),
        admin_key: ADMIN_KEY.to_owned(),
        miaw_url: miaw.url.clone(),
        org_id: "00D5e000000SBOX".to_owned(),
        developer_name: "Handover_Sandbox".to_owned(),
        salesforce: vec![
            ("safety_poll_secs".to_owned(), "5".to_owned()),
            ("stream_watchdog_secs".to_owned(), "8".to_owned()),
            ("token_grace_secs".to_owned(), TOKEN_GRACE_SECS.to_string()),
            // The org's 200 a minute with a little headroom; the instances keep it together
            // through the store.
            ("token_requests_per_minute".to_owned(), "190".to_owned()),
        ]
        .into_iter()
        .chain(
            args.stream_hold_ms
                .map(|hold| ("stream_hold_ms".to_owned(), hold.to_string())),
        )
        .collect(),
        lease_ttl_secs: 5,
        log_level: args.log_level.clone(),
    };
    let mut ports = Vec::new();
    let mut bridges: Vec<Process> = Vec::new();
    for n in 0..args.instances {
        let port = procs::free_port()?;
        let name = format!("bridge-{}-0", instance_letter(n));
        let mut bridge = procs::bridge(&binaries, &args.work_dir, &settings, &name, port).await?;
        bridge
            .wait_ready(&http, "/readyz", Duration::from_secs(60))
            .await?;
        ports.push(port);
        bridges.push(bridge);
    }
    let run = Arc::new(Run {
        http: http.clone(),
        miaw: miaw.url.clone(),
        cognigy: cognigy.url.clone(),
        slots: bridges
            .iter()
            .map(|b| Slot {
                url: b.url.clone(),
                up: AtomicBool::new(true),
            })
            .collect(),
        calls: Mutex::new(Calls::default()),
        identity_secret,
        refusals: Mutex::new(Vec::new()),
        troubles: Mutex::new(Vec::new()),
        api_retries: AtomicU64::new(0),
    });

    let plans = plans(&args, &mut rng, length);
    // The kill schedule: (when, which instance, for good?).
    let mut kills: Vec<(Duration, usize, bool)> = (0..args.kills)
        .map(|_| {
            (
                length.mul_f64(0.15 + 0.6 * rng.f64()),
                if args.instances > 1 {
                    0
                } else {
                    rng.usize(0..args.instances)
                },
                false,
            )
        })
        .collect();
    if args.instances > 1 {
        kills.push((length.mul_f64(0.5), args.instances - 1, true));
    }
    kills.sort_by_key(|k| k.0);
    let fault_phases: Vec<(Value, CognigyFaults)> =
        (0..64).map(|_| fault_phase(&mut rng)).collect();

    let origin = Instant::now();
    println!(
        "chaos: seed {seed}, {} sessions × {} messages each way, {} instance(s) on {}, {} kill(s){}, nominal {:.1} min; logs in {}",
        args.sessions,
        args.messages,
        args.instances,
        if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.kills,
        if args.instances > 1 {
            " + one instance killed for good"
        } else {
            ""
        },
        args.minutes,
        args.work_dir.display()
    );

    // The collector keeps the Cognigy record fresh for the sessions' settle checks.
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let run = run.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let _ = run.collect().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    // Faults rotate every 15 s until the last session has ended.
    let faults = {
        let run = run.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut injected = 0usize;
            let mut outages = 0usize;
            for (miaw, cognigy) in fault_phases.iter().cycle() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let _ = run
                    .http
                    .put(format!("{}/control/faults", run.miaw))
                    .json(miaw)
                    .send()
                    .await;
                let cognigy_faults = |rate: f64| {
                    run.http
                        .put(format!("{}/control/faults", run.cognigy))
                        .json(&json!({ "error_rate_5xx": rate }))
                        .send()
                };
                let mut spent = Duration::ZERO;
                match *cognigy {
                    CognigyFaults::Outage(length) => {
                        let _ = cognigy_faults(1.0).await;
                        tokio::time::sleep(length).await;
                        let _ = cognigy_faults(0.0).await;
                        outages += 1;
                        spent = length;
                    }
                    CognigyFaults::Flaky(rate) => {
                        let _ = cognigy_faults(rate).await;
                    }
                }
                injected += 1;
                for _ in spent.as_secs()..15 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let _ = run
                .http
                .put(format!("{}/control/faults", run.cognigy))
                .json(&json!({}))
                .send()
                .await;
            (injected, outages)
        })
    };

    let sessions: Vec<_> = plans
        .iter()
        .cloned()
        .map(|plan| tokio::spawn(run_session(run.clone(), plan, origin)))
        .collect();

    // The killer: kill -9 on schedule, restart after a moment (a new process, a new name).
    let mut kill_log = Vec::new();
    let mut kills_ms = Vec::new();
    let mut generation = vec![0u32; args.instances];
    for (at, instance, for_good) in &kills {
        tokio::time::sleep_until((origin + *at).into()).await;
        run.slots[*instance].up.store(false, Ordering::Relaxed);
        bridges[*instance].kill().await?;
        kills_ms.push(unix_ms());
        kill_log.push(format!(
            "{:>6.1}s kill -9 {}{}",
            at.as_secs_f64(),
            bridges[*instance].name,
            if *for_good { " (for good)" } else { "" }
        ));
        if *for_good {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500 + rng.u64(0..2500))).await;
        generation[*instance] += 1;
        let name = format!(
            "bridge-{}-{}",
            instance_letter(*instance),
            generation[*instance]
        );
        let mut bridge = procs::bridge(
            &binaries,
            &args.work_dir,
            &settings,
            &name,
            ports[*instance],
        )
        .await?;
        bridge
            .wait_ready(&http, "/readyz", Duration::from_secs(60))
            .await?;
        run.slots[*instance].up.store(true, Ordering::Relaxed);
        kill_log.push(format!(
            "{:>6.1}s {name} up",
            origin.elapsed().as_secs_f64()
        ));
        bridges[*instance] = bridge;
    }

    let mut outcomes = Vec::new();
    for session in sessions {
        outcomes.push(session.await.unwrap_or_default());
    }
    // Anything that ends now ends late; wait for the terminal statuses, then a quiet spell to
    // catch late doubles.
    let ending = Instant::now();
    loop {
        run.collect().await.ok();
        let calls = run.calls.lock().await;
        let missing = plans
            .iter()
            .filter(|plan| {
                !calls
                    .by_session
                    .get(&session_id(plan.index))
                    .is_some_and(|c| c.iter().any(|call| terminal_of(call).is_some()))
            })
            .count();
        drop(calls);
        if missing == 0 || ending.elapsed() > SETTLE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Stop the faults before the quiet spell: nothing should still be moving.
    done.store(true, Ordering::Relaxed);
    let (rotations, outages) = faults.await.unwrap_or((0, 0));
    let _ = collector.await;
    let _ = run
        .http
        .put(format!("{}/control/faults", run.miaw))
        .json(&json!({}))
        .send()
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    run.collect().await?;

    let report = account(
        &run,
        &args,
        seed,
        &plans,
        &outcomes,
        &kill_log,
        &kills_ms,
        (rotations, outages),
        origin.elapsed(),
    )
    .await?;
    for bridge in &mut bridges {
        if bridge.running() {
            bridge.kill().await?;
        }
    }
    let leaks = scan_logs(&args.work_dir, &plans, &outcomes)?;
    let mut text = report.text;
    writeln!(
        text,
        "log lines with a token, a key or message text: {leaks}"
    )?;
    println!("{text}");
    if let Some(path) = &args.report {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    miaw.kill().await?;
    cognigy.kill().await?;
    if let Some(database) = database {
        database.drop_it().await;
    }
    if report.failed || leaks > 0 {
        bail!("the chaos run found lost, doubled or stuck messages or sessions (seed {seed})");
    }
    Ok(())
}

fn instance_letter(n: usize) -> char {
    char::from(b'a' + u8::try_from(n % 26).unwrap_or(0))
}

struct Report {
    text: String,
    failed: bool,
}

#[allow(clippy::too_many_arguments)]
async fn account(
    run: &Run,
    args: &ChaosArgs,
    seed: u64,
    plans: &[Plan],
    outcomes: &[Outcome],
    kill_log: &[String],
    kills_ms: &[u64],
    (rotations, outages): (usize, usize),
    took: Duration,
) -> anyhow::Result<Report> {
    let calls = run.calls.lock().await;
    let mut lost_to_user = 0usize;
    let mut doubled_to_user = 0usize;
    let mut redelivered_after_kill = 0usize;
    let mut terminal_redelivered_after_kill = 0usize;
    let mut lost_to_agent = 0usize;
    let mut doubled_to_agent = 0usize;
    let mut unordered_to_user = 0usize;
    let mut unordered_to_agent = 0usize;
    let mut no_terminal = Vec::new();
    let mut many_terminals = Vec::new();
    let mut wrong_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut still_live = Vec::new();
    let mut open_at_salesforce = Vec::new();
    let mut ends: BTreeMap<EndKind, usize> = BTreeMap::new();
    let mut agent_sent = 0usize;
    let mut user_sent = 0usize;
    let mut evidence = Vec::new();
    for (plan, outcome) in plans.iter().zip(outcomes) {
        let problems_before = lost_to_user
            + doubled_to_user
            + lost_to_agent
            + doubled_to_agent
            + unordered_to_user
            + unordered_to_agent
            + no_terminal.len()
            + many_terminals.len()
            + wrong_reason.values().sum::<usize>()
            + still_live.len()
            + open_at_salesforce.len();
        let mut salesforce_view = Value::Null;
        *ends.entry(plan.end).or_default() += 1;
        let session = session_id(plan.index);
        let session_calls = calls.by_session.get(&session).cloned().unwrap_or_default();
        let delivered = delivered_texts(&session_calls);
        // Compare with what the harness meant to send, not only what it managed to send: a
        // step that never happened is reported as trouble and fails the run too.
        for k in 0..args.messages {
            let text = agent_text(plan.index, k);
            match delivered.get(&text).map(Vec::as_slice) {
                None | Some([]) => {
                    if outcome.agent_sent.contains(&text) {
                        lost_to_user += 1;
                    }
                }
                Some([_]) => {}
                Some(deliveries) => {
                    let (explained, unexplained) = repeats(deliveries, kills_ms);
                    redelivered_after_kill += explained;
                    doubled_to_user += unexplained;
                }
            }
        }
        agent_sent += outcome.agent_sent.len();
        user_sent += outcome.user_sent.len();
        let terminals: Vec<(String, Delivery)> =
            session_calls.iter().filter_map(terminal_of).collect();
        if let Some((status, _)) = terminals.first() {
            if status != plan.end.expected() {
                *wrong_reason
                    .entry(format!("{} → {status}", plan.end.name()))
                    .or_default() += 1;
            }
            let deliveries: Vec<Delivery> = terminals.iter().map(|(_, d)| d.clone()).collect();
            let (explained, unexplained) = repeats(&deliveries, kills_ms);
            terminal_redelivered_after_kill += explained;
            if unexplained > 0 {
                let statuses: Vec<&str> = terminals.iter().map(|(s, _)| s.as_str()).collect();
                many_terminals.push(format!("{}: {statuses:?}", plan.index));
            }
        } else {
            no_terminal.push(plan.index);
        }
        if let Some(conversation) = &outcome.conversation {
            let details = run.miaw_conversation(conversation).await?;
            salesforce_view = details.clone();
            let at_salesforce = user_texts_at_salesforce(&details);
            // Order: the user reads the agent's messages in the order Salesforce recorded
            // them, and Salesforce records the user's in the order the Flow sent them.
            unordered_to_user += out_of_order(
                &texts_at_salesforce(&details, "Agent"),
                &first_deliveries(&session_calls),
            );
            unordered_to_agent += out_of_order(
                &outcome.user_sent,
                &texts_at_salesforce(&details, "EndUser"),
            );
            for text in &outcome.user_sent {
                match at_salesforce.get(text).copied().unwrap_or(0) {
                    0 => lost_to_agent += 1,
                    1 => {}
                    n => doubled_to_agent += n - 1,
                }
            }
            // The bridge closes the conversation when the user or the Flow ends the handover.
            // When the agent ends it, the messaging session is over and the conversation stays
            // (S26: nothing more is sent). When the token was refused, nothing can close it.
            let over = match plan.end {
                EndKind::AgentEnds => {
                    details["closed"] == true || details["sessionStatus"] == "Ended"
                }
                EndKind::UserCloses | EndKind::FlowCloses => details["closed"] == true,
                EndKind::GraceExpiry => true,
            };
            if !over {
                open_at_salesforce.push(plan.index);
            }
        }
        if let Some(handover) = &outcome.handover {
            let view = run
                .api(&format!("/v1/handovers/{handover}"), None, &[200])
                .await
                .unwrap_or(Value::Null);
            if view["live"] != false {
                still_live.push(plan.index);
            }
        }
        let problems_after = lost_to_user
            + doubled_to_user
            + lost_to_agent
            + doubled_to_agent
            + unordered_to_user
            + unordered_to_agent
            + no_terminal.len()
            + many_terminals.len()
            + wrong_reason.values().sum::<usize>()
            + still_live.len()
            + open_at_salesforce.len();
        if problems_after > problems_before {
            evidence.push(json!({
                "session": plan.index,
                "plan": format!("{plan:?}"),
                "handover": outcome.handover,
                "conversation": outcome.conversation,
                "cognigyCalls": session_calls,
                "salesforce": salesforce_view,
            }));
        }
    }
    if !evidence.is_empty() {
        let path = args.work_dir.join("evidence.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&evidence)?)?;
        println!(
            "the record of the {} session(s) with a problem is in {}",
            evidence.len(),
            path.display()
        );
    }
    drop(calls);
    let tokens: Value = run
        .http
        .get(format!("{}/control/tokens", run.miaw))
        .send()
        .await?
        .json()
        .await?;
    let injected: Value = run
        .http
        .get(format!("{}/control/faults/injected", run.miaw))
        .send()
        .await?
        .json()
        .await?;
    let cognigy_failures = {
        let calls = run.calls.lock().await;
        calls
            .by_session
            .values()
            .flatten()
            .filter(|c| c["status"] != 200)
            .count()
    };
    let guests = plans.iter().filter(|p| !p.verified).count();
    let refused_tokens = plans
        .iter()
        .filter(|p| p.token_refused_after.is_some() || p.end == EndKind::GraceExpiry)
        .count();
    let troubles = run.troubles.lock().await.clone();
    let refusals = run.refusals.lock().await.clone();
    let stuck = no_terminal.len() + still_live.len() + open_at_salesforce.len();
    let guest_reminted = tokens["guest"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(guests as u64);

    let mut text = String::new();
    writeln!(
        text,
        "== chaos report (bridges logging at `{}`)",
        args.log_level
    )?;
    writeln!(
        text,
        "seed {seed}; {} sessions × {} messages each way; {} instance(s) on {}; took {:.1} min",
        args.sessions,
        args.messages,
        args.instances,
        if args.instances > 1 {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        took.as_secs_f64() / 60.0
    )?;
    writeln!(text, "kills:")?;
    for line in kill_log {
        writeln!(text, "  {line}")?;
    }
    writeln!(
        text,
        "faults: {rotations} rotations of SSE drops every 4–7 s, duplicate/split/coalesced frames, withheld and garbled events; REST 5% 503 + 2% 429 ({} 503 and {} 429 injected); {} stalled streams; {} streams with an unknown event and a non-JSON one; {outages} Notify/Inject outages of 1–4 s and spells of 3% 503 ({cognigy_failures} calls failed)",
        injected["503"].as_u64().unwrap_or(0),
        injected["429"].as_u64().unwrap_or(0),
        plans.iter().filter(|p| p.stall_after.is_some()).count(),
        plans.iter().filter(|p| p.junk_after.is_some()).count(),
    )?;
    writeln!(
        text,
        "sessions: {} verified, {} transfers, {} inactive and re-routed, {} verified tokens refused mid-conversation and renewed, {} agent messages kept off the stream",
        args.sessions - guests,
        plans.iter().filter(|p| p.transfer_after.is_some()).count(),
        plans.iter().filter(|p| p.inactive_after.is_some()).count(),
        plans
            .iter()
            .filter(|p| p.token_refused_after.is_some())
            .count(),
        plans.iter().map(|p| p.withheld.len()).sum::<usize>(),
    )?;
    writeln!(
        text,
        "ends: {}",
        ends.iter()
            .map(|(kind, n)| format!("{} {n}", kind.name()))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(text)?;
    writeln!(
        text,
        "| direction | sent | lost | duplicated | out of server order | re-delivered with the same id after a kill -9 |"
    )?;
    writeln!(text, "|---|---:|---:|---:|---:|---:|")?;
    writeln!(
        text,
        "| agent → user (Notify) | {agent_sent} | {lost_to_user} | {doubled_to_user} | {unordered_to_user} | {redelivered_after_kill} |"
    )?;
    writeln!(
        text,
        "| user → agent (MIAW) | {user_sent} | {lost_to_agent} | {doubled_to_agent} | {unordered_to_agent} | 0 (Salesforce answers 409 to a message id it has) |"
    )?;
    writeln!(text)?;
    writeln!(
        text,
        "re-delivered after a kill -9 (same id; the first delivery at most {COMMIT_WINDOW_MS} ms before the kill, not yet committed): {redelivered_after_kill} messages, {terminal_redelivered_after_kill} terminal statuses"
    )?;
    writeln!(
        text,
        "stuck sessions: {stuck} (no terminal status: {}, still live at the bridge: {}, conversation left open: {})",
        no_terminal.len(),
        still_live.len(),
        open_at_salesforce.len()
    )?;
    writeln!(
        text,
        "terminal status reported more than once: {}; ended with an unexpected reason: {}",
        many_terminals.len(),
        wrong_reason.values().sum::<usize>()
    )?;
    for (what, n) in &wrong_reason {
        writeln!(text, "  {what}: {n}")?;
    }
    writeln!(
        text,
        "tokens: {} handovers started, {} minted ({} guest, {} verified, {} refused identity → guest); guest re-mints: {guest_reminted} (a kill -9 between a mint and its commit re-mints); {refused_tokens} sessions had a verified token refused on purpose",
        outcomes.iter().filter(|o| o.handover.is_some()).count(),
        tokens["minted"].as_u64().unwrap_or(0),
        tokens["guest"].as_u64().unwrap_or(0),
        tokens["verified"].as_u64().unwrap_or(0),
        tokens["fallback"].as_u64().unwrap_or(0),
    )?;
    writeln!(
        text,
        "API calls retried through outages: {}; requests refused with a 4xx: {}; harness troubles: {}",
        run.api_retries.load(Ordering::Relaxed),
        refusals.len(),
        troubles.len()
    )?;
    for line in refusals.iter().chain(&troubles).take(20) {
        writeln!(text, "  {line}")?;
    }
    for line in many_terminals.iter().take(10) {
        writeln!(text, "  terminal more than once: {line}")?;
    }
    if !no_terminal.is_empty() {
        writeln!(
            text,
            "  no terminal status: sessions {:?}",
            first(&no_terminal)
        )?;
    }
    if !still_live.is_empty() {
        writeln!(text, "  still live: sessions {:?}", first(&still_live))?;
    }
    if !open_at_salesforce.is_empty() {
        writeln!(
            text,
            "  left open at Salesforce: sessions {:?}",
            first(&open_at_salesforce)
        )?;
    }
    let failed = lost_to_user
        + doubled_to_user
        + lost_to_agent
        + doubled_to_agent
        + unordered_to_user
        + unordered_to_agent
        + stuck
        + many_terminals.len()
        + wrong_reason.len()
        + troubles.len()
        + refusals.len()
        > 0;
    writeln!(text, "result: {}", if failed { "FAILED" } else { "clean" })?;
    Ok(Report { text, failed })
}

fn first(list: &[usize]) -> &[usize] {
    &list[..list.len().min(20)]
}

/// Searches every bridge log for what must never be logged: tokens (any JWT), the API keys,
/// and (debug text logging is off) any message text of the run. Returns the count of lines.
fn scan_logs(dir: &Path, plans: &[Plan], outcomes: &[Outcome]) -> anyhow::Result<usize> {
    let mut needles: Vec<String> = vec![API_KEY.to_owned(), ADMIN_KEY.to_owned()];
    for (plan, outcome) in plans.iter().zip(outcomes) {
        needles.extend(outcome.agent_sent.iter().cloned());
        needles.extend(outcome.user_sent.iter().cloned());
        let _ = plan;
    }
    let mut hits = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("bridge-") && name.ends_with(".log")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines() {
            // A JWT: three base64url parts, the first an encoded `{"`.
            let jwt = line.contains("eyJ");
            if jwt || needles.iter().any(|needle| line.contains(needle.as_str())) {
                hits += 1;
                if hits <= 5 {
                    eprintln!(
                        "secret or message text in {}: {}",
                        path.display(),
                        line.chars().take(200).collect::<String>()
                    );
                }
            }
        }
    }
    Ok(hits)
}

/// A PostgreSQL database of the run's own.
struct Database {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin_url: &str, seed: u64) -> anyhow::Result<Self> {
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .context("connecting to PostgreSQL")?;
        let name = format!("handover_chaos_{}_{}", seed % 1_000_000, std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .context("creating the run's database")?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("the database URL has no database name")?;
        let url = format!("{base}/{name}");
        Ok(Self { admin, name, url })
    }

    async fn drop_it(self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, at_ms: u64) -> Delivery {
        Delivery {
            id: id.to_owned(),
            at_ms,
        }
    }

    #[test]
    fn out_of_order_counts_what_came_after_something_later_at_the_source() {
        let texts = |list: &[&str]| list.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        let source = texts(&["a", "b", "c", "d"]);
        assert_eq!(out_of_order(&source, &texts(&["a", "b", "c", "d"])), 0);
        assert_eq!(out_of_order(&source, &texts(&["a", "c", "b", "d"])), 1);
        assert_eq!(out_of_order(&source, &texts(&["d", "a", "b", "c"])), 3);
        // A text the source does not have (a bridge notice) and a missing one change nothing.
        assert_eq!(out_of_order(&source, &texts(&["a", "notice", "c", "d"])), 0);
    }

    #[test]
    fn first_deliveries_keep_the_order_of_arrival_and_drop_repeats() {
        let calls = vec![
            json!({ "kind": "notify", "status": 200, "atMs": 5, "body": { "text": "b" } }),
            json!({ "kind": "notify", "status": 200, "atMs": 2, "body": { "text": "a" } }),
            json!({ "kind": "notify", "status": 503, "atMs": 1, "body": { "text": "c" } }),
            json!({ "kind": "inject", "status": 200, "atMs": 3, "body": {} }),
            json!({ "kind": "notify", "status": 200, "atMs": 9, "body": { "text": "a" } }),
        ];
        assert_eq!(first_deliveries(&calls), ["a", "b"]);
    }

    #[test]
    fn a_repeat_is_explained_only_by_the_same_id_and_a_kill_right_after_the_first() {
        let kills = [10_000];
        // Same id, killed 1 s after the first delivery, delivered again after the restart.
        assert_eq!(
            repeats(&[delivery("m1", 9_000), delivery("m1", 16_000)], &kills),
            (1, 0)
        );
        // Another id: a real duplicate, kill or not.
        assert_eq!(
            repeats(&[delivery("m1", 9_000), delivery("m2", 16_000)], &kills),
            (0, 1)
        );
        // No kill between the two.
        assert_eq!(
            repeats(&[delivery("m1", 11_000), delivery("m1", 16_000)], &kills),
            (0, 1)
        );
        // The kill came long after the first delivery: that one had been committed.
        assert_eq!(
            repeats(&[delivery("m1", 1_000), delivery("m1", 16_000)], &kills),
            (0, 1)
        );
        // No id at all cannot be told from a duplicate.
        assert_eq!(
            repeats(&[delivery("", 9_000), delivery("", 16_000)], &kills),
            (0, 1)
        );
        assert_eq!(repeats(&[delivery("m1", 9_000)], &kills), (0, 0));
    }

    fn args(sessions: usize, messages: usize) -> ChaosArgs {
        ChaosArgs {
            sessions,
            messages,
            minutes: 1.0,
            instances: 1,
            kills: 0,
            seed: None,
            bin_dir: PathBuf::new(),
            work_dir: PathBuf::new(),
            database_url: None,
            report: None,
            log_level: "info".to_owned(),
            stream_hold_ms: None,
        }
    }

    #[test]
    fn a_seed_names_a_schedule_and_every_plan_keeps_each_sides_order() {
        let args = args(300, 7);
        let length = Duration::from_secs(60);
        let first = plans(&args, &mut fastrand::Rng::with_seed(42), length);
        let again = plans(&args, &mut fastrand::Rng::with_seed(42), length);
        let other = plans(&args, &mut fastrand::Rng::with_seed(43), length);
        assert_eq!(format!("{first:?}"), format!("{again:?}"));
        assert_ne!(format!("{first:?}"), format!("{other:?}"));
        for plan in &first {
            let agent: Vec<usize> = plan
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::Agent(k) => Some(*k),
                    Step::User(_) => None,
                })
                .collect();
            let user: Vec<usize> = plan
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::User(k) => Some(*k),
                    Step::Agent(_) => None,
                })
                .collect();
            assert_eq!(agent, (0..7).collect::<Vec<_>>());
            assert_eq!(user, (0..7).collect::<Vec<_>>());
            if let Some(at) = plan.inactive_after {
                assert!(
                    matches!(plan.steps[at + 1], Step::User(_)),
                    "the user's next message re-routes an inactive conversation"
                );
            }
            assert!(plan.verified || plan.end != EndKind::GraceExpiry);
            assert!(plan.start_after <= length);
        }
        // Every way to end occurs in a run of this size.
        for end in [
            EndKind::AgentEnds,
            EndKind::UserCloses,
            EndKind::FlowCloses,
            EndKind::GraceExpiry,
        ] {
            assert!(first.iter().any(|p| p.end == end), "{end:?}");
        }
    }

    #[test]
    fn deliveries_and_terminal_statuses_are_read_from_the_record() {
        let calls = vec![
            json!({ "kind": "notify", "status": 200, "atMs": 5,
                    "body": { "text": "hello", "data": { "handover": { "messageId": "e1" } } } }),
            json!({ "kind": "notify", "status": 503, "atMs": 6,
                    "body": { "text": "hello", "data": { "handover": { "messageId": "e1" } } } }),
            json!({ "kind": "inject", "status": 200, "atMs": 7,
                    "body": { "data": { "handover": { "status": "active", "updateId": "u1" } } } }),
            json!({ "kind": "inject", "status": 200, "atMs": 8,
                    "body": { "data": { "handover": { "status": "completed", "reason": "agent_ended", "updateId": "u2" } } } }),
        ];
        let delivered = delivered_texts(&calls);
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered["hello"].len(), 1, "a failed call is no delivery");
        let terminals: Vec<_> = calls.iter().filter_map(terminal_of).collect();
        assert_eq!(terminals.len(), 1, "active is not terminal");
        assert_eq!(terminals[0].0, "completed/agent_ended");
        assert_eq!(terminals[0].1.id, "u2");
    }
}
