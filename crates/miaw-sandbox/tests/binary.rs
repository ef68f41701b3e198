//! The `miaw-sandbox` binary: reads a TOML configuration, prints its URL and deployments, and
//! serves them; a bad configuration is refused with the setting's name.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn the_binary_prints_its_deployments_and_serves_them() {
    let dir = std::env::temp_dir().join(format!("miaw-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sandbox.toml");
    std::fs::write(
        &config,
        r#"
guest_token_lifetime_secs = 30

[[deployments]]
org_id = "00D5e000000SBOX"
developer_name = "Handover_Sandbox"

[[deployments]]
org_id = "00D5e000000SECD"
developer_name = "Second_Deployment"

[deployments.scripted_agent]
name = "Robo"
accept_after_ms = 10
"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_miaw-sandbox"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("console: ");
        printed.push(line);
        if done {
            break;
        }
    }
    let url = printed[0]
        .strip_prefix("miaw-sandbox listening: url: ")
        .unwrap()
        .to_owned();
    assert_eq!(
        printed[1..],
        [
            "deployment: orgId=00D5e000000SBOX developerName=Handover_Sandbox".to_owned(),
            "deployment: orgId=00D5e000000SECD developerName=Second_Deployment (scripted agent)"
                .to_owned(),
            format!("console: {url}/console"),
        ]
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!(
                "{url}/iamessage/api/v2/authorization/unauthenticated/access-token"
            ))
            .json(&serde_json::json!({
                "orgId": "00D5e000000SECD", "esDeveloperName": "Second_Deployment",
                "capabilitiesVersion": "1", "platform": "Web",
            }))
            .send()
            .await
            .unwrap()
            .status()
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(status, reqwest::StatusCode::OK);
}

/// Runs the binary with `config` as its file; it must refuse to start, naming `key`.
fn refused_naming(dir: &std::path::Path, config: &str, key: &str) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_miaw-sandbox"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains(key), "{stderr}");
}

#[test]
fn a_bad_configuration_is_refused_naming_the_setting() {
    let dir = std::env::temp_dir().join(format!("miaw-sandbox-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    refused_naming(
        &dir,
        "[[deployments]]\norg_id = \"00D123\"\ndeveloper_name = \"X\"\n",
        "deployments[0].org_id",
    );
    refused_naming(&dir, "ping_interval = 5\n", "ping_interval");
    refused_naming(
        &dir,
        "http2_max_concurrent_streams = 0\n",
        "http2_max_concurrent_streams",
    );
}
