//! Borrower data at rest (DESIGN.md §6): canary values planted through the API are found in
//! no column of any table (outbox, audit and idempotency included) and in no log line, in
//! any of the forms they can take; a positive control proves the scan finds plaintext.

use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::spawn_app;
use crate::leads::{Client, DOB, EMAIL, INCOME, PHONE, SSN, SSN_DIGITS, full_lead};

fn canary_forms() -> Vec<String> {
    vec![
        SSN.into(),
        SSN_DIGITS.into(),
        INCOME.into(),
        INCOME.replace('.', ""),
        "87654.3".into(),
        DOB.into(),
        "03/14/1971".into(),
        "19710314".into(),
        EMAIL.into(),
        PHONE.into(),
        PHONE.trim_start_matches("+1").into(),
        "12 Birdcage Walk".into(),
        "prefers email".into(),
    ]
}

/// Every (table, column, value) in the database whose text or bytes contain a canary.
async fn scan(db: &sqlx::PgPool) -> Vec<String> {
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "select table_name, column_name, data_type from information_schema.columns
          where table_schema = 'public'
            and data_type in ('text', 'character varying', 'json', 'jsonb', 'bytea', 'ARRAY')",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(columns.len() > 20, "the scan sees the schema: {columns:?}");
    let forms = canary_forms();
    let mut found = Vec::new();
    for (table, column, data_type) in columns {
        let sql = if data_type == "bytea" {
            format!("select \"{column}\" as v from \"{table}\" where \"{column}\" is not null")
        } else {
            format!(
                "select \"{column}\"::text as v from \"{table}\" where \"{column}\" is not null"
            )
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(db)
            .await
            .unwrap();
        for row in rows {
            let text = if data_type == "bytea" {
                String::from_utf8_lossy(&row.get::<Vec<u8>, _>("v")).into_owned()
            } else {
                row.get::<String, _>("v")
            };
            for form in &forms {
                if text.contains(form.as_str()) {
                    found.push(format!("{table}.{column} contains {form}"));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn no_canary_at_rest_or_in_logs() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
    let path = format!("/v1/leads/{}", lead["id"].as_str().unwrap());
    assert_eq!(agent.get(&format!("{path}?reveal=ssn")).await.status(), 200);
    let response = agent
        .patch(
            &path,
            Some("\"1\""),
            json!({"status": "contacted", "annual_income": INCOME}),
        )
        .await;
    assert_eq!(response.status(), 200);
    // A rejected request carrying the canaries must not leave them anywhere either.
    let mut bad = full_lead();
    bad["phone"] = json!("not a phone");
    assert_eq!(agent.create(bad).await.status(), 422);

    let found = scan(&app.state.db).await;
    assert!(
        found.is_empty(),
        "plaintext borrower data at rest: {found:#?}"
    );

    let logs = app.logs.text();
    assert!(logs.contains("request finished"), "logs were captured");
    for form in canary_forms() {
        assert!(!logs.contains(&form), "{form} in the logs");
    }

    // Positive control: a planted plaintext is found.
    sqlx::query("update agents set display_name = $1 where subject = 'agent-a1'")
        .bind(format!("x {SSN_DIGITS} y"))
        .execute(&app.state.db)
        .await
        .unwrap();
    let found = scan(&app.state.db).await;
    assert_eq!(
        found,
        vec![format!("agents.display_name contains {SSN_DIGITS}")]
    );
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
    use loanfolio::crypto::field::{self, Location};
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let a: Value = agent.create(full_lead()).await.json().await.unwrap();
    let b: Value = agent
        .create(json!({"first_name": "Bo", "last_name": "B"}))
        .await
        .json()
        .await
        .unwrap();
    let a_id = uuid::Uuid::parse_str(a["id"].as_str().unwrap()).unwrap();
    let b_id = uuid::Uuid::parse_str(b["id"].as_str().unwrap()).unwrap();
    let envelope: Vec<u8> = sqlx::query_scalar("select ssn_enc from leads where id = $1")
        .bind(a_id)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let a_key = app.state.keys.file_key(&app.state.db, a_id).await.unwrap();
    let b_key = app.state.keys.file_key(&app.state.db, b_id).await.unwrap();
    let at = |row, column| Location {
        table: "leads",
        column,
        row,
    };
    // In place it decrypts…
    assert_eq!(
        field::decrypt(&a_key, at(a_id, "ssn_enc"), &envelope).unwrap(),
        SSN_DIGITS.as_bytes()
    );
    // …moved to row B (B's key or A's), or to another column, it does not.
    assert!(field::decrypt(&b_key, at(b_id, "ssn_enc"), &envelope).is_err());
    assert!(field::decrypt(&a_key, at(b_id, "ssn_enc"), &envelope).is_err());
    assert!(field::decrypt(&a_key, at(a_id, "email_enc"), &envelope).is_err());

    // Through the API: the copied value makes lead B unreadable, never someone else's SSN.
    sqlx::query("update leads set ssn_enc = $1 where id = $2")
        .bind(&envelope)
        .bind(b_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let response = agent.get(&format!("/v1/leads/{b_id}")).await;
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(!body.contains("9999"), "{body}");
}

#[tokio::test]
async fn credit_pulls_leave_no_canary_at_rest_in_events_or_in_logs() {
    use crate::helpers::bureau::PrivateBureau;
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| bureau.configure(s))
        .spawn()
        .await;
    let agent = Client::new(&app, "agent-a1").await;
    const IP: &str = "198.51.100.77";
    let mut body = full_lead();
    body["credit_consent"] = json!({"pull_type": "soft", "obtained_at": "2026-11-01T10:00:00Z",
        "method": "electronic", "text_version": "fcra-2026-01", "ip": IP});
    let lead: Value = agent.create(body).await.json().await.unwrap();
    let id = lead["id"].as_str().unwrap().to_owned();
    let done = crate::helpers::eventually(20, || async {
        let latest = agent.get(&format!("/v1/credit-report/{id}")).await;
        latest.status() == 200 && latest.json::<Value>().await.unwrap()["status"] == "completed"
    })
    .await;
    assert!(done, "the pull completed");
    let report: i64 =
        sqlx::query_scalar("select count(*) from credit_reports where report_enc is not null")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(report, 1, "the full report is stored (encrypted)");

    // Columns (credit_reports and consents included), the outbox (every queue message's
    // body) and the logs.
    let found = scan(&app.state.db).await;
    assert!(
        found.is_empty(),
        "plaintext borrower data at rest: {found:#?}"
    );
    let events: Vec<String> = sqlx::query_scalar("select payload::text from outbox")
        .fetch_all(&app.state.db)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.contains("creditReportId")),
        "{events:?}"
    );
    let logs = app.logs.text();
    for form in canary_forms().iter().map(String::as_str).chain([IP]) {
        assert!(
            !events.iter().any(|e| e.contains(form)),
            "{form} in an event"
        );
        assert!(!logs.contains(form), "{form} in the logs");
    }
    let ip_at_rest: i64 = sqlx::query_scalar(
        "select count(*) from credit_reports where position($1::bytea in coalesce(consent_ip_enc, ''::bytea)) > 0",
    )
    .bind(IP.as_bytes())
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(ip_at_rest, 0, "the consent IP is encrypted");
}
