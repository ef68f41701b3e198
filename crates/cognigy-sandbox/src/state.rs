//! The sandbox's state: recorded Endpoint calls, faults, and the webchat's sessions with their
//! output feeds and handover state. One lock, never held across an `await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{BridgeConfig, SandboxConfig};

/// Faults of the Endpoint routes (Notify and Inject).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next this-many calls fail with `fail_status` (a burst).
    pub fail_next: u32,
    /// The status of those failures (default 503).
    pub fail_status: Option<u16>,
    /// Probability (0–1) that a call fails with 503.
    pub error_rate_5xx: f64,
    /// Added latency on every call, in milliseconds.
    pub latency_ms: u64,
}

/// One call the Endpoint received.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Call {
    /// Order of arrival, from 1.
    pub(crate) seq: u64,
    /// `notify` or `inject`.
    pub(crate) kind: &'static str,
    /// `endpoint` (`/notify/{URLToken}`) or `legacy` (`/new/v2.0/endpoint/…`).
    pub(crate) route: &'static str,
    /// The body as received.
    pub(crate) body: Value,
    /// What the sandbox answered.
    pub(crate) status: u16,
    /// When, in Unix milliseconds.
    pub(crate) at_ms: u64,
    /// When the body had arrived, in Unix microseconds (for benchmarks).
    pub(crate) at_us: u64,
}

/// One thing the webchat shows.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Output {
    /// Position in the feed, from 1.
    pub(crate) seq: u64,
    /// `user`, `bot`, `agent` or `system`.
    pub(crate) source: &'static str,
    /// The text, if any.
    pub(crate) text: Option<String>,
    /// Structured data (Cognigy `data`), if any.
    pub(crate) data: Value,
}

/// The handover of a webchat session as its Flow sees it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HandoverState {
    /// The bridge's id, once it answered.
    pub(crate) handover_id: Option<String>,
    /// `requested`, `queue` or `active`.
    pub(crate) status: String,
    /// Queue position.
    pub(crate) position: Option<u64>,
    /// Estimated wait, in milliseconds.
    pub(crate) estimated_wait_time: Option<u64>,
    /// The alternative text, instead of the numbers.
    pub(crate) alternative_text: Option<String>,
    /// The agent's name, once one joined.
    pub(crate) agent_name: Option<String>,
}

/// A webchat user and session.
#[derive(Clone, Debug)]
pub(crate) struct ChatSession {
    pub(crate) user_id: String,
    pub(crate) session_id: String,
    pub(crate) outputs: Vec<Output>,
    /// The conversation with the bot, for the transcript: (`user`/`bot`, text).
    pub(crate) transcript: Vec<(&'static str, String)>,
    pub(crate) handover: Option<HandoverState>,
    /// Inputs so far, for message ids.
    pub(crate) inputs: u64,
    /// Handovers asked for so far, for request ids.
    pub(crate) handovers: u64,
}

impl ChatSession {
    pub(crate) fn new(user_id: String, session_id: String) -> Self {
        Self {
            user_id,
            session_id,
            outputs: Vec::new(),
            transcript: Vec::new(),
            handover: None,
            inputs: 0,
            handovers: 0,
        }
    }

    pub(crate) fn push(&mut self, source: &'static str, text: Option<String>, data: Value) {
        let seq = self.outputs.len() as u64 + 1;
        self.outputs.push(Output {
            seq,
            source,
            text,
            data,
        });
    }

    /// The bot says something (and it goes into the transcript).
    pub(crate) fn bot_says(&mut self, text: &str) {
        self.transcript.push(("bot", text.to_owned()));
        self.push("bot", Some(text.to_owned()), Value::Null);
    }

    /// A banner from the handover (queue position, agent joined).
    pub(crate) fn system(&mut self, text: String) {
        self.push("system", Some(text), Value::Null);
    }
}

/// Everything, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: SandboxConfig,
    pub(crate) url: String,
    pub(crate) bridge: Option<BridgeConfig>,
    pub(crate) faults: Faults,
    pub(crate) calls: Vec<Call>,
    pub(crate) sessions: HashMap<String, ChatSession>,
}

/// Shared by every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) http: reqwest::Client,
}

impl Shared {
    pub(crate) fn new(config: SandboxConfig, url: String) -> Self {
        let bridge = config.bridge.clone();
        Self {
            state: Mutex::new(State {
                config,
                url,
                bridge,
                faults: Faults::default(),
                calls: Vec::new(),
                sessions: HashMap::new(),
            }),
            http: reqwest::Client::new(),
        }
    }

    /// The state, locked. Never held across an `await`.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in the sandbox; keep serving anyway.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
