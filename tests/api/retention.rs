//! Records lifecycle, first part (docs/operations/retention.md): legal holds — placed and
//! lifted by compliance only, audited on the held lead or loan, their reasons sealed and
//! masked for admins — and the retention report's counts, with the clock moved by backdating
//! rows; the same report from `loanfolio admin retention report`.

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::flows::{self, agent_a1_loan};
use crate::helpers::{TestApp, app, assert_problem, oidc};

const REASON: &str = "Subpoena in Reyes v. Lender, keep everything";

async fn hold(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.create(token, "/v1/legal-holds", body).await
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn compliance_places_and_lifts_holds_and_no_one_else_may() {
    let app = app().spawn().await;
    let agent = oidc::access_token("agent-a1").await;
    let compliance = oidc::access_token("compliance").await;
    let admin = oidc::access_token("admin").await;
    let loan = agent_a1_loan(&app, &agent).await;
    let body = json!({"entity_type": "loan", "entity_id": loan, "reason": REASON, "reference": "2026-CV-0142"});

    assert_problem(
        hold(&app, &agent, &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_problem(
        hold(&app, &admin, &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let unknown =
        json!({"entity_type": "lead", "entity_id": uuid::Uuid::now_v7(), "reason": REASON});
    assert_problem(
        hold(&app, &compliance, &unknown).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let no_reason = json!({"entity_type": "loan", "entity_id": loan, "reason": "  "});
    assert_problem(
        hold(&app, &compliance, &no_reason).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let placed = hold(&app, &compliance, &body).await;
    assert_eq!(placed.status(), 201);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["reason"], REASON);
    assert_eq!(placed["entity_type"], "loan");
    assert_eq!(placed["placed_by"], "compliance");
    let id = placed["id"].as_str().unwrap().to_owned();

    listed_sealed_lifted_and_audited(&app, &id).await;
}

/// The hold `id` (reason `REASON`) as each role lists it, sealed at rest, lifted once by
/// compliance only, and audited without its reason.
async fn listed_sealed_lifted_and_audited(app: &TestApp, id: &str) {
    let compliance = oidc::access_token("compliance").await;
    let admin = oidc::access_token("admin").await;
    let agent = oidc::access_token("agent-a1").await;
    // Listed for compliance in the clear, for an admin masked; an agent sees none.
    let listed: Value = get(app, &compliance, "/v1/legal-holds")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["reason"], REASON);
    let masked: Value = get(app, &admin, "/v1/legal-holds")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(masked["items"][0]["reason"], "***");
    assert_eq!(masked["items"][0]["reference"], "***");
    assert_eq!(get(app, &agent, "/v1/legal-holds").await.status(), 403);

    // The reason is sealed at rest and never in the audit log.
    let sealed: i64 = sqlx::query_scalar(
        "select count(*) from legal_holds where position(convert_to($1, 'UTF8') in reason_enc) > 0",
    )
    .bind("Reyes")
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(sealed, 0, "the reason is encrypted");

    let lift = |token: String| {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/v1/legal-holds/{id}")),
        );
        async move { client.delete(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(
        lift(admin.clone()).await.status(),
        403,
        "an admin cannot lift a hold"
    );
    assert_eq!(lift(compliance.clone()).await.status(), 204);
    assert_eq!(lift(compliance.clone()).await.status(), 404, "lifted once");
    let listed: Value = get(app, &compliance, "/v1/legal-holds")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));

    let audited: Vec<(String, String, String)> = sqlx::query_as(
        "select action, entity_type, details->>'hold_id' from audit_log
          where action like 'legal_hold.%' order by seq",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            ("legal_hold.placed".into(), "loan".into(), id.to_owned()),
            ("legal_hold.lifted".into(), "loan".into(), id.to_owned()),
        ]
    );
    let leaked: i64 =
        sqlx::query_scalar("select count(*) from audit_log where details::text like '%Reyes%'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
}

/// Moves a lead's last activity `days` into the past.
async fn age_lead(app: &TestApp, lead: &str, days: i32) {
    sqlx::query("update leads set updated_at = now() - make_interval(days => $2) where id = $1")
        .bind(uuid::Uuid::parse_str(lead).unwrap())
        .bind(days)
        .execute(&app.state.db)
        .await
        .unwrap();
}

fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {report}"))
}

#[tokio::test]
async fn the_report_counts_what_each_rule_would_dispose_and_what_holds_keep() {
    let app = app().spawn().await;
    let compliance = oidc::access_token("compliance").await;
    let past = flows::lead(&app, "agent-a1", flows::full_lead()).await;
    let held = flows::lead(
        &app,
        "agent-a1",
        json!({"first_name": "Held", "last_name": "File"}),
    )
    .await;
    let soon = flows::lead(
        &app,
        "agent-a1",
        json!({"first_name": "Soon", "last_name": "Due"}),
    )
    .await;
    let fresh = flows::lead(
        &app,
        "agent-a1",
        json!({"first_name": "New", "last_name": "Lead"}),
    )
    .await;
    let _ = fresh;
    age_lead(&app, &past.id, 800).await;
    age_lead(&app, &held.id, 800).await;
    age_lead(&app, &soon.id, 750).await;
    let placed = hold(
        &app,
        &compliance,
        &json!({"entity_type": "lead", "entity_id": held.id, "reason": "Litigation"}),
    )
    .await;
    assert_eq!(placed.status(), 201);

    let report: Value = get(&app, &compliance, "/v1/retention/report")
        .await
        .json()
        .await
        .unwrap();
    let leads = rule(&report, "leads_without_loan_days");
    assert_eq!(leads["retain_days"], 763);
    assert_eq!(leads["due_now"], 2, "{report}");
    assert_eq!(leads["held"], 1);
    assert_eq!(leads["due_next_30_days"], 1);
    assert!(leads["basis"].as_str().unwrap().contains("1002.12"));
    assert_eq!(report["disposal_enabled"], false);
    assert_eq!(rule(&report, "loans_closed_days")["due_now"], 0);

    let admin = oidc::access_token("admin").await;
    assert_eq!(
        get(&app, &admin, "/v1/retention/report").await.status(),
        200
    );
    let agent = oidc::access_token("agent-a1").await;
    assert_eq!(
        get(&app, &agent, "/v1/retention/report").await.status(),
        403
    );

    // The operator's dry run on the host prints the same counts.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loanfolio"))
        .args(["--config"])
        .arg(crate::helpers::stack_config_path())
        .args(["admin", "retention", "report"])
        .env(
            "LOANFOLIO__DATABASE__URL",
            app.state.settings.database.url().unwrap().expose_secret(),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rule(&printed, "leads_without_loan_days")["due_now"], 2);
    assert_eq!(rule(&printed, "leads_without_loan_days")["held"], 1);
}

/// A lead created with a credit consent: its queued pull is a credit report row.
async fn lead_with_a_pull(app: &TestApp) -> String {
    let mut body = flows::full_lead();
    body["credit_consent"] = json!({"pull_type": "soft", "obtained_at": "2026-11-01T10:00:00Z",
        "method": "electronic", "text_version": "fcra-2026-01", "ip": "203.0.113.9"});
    flows::lead(app, "agent-a1", body).await.id
}

async fn age_pulls(app: &TestApp, lead: &str, days: i32) {
    sqlx::query("update credit_reports set created_at = now() - make_interval(days => $2) where lead_id = $1")
        .bind(uuid::Uuid::parse_str(lead).unwrap())
        .bind(days)
        .execute(&app.state.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pull_is_activity_and_a_report_waits_for_every_loan_of_its_file() {
    let app = app().spawn().await;
    let compliance = oidc::access_token("compliance").await;
    let agent = oidc::access_token("agent-a1").await;
    // A lead edited long ago but pulled today is not due: the pull is its last activity.
    let pulled_today = lead_with_a_pull(&app).await;
    age_lead(&app, &pulled_today, 800).await;
    // A lead and its pull both long ago: due, and so is the report.
    let old = lead_with_a_pull(&app).await;
    age_lead(&app, &old, 800).await;
    age_pulls(&app, &old, 800).await;
    // A report whose file has a loan still open is never due, however old.
    let open = lead_with_a_pull(&app).await;
    age_pulls(&app, &open, 800).await;
    let loan = app
        .create(&agent, "/v1/loans", &flows::new_loan(&open))
        .await;
    assert_eq!(loan.status(), 201);

    let report: Value = get(&app, &compliance, "/v1/retention/report")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        rule(&report, "leads_without_loan_days")["due_now"],
        1,
        "{report}"
    );
    assert_eq!(
        rule(&report, "credit_reports_days")["due_now"],
        1,
        "{report}"
    );

    // A cursor this list never gave is 400, as on every list.
    let bad = get(&app, &compliance, "/v1/legal-holds?cursor=not-a-cursor").await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "malformed_request").await;
}
