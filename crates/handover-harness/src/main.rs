//! `handover-harness`: drives real `handover` processes between `miaw-sandbox` and
//! `cognigy-sandbox`, each in its own process, and accounts for every message from the
//! sandboxes' records. `cargo xtask chaos` builds the binaries and runs `chaos`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod chaos;
mod floor;
mod procs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Runs the bridge under load and faults, and accounts for every message")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Handovers through real bridge processes under faults and kill -9; exits non-zero
    /// unless nothing was lost, doubled or stuck.
    Chaos(chaos::ChaosArgs),
    /// The benchmark: relay latency beside a raw floor, throughput, concurrency, restart.
    Bench(bench::BenchArgs),
    /// The raw floor relay the benchmark compares against (started by `bench`).
    Floor(floor::FloorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("handover-harness: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Chaos(args) => chaos::chaos(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Floor(args) => floor::floor(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("handover-harness: {error:#}");
            ExitCode::FAILURE
        }
    }
}
