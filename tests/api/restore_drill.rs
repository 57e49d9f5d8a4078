//! The restore drills: leads, loans and documents; back up with `scripts/backup`; wipe;
//! restore with `scripts/restore` onto the empty stack; then every document downloads
//! byte-identical, every lead decrypts to what it was, and `admin audit verify` passes. Each
//! prints its duration against the RTO (15 minutes).
//! - `restore_drill`: s3s-fs and the `local` key file (wiped and restored from the backup).
//! - `restore_drill_with_openbao_and_garage`: Garage and a private OpenBao on raft storage.
//!   The transit key never leaves OpenBao: the backup records the key versions it needs, the
//!   OpenBao storage is wiped and restored from its own raft snapshot with the unseal key and
//!   operator token of a "DR kit" kept apart, and the restore refuses, changing nothing, while
//!   OpenBao lacks a version the data needs.
//!
//! Run by scripts/test as its own step, with --nocapture so the duration shows:
//! `cargo test --test api -- --ignored --nocapture restore_drill`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;

use crate::documents::{sample, settled, upload};
use crate::helpers::flows::{Client, full_lead};
use crate::helpers::openbao::PrivateBao;
use crate::helpers::{TestApp, TestDatabase, oidc, repo_root, stack_config_path};

const RTO: Duration = Duration::from_secs(15 * 60);

pub(crate) fn script(
    name: &str,
    app_settings: &loanfolio::config::Settings,
    key: &Path,
    dir: &Path,
) {
    let output = script_output(name, app_settings, dir, &[], |c| {
        c.env("LOANFOLIO__KMS__LOCAL__MASTER_KEY_FILE", key);
    });
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "scripts/{name}: {out}");
    println!("scripts/{name}: {}", out.trim());
}

/// scripts/backup or scripts/restore against `app_settings`' database and buckets.
pub(crate) fn script_output(
    name: &str,
    app_settings: &loanfolio::config::Settings,
    dir: &Path,
    args: &[&str],
    more: impl FnOnce(&mut Command),
) -> std::process::Output {
    use secrecy::ExposeSecret;
    let mut command = Command::new(repo_root().join("scripts").join(name));
    command
        .arg(stack_config_path())
        .arg(dir)
        .args(args)
        .env("LOANFOLIO_BIN", env!("CARGO_BIN_EXE_loanfolio"))
        .env(
            "LOANFOLIO__DATABASE__URL",
            app_settings.database.url().unwrap().expose_secret(),
        )
        .env(
            "LOANFOLIO__S3__QUARANTINE_BUCKET",
            &app_settings.s3.quarantine_bucket,
        )
        .env(
            "LOANFOLIO__S3__DOCUMENTS_BUCKET",
            &app_settings.s3.documents_bucket,
        )
        .env("LOANFOLIO__S3__ENDPOINT", app_settings.s3.endpoint.as_str())
        .env(
            "LOANFOLIO__S3__ACCESS_KEY_ID",
            &app_settings.s3.access_key_id,
        )
        .env(
            "LOANFOLIO__S3__SECRET_ACCESS_KEY",
            app_settings.s3.secret_access_key().unwrap().expose_secret(),
        )
        .env("LOANFOLIO__S3__REGION", &app_settings.s3.region);
    more(&mut command);
    command.output().unwrap()
}

