//! Disposal against backups (docs/operations/retention.md): a backup taken before a
//! disposal, restored after it, yields the file still disposed — `admin restore` reads the
//! outside ledger first, refuses without it, and re-applies it; and after a key epoch
//! (rotate, rewrap, `admin keys retire`) an old backup's wrapped key of the file no longer
//! unwraps, while every live file still reads.

use serde_json::Value;
use uuid::Uuid;

use crate::disposal::{disposing, file_with_loan, move_loan, round_at};
use crate::helpers::flows::{Client, full_lead};
use crate::helpers::openbao::{self, TestKey};
use crate::helpers::{TestDatabase, app, oidc};
use crate::restore_drill::{audit_verify, borrowers, script, script_output};

#[tokio::test]
async fn a_backup_from_before_a_disposal_restores_with_the_file_still_disposed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let ledger = dir.path().join("disposals.jsonl");
    std::fs::copy(
        &crate::helpers::base_settings().kms.local.master_key_file,
        &key,
    )
    .unwrap();
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .settings(disposing(&ledger))
        .settings({
            let key = key.clone();
            move |s| s.kms.local.master_key_file = key
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let agent = Client::new(&app, "agent-a1").await;
    // Two borrowers with a loan and a document each; the first one's loan is withdrawn.
    let (leads, documents, originals) = borrowers(&app, &token, &agent, 0..2).await;
    let loan_of_first: Value = agent
        .get(&format!("/v1/documents/{}", documents[0]))
        .await
        .json()
        .await
        .unwrap();
    move_loan(
        &app,
        "agent-a1",
        loan_of_first["loan_id"].as_str().unwrap(),
        "withdrawn",
    )
    .await;

    let backup = dir.path().join("backup");
    let settings = app.state.settings.clone();
    script("backup", &settings, &key, &backup);
    assert_eq!(round_at(&app, 1200).await.disposed, 1);

    // The database is lost; a restore without the ledger is refused, changing nothing.
    let empty = TestDatabase::empty().await;
    let mut target = (*settings).clone();
    target.set_database_url(crate::helpers::database_url(&settings, &empty.name));
    let missing = dir.path().join("no-such-ledger.jsonl");
    let refused = script_output("restore", &target, &backup, &[], |c| {
        c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", &key)
            .env("LOANFOLIO__RETENTION__LEDGER_PATH", &missing);
    });
    let said = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success() && said.contains("disposal ledger"),
        "{said}"
    );
    let pool = sqlx::PgPool::connect(&crate::helpers::database_url(&settings, &empty.name))
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(tables, 0, "nothing restored");

    let restored = script_output("restore", &target, &backup, &[], |c| {
        c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", &key)
            .env("LOANFOLIO__RETENTION__LEDGER_PATH", &ledger);
    });
    let said = String::from_utf8_lossy(&restored.stdout).into_owned();
    assert!(
        restored.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(said.contains("1 disposal(s) re-applied"), "{said}");

    a_stale_ledger_is_refused(&settings, &key, dir.path()).await;
    let back = app_on_restored(&app, empty, &key).await;
    the_first_is_disposed_and_the_second_intact(&back, &leads, &documents, &originals).await;
    after_an_epoch_the_old_backup_is_refused(&back, &settings, &key, &backup).await;
}

/// A key epoch on the local key file (rotate, rewrap, retire): the backup taken before it
/// needs a version the key file no longer holds, and its restore says so, changing nothing.
async fn after_an_epoch_the_old_backup_is_refused(
    back: &crate::helpers::TestApp,
    settings: &loanfolio::config::Settings,
    key: &std::path::Path,
    backup: &std::path::Path,
) {
    let local = |c: &mut std::process::Command| {
        c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", key);
    };
    crate::keys::admin_keys(back, &["rotate"], local);
    crate::keys::admin_keys(back, &["rewrap"], local);
    let out = crate::keys::admin_keys(back, &["retire", "--below", "2"], local);
    assert!(
        out.contains("retired local master key versions below 2"),
        "{out}"
    );
    let empty = TestDatabase::empty().await;
    let mut target = settings.clone();
    target.set_database_url(crate::helpers::database_url(settings, &empty.name));
    let refused = script_output("restore", &target, backup, &[], |c| {
        c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", key).env(
            "LOANFOLIO__RETENTION__LEDGER_PATH",
            settings.retention.ledger_path.as_ref().unwrap(),
        );
    });
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("need master key version(s) [1]") && said.contains("retired"),
        "{said}"
    );
}

/// A backup taken after the disposal, restored with a ledger older than it (an old copy),
/// is refused before anything changes; so is one restored with no ledger configured.
async fn a_stale_ledger_is_refused(
    settings: &loanfolio::config::Settings,
    key: &std::path::Path,
    dir: &std::path::Path,
) {
    let backup = dir.join("after");
    script("backup", settings, key, &backup);
    let stale = dir.join("stale.jsonl");
    std::fs::write(&stale, "").unwrap();
    let empty = TestDatabase::empty().await;
    let mut target = settings.clone();
    target.set_database_url(crate::helpers::database_url(settings, &empty.name));
    for ledger in [Some(&stale), None] {
        let refused = script_output("restore", &target, &backup, &[], |c| {
            c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", key);
            match ledger {
                Some(path) => c.env("LOANFOLIO__RETENTION__LEDGER_PATH", path),
                None => c.env_remove("LOANFOLIO__RETENTION__LEDGER_PATH"),
            };
        });
        let said = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert!(!refused.status.success(), "{said}");
        let expected = if ledger.is_some() {
            "older than this backup"
        } else {
            "1 disposal(s)"
        };
        assert!(said.contains(expected), "{said}");
    }
}

