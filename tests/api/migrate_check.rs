//! `loanfolio migrate --check` (issue 8): the project's real migrations are safe to run
//! beside the previous release; a deliberately unsafe migration (a test fixture) is refused
//! with each destructive step named. The check changes nothing.

use std::process::Command;

use crate::helpers::{TestDatabase, base_settings, database_url, repo_root, stack_config_path};

fn check(database: &TestDatabase, source: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loanfolio"));
    command
        .arg("--config")
        .arg(stack_config_path())
        .args(["migrate", "--check"])
        .env(
            "LOANFOLIO__DATABASE__URL",
            database_url(&base_settings(), &database.name),
        );
    if let Some(dir) = source {
        command.arg("--source").arg(repo_root().join(dir));
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn the_real_migrations_pass_the_check_and_the_check_changes_nothing() {
    let database = TestDatabase::empty().await;
    let (ok, out) = check(&database, None);
    assert!(ok, "{out}");
    let migrations = std::fs::read_dir(repo_root().join("migrations"))
        .unwrap()
        .count();
    assert_eq!(
        out.matches("safe beside the running release").count(),
        migrations,
        "{out}"
    );
    assert!(!out.contains("UNSAFE"), "{out}");
    // Nothing was applied.
    let (ok, again) = check(&database, None);
    assert!(ok && again == out, "{again}");
}

#[tokio::test]
async fn an_unsafe_migration_is_refused_with_each_destructive_step_named() {
    let database = TestDatabase::from_template().await;
    let (ok, out) = check(&database, Some("tests/fixtures/unsafe-migrations"));
    assert!(!ok, "{out}");
    assert_eq!(out.matches("UNSAFE").count(), 3, "{out}");
    assert!(out.contains("NOT NULL column without a default"), "{out}");
    assert!(out.contains("drops a column"), "{out}");
    assert!(out.contains("renames"), "{out}");
    // The current release's own migrations are all applied: the check against them passes.
    let (ok, out) = check(&database, None);
    assert!(ok, "{out}");
    assert!(out.contains("schema at version"), "{out}");
}

/// A migration that has landed is never edited (STYLE: "never edited once landed"): its sqlx
/// checksum is in every installed database, and a changed file makes `serve` not ready and
/// `migrate` refuse. A new migration adds a line here; an existing line never changes.
#[test]
fn landed_migrations_are_never_edited() {
    use sha2::Digest;
    const LANDED: &[(&str, &str)] = &[
        ("20261126150000_create_installation.sql", "e275811b29051ed9"),
        (
            "20261126160000_create_agents_and_idempotency_keys.sql",
            "049e99421f0951f8",
        ),
        ("20261126170000_create_sessions.sql", "d5bb3b2453472eb7"),
        (
            "20261126180000_create_borrower_files_and_keyring.sql",
            "3efef2b6c37920cf",
        ),
        (
            "20261126190000_create_leads_audit_outbox.sql",
            "8154b5a2fce48e69",
        ),
        ("20261126200000_create_runtime_role.sql", "911e23bd56eaa59c"),
        ("20261126210000_create_loans.sql", "abd1dcb14c204317"),
        ("20261126220000_create_inbox.sql", "e214585e9698e0f3"),
        ("20261126230000_create_upload_links.sql", "9029b0f762c5cb61"),
        ("20261126240000_create_documents.sql", "415328a8d066f45b"),
        (
            "20261126250000_create_document_requests.sql",
            "3f6d52b9ec66b906",
        ),
        (
            "20261126260000_create_credit_reports.sql",
            "2cacb4d86f2fa709",
        ),
        (
            "20261126270000_create_los_webhook_events.sql",
            "add1d791219b9798",
        ),
        (
            "20261126280000_create_notifications.sql",
            "14301dcfbb4edeeb",
        ),
        ("20261126290000_add_sms_consent.sql", "b1ec628d3b699908"),
        (
            "20261126300000_reminders_unsubscribe.sql",
            "bd1290aecb05952c",
        ),
        (
            "20261126310000_housekeeping_indexes.sql",
            "d84b245d0ae1d9ec",
        ),
        (
            "20261205100000_add_session_recheck_and_agent_disable.sql",
            "a8e664bf37a4d703",
        ),
    ];
    let dir = crate::helpers::repo_root().join("migrations");
    for (name, digest) in LANDED {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual: String = sha2::Sha256::digest(&bytes)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            &actual, digest,
            "{name} was edited after it landed: revert it, add a new migration"
        );
    }
}