async fn documents_of(app: &TestApp, token: &str, ids: &[String]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for id in ids {
        let response = app
            .client
            .get(app.url(&format!("/v1/documents/{id}/content")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "document {id}");
        out.push(response.bytes().await.unwrap().to_vec());
    }
    out
}

async fn leads_of(app: &TestApp, ids: &[String]) -> Vec<Value> {
    let agent = Client::new(app, "agent-a1").await;
    let mut out = Vec::new();
    for id in ids {
        let response = agent.get(&format!("/v1/leads/{id}?reveal=ssn")).await;
        assert_eq!(response.status(), 200, "lead {id}");
        let mut lead: Value = response.json().await.unwrap();
        // Read-side bookkeeping, not the borrower's data.
        lead.as_object_mut().unwrap().remove("updated_at");
        out.push(lead);
    }
    out
}

/// Every object of both buckets deleted (the disaster).
pub(crate) async fn empty_both_buckets(storage: &loanfolio::storage::Storage) {
    for store in [&storage.quarantine, &storage.documents] {
        let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
        for meta in objects {
            store.delete(&meta.location).await.unwrap();
        }
        assert!(
            store
                .list(None)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// The restored installation as a new service process sees it: ready, every document
/// byte-identical, every lead as before, the audit chain intact (its report returned).
async fn restored_intact(
    app: &TestApp,
    token: &str,
    document_ids: &[String],
    originals: &[Vec<u8>],
    lead_ids: &[String],
    leads_before: &[Value],
) -> String {
    let (status, readyz) = app.readyz().await;
    assert_eq!(status, 200, "{readyz}");
    assert_eq!(
        documents_of(app, token, document_ids).await,
        originals,
        "every document downloads byte-identical"
    );
    assert_eq!(
        leads_of(app, lead_ids).await,
        leads_before,
        "every lead decrypts"
    );
    audit_verify(app)
}

/// `admin audit verify` on the app's database: the hash chain is intact.
pub(crate) fn audit_verify(app: &TestApp) -> String {
    use secrecy::ExposeSecret;
    let verify = Command::new(env!("CARGO_BIN_EXE_loanfolio"))
        .arg("--config")
        .arg(stack_config_path())
        .args(["admin", "audit", "verify"])
        .env(
            "LOANFOLIO__DATABASE__URL",
            app.state.settings.database.url().unwrap().expose_secret(),
        )
        .output()
        .unwrap();
    let verified = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(verify.status.success(), "{verified}");
    verified
}

/// Borrowers `range`, each with a lead, a loan and a scanned document (bytes differ by i).
pub(crate) async fn borrowers(
    app: &TestApp,
    token: &str,
    agent: &Client<'_>,
    range: std::ops::Range<u64>,
) -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
    let (mut lead_ids, mut document_ids, mut originals) = (Vec::new(), Vec::new(), Vec::new());
    for i in range {
        let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
        let lead_id = lead["id"].as_str().unwrap().to_owned();
        let loan: Value = app
            .create(
                token,
                "/v1/loans",
                &serde_json::json!({"lead_id": lead_id, "loan_type": "conventional", "amount": "310000",
                    "property": {"line1": "9 Elm St", "city": "Springfield", "state": "IL", "postal_code": "62704"}}),
            )
            .await
            .json()
            .await
            .unwrap();
        let loan_id = loan["id"].as_str().unwrap().to_owned();
        let bytes = sample(b"%PDF-1.7\n%", 100 + i, 120_000 + i as usize * 777);
        let id = upload(app, token, &loan_id, &bytes, "application/pdf", bytes.len()).await;
        assert_eq!(settled(app, token, &id).await["state"], "available");
        lead_ids.push(lead_id);
        document_ids.push(id);
        originals.push(bytes);
    }
    (lead_ids, document_ids, originals)
}

#[tokio::test]
#[ignore = "the restore drill: run by scripts/test as its own step (--ignored --nocapture) so it prints its duration"]
async fn restore_drill() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("master.key");
    let stack = crate::helpers::base_settings();
    std::fs::copy(&stack.kms.local.master_key_file, &key).unwrap();
    let mut app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .settings(|s| s.kms.local.master_key_file = key.clone())
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let agent = Client::new(&app, "agent-a1").await;

    // Three borrowers, each with a loan and a document.
    let (lead_ids, document_ids, originals) = borrowers(&app, &token, &agent, 0..3).await;
    let leads_before = leads_of(&app, &lead_ids).await;
    assert_eq!(documents_of(&app, &token, &document_ids).await, originals);
    let settings = app.state.settings.clone();
    let (quarantine, documents) = (
        settings.s3.quarantine_bucket.clone(),
        settings.s3.documents_bucket.clone(),
    );
    let storage = app.state.storage.clone();
    app.stop().await.unwrap();

    let drill = Instant::now();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup");
    script("backup", &settings, &key, &backup);
    let backed_up = drill.elapsed();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o700,
            "the backup holds the key: the operator's eyes only"
        );
    }

    // Disaster: the database (dropped with the app), every object and the key file are gone.
    drop(app);
    empty_both_buckets(&storage).await;
    std::fs::remove_file(&key).unwrap();
    let empty = TestDatabase::empty().await;
    let mut target = (*settings).clone();
    target.set_database_url(crate::helpers::database_url(&settings, &empty.name));
    let restore_started = Instant::now();
    script("restore", &target, &key, &backup);
    let restored = restore_started.elapsed();

    // The restored installation, as a new service process would start on it.
    let app = crate::helpers::app()
        .database(empty)
        .buckets(&quarantine, &documents)
        .settings(|s| s.kms.local.master_key_file = key.clone())
        .spawn()
        .await;
    let verified = restored_intact(
        &app,
        &token,
        &document_ids,
        &originals,
        &lead_ids,
        &leads_before,
    )
    .await;
    let total = drill.elapsed();
    println!(
        "restore drill: backup {:.1} s, wipe + restore {:.1} s (restore alone {:.1} s), verified; total {:.1} s against an RTO of {} s ({:.1} %); audit: {}",
        backed_up.as_secs_f64(),
        (total - backed_up).as_secs_f64(),
        restored.as_secs_f64(),
        total.as_secs_f64(),
        RTO.as_secs(),
        100.0 * total.as_secs_f64() / RTO.as_secs_f64(),
        verified.trim()
    );
    assert!(total < RTO);
}