/// A new service process on the restored database and the same buckets.
async fn app_on_restored(
    first: &crate::helpers::TestApp,
    database: TestDatabase,
    key: &std::path::Path,
) -> crate::helpers::TestApp {
    let key = key.to_owned();
    app()
        .database(database)
        .buckets(
            &first.state.settings.s3.quarantine_bucket,
            &first.state.settings.s3.documents_bucket,
        )
        .settings(move |s| s.kms.local.master_key_file = key)
        .spawn()
        .await
}

async fn the_first_is_disposed_and_the_second_intact(
    app: &crate::helpers::TestApp,
    leads: &[String],
    documents: &[String],
    originals: &[Vec<u8>],
) {
    let agent = Client::new(app, "agent-a1").await;
    assert_eq!(
        agent.get(&format!("/v1/leads/{}", leads[0])).await.status(),
        404
    );
    assert_eq!(
        agent.get(&format!("/v1/leads/{}", leads[1])).await.status(),
        200
    );
    let first = Uuid::parse_str(&leads[0]).unwrap();
    let (name, replayed): (String, bool) = sqlx::query_as(
        "select l.first_name, d.replayed from leads l join disposals d on d.lead_id = l.id
          where l.id = $1",
    )
    .bind(first)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!((name.as_str(), replayed), ("", true));
    // The restored buckets brought the first file's object back; the replay deleted it.
    let objects = crate::vault::documents_bucket(app).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    let response = agent
        .get(&format!("/v1/documents/{}/content", documents[1]))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().to_vec(), originals[1]);
    assert!(audit_verify(app).contains("verified"));
}

/// The report's `backups`: `files` disposed files still in backups that open, and the next
/// epoch dated ahead while any is; after an epoch, its date.
async fn backups_hold(app: &crate::helpers::TestApp, files: i64) {
    let report = loanfolio::retention::ops::report_unchecked(&app.state)
        .await
        .unwrap();
    let backups = &report.backups;
    assert_eq!(backups.disposed_still_in_backups, files, "{backups:?}");
    assert_eq!(
        backups.last_key_epoch_at.is_some(),
        files == 0,
        "{backups:?}"
    );
    match &backups.gone_from_backups_by {
        Some(due) => assert!(files > 0 && due.as_str() > report.generated_at.as_str()),
        None => assert_eq!(files, 0),
    }
}

#[tokio::test]
async fn after_a_key_epoch_an_old_backups_key_of_the_file_no_longer_unwraps() {
    let key = TestKey::create().await;
    let approle = key.approle("1h", "24h").await;
    let (address, _) = openbao::root();
    let dir = approle.path().to_owned();
    let ledger = dir.join("disposals.jsonl");
    let app = app()
        .settings(|s| key.use_in(s, &address, &dir))
        .settings(disposing(&ledger))
        .spawn()
        .await;
    let (disposed, _) = file_with_loan(&app, full_lead(), &["withdrawn"]).await;
    let (kept, _) = file_with_loan(&app, full_lead(), &[]).await;
    let disposed_id = Uuid::parse_str(&disposed).unwrap();
    // What a backup taken now holds of the file: its wrapped key.
    let in_backup: String =
        sqlx::query_scalar("select wrapped_dek from borrower_files where id = $1")
            .bind(disposed_id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert!(in_backup.starts_with("vault:v1:"));
    assert_eq!(round_at(&app, 1200).await.disposed, 1);

    let token_file = dir.join("operator-token");
    std::fs::write(&token_file, key.operator_token().await).unwrap();
    let admin = |args: &[&str]| {
        crate::keys::admin_keys(
            &app,
            args,
            key.operator_command(&address, &dir, &token_file),
        )
    };
    // Until the backup's version is retired, the old wrapped key still opens in Vault.
    let operator = loanfolio::crypto::vault::VaultKeys::new(
        &app.state.settings.kms.vault,
        &key.operator_token().await,
    )
    .unwrap();
    let (_, service) = key.service_keys(&dir);
    assert!(service.unwrap_key(&in_backup, &disposed).await.is_ok());
    backups_hold(&app, 1).await;
    admin(&["rotate"]);
    let wrapped_below = || loanfolio::crypto::keyring::KeyRing::wrapped_below(&app.state.db, 2);
    assert!(
        wrapped_below().await.unwrap() > 0,
        "retire would be refused now"
    );
    admin(&["rewrap"]);
    assert_eq!(
        wrapped_below().await.unwrap(),
        0,
        "the disposed file's key does not count"
    );
    let out = admin(&["retire", "--below", "2"]);
    assert!(
        out.contains("retired vault master key versions below 2"),
        "{out}"
    );
    assert_eq!(operator.versions().await.unwrap(), (vec![2], 2));
    backups_hold(&app, 0).await;

    assert!(
        service.unwrap_key(&in_backup, &disposed).await.is_err(),
        "the old backup's key of the disposed file no longer unwraps"
    );
    every_live_file_still_reads(&app, &key, &address, &dir, &kept).await;
}

/// Every live file was rewrapped and still reads, through a process with a cold cache.
async fn every_live_file_still_reads(
    app: &crate::helpers::TestApp,
    key: &TestKey,
    address: &str,
    dir: &std::path::Path,
    kept: &str,
) {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let fresh = crate::helpers::app()
        .settings(|s| key.use_in(s, address, dir))
        .shared_database(db)
        .buckets(
            &app.state.settings.s3.quarantine_bucket,
            &app.state.settings.s3.documents_bucket,
        )
        .spawn()
        .await;
    let reader = Client::new(&fresh, "agent-a1").await;
    let lead: Value = reader
        .get(&format!("/v1/leads/{kept}?reveal=ssn"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lead["ssn"], crate::helpers::flows::SSN);
}
