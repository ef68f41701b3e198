//! The agent console works in a real browser: Debian's headless Chromium, driven by
//! playwright-core (`console.mjs` in the workspace's `tests/browser`). `.ci/run` installs both and sets
//! `HANDOVER_REQUIRE_BROWSER=1`, so in CI a missing browser fails the test; elsewhere the test
//! says loudly that it was skipped and why.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

/// The workspace's node project for browser tests.
fn browser_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

fn browser_missing() -> Option<String> {
    let chromium =
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium chromium-driver)"
        ));
    }
    let module = browser_dir().join("node_modules/playwright-core");
    if !module.exists() {
        return Some("playwright-core is not installed (npm ci in tests/browser)".to_owned());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".to_owned());
    }
    None
}

#[tokio::test]
async fn the_console_lets_a_person_accept_and_answer_in_headless_chromium() {
    if let Some(reason) = browser_missing() {
        assert!(
            std::env::var("HANDOVER_REQUIRE_BROWSER").is_err(),
            "HANDOVER_REQUIRE_BROWSER is set but {reason}"
        );
        // Written to the process's stderr directly: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_console_lets_a_person_accept_and_answer_in_headless_chromium: {reason}"
        );
        return;
    }
    let harness = Harness::start().await;
    let (token, _) = harness.guest().await;
    let id = harness
        .create(&token, json!({ "issueType": "Billing" }))
        .await;
    harness.send(&token, &id, "I need help with my bill").await;

    let dir = browser_dir();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("miaw-sandbox-console.png");
    let url = harness.sandbox.url().to_owned();
    let script = dir.join("console.mjs");
    let shot = screenshot.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(url)
            .arg(&id)
            .arg(shot)
            .current_dir(dir)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "the browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 1000,
        "a screenshot was taken"
    );

    // What the person did in the browser happened at "Salesforce".
    let conversations: Value = harness
        .call(reqwest::Method::GET, "/control/conversations", None, None)
        .await
        .json()
        .await
        .unwrap();
    let conversation = &conversations["conversations"][0];
    assert_eq!(conversation["agent"], "Sandbox Agent");
    assert_eq!(
        conversation["lastMessage"],
        "Hello, I am looking at your bill now."
    );
}
