//! Helpers shared by the test files of this crate.

#![allow(dead_code)]

use std::time::Duration;

use handover_core::sim::{Sim, SimConfig};
use handover_core::*;

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(crate) fn sim_with(configure: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut config = SimConfig::default();
    configure(&mut config);
    Sim::new(config)
}

/// A handover with an agent in it, its log so far discarded.
pub(crate) fn with_agent(configure: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut sim = sim_with(configure);
    sim.start();
    sim.agent_joins("Jane");
    sim.take_log();
    sim
}

/// What the agent received, in order: texts, and files as `file:NAME`.
pub(crate) fn texts_sent(sim: &Sim) -> Vec<String> {
    sim.salesforce
        .accepted()
        .iter()
        .map(|message| match &message.body {
            OutboundBody::Text(text) => text.clone(),
            OutboundBody::File(file) => format!("file:{}", file.name),
        })
        .collect()
}

/// The terminal statuses the Flow received, as `status/reason`.
pub(crate) fn terminal_statuses(sim: &Sim) -> Vec<String> {
    sim.bot
        .statuses()
        .into_iter()
        .filter_map(|status| match status {
            HandoverStatus::Ended(outcome) => Some(describe(outcome)),
            HandoverStatus::Queue(_) | HandoverStatus::Active { .. } | HandoverStatus::Event(_) => {
                None
            }
        })
        .collect()
}

/// The session's outcome, as `status/reason`.
pub(crate) fn terminal(sim: &Sim) -> Option<String> {
    sim.session.outcome().map(describe)
}

fn describe(outcome: &Outcome) -> String {
    format!("{}/{}", outcome.status().as_str(), outcome.reason)
}
