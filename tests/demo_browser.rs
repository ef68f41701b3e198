//! README's first command, as two people use it: the demo (`handover demo`, in-process here)
//! with a customer in the webchat and an agent in the console, both in Debian's headless
//! Chromium (`browser/demo.mjs`). A customer message reaches the console; the agent's reply
//! reaches the webchat. `.ci/run` makes a missing browser a failure; elsewhere the test says
//! loudly that it was skipped.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn browser_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn browser_missing() -> Option<String> {
    let chromium =
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium chromium-driver)"
        ));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci in tests/browser)".to_owned());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".to_owned());
    }
    None
}

#[tokio::test]
async fn the_demo_lets_a_customer_and_an_agent_talk_in_real_browsers() {
    if let Some(reason) = browser_missing() {
        assert!(
            std::env::var("HANDOVER_REQUIRE_BROWSER").is_err(),
            "HANDOVER_REQUIRE_BROWSER is set but {reason}"
        );
        // Written to the process's stderr directly: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_demo_lets_a_customer_and_an_agent_talk_in_real_browsers: {reason}"
        );
        return;
    }
    let data =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-browser-{}", std::process::id()));
    let demo = handover_app::demo::start("127.0.0.1:0".parse().unwrap(), data.clone())
        .await
        .unwrap();
    let urls = demo.urls();
    let url = |name: &str| {
        urls.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .to_owned()
    };
    let (webchat, console) = (url("webchat"), url("console"));
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo");
    let dir = browser_dir();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("demo.mjs"))
            .arg(webchat)
            .arg(console)
            .arg(prefix)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics = reqwest::get(format!("{}/metrics", demo.app.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("handover_started_total 1"), "{metrics}");
    demo.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&data);
}
