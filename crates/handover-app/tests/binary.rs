//! The `handover` binary itself: `demo` starts with no configuration, prints its URLs one per
//! line, serves them, and stops cleanly on SIGTERM; `check-config` explains a bad setting.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn read_urls(stdout: std::process::ChildStdout) -> Vec<(String, String)> {
    let mut lines = BufReader::new(stdout).lines();
    let mut urls = Vec::new();
    while urls.len() < 3 {
        let line = lines.next().expect("the demo prints its URLs").unwrap();
        if let Some((name, url)) = line.split_once(": ")
            && url.starts_with("http://")
        {
            urls.push((name.to_owned(), url.to_owned()));
        }
    }
    urls
}

#[tokio::test]
async fn the_demo_starts_without_configuration_prints_its_urls_and_stops_on_sigterm() {
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("demo-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("HANDOVER_STORE__KEYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let urls = tokio::task::spawn_blocking(move || read_urls(stdout))
        .await
        .unwrap();
    let names: Vec<&str> = urls.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["webchat", "console", "api"]);
    let http = reqwest::Client::new();
    for (name, url) in &urls {
        let probe = if name == "api" {
            format!("{url}/openapi.json")
        } else {
            url.clone()
        };
        let response = http.get(&probe).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{name}: {probe} answered {}",
            response.status()
        );
    }
    let api = &urls[2].1;
    let base = api.trim_end_matches("/v1");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    // SIGTERM: a graceful stop within a bounded time.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        data.join("demo.key").exists(),
        "the demo keeps its key for the next start"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn the_version_is_the_programs_name_and_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("handover {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[store]\nlease_ttl_secs = 1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("HANDOVER_STORE__KEYS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("store.keys") || stderr.contains("store.lease_ttl_secs"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sessions_lists_shows_and_closes_handovers_in_the_store() {
    use handover_core::ports::{BotAddress, SessionStore as _};
    use handover_core::{
        ConversationId, HandoverId, HandoverRequest, HandoverSettings, RequestId, Session,
        SessionConfig, Timestamp,
    };
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sessions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = "k1:CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=";
    let db = dir.join("handover.db");
    let file = dir.join("handover.toml");
    std::fs::write(
        &file,
        format!(
            "mode = \"demo\"\n[store]\nurl = \"sqlite://{}\"\nkeys = \"{keys}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let store = handover_store::SqlStore::connect(
        &format!("sqlite://{}", db.display()),
        handover_store::Keyring::parse(keys).unwrap(),
    )
    .await
    .unwrap();
    let request = HandoverRequest {
        handover_id: HandoverId::from_random_bytes([21; 16]),
        conversation_id: ConversationId::from_random_bytes([22; 16]),
        transcript: Vec::new(),
        settings: HandoverSettings::default(),
        copilot_url: None,
        deployment: None,
    };
    let session = Session::new(request, SessionConfig::default());
    let address = BotAddress {
        endpoint_url: "https://endpoint.example".to_owned(),
        url_token: "t".to_owned(),
        // A client-chosen id with an escape sequence: it must not reach the terminal raw.
        user_id: "cli-user\u{1b}[31m".to_owned(),
        session_id: "cli-session".to_owned(),
    };
    store
        .admit(
            &RequestId::new("r").unwrap(),
            &session,
            &address,
            Timestamp::from_unix_millis(1),
        )
        .await
        .unwrap();
    drop(store);
    // `--config` after the action works as well as before it.
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_handover"))
            .arg("sessions")
            .args(args)
            .arg("--config")
            .arg(&file)
            .env_remove("HANDOVER_STORE__KEYS")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let id = session.handover_id().to_string();
    let listed = run(&["list"]);
    assert!(
        listed.starts_with("HANDOVER  PHASE  OUTCOME  USER/SESSION\n"),
        "{listed}"
    );
    assert!(
        listed.contains(&id)
            && listed.contains("cli-user\\u{1b}[31m/cli-session")
            && listed.contains("live"),
        "{listed}"
    );
    assert!(
        !listed.contains('\u{1b}'),
        "no raw escape reaches the terminal"
    );
    let shown = run(&["show", &id]);
    assert!(
        shown.contains("phase: requested") && shown.contains("pending inputs: 0"),
        "{shown}"
    );
    let closed = run(&["close", &id]);
    assert!(closed.contains("close requested"), "{closed}");
    assert!(run(&["show", &id]).contains("pending inputs: 1"));
    let _ = std::fs::remove_dir_all(&dir);
}
