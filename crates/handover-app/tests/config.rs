//! Configuration: the layering order, Cognigy's operator variables, errors that name the key,
//! and secrets that never show. Each test runs in a figment `Jail` (its own directory and
//! environment).

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use handover_app::config::Config;

const KEY: &str = "k1:CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=";

fn base_file(extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:9000"

[store]
keys = "{KEY}"

[[api.keys]]
name = "cognigy"
key = "a-long-api-key-0123456789"

[salesforce]
token_grace_secs = 100

[salesforce.deployments.main]
Url = "https://example.my.salesforce-scrt.com"
OrganizationId = "00D5e000000SBOX"
DeveloperName = "Main_Deployment"
{extra}
"#
    )
}

#[test]
fn defaults_then_the_file_then_handover_variables_then_cognigys_names() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("handover.toml", &base_file(""))?;
        let config = Config::load(None).unwrap();
        assert_eq!(config.listen.port(), 9000, "the file beats the default");
        assert_eq!(config.salesforce.token_grace_secs, 100);
        assert_eq!(config.store.retention_days, 7, "untouched defaults stay");
        jail.set_env("HANDOVER_SALESFORCE__TOKEN_GRACE_SECS", "200");
        // Other tools' variables with the same prefix are not configuration.
        jail.set_env("HANDOVER_TEST_DATABASE_URL", "postgres://elsewhere");
        jail.set_env("HANDOVER_REQUIRE_BROWSER", "1");
        jail.set_env("HANDOVER_LISTEN", "127.0.0.1:9100");
        let config = Config::load(None).unwrap();
        assert_eq!(
            config.salesforce.token_grace_secs, 200,
            "the environment beats the file"
        );
        assert_eq!(config.listen.port(), 9100);
        jail.set_env("SALESFORCE_MIAW_ACCESS_TOKEN_GRACE_PERIOD", "900");
        jail.set_env(
            "DISABLE_ABORT_HANDOVER_ON_SALESFORCE_MIAW_PARTICIPANT_CHANGE",
            "true",
        );
        let config = Config::load(None).unwrap();
        assert_eq!(
            config.salesforce.token_grace_secs, 900,
            "Cognigy's operator name wins"
        );
        assert!(config.salesforce.disable_end_on_agent_leave);
        assert_eq!(config.session_config().token_grace.as_secs(), 900);
        assert!(config.session_config().disable_end_on_agent_leave);
        Ok(())
    });
}

#[test]
fn salesforce_deployments_use_the_code_snippets_names_and_several_can_coexist() {
    figment::Jail::expect_with(|jail| {
        let extra = r#"
[salesforce.deployments.emea]
Url = "https://emea.my.salesforce-scrt.com/"
OrganizationId = "00D5e000000EMEAXYZ"
DeveloperName = "Emea_Deployment"
CapabilitiesVersion = "1"
"#;
        jail.create_file("handover.toml", &base_file(extra))?;
        let config = Config::load(None).unwrap();
        assert_eq!(config.salesforce.deployments.len(), 2);
        assert_eq!(
            config.salesforce.deployments["emea"].developer_name,
            "Emea_Deployment"
        );
        Ok(())
    });
}

fn error_of(extra: &str, env: &[(&str, &str)]) -> String {
    let mut message = String::new();
    figment::Jail::expect_with(|jail| {
        jail.create_file("handover.toml", &base_file(extra))?;
        for (key, value) in env {
            jail.set_env(key, value);
        }
        message = Config::load(None).unwrap_err().to_string();
        Ok(())
    });
    message
}

#[test]
fn a_bad_value_is_refused_with_the_key_and_without_the_secret() {
    let message = error_of(
        "",
        &[(
            "HANDOVER_SALESFORCE__DEPLOYMENTS__MAIN__ORGANIZATIONID",
            "not-an-org",
        )],
    );
    assert!(
        message.contains("salesforce.deployments.main.OrganizationId"),
        "{message}"
    );
    let message = error_of("colour = \"blue\"", &[]);
    assert!(message.contains("colour"), "{message}");
    let message = error_of("", &[("HANDOVER_STORE__KYES", "typo")]);
    assert!(
        message.to_lowercase().contains("kyes"),
        "a misspelt key in a section fails: {message}"
    );
    let message = error_of("", &[("HANDOVER_STORE__KEYS", "k1:c2VjcmV0LW1hdGVyaWFs")]);
    assert!(message.contains("store.keys"), "{message}");
    assert!(!message.contains("c2VjcmV0LW1hdGVyaWFs"), "{message}");
    let message = error_of(
        "",
        &[(
            "HANDOVER_API__KEYS",
            "[{name=\"weak\",key=\"short-secret\"}]",
        )],
    );
    assert!(message.contains("api.keys[0].key"), "{message}");
    assert!(!message.contains("short-secret"), "{message}");
    let message = error_of("", &[("HANDOVER_STORE__LEASE_TTL_SECS", "1")]);
    assert!(message.contains("store.lease_ttl_secs"), "{message}");
    let message = error_of("", &[("HANDOVER_API__MAX_LIVE_HANDOVERS", "0")]);
    assert!(message.contains("api.max_live_handovers"), "{message}");
    let message = error_of("", &[("HANDOVER_SALESFORCE__STREAMS_PER_CONNECTION", "0")]);
    assert!(
        message.contains("salesforce.streams_per_connection"),
        "{message}"
    );
    let message = error_of("", &[("HANDOVER_SALESFORCE__HTTP_VERSION", "http3")]);
    // figment names an environment variable's key as it was spelled.
    assert!(
        message.to_lowercase().contains("salesforce.http_version") && message.contains("http2"),
        "{message}"
    );
    let message = error_of(
        "",
        &[(
            "SALESFORCE_MIAW_ACCESS_TOKEN_GRACE_PERIOD",
            "thirty minutes",
        )],
    );
    assert!(
        message.to_lowercase().contains("token_grace_secs"),
        "{message}"
    );
}

