//! `handover-harness bench`: the release bridge between the two sandboxes, each in its own
//! process, beside the raw floor (`floor.rs`) on the same sandboxes under the same load.
//!
//! Latency is read from the sandboxes' own records, in Unix microseconds: an agent's text
//! from when `miaw-sandbox` posted it to when `cognigy-sandbox` had the Notify body; a
//! user's text from just before the harness called the relay's API to when `miaw-sandbox`
//! took it; a handover's start from the API call to the conversation created at the sandbox.
//! Every process runs on this machine, so one clock serves all of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

use crate::procs::{self, Binaries, BridgeSettings};

const API_KEY: &str = "bench-flow-key-0123456789abcdef";
const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";
const URL_TOKEN: &str = "sandbox-url-token";
const ORG_ID: &str = "00D5e000000SBOX";
const DEPLOYMENT: &str = "Handover_Sandbox";
/// Salesforce takes 22 messages per conversation a minute; the load stays under it.
const USER_MESSAGES_PER_SESSION_PER_MINUTE: f64 = 20.0;
/// The p99 a sustained rate must keep to count in the throughput search.
const THROUGHPUT_P99_US: u64 = 50_000;
/// Linux reports CPU time in these ticks per second (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Handovers on the bridge and on the floor for the latency comparison.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Aggregate message rate of a load phase, both directions together, per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Length of each load phase, in seconds.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Latency runs (bridge and floor each); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Further concurrency levels, in handovers (comma-separated), bridge only.
    #[arg(long, value_delimiter = ',')]
    levels: Vec<usize>,
    /// Restart the bridge when it holds this many handovers (default: at the last level).
    #[arg(long)]
    restart: Option<usize>,
    /// Skip the throughput search.
    #[arg(long)]
    no_throughput: bool,
    /// The bridge's `salesforce.http_version` towards the sandbox: `http2` multiplexes the
    /// event streams (100 on a connection), `http1` holds a socket per stream (the sandbox
    /// is plain `http://`, where `auto` means HTTP/1.1).
    #[arg(long, default_value = "http2", value_parser = ["auto", "http1", "http2"])]
    http_version: String,
    /// The bridge's `salesforce.stream_hold_ms` (its default if not given). `0` relays stream
    /// entries on arrival, without the listing that orders them: what that listing costs.
    #[arg(long)]
    stream_hold_ms: Option<u64>,
    /// Write the report here too (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line to print in the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command_line: String,
    /// Where the release binaries are.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch folder (logs, store); emptied first.
    #[arg(long)]
    work_dir: PathBuf,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Descriptors a bridge needs besides its streams, under load: the bridge's own default
/// (`handover_app::app::DESCRIPTORS_KEPT`), beyond which it refuses starts.
const FD_MARGIN: u64 = 2_000;

/// A relay the load goes through: the bridge or the floor.
struct Target {
    name: &'static str,
    url: String,
    pid: u32,
}

#[derive(Clone, Debug)]
struct Handover {
    id: String,
    conversation: String,
}

/// What the sandboxes recorded, read incrementally.
#[derive(Default)]
struct Records {
    timings_next: usize,
    calls_after: u64,
    /// Conversation id → created, µs.
    created: HashMap<String, u64>,
    /// Agent text → posted at MIAW, µs.
    agent: HashMap<String, u64>,
    /// User text → taken by MIAW, µs.
    user: HashMap<String, u64>,
    /// Text → Notify body arrived at Cognigy, µs (the first time).
    notified: HashMap<String, u64>,
    /// Texts notified more than once.
    repeated: u64,
}

struct Bench {
    http: reqwest::Client,
    miaw: String,
    cognigy: String,
    records: Mutex<Records>,
    next_session: AtomicU64,
}

/// Percentiles of one direction in one phase, in µs.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