/// The service's settings on Garage and the OpenBao at `address`, with the host's AppRole
/// identity in `identity`.
fn on_openbao_and_garage(
    address: String,
    identity: PathBuf,
) -> impl FnOnce(&mut loanfolio::config::Settings) {
    move |s: &mut loanfolio::config::Settings| {
        crate::helpers::garage::use_garage(s);
        s.kms.provider = loanfolio::config::KmsProvider::Vault;
        s.kms.vault.address = address.parse().unwrap();
        s.kms.vault.key_name = "loanfolio".into();
        s.kms.vault.role_id_file = Some(identity.join("role-id"));
        s.kms.vault.secret_id_file = Some(identity.join("secret-id"));
    }
}

/// The scripts' environment for the OpenBao at `address` with the AppRole identity in
/// `identity`.
fn vault_env(address: &str, identity: &Path) -> impl FnOnce(&mut Command) + use<> {
    let address = address.to_owned();
    let identity = identity.to_owned();
    move |c: &mut Command| {
        c.env("LOANFOLIO__KMS__PROVIDER", "vault")
            .env("LOANFOLIO__KMS__VAULT__ADDRESS", &address)
            .env("LOANFOLIO__KMS__VAULT__KEY_NAME", "loanfolio")
            .env(
                "LOANFOLIO__KMS__VAULT__ROLE_ID_FILE",
                identity.join("role-id"),
            )
            .env(
                "LOANFOLIO__KMS__VAULT__SECRET_ID_FILE",
                identity.join("secret-id"),
            );
    }
}

/// A private OpenBao on raft storage in `bao_dir`, initialised, unsealed and configured for
/// the service (its AppRole identity in `identity`), with its DR kit written to `dr_kit`:
/// the OpenBao, its root token and the operator token.
async fn openbao_with_a_dr_kit(
    bao_dir: &Path,
    dr_kit: &Path,
    identity: &Path,
) -> (PrivateBao, String, String) {
    std::fs::create_dir_all(dr_kit).unwrap();
    let bao = PrivateBao::start(bao_dir).await;
    let (unseal_key, root) = bao.init().await;
    bao.unseal(&unseal_key).await;
    let operator = bao.configure(&root, identity).await;
    std::fs::write(dr_kit.join("unseal-key"), &unseal_key).unwrap();
    std::fs::write(dr_kit.join("root-token"), &root).unwrap();
    std::fs::write(dr_kit.join("operator-token"), &operator).unwrap();
    (bao, root, operator)
}

