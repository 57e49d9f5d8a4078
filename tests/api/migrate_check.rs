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
