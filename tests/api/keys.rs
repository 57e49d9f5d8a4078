//! Key rotation and rewrap on a private master key file (the `local` provider; the `vault`
//! provider's are in vault.rs).

use std::process::Command;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::flows::{Client, SSN, full_lead};
use crate::helpers::{app, stack_config_path};

#[tokio::test]
async fn rotate_then_rewrap_keeps_every_lead_readable() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    loanfolio::crypto::local::LocalKeyFile::new(&key_file)
        .generate()
        .unwrap();
    let path = key_file.clone();
    let app = app()
        .settings(move |s| s.kms.local.master_key_file = path)
        .spawn()
        .await;
    let agent = Client::new(&app, "agent-a1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
        ids.push(lead["id"].as_str().unwrap().to_owned());
    }

    let admin = |args: &[&str]| {
        admin_keys(&app, args, |c| {
            c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", &key_file);
        })
    };
    admin(&["rotate"]);
    let out = admin(&["rewrap"]);
    // Three lead keys plus the installation keys created so far (blind index, responses).
    assert!(
        out.contains("rewrapped 5 key(s) to master version 2"),
        "{out}"
    );
    let versions: Vec<i32> = sqlx::query_scalar(
        "select kek_version from borrower_files union all select kek_version from keyring",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert!(versions.iter().all(|v| *v == 2), "{versions:?}");
    let wrapped: Vec<String> = sqlx::query_scalar("select wrapped_dek from borrower_files")
        .fetch_all(&app.state.db)
        .await
        .unwrap();
    assert!(
        wrapped.iter().all(|w| w.starts_with("local:v2:")),
        "{wrapped:?}"
    );
    // Resumable: a second run has nothing left to do.
    assert!(admin(&["rewrap"]).contains("rewrapped 0 key(s)"));

    // Every old lead still decrypts — through a fresh key cache, so from the rewrapped keys.
    let fresh = app_with_key(&key_file, &app).await;
    let reader = Client::new(&fresh, "agent-a1").await;
    for id in &ids {
        let lead: Value = reader
            .get(&format!("/v1/leads/{id}?reveal=ssn"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(lead["ssn"], SSN);
    }
}

/// A second app on the same database and key file (its caches start empty).
async fn app_with_key(
    key_file: &std::path::Path,
    first: &crate::helpers::TestApp,
) -> crate::helpers::TestApp {
    let key_file = key_file.to_owned();
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&first.state.db)
        .await
        .unwrap();
    crate::helpers::app()
        .settings(move |s| s.kms.local.master_key_file = key_file)
        .shared_database(db)
        .spawn()
        .await
}

/// `loanfolio admin keys ARGS` against the app's database (the key provider as `configure`
/// sets it); its stdout, after asserting success.
pub fn admin_keys(
    app: &crate::helpers::TestApp,
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loanfolio"));
    command
        .arg("--config")
        .arg(stack_config_path())
        .args(["admin", "keys"])
        .args(args)
        .env(
            "LOANFOLIO__DATABASE__URL",
            app.state.settings.database.url().unwrap().expose_secret(),
        );
    configure(&mut command);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