/// One borrower under key version 1, a rotation, two under version 2: the backup needs both.
async fn borrowers_across_a_rotation(
    app: &TestApp,
    token: &str,
    agent: &Client<'_>,
    bao: &PrivateBao,
    operator: &str,
) -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
    let (mut lead_ids, mut document_ids, mut originals) = borrowers(app, token, agent, 0..1).await;
    let rotate = bao
        .call(
            operator,
            reqwest::Method::POST,
            "transit/keys/loanfolio/rotate",
            None,
        )
        .await;
    assert!(rotate.status().is_success(), "rotate: {}", rotate.status());
    let (more_leads, more_documents, more_originals) = borrowers(app, token, agent, 1..3).await;
    lead_ids.extend(more_leads);
    document_ids.extend(more_documents);
    originals.extend(more_originals);
    (lead_ids, document_ids, originals)
}

/// scripts/backup on OpenBao: the manifest names the key versions the data needs and holds
/// no key material.
fn back_up_on_openbao(
    settings: &loanfolio::config::Settings,
    backup: &Path,
    address: &str,
    identity: &Path,
) {
    let output = script_output(
        "backup",
        settings,
        backup,
        &[],
        vault_env(address, identity),
    );
    assert!(
        output.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["transit"]["versions"],
        serde_json::json!([1, 2]),
        "{manifest}"
    );
    assert!(
        manifest["files"]
            .as_object()
            .unwrap()
            .keys()
            .all(|f| f == "database.dump" || f.starts_with("buckets/")),
        "no key material in the backup: {manifest}"
    );
}

/// scripts/restore of `backup` onto `target`, with the AppRole identity in `identity` on the
/// OpenBao at `address`.
struct VaultRestore<'a> {
    target: &'a loanfolio::config::Settings,
    backup: &'a Path,
    address: &'a str,
    identity: &'a Path,
}

