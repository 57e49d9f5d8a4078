//! The audit log: append-only by trigger and by grant, hash-chained, verifiable, readable by
//! compliance and admin only.

use std::process::Command;

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::helpers::flows::{Client, full_lead};
use crate::helpers::{TestApp, database_url, spawn_app, stack_config_path};

async fn superuser(app: &TestApp) -> PgConnection {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    PgConnection::connect(&database_url(&app.state.settings, &db))
        .await
        .unwrap()
}

fn verify(app: &TestApp) -> (bool, String) {
    let db_url = {
        use secrecy::ExposeSecret;
        app.state
            .settings
            .database
            .url()
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    let output = Command::new(env!("CARGO_BIN_EXE_loanfolio"))
        .arg("--config")
        .arg(stack_config_path())
        .args(["admin", "audit", "verify"])
        .env("LOANFOLIO__DATABASE__URL", db_url)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_audit_log_is_append_only_and_tampering_is_found() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    for _ in 0..3 {
        let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
        let path = format!("/v1/leads/{}?reveal=ssn", lead["id"].as_str().unwrap());
        assert_eq!(agent.get(&path).await.status(), 200);
    }
    let (ok, out) = verify(&app);
    assert!(ok, "{out}");
    assert!(out.contains("6 entries verified"), "{out}");

    let mut conn = superuser(&app).await;
    // The runtime role has no UPDATE, DELETE or TRUNCATE on the audit log…
    sqlx::query("set role loanfolio_app")
        .execute(&mut conn)
        .await
        .unwrap();
    for statement in [
        "update audit_log set action = 'x'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{statement}: {err}"
        );
    }
    // …but may insert and read.
    let count: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 6);
    sqlx::query("reset role").execute(&mut conn).await.unwrap();
    // Even the owner is stopped by the triggers.
    for statement in [
        "update audit_log set action = 'x'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }

    // A superuser who disables the triggers can change a row — and verify finds it.
    let target: i64 = sqlx::query_scalar("select seq from audit_log order by seq limit 1 offset 2")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("alter table audit_log disable trigger user")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("update audit_log set details = '{\"fields\": [\"nothing\"]}' where seq = $1")
        .bind(target)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("alter table audit_log enable trigger user")
        .execute(&mut conn)
        .await
        .unwrap();
    let (ok, out) = verify(&app);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("BROKEN at seq {target}")), "{out}");
}

#[tokio::test]
async fn compliance_and_admin_read_the_audit_log_and_nobody_else() {
    let app = spawn_app().await;
    let agent = Client::new(&app, "agent-a1").await;
    let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
    let id = lead["id"].as_str().unwrap();
    assert_eq!(agent.get("/v1/audit").await.status(), 403);
    assert_eq!(
        Client::new(&app, "manager-a")
            .await
            .get("/v1/audit")
            .await
            .status(),
        403
    );
    for user in ["compliance", "admin"] {
        let reader = Client::new(&app, user).await;
        let page: Value = reader
            .get(&format!("/v1/audit?entity_type=lead&entity_id={id}"))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        assert_eq!(items[0]["action"], "lead.created");
        assert_eq!(items[0]["actor"]["subject"], "agent-a1");
        assert_eq!(items[0]["actor"]["roles"], serde_json::json!(["agent"]));
        assert!(items[0]["request_id"].is_string());
        assert!(!page.to_string().contains("219-09-9999"));
    }
    assert_eq!(
        Client::new(&app, "compliance")
            .await
            .get("/v1/audit?from=yesterday")
            .await
            .status(),
        400
    );
}
