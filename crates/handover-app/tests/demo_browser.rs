//! README's first command, as two people use it: the real `handover demo` binary on free
//! ports, a customer in its webchat and an agent in its console, both in Debian's headless
//! Chromium driven by playwright-core (`tests/browser/demo.mjs` in the workspace). The walk:
//! small talk, the handover, the queue banner, the agent joining and answering by name, the
//! customer writing, the customer closing and reopening the tab (both notices, nothing lost),
//! a transfer, the end and the bot's return. Screenshots of both pages at each step land in
//! `target/tmp/demo-walkthrough/`. `.ci/run` makes a missing browser a failure; elsewhere the
//! test says loudly that it was skipped.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn browser_dir() -> PathBuf {
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
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci in tests/browser)".to_owned());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".to_owned());
    }
    None
}

/// Kills the demo when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_walkthrough_works_for_a_customer_and_an_agent_in_real_browsers() {
    if let Some(reason) = browser_missing() {
        assert!(
            std::env::var("HANDOVER_REQUIRE_BROWSER").is_err(),
            "HANDOVER_REQUIRE_BROWSER is set but {reason}"
        );
        // Written to the process's stderr directly: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_demo_walkthrough_works_for_a_customer_and_an_agent_in_real_browsers: {reason}"
        );
        return;
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let data = tmp.join(format!("demo-walkthrough-data-{}", std::process::id()));
    let shots = tmp.join("demo-walkthrough");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Running(child);
    let mut urls = std::collections::BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some((name, url)) = line.split_once(": ")
            && url.starts_with("http://")
        {
            urls.insert(name.to_owned(), url.to_owned());
        }
        if urls.len() == 3 {
            break;
        }
    }
    let output = Command::new("node")
        .arg(browser_dir().join("demo.mjs"))
        .arg(&urls["webchat"])
        .arg(&urls["console"])
        .arg(&shots)
        .current_dir(browser_dir())
        .output()
        .unwrap();
    drop(demo);
    assert!(
        output.status.success(),
        "the browser walk-through failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let screenshots = std::fs::read_dir(&shots).unwrap().count();
    assert_eq!(screenshots, 10, "two pages at five steps");
    let _ = std::fs::remove_dir_all(&data);
}
