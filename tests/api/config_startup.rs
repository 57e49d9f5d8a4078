//! The real binary: configuration errors at start, and secrets kept out of its output.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{free_port, stack_config_path};

fn loanfolio() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loanfolio"));
    // The test's own environment must not leak settings into the child.
    for (key, _) in std::env::vars() {
        if key.starts_with("LOANFOLIO__") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn an_unknown_env_key_fails_startup_naming_it() {
    let output = loanfolio()
        .args(["--config"])
        .arg(stack_config_path())
        .arg("serve")
        .env("LOANFOLIO__DATABASE__MAX_CONECTIONS", "5")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_file_key_fails_startup_naming_it_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timout_secs = 5\n",
    )
    .unwrap();
    let output = loanfolio()
        .arg("--config")
        .arg(&site)
        .arg("migrate")
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("request_timout_secs"), "{stderr}");
    assert!(stderr.contains("site.toml"), "{stderr}");
}

#[test]
fn a_missing_secret_fails_startup_naming_it() {
    let output = loanfolio().arg("serve").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database.url"), "{stderr}");
}

/// `serve` with every dependency's URL carrying `canary` as its password and pointing at
/// `dead_port`, where nothing listens.
fn serve_with_unreachable_dependencies(
    canary: &str,
    dead_port: u16,
    port: u16,
    admin_port: u16,
) -> std::process::Child {
    loanfolio()
        .arg("--config")
        .arg(stack_config_path())
        .arg("serve")
        .env("LOANFOLIO__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "LOANFOLIO__SERVER__ADMIN_LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("LOANFOLIO__LOG__FORMAT", "json")
        .env("LOANFOLIO__LOG__LEVEL", "debug")
        .env(
            "LOANFOLIO__DATABASE__URL",
            format!("postgres://loanfolio:{canary}@127.0.0.1:{dead_port}/loanfolio"),
        )
        .env(
            "LOANFOLIO__RABBITMQ__URL",
            format!("amqp://guest:{canary}@127.0.0.1:{dead_port}/%2f"),
        )
        .env(
            "LOANFOLIO__REDIS__URL",
            format!("redis://default:{canary}@127.0.0.1:{dead_port}/0"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every body the child answers with: the public readiness, health and an unknown route,
/// then the operations listener's detailed report (last).
async fn bodies_while_not_ready(port: u16, admin_port: u16) -> Vec<String> {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut bodies = Vec::new();
    let mut readyz = None;
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            readyz = Some(response.status().as_u16());
            bodies.push(response.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        readyz,
        Some(503),
        "serve starts, not ready, while PostgreSQL is unreachable"
    );
    for path in ["/readyz", "/healthz", "/no-such-route"] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        bodies.push(response.text().await.unwrap());
    }
    // The operations listener's report carries each dependency's reason.
    let detailed = client
        .get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    bodies.push(detailed);
    bodies
}

#[tokio::test]
async fn a_database_password_never_reaches_logs_or_error_bodies() {
    let canary = format!("Canary-Pw-{}", uuid::Uuid::now_v7().simple());
    let dead_port = free_port(); // nothing listens there
    let port = free_port();
    let admin_port = free_port();
    let mut child = serve_with_unreachable_dependencies(&canary, dead_port, port, admin_port);
    let bodies = bodies_while_not_ready(port, admin_port).await;
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let logs = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The dependency errors were reported (so the canary had every chance to leak)…
    assert!(
        bodies[0].contains(r#""postgres":{"status":"down""#),
        "{}",
        bodies[0]
    );
    assert!(
        bodies.last().unwrap().contains(r#""detail":"#),
        "the admin report gives reasons: {}",
        bodies.last().unwrap()
    );
    assert!(logs.contains("dependency is down"), "{logs}");
    // …and the password appears nowhere, in any casing.
    let needle = canary.to_lowercase();
    assert!(
        !logs.to_lowercase().contains(&needle),
        "password in logs:\n{logs}"
    );
    for body in &bodies {
        assert!(
            !body.to_lowercase().contains(&needle),
            "password in a body: {body}"
        );
    }
    // Positive control: the scan finds the canary where it is planted.
    assert!(
        format!("postgres://x:{canary}@h")
            .to_lowercase()
            .contains(&needle)
    );
}

/// A retention period below the legal floor the code knows is refused at start (exit 2),
/// naming the key and the floor (docs/operations/retention.md); lengthening one is fine
/// (`config::tests`).
#[test]
fn a_retention_period_below_its_legal_floor_fails_startup_naming_it() {
    let output = loanfolio()
        .args(["--config"])
        .arg(stack_config_path())
        .arg("serve")
        .env("LOANFOLIO__RETENTION__LOANS_CLOSED_DAYS", "365")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retention.loans_closed_days"), "{stderr}");
    assert!(stderr.contains("1827"), "the floor is named: {stderr}");
}
