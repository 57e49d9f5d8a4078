//! The `vault` key provider against the local OpenBao (Vault's API): the contract, the
//! service's and the operator's policies of compose/vault/*.hcl, AppRole tokens kept alive,
//! rotation and rewrap through the CLI, and OpenBao cut off behind the fault proxy.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::documents::{settled_within, upload};
use crate::helpers::flows::{Client, SSN, full_lead};
use crate::helpers::openbao::{self, TestKey};
use crate::helpers::proxy::FaultProxy;
use crate::helpers::{TestApp, app, assert_problem, eventually, oidc};
use crate::keys::admin_keys;
use loanfolio::crypto::vault::VaultKeys;

#[tokio::test]
async fn vault_provider_contract() {
    let key = TestKey::create().await;
    let approle = key.approle("1h", "24h").await;
    let (settings, service) = key.service_keys(approle.path());

    let (plain, wrapped, version) = service.generate("file-1").await.unwrap();
    assert_eq!(version, 1);
    assert!(wrapped.starts_with("vault:v1:"), "{wrapped}");
    assert_eq!(
        *service.unwrap_key(&wrapped, "file-1").await.unwrap(),
        *plain
    );
    assert!(
        service.unwrap_key(&wrapped, "file-2").await.is_err(),
        "a data key is bound to its context (the borrower file)"
    );
    let (other, _, _) = service.generate("file-1").await.unwrap();
    assert_ne!(*other, *plain, "every data key is fresh");

    // The service's policy stops at datakey and decrypt.
    assert!(service.rotate().await.is_err(), "the service cannot rotate");
    assert!(service.rewrap(&wrapped, "file-1").await.is_err());
    assert!(service.newest_version().await.is_err());
    // …and after those refusals its token still unwraps.
    assert_eq!(
        *service.unwrap_key(&wrapped, "file-1").await.unwrap(),
        *plain
    );

    let operator = VaultKeys::new(&settings.kms.vault, &key.operator_token().await).unwrap();
    assert!(
        operator.unwrap_key(&wrapped, "file-1").await.is_err(),
        "the operator never sees a data key"
    );
    assert!(operator.generate("file-1").await.is_err());
    operator.rotate().await.unwrap();
    assert_eq!(operator.newest_version().await.unwrap(), 2);
    let (rewrapped, newer) = operator.rewrap(&wrapped, "file-1").await.unwrap();
    assert_eq!(newer, 2);
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    assert_eq!(
        *service.unwrap_key(&rewrapped, "file-1").await.unwrap(),
        *plain
    );
    let (_, _, version) = service.generate("file-3").await.unwrap();
    assert_eq!(
        version, 2,
        "new data keys are wrapped under the newest version"
    );
}

#[tokio::test]
async fn an_approle_token_with_a_10s_ttl_is_kept_alive_through_60s_of_traffic() {
    let key = TestKey::create().await;
    // A 25 s maximum: within the minute the token is renewed AND replaced by new logins.
    let approle = key.approle("10s", "25s").await;
    let (_, service) = key.service_keys(approle.path());
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let context = format!("file-{calls}");
        let (plain, wrapped, _) = service
            .generate(&context)
            .await
            .unwrap_or_else(|e| panic!("after {:?}: {e:#}", started.elapsed()));
        let unwrapped = service
            .unwrap_key(&wrapped, &context)
            .await
            .unwrap_or_else(|e| panic!("after {:?}: {e:#}", started.elapsed()));
        assert_eq!(*unwrapped, *plain);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (logins, renewals) = service.token_events();
    assert!(calls >= 60, "{calls} calls");
    assert!(
        logins >= 3,
        "a new login each time the 25 s maximum neared: {logins}"
    );
    assert!(renewals >= 3, "renewed in between: {renewals}");
}