#[test]
fn production_refuses_to_start_without_encryption_keys() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "handover.toml",
            &base_file("").replace(&format!("keys = \"{KEY}\""), ""),
        )?;
        let message = Config::load(None).unwrap_err().to_string();
        assert!(
            message.contains("store.keys") && message.contains("production"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn the_effective_configuration_prints_without_secrets() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("handover.toml", &base_file(""))?;
        jail.set_env(
            "HANDOVER_STORE__URL",
            "postgres://handover:db-password@db:5432/handover",
        );
        let printed = Config::load(None).unwrap().redacted();
        for secret in ["CwsLCwsL", "a-long-api-key-0123456789", "db-password"] {
            assert!(!printed.contains(secret), "{secret} in:\n{printed}");
        }
        assert!(
            printed.contains("postgres://<redacted>@db:5432/handover"),
            "{printed}"
        );
        assert!(
            printed.contains("[salesforce.deployments.main]"),
            "{printed}"
        );
        assert!(
            printed.contains("OrganizationId = \"00D5e000000SBOX\""),
            "{printed}"
        );
        Ok(())
    });
}

#[test]
fn attachment_downloads_are_locked_down_by_default_and_the_list_is_checked() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("handover.toml", &base_file(""))?;
        let config = Config::load(None).unwrap();
        let policy = config.attachments.policy();
        assert!(policy.allowed_hosts.is_empty());
        assert!(
            !policy.allow_private_addresses,
            "no private addresses unless asked"
        );
        assert_eq!(policy.max_redirects, 3);
        jail.create_file(
            "handover.toml",
            &base_file(
                "[attachments]\nallowed_hosts = [\"*.cognigy.ai\", \"files.example.com\"]\n",
            ),
        )?;
        let config = Config::load(None).unwrap();
        assert_eq!(
            config.attachments.allowed_hosts,
            ["*.cognigy.ai", "files.example.com"]
        );
        Ok(())
    });
    let message = error_of(
        "[attachments]\nallowed_hosts = [\"files.example.com\", \"https://evil.example/x\"]\n",
        &[],
    );
    assert!(
        message.contains("attachments.allowed_hosts[1]"),
        "{message}"
    );
}

#[test]
fn the_stream_hold_and_the_agent_poll_reach_the_core_and_a_zero_poll_is_refused() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("handover.toml", &base_file(""))?;
        let core = Config::load(None).unwrap().session_config();
        assert_eq!(core.stream_hold.as_millis(), 5_000);
        assert_eq!(core.safety_poll_with_agent.as_secs(), 30);
        jail.set_env("HANDOVER_SALESFORCE__STREAM_HOLD_MS", "0");
        jail.set_env("HANDOVER_SALESFORCE__SAFETY_POLL_WITH_AGENT_SECS", "15");
        let core = Config::load(None).unwrap().session_config();
        assert!(core.stream_hold.is_zero(), "0 relays on arrival");
        assert_eq!(core.safety_poll_with_agent.as_secs(), 15);
        Ok(())
    });
    let message = error_of(
        "",
        &[("HANDOVER_SALESFORCE__SAFETY_POLL_WITH_AGENT_SECS", "0")],
    );
    assert!(message.contains("safety_poll_with_agent"), "{message}");
}

#[test]
fn config_edges_a_bad_log_level_an_in_memory_database_and_no_file_are_named() {
    let error = error_of("[log]\nlevel = \"verbose!!\"\n", &[]);
    assert!(error.contains("`log.level`"), "{error}");
    for url in ["sqlite::memory:", "sqlite://handover.db?mode=memory"] {
        let error = error_of("", &[("HANDOVER_STORE__URL", url)]);
        assert!(
            error.contains("`store.url`") && error.contains("in-memory"),
            "{url}: {error}"
        );
    }
    figment::Jail::expect_with(|_jail| {
        // An empty directory: no handover.toml and no HANDOVER_… variables.
        let error = Config::load(None).unwrap_err().to_string();
        assert!(error.starts_with("no handover.toml found in "), "{error}");
        assert!(
            error.contains("store.keys"),
            "and what was missing: {error}"
        );
        Ok(())
    });
}
