//! The borrower-file export (`GET /v1/loans/{id}/export`, docs/api.md): the zip round-trips
//! — every available document byte-identical to its upload, `file.json` valid against the
//! schema committed in docs/schemas/ — and it is audited, behind write scope and a recent
//! sign-in.

use async_zip::base::read::mem::ZipFileReader;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::documents::{sample, settled, upload};
use crate::helpers::flows::{Client, agent_a1_loan};
use crate::helpers::{TestApp, app, assert_problem, oidc, repo_root};

async fn export(app: &TestApp, token: &str, loan: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/loans/{loan}/export")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Every entry of `zip`: name and bytes, in order.
async fn entries(zip: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let reader = ZipFileReader::new(zip).await.unwrap();
    let mut out = Vec::new();
    for index in 0..reader.file().entries().len() {
        let name = reader.file().entries()[index]
            .filename()
            .as_str()
            .unwrap()
            .to_owned();
        let mut bytes = Vec::new();
        let mut entry = reader.reader_with_entry(index).await.unwrap();
        entry.read_to_end_checked(&mut bytes).await.unwrap();
        out.push((name, bytes));
    }
    out
}

fn schema_errors(summary: &Value) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("docs/schemas/borrower-file.schema.json"))
        .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(summary)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[tokio::test]
async fn the_export_zip_round_trips_and_its_summary_follows_the_schema() {
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let mut originals = Vec::new();
    for seed in 0..2u64 {
        let bytes = sample(b"%PDF-1.7\n%", 500 + seed, 90_000 + seed as usize * 1_111);
        let id = upload(&app, &token, &loan, &bytes, "application/pdf", bytes.len()).await;
        assert_eq!(settled(&app, &token, &id).await["state"], "available");
        originals.push((id, bytes));
    }

    let response = export(&app, &token, &loan).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let zip = response.bytes().await.unwrap().to_vec();
    let entries = entries(zip).await;
    assert_eq!(entries[0].0, "file.json");
    let summary: Value = serde_json::from_slice(&entries[0].1).unwrap();
    assert_eq!(schema_errors(&summary), Vec::<String>::new(), "{summary:#}");
    assert_eq!(summary["loan"]["id"], loan.as_str());
    assert_eq!(summary["lead"]["first_name"], "Casey");
    assert!(
        summary["lead"]["ssn"].as_str().unwrap().starts_with("***"),
        "the SSN stays masked"
    );

    for (id, bytes) in &originals {
        let listed = summary["documents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.as_str())
            .unwrap();
        let path = listed["path"].as_str().unwrap();
        let (_, exported) = entries.iter().find(|(name, _)| name == path).unwrap();
        assert_eq!(exported, bytes, "document {id} is byte-identical");
        assert_eq!(listed["sha256"], hex(&Sha256::digest(exported)));
    }
    assert_eq!(entries.len(), 1 + originals.len());

    let audited: Vec<Value> = sqlx::query_scalar(
        "select details from audit_log where action = 'loan.exported' and entity_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&loan).unwrap())
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(
        audited,
        vec![serde_json::json!({"format": "zip", "documents": 2})]
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn only_a_writer_with_a_recent_sign_in_exports_and_refusals_are_not_audited() {
    let app = app().spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;

    let other_team = oidc::access_token("agent-b1").await;
    assert_problem(
        export(&app, &other_team, &loan).await,
        reqwest::StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let compliance = oidc::access_token("compliance").await;
    let read_only = export(&app, &compliance, &loan).await;
    assert_eq!(read_only.status(), 403);

    // A token whose sign-in is an hour old must step up first.
    let issuer = crate::helpers::oidc::shared_issuer();
    let mut claims = oidc::access_claims(&issuer, "agent-a1");
    claims["auth_time"] =
        serde_json::json!(time::OffsetDateTime::now_utc().unix_timestamp() - 3600);
    let stale = oidc::sign(&issuer, serde_json::json!({}), claims).await;
    let problem: Value = {
        let response = export(&app, &stale, &loan).await;
        assert_eq!(response.status(), 401);
        response.json().await.unwrap()
    };
    assert_eq!(problem["code"], "step_up_required");

    let agent = Client::new(&app, "agent-a1").await;
    assert_eq!(agent.get(&format!("/v1/loans/{loan}")).await.status(), 200);
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'loan.exported'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(audited, 0);
}

#[tokio::test]
async fn the_loan_page_offers_the_export_and_the_console_serves_it_same_origin_only() {
    let app = app().spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let page = format!("/console/loans/{loan}");
    let browser = crate::console::signed_in(&app, "agent-a1", &page).await;
    let (status, html) = crate::console::page(&browser, &app, &page).await;
    assert_eq!(status, 200);
    let href = format!("/console/loans/{loan}/export");
    assert!(html.contains(&href), "the loan page links the export");

    let cross_site = browser
        .get(app.url(&href))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cross_site.status(),
        403,
        "a cross-site navigation exports nothing"
    );
    let clicked = browser
        .get(app.url(&href))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), 200);
    assert_eq!(clicked.headers()["content-type"], "application/zip");
    let zip = clicked.bytes().await.unwrap().to_vec();
    assert_eq!(entries(zip).await[0].0, "file.json");
}
