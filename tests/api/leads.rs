//! Leads: CRUD, validation, scoping per the role matrix, SSN reveal audit, duplicates, and
//! borrower data at rest (no plaintext in any column).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::flows::{Client, DOB, EMAIL, INCOME, SSN, full_lead};
use crate::helpers::{assert_problem, oidc, spawn_app};

#[tokio::test]
async fn create_get_and_masking() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let response = agent.create(full_lead()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let lead: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/leads/{}", lead["id"].as_str().unwrap())
    );
    assert_eq!(lead["ssn"], "***-**-9999");
    assert_eq!(lead["email"], EMAIL);
    assert_eq!(lead["annual_income"], INCOME);
    assert_eq!(lead["date_of_birth"], DOB);
    assert_eq!(lead["status"], "new");
    assert_eq!(lead["owner"]["subject"], "agent-a1");
    assert_eq!(lead["owner"]["display_name"], "Avery Agent");
    assert_eq!(lead["team"], "team-a");

    let fetched: Value = agent.get(&location).await.json().await.unwrap();
    assert_eq!(fetched["ssn"], "***-**-9999");
    let revealed: Value = agent
        .get(&format!("{location}?reveal=ssn"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revealed["ssn"], SSN);
    let audited: Vec<(String, Value)> =
        sqlx::query_as("select action, details from audit_log where entity_id = $1 order by seq")
            .bind(uuid::Uuid::parse_str(lead["id"].as_str().unwrap()).unwrap())
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["lead.created", "lead.ssn_revealed"]);
}

#[tokio::test]
async fn validation_answers_422_with_fields() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let response = agent
        .create(json!({"first_name": "A", "ssn": "000-12-3456", "phone": "555", "surprise": 1}))
        .await;
    let body = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body.to_string().contains("surprise"), "{body}");

    let response = agent
        .create(json!({"first_name": "A", "ssn": "000-12-3456", "phone": "555", "date_of_birth": "2020-01-01"}))
        .await;
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["last_name", "ssn", "phone", "date_of_birth"] {
        assert!(fields.contains(&f), "{f}: {body}");
    }
    assert!(!body.to_string().contains("000-12-3456"), "{body}");
    let count: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing half-written");
}

#[tokio::test]
async fn the_role_matrix_on_leads() {
    let app = spawn_app().await;
    let a1 = Client::new(&app, "agent-a1").await;
    let a2 = Client::new(&app, "agent-a2").await;
    let b1 = Client::new(&app, "agent-b1").await;
    let manager = Client::new(&app, "manager-a").await;
    let compliance = Client::new(&app, "compliance").await;
    let admin = Client::new(&app, "admin").await;
    let lead: Value = a1.create(full_lead()).await.json().await.unwrap();
    let path = format!("/v1/leads/{}", lead["id"].as_str().unwrap());

    // Another agent, same or other team: not found.
    assert_eq!(a2.get(&path).await.status(), 404);
    assert_eq!(b1.get(&path).await.status(), 404);
    assert_eq!(
        b1.patch(&path, Some("\"1\""), json!({"source": "x"}))
            .await
            .status(),
        404
    );
    // The team's manager sees and may change it.
    assert_eq!(manager.get(&path).await.status(), 200);
    // Compliance reads everything, changes nothing, and may reveal (audited).
    assert_eq!(compliance.get(&path).await.status(), 200);
    assert_eq!(
        compliance
            .patch(&path, Some("\"1\""), json!({"source": "x"}))
            .await
            .status(),
        403
    );
    assert_eq!(compliance.create(full_lead()).await.status(), 403);
    // Admin: masked PII, no reveal, no writes.
    let masked: Value = admin.get(&path).await.json().await.unwrap();
    assert_eq!(masked["ssn"], "***-**-9999");
    assert_ne!(masked["email"], EMAIL);
    assert_ne!(masked["date_of_birth"], DOB);
    assert_ne!(masked["annual_income"], INCOME);
    assert_eq!(admin.get(&format!("{path}?reveal=ssn")).await.status(), 403);
    assert_eq!(admin.create(full_lead()).await.status(), 403);

    // Lists are scoped the same way.
    assert_eq!(list(&a1).await, 1);
    assert_eq!(list(&a2).await, 0);
    assert_eq!(list(&manager).await, 1);
    assert_eq!(list(&compliance).await, 1);
    assert_eq!(list(&b1).await, 0);
}