impl Latency {
    fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0;
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

/// One load phase's outcome.
#[derive(Clone, Debug, Default)]
struct Phase {
    rate: f64,
    sent: usize,
    agent_to_user: Latency,
    user_to_agent: Latency,
    /// Messages not seen at the other side 30 s after the phase's last send (late, or lost:
    /// the benchmark does not wait longer to tell which).
    lost: usize,
    /// Agent texts notified whose post `miaw-sandbox` never reported in its timings: they
    /// arrived, but have no latency (not counted lost).
    untimed: usize,
    /// API or control calls that failed.
    errors: usize,
    /// CPU of the relay's process during the phase, in % of one core.
    cpu: f64,
    /// The rate the generator managed, per second.
    achieved: f64,
}

impl Phase {
    fn both(&self) -> Latency {
        // For the throughput search: the worse of the two.
        if self.agent_to_user.p99 >= self.user_to_agent.p99 {
            self.agent_to_user
        } else {
            self.user_to_agent
        }
    }
}

/// `(cpu ticks, RSS KiB)` of a process.
fn proc_stat(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("unexpected /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok((ticks, rss))
}

/// CPU use of `pid` over `window`, in % of one core.
async fn cpu_over(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let (before, _) = proc_stat(pid)?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let (after, _) = proc_stat(pid)?;
    #[allow(clippy::cast_precision_loss)]
    Ok((after - before) as f64 / TICKS_PER_SECOND / started.elapsed().as_secs_f64() * 100.0)
}

impl Bench {
    async fn post(&self, url: String, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(&url)
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{url}: {status} {value}");
        }
        Ok(value)
    }

    /// Reads what the sandboxes recorded since the last read.
    async fn collect(&self) -> anyhow::Result<()> {
        let mut records = self.records.lock().await;
        let timings: Value = self
            .http
            .get(format!(
                "{}/control/timings?from={}",
                self.miaw, records.timings_next
            ))
            .send()
            .await?
            .json()
            .await?;
        for timing in timings["timings"].as_array().into_iter().flatten() {
            let at = timing["atUs"].as_u64().unwrap_or(0);
            let text = timing["text"].as_str().unwrap_or("").to_owned();
            match timing["kind"].as_str() {
                Some("created") => {
                    let conversation = timing["conversation"].as_str().unwrap_or("").to_owned();
                    records.created.insert(conversation, at);
                }
                Some("agent") => {
                    records.agent.insert(text, at);
                }
                Some("user") => {
                    records.user.insert(text, at);
                }
                _ => {}
            }
        }
        records.timings_next = timings["next"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .context("no next in timings")?;
        let calls: Value = self
            .http
            .get(format!(
                "{}/control/calls?kind=notify&after={}",
                self.cognigy, records.calls_after
            ))
            .send()
            .await?
            .json()
            .await?;
        for call in calls["calls"].as_array().into_iter().flatten() {
            records.calls_after = records.calls_after.max(call["seq"].as_u64().unwrap_or(0));
            if call["status"] != 200 {
                continue;
            }
            if let Some(text) = call["body"]["text"].as_str() {
                let at = call["atUs"].as_u64().unwrap_or(0);
                if records.notified.contains_key(text) {
                    records.repeated += 1;
                } else {
                    records.notified.insert(text.to_owned(), at);
                }
            }
        }
        Ok(())
    }

    /// Starts `count` handovers on `target`, 32 at a time; returns them with each start's
    /// latency (API call → conversation created at MIAW), in µs.
    async fn start(
        self: &Arc<Self>,
        target: &Target,
        count: usize,
    ) -> anyhow::Result<(Vec<Handover>, Vec<u64>)> {
        let gate = Arc::new(Semaphore::new(32));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let n = self.next_session.fetch_add(1, Ordering::Relaxed);
            let permit = gate.clone().acquire_owned().await?;
            let bench = self.clone();
            let url = target.url.clone();
            let cognigy = self.cognigy.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let body = json!({
                    "requestId": format!("bench-request-{n}"),
                    "userId": format!("bench-user-{n}"),
                    "sessionId": format!("bench-session-{n}"),
                    "URLToken": URL_TOKEN,
                    "endpointUrl": cognigy,
                    "settings": {},
                });
                let called = now_us();
                let started = bench.post(format!("{url}/v1/handovers"), &body).await?;
                let id = started["handoverId"]
                    .as_str()
                    .context("no handoverId")?
                    .to_owned();
                let conversation = match started["conversationId"].as_str() {
                    Some(conversation) => conversation.to_owned(),
                    None => {
                        let view = bench
                            .http
                            .get(format!("{url}/v1/handovers/{id}"))
                            .bearer_auth(API_KEY)
                            .send()
                            .await?
                            .json::<Value>()
                            .await?;
                        view["conversationId"]
                            .as_str()
                            .context("no conversationId in the view")?
                            .to_owned()
                    }
                };
                anyhow::Ok((Handover { id, conversation }, called))
            }));
        }
        let mut handovers = Vec::with_capacity(count);
        let mut called = Vec::with_capacity(count);
        for task in tasks {
            let (handover, at) = task.await??;
            handovers.push(handover);
            called.push(at);
        }
        // Every conversation is created at MIAW before its start latency is read.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.collect().await?;
            let records = self.records.lock().await;
            let missing = handovers
                .iter()
                .filter(|h| !records.created.contains_key(&h.conversation))
                .count();
            if missing == 0 {
                let latencies = handovers
                    .iter()
                    .zip(&called)
                    .map(|(h, at)| records.created[&h.conversation].saturating_sub(*at))
                    .collect();
                return Ok((handovers, latencies));
            }
            if Instant::now() > deadline {
                bail!("{missing} of {count} conversations were not created within 120 s");
            }
            drop(records);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until MIAW serves `streams` subjects' streams (opened at or after `since_us`)
    /// and every conversation has its agent. Returns how long that took.
    async fn wait_live(
        &self,
        streams: usize,
        since_us: u64,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let open: Value = self
                .http
                .get(format!(
                    "{}/control/streams?openedAfterUs={since_us}",
                    self.miaw
                ))
                .send()
                .await?
                .json()
                .await?;
            let resumed = open["subjectsOpenedAfter"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0);
            if resumed >= streams {
                let all: Value = self
                    .http
                    .get(format!("{}/control/conversations", self.miaw))
                    .send()
                    .await?
                    .json()
                    .await?;
                let waiting = all["conversations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["agent"].is_null() && c["closed"] == false)
                    .count();
                if waiting == 0 {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > limit {
                bail!("only {resumed} of {streams} streams were open after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One open-loop load phase of `seconds` at `rate` messages per second on `target`:
    /// user texts through the relay's API (under Salesforce's per-conversation limit), agent
    /// texts posted at MIAW, and the scripted agent's reply to each user text.
    async fn phase(
        self: &Arc<Self>,
        target: &Target,
        handovers: &[Handover],
        rate: f64,
        seconds: f64,
        tag: &str,
    ) -> anyhow::Result<Phase> {
        #[allow(clippy::cast_precision_loss)]
        let user_rate =
            (rate / 4.0).min(handovers.len() as f64 * USER_MESSAGES_PER_SESSION_PER_MINUTE / 60.0);
        let agent_rate = rate - 2.0 * user_rate;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (users, agents) = (
            (user_rate * seconds) as usize,
            (agent_rate * seconds) as usize,
        );
        // (offset in seconds, user?, index), in time order.
        #[allow(clippy::cast_precision_loss)]
        let mut schedule: Vec<(f64, bool, usize)> = (0..users)
            .map(|k| (k as f64 / user_rate, true, k))
            .chain((0..agents).map(|k| (k as f64 / agent_rate, false, k)))
            .collect();
        schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
        let user_sent: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let agent_sent: Arc<Mutex<Vec<String>>> = Arc::default();
        let errors = Arc::new(AtomicU64::new(0));
        let (ticks_before, _) = proc_stat(target.pid)?;
        let origin = Instant::now();
        let mut tasks = Vec::with_capacity(schedule.len());
        for (offset, user, k) in schedule {
            tokio::time::sleep_until((origin + Duration::from_secs_f64(offset)).into()).await;
            let handover = handovers[k % handovers.len()].clone();
            let bench = self.clone();
            let errors = errors.clone();
            if user {
                let text = format!("{tag}-u{k}");
                let url = format!("{}/v1/handovers/{}/messages", target.url, handover.id);
                let sent = user_sent.clone();
                let message_id = format!("{tag}-{k}");
                tasks.push(tokio::spawn(async move {
                    let at = now_us();
                    let body = json!({ "messageId": message_id, "text": text });
                    match bench.post(url, &body).await {
                        Ok(_) => sent.lock().await.push((text, at)),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            } else {
                let text = format!("{tag}-a{k}");
                let url = format!(
                    "{}/control/conversations/{}/messages",
                    self.miaw, handover.conversation
                );
                let sent = agent_sent.clone();
                tasks.push(tokio::spawn(async move {
                    match bench.post(url, &json!({ "text": text })).await {
                        Ok(_) => sent.lock().await.push(text),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        let sending = origin.elapsed();
        for task in tasks {
            task.await?;
        }
        let (ticks_after, _) = proc_stat(target.pid)?;
        let busy = origin.elapsed();

        // Drain: everything sent arrives, or counts as lost.
        let user_sent = std::mem::take(&mut *user_sent.lock().await);
        let mut agent_texts = std::mem::take(&mut *agent_sent.lock().await);
        agent_texts.extend(user_sent.iter().map(|(text, _)| format!("r:{text}")));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.collect().await?;
            let records = self.records.lock().await;
            // An agent text waits for its post's timing too, not only for its Notify: a
            // collection reads the sandbox's timings before Cognigy's calls, so a reply
            // posted and notified between the two reads shows its Notify first. Stopping
            // there left it without a latency, counted as unarrived (the "unarrived"
            // oddity of the earlier runs).
            let pending = user_sent
                .iter()
                .filter(|(t, _)| !records.user.contains_key(t))
                .count()
                + agent_texts
                    .iter()
                    .filter(|t| {
                        !records.notified.contains_key(*t) || !records.agent.contains_key(*t)
                    })
                    .count();
            if pending == 0 || Instant::now() > deadline {
                break;
            }
            drop(records);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let records = self.records.lock().await;
        let mut lost = 0;
        let mut untimed = 0;
        let mut a2u = Vec::with_capacity(agent_texts.len());
        for text in &agent_texts {
            match (records.agent.get(text), records.notified.get(text)) {
                (Some(posted), Some(notified)) => a2u.push(notified.saturating_sub(*posted)),
                (None, Some(_)) => {
                    untimed += 1;
                    eprintln!(
                        "bench: {tag}: agent text {text:?} notified, but its post is not in \
                         miaw-sandbox's timings"
                    );
                }
                (posted, None) => {
                    lost += 1;
                    // Say which, so that a late or lost text can be traced in the logs.
                    eprintln!(
                        "bench: {tag}: agent text {text:?} {} at MIAW, not notified",
                        if posted.is_some() {
                            "posted"
                        } else {
                            "never posted"
                        }
                    );
                }
            }
        }
        let mut u2a = Vec::with_capacity(user_sent.len());
        for (text, called) in &user_sent {
            match records.user.get(text) {
                Some(taken) => u2a.push(taken.saturating_sub(*called)),
                None => {
                    lost += 1;
                    eprintln!("bench: {tag}: user text {text:?} accepted, not at MIAW");
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let phase = Phase {
            rate,
            sent: user_sent.len() + agent_texts.len(),
            agent_to_user: Latency::of(a2u),
            user_to_agent: Latency::of(u2a),
            lost,
            untimed,
            errors: usize::try_from(errors.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
            cpu: (ticks_after - ticks_before) as f64 / TICKS_PER_SECOND / busy.as_secs_f64()
                * 100.0,
            achieved: (user_sent.len() * 2 + agent_texts.len() - user_sent.len()) as f64
                / sending.as_secs_f64().max(seconds),
        };
        eprintln!(
            "bench: {tag} {} at {rate}/s: a→u p50 {} p99 {} | u→a p50 {} p99 {} µs | unarrived {} errors {} cpu {:.0}%",
            target.name,
            phase.agent_to_user.p50,
            phase.agent_to_user.p99,
            phase.user_to_agent.p50,
            phase.user_to_agent.p99,
            phase.lost,
            phase.errors,
            phase.cpu
        );
        Ok(phase)
    }
}

/// One concurrency level's figures.
#[derive(Debug)]
struct Level {
    handovers: usize,
    rss_kib: u64,
    per_session_bytes: u64,
    idle_cpu: f64,
    start: Latency,
    load: Phase,
}

/// The restart's figures.
#[derive(Debug)]
struct Restart {
    handovers: usize,
    ready: Duration,
    resumed: Duration,
    remints: u64,
    after: Phase,
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn ms(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let ms = us as f64 / 1000.0;
    format!("{ms:.2}")
}

fn ratio(ours: u64, floor: u64) -> String {
    if floor == 0 {
        return "–".to_owned();
    }
    #[allow(clippy::cast_precision_loss)]
    let r = ours as f64 / floor as f64;
    format!("{r:.2}×")
}

async fn minted(bench: &Bench) -> anyhow::Result<u64> {
    let tokens: Value = bench
        .http
        .get(format!("{}/control/tokens", bench.miaw))
        .send()
        .await?
        .json()
        .await?;
    tokens["minted"].as_u64().context("no minted count")
}

pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.sessions == 0 || args.runs == 0 || args.rate <= 0.0 || args.duration <= 0.0 {
        bail!("--sessions, --runs, --rate and --duration must be positive");
    }
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the fd limit")?;
    let binaries = Binaries::for_run(&args.bin_dir, &args.work_dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build()?;
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    // Salesforce's limits, except the token rate: the benchmark opens thousands of handovers
    // in a minute, which a real org would spread out (and which the bridge paces).
    let miaw_config = format!(
        "token_requests_per_minute = 1000000\n\
         [[deployments]]\norg_id = \"{ORG_ID}\"\ndeveloper_name = \"{DEPLOYMENT}\"\n\
         [deployments.scripted_agent]\nname = \"Bench Agent\"\naccept_after_ms = 0\n\
         reply_after_ms = 0\nreply_template = \"r:{{text}}\"\n"
    );
    let (miaw, cognigy) = procs::sandboxes(&binaries, &args.work_dir, &miaw_config, &http).await?;
    let mut key = [0u8; 32];
    fastrand::fill(&mut key);
    let settings = BridgeSettings {
        store_url: format!("sqlite://{}/bench.db", args.work_dir.join("data").display()),
        store_keys: format!(
            "k1:{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)
        ),
        api_key: API_KEY.to_owned(),
        admin_key: ADMIN_KEY.to_owned(),
        miaw_url: miaw.url.clone(),
        org_id: ORG_ID.to_owned(),
        developer_name: DEPLOYMENT.to_owned(),
        salesforce: vec![
            ("token_requests_per_minute".to_owned(), "1000000".to_owned()),
            (
                "http_version".to_owned(),
                format!("{:?}", args.http_version),
            ),
        ]
        .into_iter()
        .chain(
            args.stream_hold_ms
                .map(|hold| ("stream_hold_ms".to_owned(), hold.to_string())),
        )
        .collect(),
        lease_ttl_secs: 30,
        log_level: "warn".to_owned(),
    };
    let port = procs::free_port()?;
    let mut bridge = procs::bridge(&binaries, &args.work_dir, &settings, "bench-0", port).await?;
    bridge
        .wait_ready(&http, "/readyz", Duration::from_secs(60))
        .await?;
    let bridge_pid = bridge.pid().context("the bridge has no pid")?;
    let (_, rss_empty) = proc_stat(bridge_pid)?;
    let mut floor = procs::floor(&args.work_dir, &miaw.url, ORG_ID, DEPLOYMENT).await?;
    floor
        .wait_ready(&http, "/readyz", Duration::from_secs(20))
        .await?;
    let bench = Arc::new(Bench {
        http,
        miaw: miaw.url.clone(),
        cognigy: cognigy.url.clone(),
        records: Mutex::default(),
        next_session: AtomicU64::new(0),
    });
    let mut target = Target {
        name: "bridge",
        url: bridge.url.clone(),
        pid: bridge_pid,
    };
    let floor_target = Target {
        name: "floor",
        url: floor.url.clone(),
        pid: floor.pid().context("the floor has no pid")?,
    };

    // Latency beside the floor.
    eprintln!(
        "bench: starting {} handovers on the bridge and on the floor",
        args.sessions
    );
    let (mut handovers, bridge_starts) = bench.start(&target, args.sessions).await?;
    let (floor_handovers, floor_starts) = bench.start(&floor_target, args.sessions).await?;
    bench
        .wait_live(2 * args.sessions, 0, Duration::from_secs(120))
        .await?;
    let start_latency = Latency::of(bridge_starts.clone());
    let floor_start_latency = Latency::of(floor_starts);
    let idle_cpu = cpu_over(bridge_pid, Duration::from_secs(10)).await?;
    let (_, rss) = proc_stat(bridge_pid)?;
    let mut runs: Vec<(Phase, Phase)> = Vec::new();
    for run in 0..args.runs {
        let tag = |who: &str| format!("r{run}{who}");
        // Alternate who goes first, so neither always follows the other's drain.
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let (mut ours, mut theirs) = (None, None);
        for bridge in order {
            let (who, relay, opened) = if bridge {
                ("b", &target, &handovers)
            } else {
                ("f", &floor_target, &floor_handovers)
            };
            let phase = bench
                .phase(relay, opened, args.rate, args.duration, &tag(who))
                .await?;
            *(if bridge { &mut ours } else { &mut theirs }) = Some(phase);
        }
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            bail!("a latency run measured only one of the two relays");
        };
        runs.push((ours, theirs));
    }
    floor.kill().await?;
    drop(floor_handovers);

    // Throughput: from the set rate, double while p99 stays under 50 ms with nothing lost;
    // if the set rate already misses, halve until a rate keeps it.
    let mut throughput: Vec<Phase> = Vec::new();
    if !args.no_throughput {
        let mut rate = args.rate;
        let mut direction = 0i8;
        loop {
            let phase = bench
                .phase(
                    &target,
                    &handovers,
                    rate,
                    args.duration,
                    &format!("t{rate}"),
                )
                .await?;
            let keeps = phase.both().p99 < THROUGHPUT_P99_US && phase.lost == 0;
            throughput.push(phase);
            if direction == 0 {
                direction = if keeps { 1 } else { -1 };
            }
            match (direction, keeps) {
                (1, true) if rate < 64_000.0 => rate *= 2.0,
                (-1, false) if rate > 50.0 => rate /= 2.0,
                _ => break,
            }
        }
    }

    // Concurrency levels.
    let mut levels = vec![Level {
        handovers: args.sessions,
        rss_kib: rss,
        per_session_bytes: (rss.saturating_sub(rss_empty) * 1024) / args.sessions as u64,
        idle_cpu,
        start: start_latency,
        load: runs[0].0.clone(),
    }];
    let restart_at = args.restart.unwrap_or_else(|| {
        args.levels
            .iter()
            .copied()
            .max()
            .unwrap_or(args.sessions)
            .max(args.sessions)
    });
    let mut restart = None;
    let mut skipped = Vec::new();
    let mut failed = None;
    let mut targets: Vec<usize> = args.levels.clone();
    targets.sort_unstable();
    for level in std::iter::once(args.sessions).chain(targets) {
        if level < handovers.len() {
            continue;
        }
        // Over HTTP/1.1 each stream is a socket in the bridge and one in the sandbox, both
        // capped at the fd limit; keep a margin for the HTTP pools, the store and the
        // listener (19,000 streams under a limit of 20,000 ran the bridge out of
        // descriptors). Over HTTP/2 a hundred streams share a socket.
        let sockets = if args.http_version == "http2" {
            level.div_ceil(100)
        } else {
            level
        };
        if sockets as u64 + FD_MARGIN > fd_limit {
            skipped.push(level);
            continue;
        }
        if level > handovers.len() {
            eprintln!("bench: growing to {level} handovers");
            // A level the bridge cannot reach is a result, not the end of the report.
            let grown = match bench.start(&target, level - handovers.len()).await {
                Ok(grown) => bench
                    .wait_live(level, 0, Duration::from_secs(300))
                    .await
                    .map(|_waited| grown),
                Err(error) => Err(error),
            };
            let (more, starts) = match grown {
                Ok(grown) => grown,
                Err(error) => {
                    eprintln!("bench: {level} handovers not reached: {error:#}");
                    failed = Some((level, format!("{error:#}")));
                    break;
                }
            };
            handovers.extend(more);
            // After a restart the bridge has a new pid.
            let idle = cpu_over(target.pid, Duration::from_secs(10)).await?;
            let (_, rss) = proc_stat(target.pid)?;
            let load = bench
                .phase(
                    &target,
                    &handovers,
                    args.rate,
                    args.duration,
                    &format!("c{level}"),
                )
                .await?;
            levels.push(Level {
                handovers: level,
                rss_kib: rss,
                per_session_bytes: (rss.saturating_sub(rss_empty) * 1024) / level as u64,
                idle_cpu: idle,
                start: Latency::of(starts),
                load,
            });
        }
        if level == restart_at {
            eprintln!("bench: restarting the bridge with {level} handovers");
            let before = minted(&bench).await?;
            bridge.kill().await?;
            let killed = Instant::now();
            let killed_us = now_us();
            bridge = procs::bridge(&binaries, &args.work_dir, &settings, "bench-0", port).await?;
            bridge
                .wait_ready(&bench.http, "/readyz", Duration::from_secs(120))
                .await?;
            let ready = killed.elapsed();
            bench
                .wait_live(level, killed_us, Duration::from_secs(300))
                .await?;
            let resumed = killed.elapsed();
            let remints = minted(&bench).await? - before;
            target.pid = bridge.pid().context("the bridge has no pid")?;
            let after = bench
                .phase(
                    &target,
                    &handovers,
                    args.rate,
                    args.duration,
                    &format!("x{level}"),
                )
                .await?;
            restart = Some(Restart {
                handovers: level,
                ready,
                resumed,
                remints,
                after,
            });
        }
    }
    let repeated = bench.records.lock().await.repeated;
    drop(bridge);
    drop(miaw);
    drop(cognigy);

    let report = Report {
        args: &args,
        date,
        fd_limit,
        rss_empty,
        start: start_latency,
        floor_start: floor_start_latency,
        runs,
        throughput,
        levels,
        skipped,
        failed,
        restart,
        repeated,
    }
    .render()?;
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote {}", out.display());
    }
    Ok(())
}

struct Report<'a> {
    args: &'a BenchArgs,
    date: String,
    fd_limit: u64,
    rss_empty: u64,
    start: Latency,
    floor_start: Latency,
    runs: Vec<(Phase, Phase)>,
    throughput: Vec<Phase>,
    levels: Vec<Level>,
    skipped: Vec<usize>,
    /// A level the bridge could not reach, and why.
    failed: Option<(usize, String)>,
    restart: Option<Restart>,
    repeated: u64,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {} GiB", memory / 1024 / 1024)
}

impl Report<'_> {
    #[allow(clippy::too_many_lines)]
    fn render(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        let a = self.args;
        writeln!(out, "### Run of {}", self.date)?;
        writeln!(out)?;
        writeln!(out, "- Command: `{}`", a.command_line)?;
        writeln!(
            out,
            "- Machine: {}; open-file limit {}",
            machine(),
            self.fd_limit
        )?;
        writeln!(
            out,
            "- Bridge to sandbox: `salesforce.http_version = \"{}\"`; the floor relay speaks HTTP/1.1",
            a.http_version
        )?;
        writeln!(
            out,
            "- Stream hold: {}",
            a.stream_hold_ms.map_or_else(
                || "the bridge's default (each agent entry waits for a listing)".to_owned(),
                |hold| format!("`salesforce.stream_hold_ms = {hold}`"),
            )
        )?;
        writeln!(
            out,
            "- Load: {} msg/s in all for {} s per phase; user texts at most {} per handover a minute, one scripted reply each, agent texts for the rest",
            a.rate, a.duration, USER_MESSAGES_PER_SESSION_PER_MINUTE
        )?;
        writeln!(out)?;

        let med = |f: &dyn Fn(&(Phase, Phase)) -> u64| median(self.runs.iter().map(f).collect());
        writeln!(
            out,
            "#### Relay latency at {} handovers, {} msg/s: medians of {} runs (ms)",
            a.sessions,
            a.rate,
            self.runs.len()
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| direction | relay | p50 | p90 | p99 | max | p50 vs floor |"
        )?;
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
        type Pick = fn(&Phase) -> Latency;
        let directions: [(&str, Pick); 2] = [
            ("agent → user", |p| p.agent_to_user),
            ("user → agent", |p| p.user_to_agent),
        ];
        for (name, pick) in directions {
            let ours = |f: fn(Latency) -> u64| med(&|r| f(pick(&r.0)));
            let floor = |f: fn(Latency) -> u64| med(&|r| f(pick(&r.1)));
            writeln!(
                out,
                "| {name} | bridge | {} | {} | {} | {} | {} |",
                ms(ours(|l| l.p50)),
                ms(ours(|l| l.p90)),
                ms(ours(|l| l.p99)),
                ms(ours(|l| l.max)),
                ratio(ours(|l| l.p50), floor(|l| l.p50)),
            )?;
            writeln!(
                out,
                "| {name} | floor | {} | {} | {} | {} | 1.00× |",
                ms(floor(|l| l.p50)),
                ms(floor(|l| l.p90)),
                ms(floor(|l| l.p99)),
                ms(floor(|l| l.max)),
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "Each run (p50 / p99 ms, bridge vs floor; \"unarrived\": not at the other side 30 s after the phase's last send):"
        )?;
        writeln!(out)?;
        for (i, (ours, theirs)) in self.runs.iter().enumerate() {
            writeln!(
                out,
                "- run {}: {} and {} messages; a→u {} / {} vs {} / {}; u→a {} / {} vs {} / {}; unarrived {} and {}; errors {} and {}; bridge CPU {:.0}%, floor CPU {:.0}%",
                i + 1,
                ours.sent,
                theirs.sent,
                ms(ours.agent_to_user.p50),
                ms(ours.agent_to_user.p99),
                ms(theirs.agent_to_user.p50),
                ms(theirs.agent_to_user.p99),
                ms(ours.user_to_agent.p50),
                ms(ours.user_to_agent.p99),
                ms(theirs.user_to_agent.p50),
                ms(theirs.user_to_agent.p99),
                ours.lost,
                theirs.lost,
                ours.errors,
                theirs.errors,
                ours.cpu,
                theirs.cpu,
            )?;
            if ours.untimed + theirs.untimed > 0 {
                writeln!(
                    out,
                    "  (notified but untimed, so not in the latency figures: {} and {})",
                    ours.untimed, theirs.untimed
                )?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "Start of a handover (API call → conversation created at MIAW), {} handovers: bridge p50 {} ms, p99 {} ms; floor p50 {} ms, p99 {} ms.",
            a.sessions,
            ms(self.start.p50),
            ms(self.start.p99),
            ms(self.floor_start.p50),
            ms(self.floor_start.p99)
        )?;
        writeln!(out)?;

        if !self.throughput.is_empty() {
            writeln!(
                out,
                "#### Throughput at {} handovers (rate doubled while p99 < 50 ms with no loss, or halved until it is)",
                a.sessions
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "| asked msg/s | achieved msg/s | a→u p50 | a→u p99 | u→a p50 | u→a p99 | unarrived after 30 s | bridge CPU |"
            )?;
            writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
            for p in &self.throughput {
                writeln!(
                    out,
                    "| {} | {:.0} | {} | {} | {} | {} | {} | {:.0}% |",
                    p.rate,
                    p.achieved,
                    ms(p.agent_to_user.p50),
                    ms(p.agent_to_user.p99),
                    ms(p.user_to_agent.p50),
                    ms(p.user_to_agent.p99),
                    p.lost,
                    p.cpu
                )?;
            }
            let best = self
                .throughput
                .iter()
                .filter(|p| p.both().p99 < THROUGHPUT_P99_US && p.lost == 0)
                .map(|p| p.achieved)
                .fold(0.0, f64::max);
            writeln!(out)?;
            writeln!(
                out,
                "Highest sustained rate with p99 under 50 ms: {best:.0} msg/s."
            )?;
            writeln!(out)?;
        }

        writeln!(
            out,
            "#### Concurrency (bridge only; RSS with nothing open: {} MiB)",
            self.rss_empty / 1024
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| handovers | bridge RSS | RSS per handover | CPU idle | CPU at {} msg/s | a→u p50 / p99 | u→a p50 / p99 | start p50 / p99 | unarrived after 30 s |",
            a.rate
        )?;
        writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for l in &self.levels {
            writeln!(
                out,
                "| {} | {} MiB | {:.1} KiB | {:.1}% | {:.0}% | {} / {} ms | {} / {} ms | {} / {} ms | {} |",
                l.handovers,
                l.rss_kib / 1024,
                l.per_session_bytes as f64 / 1024.0,
                l.idle_cpu,
                l.load.cpu,
                ms(l.load.agent_to_user.p50),
                ms(l.load.agent_to_user.p99),
                ms(l.load.user_to_agent.p50),
                ms(l.load.user_to_agent.p99),
                ms(l.start.p50),
                ms(l.start.p99),
                l.load.lost,
            )?;
        }
        if let Some((level, error)) = &self.failed {
            writeln!(
                out,
                "| {level} | not reached: {} | | | | | | | |",
                error.replace('|', "/").replace('\n', " ")
            )?;
        }
        for level in &self.skipped {
            writeln!(
                out,
                "| {level} | not run: its sockets (one per stream over HTTP/1.1, one per 100 over HTTP/2) and a margin of {FD_MARGIN} exceed the open-file limit here, {} (the hard limit; raising it needs privileges this machine does not give) | | | | | | | |",
                self.fd_limit
            )?;
        }
        writeln!(out)?;
        if let Some(r) = &self.restart {
            writeln!(
                out,
                "#### Restart (`kill -9`, start again) with {} handovers",
                r.handovers
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "| ready (/readyz) | every stream resumed | token re-mints | after: a→u p99 | after: u→a p99 | after: unarrived |"
            )?;
            writeln!(out, "|---:|---:|---:|---:|---:|---:|")?;
            writeln!(
                out,
                "| {:.2} s | {:.2} s | {} | {} ms | {} ms | {} |",
                r.ready.as_secs_f64(),
                r.resumed.as_secs_f64(),
                r.remints,
                ms(r.after.agent_to_user.p99),
                ms(r.after.user_to_agent.p99),
                r.after.lost
            )?;
            writeln!(out)?;
        }
        writeln!(
            out,
            "Texts notified twice during the whole run: {}.",
            self.repeated
        )?;
        Ok(out)
    }
}