impl VaultRestore<'_> {
    fn run(&self, vault_token_file: &Path) -> std::process::Output {
        script_output(
            "restore",
            self.target,
            self.backup,
            &["--vault-token-file", vault_token_file.to_str().unwrap()],
            vault_env(self.address, self.identity),
        )
    }

    fn succeeds(&self, vault_token_file: &Path) {
        let output = self.run(vault_token_file);
        assert!(
            output.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A new, empty OpenBao on `bao_dir`, unsealed: it and its root token.
async fn fresh_openbao(bao_dir: &Path) -> (PrivateBao, String) {
    let bao = PrivateBao::start(bao_dir).await;
    let (new_unseal_key, new_root) = bao.init().await;
    bao.unseal(&new_unseal_key).await;
    (bao, new_root)
}

/// An operator token (its file) of the new OpenBao, whose fresh `loanfolio` key has version
/// 1 only.
async fn stray_operator_token(bao: &PrivateBao, root: &str, work: &Path) -> PathBuf {
    let stray_identity = work.join("stray");
    let stray_operator = bao.configure(root, &stray_identity).await;
    let stray_token = work.join("stray-operator-token");
    std::fs::write(&stray_token, &stray_operator).unwrap();
    stray_token
}

/// Restoring Loanfolio first, onto a key service that lacks the versions, is refused
/// before anything changes.
async fn assert_refused_while_openbao_lacks_version_2(
    restore: &VaultRestore<'_>,
    stray_token: &Path,
    storage: &loanfolio::storage::Storage,
) {
    use secrecy::ExposeSecret;
    use sqlx::Connection;
    let refused = restore.run(stray_token);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success(),
        "a restore onto a Vault without version 2 passed"
    );
    assert!(
        said.contains("missing [2]") && said.contains("Nothing was changed"),
        "{said}"
    );
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'",
    )
    .fetch_one(
        &mut sqlx::PgConnection::connect(restore.target.database.url().unwrap().expose_secret())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(tables, 0, "the refused restore changed the database");
    for store in [&storage.quarantine, &storage.documents] {
        assert!(
            store
                .list(None)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .is_empty(),
            "the refused restore wrote objects"
        );
    }
}

/// The Vault team's runbook: restore the snapshot (force: another cluster's), which
/// brings back the original keys — unseal with the DR kit's key, its tokens work again.
async fn restore_the_snapshot_with_the_dr_kit(
    bao: &PrivateBao,
    new_root: &str,
    snapshot: Vec<u8>,
    dr_kit: &Path,
) {
    bao.restore_snapshot(new_root, snapshot).await;
    // The node takes the snapshot's keyring and seals itself (a moment later): unseal
    // with the DR kit's key; until then nothing answers with the old cluster's data.
    let original_key = std::fs::read_to_string(dr_kit.join("unseal-key")).unwrap();
    let mut unsealed_with_the_dr_kit = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if bao.sealed().await {
            bao.unseal(&original_key).await;
            unsealed_with_the_dr_kit = true;
        }
        let health = reqwest::get(format!("{}/v1/sys/health", bao.address))
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if unsealed_with_the_dr_kit && health == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OpenBao after the snapshot restore: health {health:?}, unsealed with the DR kit: {unsealed_with_the_dr_kit}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "the restore drill on OpenBao and Garage: run by scripts/test as its own step (--ignored --nocapture)"]
async fn restore_drill_with_openbao_and_garage() {
    let work = tempfile::tempdir().unwrap();
    // What the drill wipes (OpenBao's storage) and what it keeps apart: the DR kit (unseal
    // key, root and operator tokens, as the Vault team keeps them) and the service host's
    // AppRole identity (its credentials, as Ansible installs them).
    let bao_dir = work.path().join("openbao");
    let dr_kit = work.path().join("dr-kit");
    let identity = work.path().join("host-credentials");
    let (bao, root, operator) = openbao_with_a_dr_kit(&bao_dir, &dr_kit, &identity).await;

    let mut app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .settings(on_openbao_and_garage(bao.address.clone(), identity.clone()))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let agent = Client::new(&app, "agent-a1").await;
    let (lead_ids, document_ids, originals) =
        borrowers_across_a_rotation(&app, &token, &agent, &bao, &operator).await;
    let leads_before = leads_of(&app, &lead_ids).await;
    let settings = app.state.settings.clone();
    let (quarantine, documents) = (
        settings.s3.quarantine_bucket.clone(),
        settings.s3.documents_bucket.clone(),
    );
    let storage = app.state.storage.clone();
    app.stop().await.unwrap();

    let drill = Instant::now();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup");
    back_up_on_openbao(&settings, &backup, &bao.address, &identity);
    // The Vault team's side: a raft snapshot (encrypted by OpenBao's own barrier key).
    let snapshot = bao.snapshot(&root).await;
    let backed_up = drill.elapsed();

    // Disaster: the database, every object of both buckets and OpenBao's storage are gone.
    drop(app);
    empty_both_buckets(&storage).await;
    drop(bao);
    std::fs::remove_dir_all(&bao_dir).unwrap();

    // A new, empty OpenBao on the same (wiped) folder.
    let restore_started = Instant::now();
    let (bao, new_root) = fresh_openbao(&bao_dir).await;
    let empty = TestDatabase::empty().await;
    let mut target = (*settings).clone();
    target.set_database_url(crate::helpers::database_url(&settings, &empty.name));
    let restore = VaultRestore {
        target: &target,
        backup: &backup,
        address: &bao.address,
        identity: &identity,
    };

    let stray_token = stray_operator_token(&bao, &new_root, work.path()).await;
    assert_refused_while_openbao_lacks_version_2(&restore, &stray_token, &storage).await;

    restore_the_snapshot_with_the_dr_kit(&bao, &new_root, snapshot, &dr_kit).await;
    restore.succeeds(&dr_kit.join("operator-token"));
    let restored = restore_started.elapsed();

    let app = crate::helpers::app()
        .database(empty)
        .buckets(&quarantine, &documents)
        .settings(on_openbao_and_garage(bao.address.clone(), identity.clone()))
        .spawn()
        .await;
    let verified = restored_intact(
        &app,
        &token,
        &document_ids,
        &originals,
        &lead_ids,
        &leads_before,
    )
    .await;
    let total = drill.elapsed();
    println!(
        "restore drill (OpenBao + Garage): backup + raft snapshot {:.1} s, wipe + restore {:.1} s (new OpenBao, snapshot, Loanfolio restore {:.1} s), verified; total {:.1} s against an RTO of {} s ({:.1} %); audit: {}",
        backed_up.as_secs_f64(),
        (total - backed_up).as_secs_f64(),
        restored.as_secs_f64(),
        total.as_secs_f64(),
        RTO.as_secs(),
        100.0 * total.as_secs_f64() / RTO.as_secs_f64(),
        verified.trim()
    );
    assert!(total < RTO);
}
