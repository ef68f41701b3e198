//! The architecture invariants of docs/ARCHITECTURE.md, checked.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use workspace_tests::{cargo, files_with_extension, output, workspace_root};

/// Crates the pure core must never depend on, directly or through another crate.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "hyper",
    "reqwest",
    "sqlx",
    "axum",
    "serde_json",
    "figment",
    "mio",
    "socket2",
];

#[test]
fn core_depends_on_no_io_crate() {
    let mut tree = cargo();
    tree.args([
        "tree",
        "-p",
        "handover-core",
        "-e",
        "normal",
        "--prefix",
        "none",
    ]);
    let tree = output(tree).unwrap();
    let names: BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        names.contains("handover-core"),
        "cargo tree printed:\n{tree}"
    );
    let found: Vec<_> = FORBIDDEN_IN_CORE
        .iter()
        .filter(|name| names.contains(*name))
        .collect();
    assert!(
        found.is_empty(),
        "handover-core must stay pure, but its normal dependencies include {found:?}:\n{tree}"
    );
}

#[test]
fn core_sources_read_no_clock_and_do_no_io() {
    let forbidden = [
        "Instant::now",
        "SystemTime::now",
        "std::fs",
        "std::net",
        "std::thread",
        "std::env",
        "tokio",
        "rand::",
    ];
    let src = workspace_root().join("crates/handover-core/src");
    let files = files_with_extension(&src, "rs");
    assert!(files.len() > 5, "found only {files:?}");
    let mut violations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for needle in forbidden {
                if line.contains(needle) {
                    violations.push(format!("{}:{}: {needle}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "handover-core does I/O or reads the clock:\n{}",
        violations.join("\n")
    );
}

/// What each kind of crate may depend on inside the workspace.
fn allowed_workspace_dependencies(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "handover-core" | "handover-egress" => Some(&[]),
        "handover-salesforce" | "handover-cognigy" => Some(&["handover-core", "handover-egress"]),
        "handover-store" => Some(&["handover-core"]),
        // The harness judges the bridge from outside, by the sandboxes' records only.
        "miaw-sandbox" | "cognigy-sandbox" | "handover-harness" => Some(&[]),
        _ => None,
    }
}

#[test]
fn crates_depend_only_in_the_allowed_directions() {
    let mut metadata = cargo();
    metadata.args(["metadata", "--format-version", "1", "--no-deps"]);
    let metadata: serde_json::Value = serde_json::from_str(&output(metadata).unwrap()).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(members.contains("handover-core"));
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let Some(allowed) = allowed_workspace_dependencies(name) else {
            continue;
        };
        for dependency in package["dependencies"].as_array().unwrap() {
            let dependency_name = dependency["name"].as_str().unwrap();
            let is_normal = dependency["kind"].is_null();
            if is_normal
                && members.contains(dependency_name)
                && dependency_name != name
                && !allowed.contains(&dependency_name)
            {
                problems.push(format!("{name} depends on {dependency_name}"));
            }
        }
    }
    assert!(problems.is_empty(), "dependency rules broken: {problems:?}");
}

#[test]
fn every_crate_has_a_section_in_the_codemap() {
    let architecture =
        std::fs::read_to_string(workspace_root().join("docs/ARCHITECTURE.md")).unwrap();
    let mut metadata = cargo();
    metadata.args(["metadata", "--format-version", "1", "--no-deps"]);
    let metadata: serde_json::Value = serde_json::from_str(&output(metadata).unwrap()).unwrap();
    let missing: Vec<_> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|name| !architecture.contains(&format!("### `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md has no codemap section for {missing:?}"
    );
}

#[test]
fn ci_runs_the_test_command_that_readme_gives() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let command = "cargo xtask ci";
    assert!(
        readme.contains(command),
        "README.md must give `{command}` as the test command"
    );
    assert!(
        ci.lines().any(|line| line.trim() == command),
        ".ci/run must run `{command}`"
    );
}

/// Scenarios of the behaviour catalogue (`docs/scenarios.md`) whose decisions the core makes.
/// S42, S43 and S44 are about restarts, failover and the HTTP API, which later crates test end
/// to end.
const CORE_SCENARIOS: [std::ops::RangeInclusive<u32>; 2] = [1..=41, 45..=48];

#[test]
fn every_core_scenario_has_a_test_named_after_it() {
    let tests = workspace_root().join("crates/handover-core/tests");
    let mut names = BTreeMap::new();
    for file in files_with_extension(&tests, "rs") {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            if let Some(rest) = line.strip_prefix("fn s")
                && let Some(number) = rest.get(..2).and_then(|n| n.parse::<u32>().ok())
                && rest.get(2..3) == Some("_")
            {
                names
                    .entry(number)
                    .or_insert_with(Vec::new)
                    .push(line.to_owned());
            }
        }
    }
    let missing: Vec<_> = CORE_SCENARIOS
        .into_iter()
        .flatten()
        .filter(|n| !names.contains_key(n))
        .map(|n| format!("S{n:02}"))
        .collect();
    assert!(
        missing.is_empty(),
        "no core test is named after {missing:?}"
    );
}
