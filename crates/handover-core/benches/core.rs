//! Micro-benchmarks of the core's `handle` path, through the deterministic simulation: an
//! agent's message arriving on the stream until the bot has it and the session has recorded
//! the delivery, and a user's message until Salesforce has taken it. The simulated ports do
//! little (they append to vectors), so the figures are the session's own work plus that.
//! Run with `cargo xtask bench --micro` (or `cargo bench -p handover-core`).

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use handover_core::sim::{Sim, SimConfig};

/// A handover with the agent connected.
fn active() -> Sim {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.agent_joins("Jane");
    assert!(
        sim.bot
            .statuses()
            .iter()
            .any(|s| format!("{s:?}").contains("Active")),
        "the simulated handover did not become active"
    );
    sim
}

const BATCH: u64 = 100;

fn handle(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("agent_message_to_bot", |b| {
        b.iter_batched(
            active,
            |mut sim| {
                for _ in 0..BATCH {
                    sim.agent_says("Your order ships tomorrow.");
                }
                sim
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("user_message_to_salesforce", |b| {
        b.iter_batched(
            active,
            |mut sim| {
                for _ in 0..BATCH {
                    sim.user_says("Thanks, and the invoice?");
                }
                sim
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
    c.bench_function("core/start_to_active", |b| b.iter(active));
}

criterion_group!(benches, handle);
criterion_main!(benches);