/// A refresh that fails while the token is still valid costs no request: calls go on with
/// the current token until it expires; then they fail fast (one login attempt per 5 s, not
/// one per call); a fixed secret id brings the next login. The role's maximum equals its
/// TTL, so every refresh is a login (renewal cannot extend it).
#[tokio::test]
async fn a_failed_refresh_keeps_serving_with_the_valid_token_and_backs_off_after_expiry() {
    let key = TestKey::create().await;
    let approle = key.approle("8s", "8s").await;
    let (_, service) = key.service_keys(approle.path());
    let started = Instant::now();
    service.generate("file-0").await.unwrap();
    assert_eq!(service.token_events().0, 1);
    // From now on every login is refused.
    let secret_id_file = approle.path().join("secret-id");
    let secret_id = std::fs::read_to_string(&secret_id_file).unwrap();
    std::fs::write(&secret_id_file, "00000000-0000-0000-0000-000000000000").unwrap();
    // The refresh is due after 2/3 of 8 s (≈5.3 s); the token is valid until ≈8 s.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(started.elapsed())).await;
    // (It is not presented in its last second.)
    while started.elapsed() < Duration::from_millis(6800) {
        service
            .generate("file-1")
            .await
            .unwrap_or_else(|e| panic!("at {:?}, the token still valid: {e:#}", started.elapsed()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(service.token_events().0, 1, "no login succeeded meanwhile");
    // Expired: calls fail, each at once.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(started.elapsed())).await;
    for _ in 0..20 {
        let call = Instant::now();
        assert!(service.generate("file-2").await.is_err());
        assert!(
            call.elapsed() < Duration::from_millis(500),
            "{:?}",
            call.elapsed()
        );
    }
    std::fs::write(&secret_id_file, secret_id).unwrap();
    assert!(
        eventually(12, || async { service.generate("file-3").await.is_ok() }).await,
        "a fixed secret id logs in again"
    );
    assert_eq!(service.token_events().0, 2);
}

#[tokio::test]
async fn a_refused_approle_login_shows_kms_down_and_recovers_when_the_secret_id_is_fixed() {
    let key = TestKey::create().await;
    let approle = key.approle("1h", "24h").await;
    let secret_id_file = approle.path().join("secret-id");
    let secret_id = std::fs::read_to_string(&secret_id_file).unwrap();
    std::fs::write(&secret_id_file, "00000000-0000-0000-0000-000000000000").unwrap();
    let (address, _) = openbao::root();
    let dir = approle.path().to_owned();
    let app = app()
        .settings(|s| key.use_in(s, &address, &dir))
        .spawn()
        .await;
    // A degradable dependency: the service stays ready (reads of cached keys, sign-in,
    // uploads into quarantine go on) and says what is down.
    let (_, body) = app.readyz().await;
    assert_eq!(body["dependencies"]["kms"]["status"], "down", "{body:#}");
    let agent = Client::new(&app, "agent-a1").await;
    let refused = agent.create(full_lead()).await;
    assert_eq!(refused.status(), 503);
    assert_problem(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    )
    .await;
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(leads, 0, "nothing is written without its key");

    // The files are read at each login: a fixed secret id needs no restart.
    std::fs::write(&secret_id_file, secret_id).unwrap();
    eventually!(
        10,
        || async { app.readyz().await.1["dependencies"]["kms"]["status"] == "up" },
        "kms is not up again after the secret id was fixed"
    );
    assert_eq!(agent.create(full_lead()).await.status(), 201);
}

/// `loanfolio admin keys rotate` + `rewrap` with the operator's token, while leads exist:
/// afterwards no data key is wrapped under version 1, version 1 can be retired
/// (min_decryption_version = 2), and every lead still decrypts.
#[tokio::test]
async fn rotate_then_rewrap_against_transit_keeps_every_lead_readable() {
    let key = TestKey::create().await;
    let approle = key.approle("1h", "24h").await;
    let (address, _) = openbao::root();
    let dir = approle.path().to_owned();
    let app = app()
        .settings(|s| key.use_in(s, &address, &dir))
        .spawn()
        .await;
    let agent = Client::new(&app, "agent-a1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
        ids.push(lead["id"].as_str().unwrap().to_owned());
    }
    let operator_token_file = approle.path().join("operator-token");
    std::fs::write(&operator_token_file, key.operator_token().await).unwrap();

    let admin = |args: &[&str]| {
        admin_keys(
            &app,
            args,
            key.operator_command(&address, &dir, &operator_token_file),
        )
    };
    let stored: i64 = sqlx::query_scalar(
        "select (select count(*) from borrower_files) + (select count(*) from keyring)",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert!(stored >= 3);
    admin(&["rotate"]);
    // The newest version is read from the transit key with the operator's token.
    let out = admin(&["rewrap"]);
    assert!(
        out.contains(&format!("rewrapped {stored} key(s) to master version 2")),
        "{out}"
    );
    let wrapped: Vec<String> = sqlx::query_scalar(
        "select wrapped_dek from borrower_files union all select wrapped_key from keyring",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert!(
        wrapped.iter().all(|w| w.starts_with("vault:v2:")),
        "{wrapped:?}"
    );
    assert!(admin(&["rewrap"]).contains("rewrapped 0 key(s)"));

    // Retire version 1: OpenBao refuses to decrypt anything still under it.
    openbao::api(
        reqwest::Method::POST,
        &format!("transit/keys/{}/config", key.name),
        Some(serde_json::json!({ "min_decryption_version": 2 })),
    )
    .await;
    let fresh = app_on(&app, |s| key.use_in(s, &address, &dir))
        .await
        .spawn()
        .await;
    let reader = Client::new(&fresh, "agent-a1").await;
    for id in &ids {
        let lead: Value = reader
            .get(&format!("/v1/leads/{id}?reveal=ssn"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(lead["ssn"], SSN, "{lead}");
    }
}

/// A fault proxy in front of the local OpenBao at `address`.
async fn proxy_to(address: &str) -> FaultProxy {
    let upstream = url::Url::parse(address).unwrap();
    FaultProxy::start(
        format!("127.0.0.1:{}", upstream.port().unwrap())
            .parse()
            .unwrap(),
    )
    .await
}

/// With OpenBao cut off, a new lead is refused (503, nothing written) and an SSN cannot be
/// revealed; the lead whose reveal was tried.
async fn assert_key_work_refused_and_nothing_written(
    worker: &TestApp,
    agent: &Client<'_>,
) -> String {
    let leads_before = count_leads(worker).await;
    let refused = agent.create(full_lead()).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    )
    .await;
    assert_eq!(
        count_leads(worker).await,
        leads_before,
        "no half-written lead"
    );
    let lead_id: String = sqlx::query_scalar("select id::text from leads limit 1")
        .fetch_one(&worker.state.db)
        .await
        .unwrap();
    let reveal = agent.get(&format!("/v1/leads/{lead_id}?reveal=ssn")).await;
    assert_eq!(reveal.status(), 503);
    lead_id
}

/// Every object in the app's documents bucket.
pub(crate) async fn documents_bucket(worker: &TestApp) -> Vec<object_store::ObjectMeta> {
    worker
        .state
        .storage
        .documents
        .list(None)
        .try_collect()
        .await
        .unwrap()
}

/// An upload while the worker cannot reach OpenBao stays `uploaded`, and nothing reaches
/// the documents bucket.
async fn assert_an_upload_is_held(
    agent_app: &TestApp,
    worker: &TestApp,
    token: &str,
    loan: &str,
    pdf: &[u8],
) -> String {
    let document = upload(agent_app, token, loan, pdf, "application/pdf", pdf.len()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // (Read through the agent's app: its key cache is warm, the worker's is not.)
    let held: Value = Client::new(agent_app, "agent-a1")
        .await
        .get(&format!("/v1/documents/{document}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(held["state"], "uploaded", "{held}");
    let stored = documents_bucket(worker).await;
    assert!(stored.is_empty(), "nothing reaches the documents bucket");
    document
}

/// Once OpenBao is back, the held upload becomes `available`, stored encrypted.
async fn assert_the_held_upload_is_stored_encrypted(
    agent_app: &TestApp,
    worker: &TestApp,
    token: &str,
    document: &str,
    pdf: &[u8],
) {
    let settled = settled_within(agent_app, token, document, 60).await;
    assert_eq!(settled["state"], "available", "{settled}");
    let stored = documents_bucket(worker).await;
    assert_eq!(stored.len(), 1);
    let ciphertext = worker
        .state
        .storage
        .documents
        .get(&stored[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        !ciphertext
            .windows(16)
            .any(|w| pdf.windows(16).any(|p| p == w)),
        "the stored document is encrypted"
    );
}

/// OpenBao cut off behind the fault proxy: what needs a key answers 503
/// `dependency_unavailable` and writes nothing, readiness says `kms` down, the pipeline
/// holds uploads (nothing reaches the documents bucket), and all of it recovers without a
/// restart once OpenBao is reachable again.
#[tokio::test]
async fn with_openbao_cut_off_key_work_waits_and_recovers_without_a_restart() {
    let key = TestKey::create().await;
    let approle = key.approle("1h", "24h").await;
    let (address, _) = openbao::root();
    let proxy = proxy_to(&address).await;
    let via_proxy = format!("http://{}", proxy.address);
    let dir = approle.path().to_owned();
    // The agent's app reaches OpenBao directly; the worker's (with empty key caches, as
    // after a restart) only through the proxy.
    let agent_app = app()
        .settings(|s| key.use_in(s, &address, &dir))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = crate::helpers::flows::agent_a1_loan(&agent_app, &token).await;
    let worker = app_on(&agent_app, |s| key.use_in(s, &via_proxy, &dir))
        .await
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let (_, body) = worker.readyz().await;
    assert_eq!(body["dependencies"]["kms"]["status"], "up", "{body:#}");

    proxy.cut().await;
    let (_, body) = worker.readyz().await;
    assert_eq!(body["dependencies"]["kms"]["status"], "down", "{body:#}");
    let agent = Client::new(&worker, "agent-a1").await;
    let lead_id = assert_key_work_refused_and_nothing_written(&worker, &agent).await;
    let pdf = b"%PDF-1.4\n% held while the key service is away\n".to_vec();
    let document = assert_an_upload_is_held(&agent_app, &worker, &token, &loan, &pdf).await;

    proxy.restore();
    assert_the_held_upload_is_stored_encrypted(&agent_app, &worker, &token, &document, &pdf).await;
    let lead: Value = agent
        .get(&format!("/v1/leads/{lead_id}?reveal=ssn"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lead["ssn"], SSN, "{lead}");
    assert_eq!(agent.create(full_lead()).await.status(), 201);
    let (_, body) = worker.readyz().await;
    assert_eq!(body["dependencies"]["kms"]["status"], "up", "{body:#}");
}

async fn count_leads(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

/// A second app on `first`'s database and buckets, with its own settings (its caches start
/// empty).
async fn app_on(
    first: &TestApp,
    settings: impl FnOnce(&mut loanfolio::config::Settings),
) -> crate::helpers::AppBuilder {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&first.state.db)
        .await
        .unwrap();
    app().settings(settings).shared_database(db).buckets(
        &first.state.settings.s3.quarantine_bucket,
        &first.state.settings.s3.documents_bucket,
    )
}