async fn list(c: &Client<'_>) -> usize {
    c.get("/v1/leads").await.json::<Value>().await.unwrap()["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn merge_patch_with_if_match() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
    let path = format!("/v1/leads/{}", lead["id"].as_str().unwrap());

    let response = agent
        .patch(&path, None, json!({"status": "contacted"}))
        .await;
    assert_eq!(response.status(), 428);
    let response = agent
        .patch(&path, Some("\"7\""), json!({"status": "contacted"}))
        .await;
    assert_eq!(response.status(), 412);

    let response = agent
        .patch(
            &path,
            Some("\"1\""),
            json!({"status": "contacted", "notes": null, "phone": "+12025550100"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["status"], "contacted");
    assert!(updated["notes"].is_null());
    assert_eq!(updated["phone"], "+12025550100");
    assert_eq!(updated["ssn"], "***-**-9999", "untouched fields stay");
    // The old ETag is stale now; invalid values and unknown fields are 422.
    assert_eq!(
        agent
            .patch(&path, Some("\"1\""), json!({"source": "x"}))
            .await
            .status(),
        412
    );
    assert_eq!(
        agent
            .patch(&path, Some("\"2\""), json!({"ssn": "666-00-0000"}))
            .await
            .status(),
        422
    );
    assert_eq!(
        agent
            .patch(&path, Some("\"2\""), json!({"owner": "me"}))
            .await
            .status(),
        422
    );
    let (action, details): (String, Value) =
        sqlx::query_as("select action, details from audit_log where action = 'lead.updated'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(action, "lead.updated");
    let mut fields: Vec<String> = serde_json::from_value(details["fields"].clone()).unwrap();
    fields.sort();
    assert_eq!(fields, ["notes", "phone", "status"]);
}

#[tokio::test]
async fn list_filters_and_cursor_pagination() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    for i in 0..5 {
        let mut body = json!({"first_name": format!("Pat{i}"), "last_name": if i % 2 == 0 { "Even" } else { "Odd" }});
        if i == 4 {
            body["status"] = json!("qualified");
        }
        assert_eq!(agent.create(body).await.status(), 201);
    }
    let page: Value = agent.get("/v1/leads?limit=2").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["first_name"], "Pat4", "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = agent
        .get(&format!("/v1/leads?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["items"][0]["first_name"], "Pat2");
    let last: Value = agent
        .get(&format!(
            "/v1/leads?limit=2&cursor={}",
            next["next_cursor"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert!(last["next_cursor"].is_null());

    let odd: Value = agent.get("/v1/leads?q=odd").await.json().await.unwrap();
    assert_eq!(odd["items"].as_array().unwrap().len(), 2);
    let full: Value = agent
        .get("/v1/leads?q=pat1%20odd")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        full["items"].as_array().unwrap().len(),
        1,
        "first and last name"
    );
    // `%` and `_` are literal in every pattern, the full-name one too (it was not escaped:
    // `q=%` matched every lead).
    for wildcard in ["%25", "_", "pat_%20", "%25%20%25"] {
        let found: Value = agent
            .get(&format!("/v1/leads?q={wildcard}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(found["items"].as_array().unwrap().len(), 0, "q={wildcard}");
    }
    let qualified: Value = agent
        .get("/v1/leads?status=qualified")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(qualified["items"].as_array().unwrap().len(), 1);
    assert_eq!(agent.get("/v1/leads?limit=500").await.status(), 400);
    assert_eq!(agent.get("/v1/leads?cursor=nope").await.status(), 400);
    assert_eq!(agent.get("/v1/leads?status=bogus").await.status(), 400);
}

#[tokio::test]
async fn duplicate_ssns_are_flagged_by_decryption() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let first: Value = agent.create(full_lead()).await.json().await.unwrap();
    let second: Value = agent.create(full_lead()).await.json().await.unwrap();
    assert_eq!(second["possible_duplicates"], json!([first["id"]]));
    let mut other = full_lead();
    other["ssn"] = json!("219-09-9998");
    let third: Value = agent.create(other).await.json().await.unwrap();
    assert!(third.get("possible_duplicates").is_none(), "{third}");
    // Another team's agent with the same SSN is not told about leads they cannot see.
    let b1 = Client::new(&app, "agent-b1").await;
    let theirs: Value = b1.create(full_lead()).await.json().await.unwrap();
    assert!(theirs.get("possible_duplicates").is_none());
}

#[tokio::test]
async fn idempotent_create_replays_without_storing_pii_in_the_clear() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let send = || {
        app.client
            .post(app.url("/v1/leads"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "lead-once")
            .json(&full_lead())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body);
    let count: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let stored: Vec<u8> = sqlx::query_scalar("select response_body from idempotency_keys")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(EMAIL));
}

#[tokio::test]
async fn demo_seed_gives_each_agent_their_own_files() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let seeded = loanfolio::admin::demo::seed(&app.state, 4).await.unwrap();
    assert_eq!(seeded.leads, 12);
    let agent = Client::new(&app, "agent-a1").await;
    let leads: Value = agent.get("/v1/leads").await.json().await.unwrap();
    assert_eq!(leads["items"].as_array().unwrap().len(), 4);
    let loans: Value = agent.get("/v1/loans").await.json().await.unwrap();
    assert_eq!(loans["items"].as_array().unwrap().len(), 2);
    let manager = Client::new(&app, "manager-a").await;
    let team: Value = manager.get("/v1/loans").await.json().await.unwrap();
    assert_eq!(
        team["items"].as_array().unwrap().len(),
        4,
        "team-a: two agents' loans"
    );

    // The first loan has a needs list, two documents the pipeline accepts and a live link
    // whose page state shows the requests.
    let first = loans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .min()
        .unwrap();
    let ok = crate::helpers::eventually(30, || async {
        let docs: Value = agent
            .get(&format!("/v1/loans/{first}/documents"))
            .await
            .json()
            .await
            .unwrap();
        let items = docs["items"].as_array().unwrap().clone();
        items.len() == 2 && items.iter().all(|d| d["state"] == "available")
    })
    .await;
    assert!(ok, "the demo documents become available");
    let url = seeded.link_url.expect("a demo link");
    let token = url.rsplit('/').next().unwrap();
    let state: Value = app
        .get(&format!("/v1/public/upload-links/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["requests"].as_array().unwrap().len(), 4);
    assert_eq!(state["requests"][0]["state"], "received", "{state}");
}
