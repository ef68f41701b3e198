//! Developer tasks, run as `cargo xtask <task>` (the alias is in `.cargo/config.toml`).
//!
//! - `ci`: everything CI checks: formatting, clippy with warnings denied, every test, the
//!   core's embedding example, and `cargo deny` (advisories, licences, bans, sources). This is
//!   the test command in README.
//! - `deny`: only `cargo deny`, against the advisory database shipped in `xtask/` (there is
//!   no network in CI).
//! - `chaos [--release] [harness options]`: builds the bridge, both sandboxes and the harness,
//!   then runs `handover-harness chaos` (see `docs/reliability.md`).
//! - `bench [harness options]`: builds the release bridge, both sandboxes and the harness,
//!   then runs `handover-harness bench` (see `docs/benchmarks.md`); `--micro` runs the
//!   criterion micro-benchmarks instead.
//! - `fuzz [--seconds N] [TARGET…]`: runs the `cargo fuzz` targets of `crates/handover-fuzz`
//!   for N seconds each (default 30), from the committed seeds plus what earlier runs found.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("deny") => deny(),
        Some("chaos") => chaos(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>\n\n\
         tasks:\n  \
         ci     fmt check, clippy -D warnings, all tests, cargo deny\n  \
         deny   cargo deny check against the bundled advisory database\n  \
         chaos  [--release] [--sessions N --messages M --minutes T --instances K --kills J --seed S]\n         \
         the bridge under faults and kill -9; fails unless nothing is lost, doubled or stuck\n  \
         bench  [--sessions N --rate R --duration S --runs K --levels A,B --restart N --out FILE]\n         \
         the release bridge beside a raw floor: latency, throughput, concurrency, restart\n  \
         bench --micro  the criterion micro-benchmarks (core, SSE and entry decoding)\n  \
         fuzz   [--seconds N] [TARGET…]  the cargo-fuzz targets, N seconds each (default 30)"
    );
}

fn workspace_root() -> PathBuf {
    // xtask/ sits directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(workspace_root());
    command
}

fn run(step: &str, mut command: Command) -> Result<(), String> {
    println!("==> {step}");
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|error| format!("{step}: could not run {command:?}: {error}"))?;
    println!("<== {step} ({:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("cargo fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy", clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--all-features"]);
    run("cargo test", test)?;

    // The core's embedding example must not only build but drive a handover to its end.
    let mut example = cargo();
    example.args([
        "run",
        "--quiet",
        "-p",
        "handover-core",
        "--example",
        "blocking_loop",
    ]);
    run("the blocking-loop example", example)?;

    deny()
}

/// `cargo build` of what the harness starts: the bridge, both sandboxes, the harness itself.
fn build_harness_binaries(release: bool) -> Command {
    let mut build = cargo();
    build.args(["build", "-p", "handover-app", "-p", "miaw-sandbox"]);
    build.args(["-p", "cognigy-sandbox", "-p", "handover-harness"]);
    if release {
        build.arg("--release");
    }
    build
}

/// Builds what the chaos run starts (debug by default, which is what the tests built already),
/// then runs it with the remaining arguments.
fn chaos(args: &[String]) -> Result<(), String> {
    let release = args.iter().any(|a| a == "--release");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--release").collect();
    run(
        "build the chaos run's binaries",
        build_harness_binaries(release),
    )?;
    let root = workspace_root();
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin_dir = target.join(if release { "release" } else { "debug" });
    let mut harness = Command::new(bin_dir.join("handover-harness"));
    harness
        .current_dir(&root)
        .arg("chaos")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--work-dir")
        .arg(target.join("chaos"))
        .args(rest);
    run("handover-harness chaos", harness)
}

/// Builds the release binaries and runs the benchmark with the remaining arguments; the
/// command line goes into the report. `--micro` runs the criterion benches instead.
fn bench(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--micro") {
        let mut micro = cargo();
        micro.args(["bench", "-p", "handover-core", "-p", "handover-salesforce"]);
        return run("criterion micro-benchmarks", micro);
    }
    run(
        "build the benchmark's release binaries",
        build_harness_binaries(true),
    )?;
    let root = workspace_root();
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin_dir = target.join("release");
    let mut command_line = String::from("cargo xtask bench");
    for arg in args {
        command_line.push(' ');
        command_line.push_str(arg);
    }
    let mut harness = Command::new(bin_dir.join("handover-harness"));
    harness
        .current_dir(&root)
        .arg("bench")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--work-dir")
        .arg(target.join("bench"))
        .arg("--command-line")
        .arg(command_line)
        .args(args);
    run("handover-harness bench", harness)
}

/// The fuzz targets, in `crates/handover-fuzz/fuzz_targets/`.
const FUZZ_TARGETS: &[&str] = &["api", "sse_event", "entry", "config"];

/// Runs each fuzz target for a fixed time. `cargo fuzz` needs flags that stable rustc takes
/// only with `RUSTC_BOOTSTRAP=1`; the sanitizer is off (the workspace forbids unsafe code, so
/// AddressSanitizer has little to find, and it doubles the build) and coverage guidance stays.
fn fuzz(args: &[String]) -> Result<(), String> {
    let mut seconds = 30u64;
    let mut targets = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--seconds" {
            seconds = rest
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("--seconds needs a number")?;
        } else if FUZZ_TARGETS.contains(&arg.as_str()) {
            targets.push(arg.clone());
        } else {
            return Err(format!(
                "unknown fuzz target `{arg}`; the targets are {FUZZ_TARGETS:?}"
            ));
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    let probe = cargo().args(["fuzz", "--version"]).output();
    if !probe.is_ok_and(|output| output.status.success()) {
        return Err(
            "cargo-fuzz is missing: `cargo install --locked cargo-fuzz@0.13.2` (`.ci/run` does)"
                .to_owned(),
        );
    }
    let root = workspace_root();
    let fuzz_dir = root.join("crates/handover-fuzz");
    for target in &targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .map_err(|e| format!("creating {}: {e}", corpus.display()))?;
        let mut run_target = cargo();
        run_target
            .env("RUSTC_BOOTSTRAP", "1")
            // 16 codegen units: the first (instrumented, release) build takes 5.5 min instead
            // of 8 on two cores; runs a second stay in the same range (api: 275k in 10 s).
            .args([
                "fuzz",
                "run",
                "--sanitizer",
                "none",
                "--codegen-units",
                "16",
            ])
            .arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .arg(target)
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=4096")
            .arg("-max_len=65536");
        run(&format!("fuzz {target} for {seconds}s"), run_target)?;
    }
    Ok(())
}

/// `cargo deny` cannot fetch the RustSec advisory database without network, so the database
/// travels with the repository as a git bundle (`xtask/advisory-db.bundle`) and is cloned into
/// the folder name cargo-deny derives from its default URL.
fn deny() -> Result<(), String> {
    let root = workspace_root();
    let database = root.join("target/advisory-dbs/advisory-db-3157b0e258782691");
    if !database.join(".git").exists() {
        let bundle = root.join("xtask/advisory-db.bundle");
        let mut clone = Command::new("git");
        clone.args(["clone", "--quiet"]).arg(&bundle).arg(&database);
        run("unpack the advisory database", clone)?;
    }
    let mut fetch = cargo();
    fetch.args(["fetch", "--locked"]);
    run("cargo fetch", fetch)?;
    let mut deny = cargo();
    deny.args([
        "deny",
        "--offline",
        "check",
        "advisories",
        "licenses",
        "bans",
        "sources",
    ]);
    run("cargo deny", deny)
}
