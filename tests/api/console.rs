//! The agent console over HTTP (docs/console.md): `/` and sign-in's return, pages behind
//! the session, authorization that is the API's (another agent's loan is 404 on every page
//! and form), CSRF on every form, the idle timeout, and the compliance CSV. The browser
//! walk-through is in `console_browser.rs`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::flows::{self, agent_a1_loan};
use crate::helpers::oidc::{self, shared_issuer};
use crate::helpers::{TestApp, app, assert_problem};
use crate::sessions::{browser, csrf_token, location, sign_in_at};

/// A browser signed in as `user` through the real login, landing on `page`.
pub(crate) async fn signed_in(app: &TestApp, user: &str, page: &str) -> reqwest::Client {
    let client = browser();
    let start = format!(
        "/auth/login?return_to={}",
        url::form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
    );
    let callback = sign_in_at(app, &client, &shared_issuer(), user, &start).await;
    assert_eq!(callback.status(), 303);
    assert_eq!(
        location(&callback),
        page,
        "sign-in lands on the page asked for"
    );
    client
}

pub(crate) async fn page(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
) -> (StatusCode, String) {
    let response = client.get(app.url(path)).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_root_and_every_page_send_a_stranger_to_sign_in_and_back() {
    let app = app().spawn().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/auth/login?return_to=%2Fconsole%2F");
    let response = app
        .get("/console/loans/00000000-0000-0000-0000-000000000001?tab=x")
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        location(&response),
        "/auth/login?return_to=%2Fconsole%2Floans%2F00000000-0000-0000-0000-000000000001%3Ftab%3Dx"
    );
    // A form posted without a session changes nothing and says so: a page with the way to
    // sign in, not a redirect (the CSP's form-action would stop one that leaves the site).
    let response = app
        .client
        .post(app.url("/console/loans/00000000-0000-0000-0000-000000000001/status"))
        .form(&[("status", "submitted")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["link"]
            .to_str()
            .unwrap()
            .starts_with("</auth/login?return_to=")
    );
    assert!(response.text().await.unwrap().contains("was not made"));

    // Signed in, `/` is the console; the callback returned to the page asked for.
    let client = signed_in(&app, "agent-a1", "/console/leads").await;
    let response = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/console/");
}

#[tokio::test]
async fn the_pipeline_links_each_loan_and_the_loan_page_names_the_borrower() {
    let app = app().spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let client = signed_in(&app, "agent-a1", "/console/").await;
    let response = client.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let body = response.text().await.unwrap();
    assert!(
        body.contains(&format!("<a href=\"/console/loans/{loan}\">")),
        "{body}"
    );
    assert!(
        !body.contains(" style=") && !body.contains("<script>"),
        "no inline code"
    );

    let (status, body) = page(&client, &app, &format!("/console/loans/{loan}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Casey Canary"), "the borrower's name");
    assert!(
        body.contains("name=\"csrf_token\""),
        "forms carry the token"
    );
    // The status section offers only the moves the machine and the role give an agent.
    assert!(body.contains("value=\"submitted\"") && body.contains("value=\"withdrawn\""));
    assert!(
        !body.contains("value=\"underwriting\""),
        "an agent cannot move to underwriting"
    );
    // The filters narrow the list: no loan of this agent needs attention.
    let (_, filtered) = page(&client, &app, "/console/?attention=1").await;
    assert!(!filtered.contains(&format!("/console/loans/{loan}\"")));
    let (_, by_name) = page(&client, &app, "/console/?q=canary").await;
    assert!(by_name.contains(&format!("/console/loans/{loan}\"")));
    let (_, other_name) = page(&client, &app, "/console/?q=nobody-like-this").await;
    assert!(!other_name.contains(&format!("/console/loans/{loan}\"")));
}

/// Every console page and form about agent-a1's loan and lead.
fn pages_of(loan: &str, lead: &str) -> Vec<String> {
    vec![
        format!("/console/loans/{loan}"),
        format!("/console/leads/{lead}"),
        format!("/console/leads/{lead}?reveal=ssn"),
    ]
}

fn forms_of(
    loan: &str,
    lead: &str,
    document: &str,
    link: &str,
) -> Vec<(String, Vec<(&'static str, String)>)> {
    let loan_field = || vec![("loan_id", loan.to_owned())];
    vec![
        (
            format!("/console/loans/{loan}/status"),
            vec![("status", "withdrawn".into()), ("version", "1".into())],
        ),
        (
            format!("/console/loans/{loan}/requests"),
            vec![("doc_type", "w2".into()), ("note", "x".into())],
        ),
        (
            format!("/console/loans/{loan}/links"),
            vec![("borrower_email", "x@example.org".into())],
        ),
        (
            format!("/console/loans/{loan}/credit"),
            vec![
                ("pull_type", "soft".into()),
                ("consent_method", "written".into()),
                ("consent_text_version", "v1".into()),
            ],
        ),
        (format!("/console/loans/{loan}/los"), vec![]),
        (
            format!("/console/leads/{lead}"),
            vec![("first_name", "Mallory".into()), ("version", "1".into())],
        ),
        (
            format!("/console/leads/{lead}/loans"),
            vec![
                ("loan_type", "fha".into()),
                ("amount", "100000".into()),
                ("property_line1", "1 A St".into()),
                ("property_city", "Town".into()),
                ("property_state", "IL".into()),
                ("property_postal_code", "62701".into()),
            ],
        ),
        (
            format!("/console/leads/{lead}/sms"),
            vec![("action", "opt_out".into())],
        ),
        (
            format!("/console/documents/{document}/review"),
            [
                loan_field(),
                vec![("decision", "reject".into()), ("reason", "no".into())],
            ]
            .concat(),
        ),
        (
            format!("/console/documents/{document}/delete"),
            loan_field(),
        ),
        (format!("/console/links/{link}/revoke"), loan_field()),
    ]
}

/// agent-a1's loan with its lead, a link and a received document.
struct File {
    token: String,
    loan: String,
    lead: String,
    link: String,
    document: String,
    loan_json: Value,
}

async fn a1_file(app: &TestApp) -> File {
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(app, &token).await;
    let loan_json = loan_of(app, &token, &loan).await;
    let lead = loan_json["lead_id"].as_str().unwrap().to_owned();
    let link = flows::link(app, &token, &loan, &json!({})).await;
    let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n";
    let document = flows::borrower_upload(
        app,
        &link.token,
        &json!({"filename": "statement.pdf", "content_type": "application/pdf", "size_bytes": pdf.len()}),
        pdf,
    )
    .await;
    File {
        token,
        loan,
        lead,
        link: link.id,
        document,
        loan_json,
    }
}

/// The API's JSON answer to `GET path` with `token` (what the console's change did).
async fn api_json(app: &TestApp, token: &str, path: &str) -> Value {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn loan_of(app: &TestApp, token: &str, loan: &str) -> Value {
    api_json(app, token, &format!("/v1/loans/{loan}")).await
}

#[tokio::test]
async fn another_agents_loan_is_not_found_on_every_page_and_form() {
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let f = a1_file(&app).await;
    let outsider = signed_in(&app, "agent-b1", "/console/").await;
    let outsider_csrf = csrf_token(&app, &outsider).await;
    for path in pages_of(&f.loan, &f.lead) {
        let (status, body) = page(&outsider, &app, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("Canary"), "{path} shows nothing of the file");
    }
    for (path, fields) in forms_of(&f.loan, &f.lead, &f.document, &f.link) {
        let mut fields = fields.clone();
        fields.push(("csrf_token", outsider_csrf.clone()));
        let response = outsider
            .post(app.url(&path))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let after = loan_of(&app, &f.token, &f.loan).await;
    assert_eq!(after["version"], f.loan_json["version"], "nothing changed");
}

#[tokio::test]
async fn every_form_without_the_sessions_token_is_refused_and_changes_nothing() {
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let f = a1_file(&app).await;
    let other = signed_in(&app, "agent-b1", "/console/").await;
    let others_token = csrf_token(&app, &other).await;
    let owner = signed_in(&app, "agent-a1", "/console/").await;
    for (path, fields) in forms_of(&f.loan, &f.lead, &f.document, &f.link) {
        let response = owner
            .post(app.url(&path))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, "csrf_failed").await;
        let mut wrong = fields.clone();
        wrong.push(("csrf_token", others_token.clone()));
        let response = owner
            .post(app.url(&path))
            .form(&wrong)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, "csrf_failed").await;
    }
    let after = loan_of(&app, &f.token, &f.loan).await;
    assert_eq!(after["status"], "draft");
    assert_eq!(after["version"], f.loan_json["version"]);
    let requests: i64 = sqlx::query_scalar("select count(*) from document_requests")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(requests, 0, "no form without the token changed anything");

    // With the token, the owner's form works (the same operation as the API).
    let owner_csrf = csrf_token(&app, &owner).await;
    let response = owner
        .post(app.url(&format!("/console/loans/{}/requests", f.loan)))
        .form(&[
            ("doc_type", "w2"),
            ("note", "Last year's W-2"),
            ("csrf_token", &owner_csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), format!("/console/loans/{}", f.loan));
}

#[tokio::test]
async fn a_form_the_api_refuses_shows_its_field_messages() {
    let app = app().spawn().await;
    let client = signed_in(&app, "agent-a1", "/console/").await;
    let csrf = csrf_token(&app, &client).await;
    let response = client
        .post(app.url("/console/leads"))
        .form(&[
            ("first_name", "Ana"),
            ("last_name", ""),
            ("email", "not-an-email"),
            ("ssn", "000-12-3456"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("validation_failed"),
        "the API's code is shown"
    );
    assert!(
        body.contains("id=\"e-email\""),
        "the email field has its message: {body}"
    );
    assert!(
        body.contains("id=\"e-last_name\""),
        "the last name has its message"
    );
    assert!(body.contains("value=\"Ana\""), "what was typed is kept");
    assert!(
        !body.contains("000-12-3456"),
        "the SSN is never echoed back"
    );
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(leads, 0);
}

#[tokio::test]
async fn an_idle_session_ends_and_sends_the_agent_to_sign_in() {
    let app = app()
        .settings(|s| s.auth.idle_timeout_secs = 2)
        .spawn()
        .await;
    let client = signed_in(&app, "agent-a1", "/console/").await;
    let (status, _) = page(&client, &app, "/console/").await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let response = client.get(app.url("/console/leads")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        location(&response),
        "/auth/login?return_to=%2Fconsole%2Fleads"
    );
    let response = client.get(app.url("/v1/me")).send().await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "session_expired").await;
    let ended: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'session.ended' and details->>'reason' = 'idle'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(ended, 1);
}

#[tokio::test]
async fn compliance_exports_an_audit_search_as_csv_and_others_may_not() {
    let app = app().spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let lead = flows::lead(&app, "agent-a1", flows::full_lead()).await;
    let revealed = app
        .client
        .get(app.url(&format!("/v1/leads/{}?reveal=ssn", lead.id)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revealed.status(), 200);

    let compliance = signed_in(&app, "compliance", "/console/audit").await;
    let (status, body) = page(&compliance, &app, "/console/audit?action=lead.ssn_revealed").await;
    assert_eq!(status, 200);
    assert!(body.contains(&lead.id), "the reveal is found: {body}");
    let csrf = csrf_token(&app, &compliance).await;
    // Verifying walks the whole chain: only from a console page (here: the token).
    let (status, _) = page(&compliance, &app, "/console/audit?verify=1").await;
    assert_eq!(status, 403, "not from a link elsewhere");
    let verified = compliance
        .get(app.url("/console/audit?action=lead.ssn_revealed&verify=1"))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(verified.contains("Chain intact"), "{verified}");

    let response = compliance
        .get(app.url("/console/audit.csv?action=lead.ssn_revealed"))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seq,at,actor,roles,action,entity_type,entity_id,request_id,details"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(rows[0].contains("lead.ssn_revealed") && rows[0].contains(&lead.id));
    assert!(
        !csv.contains(flows::SSN) && !csv.contains(flows::SSN_DIGITS),
        "no PII"
    );
    let exported: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'audit.exported'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(exported, 1, "the export is audited");

    // A cross-site navigation (no token, no Sec-Fetch-Site) does not export.
    let response = compliance
        .get(app.url("/console/audit.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // An agent has no audit search.
    let agent = signed_in(&app, "agent-a1", "/console/").await;
    let (status, _) = page(&agent, &app, "/console/audit").await;
    assert_eq!(status, 403);
    let (status, _) = page(&agent, &app, "/console/admin").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn only_an_admin_disables_an_agent_and_never_their_own_account() {
    // Five sign-ins from one address in a second: more than the sign-in limit allows.
    let app = app()
        .settings(|s| s.rate_limit.auth_per_ip = 1000)
        .spawn()
        .await;
    let _admin = signed_in(&app, "admin", "/console/").await;
    for user in ["agent-a1", "manager-a", "compliance"] {
        let client = signed_in(&app, user, "/console/").await;
        let csrf = csrf_token(&app, &client).await;
        let response = client
            .post(app.url("/console/agents/admin/disable"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{user} may not disable an admin");
    }
    let disabled: i64 =
        sqlx::query_scalar("select count(*) from agents where disabled_at is not null")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(disabled, 0, "nobody was disabled");
    let admin = signed_in(&app, "admin", "/console/").await;
    let csrf = csrf_token(&app, &admin).await;
    let own = admin
        .post(app.url("/console/agents/admin/disable"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 409, "an admin cannot lock themselves out");
    let unknown = admin
        .post(app.url("/console/agents/nobody-by-that-name/disable"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let agent = admin
        .post(app.url("/console/agents/agent-a1/disable"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(agent.status(), 303, "the admin's own form works");
}

#[tokio::test]
async fn a_form_sent_twice_runs_once_and_a_bad_review_is_refused() {
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let f = a1_file(&app).await;
    let owner = signed_in(&app, "agent-a1", "/console/").await;
    let csrf = csrf_token(&app, &owner).await;
    let (_, page_html) = page(&owner, &app, &format!("/console/loans/{}", f.loan)).await;
    let form_id = page_html
        .split("name=\"form_id\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's forms carry a form id")
        .to_owned();
    for _ in 0..2 {
        let response = owner
            .post(app.url(&format!("/console/loans/{}/requests", f.loan)))
            .form(&[
                ("doc_type", "w2"),
                ("note", "W-2"),
                ("csrf_token", &csrf),
                ("form_id", &form_id),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
    }
    let requests: i64 = sqlx::query_scalar("select count(*) from document_requests")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        requests, 1,
        "the second submission of the same form did nothing"
    );

    // A rejection without a reason is the API's 422, shown on the page; nothing changes.
    let response = owner
        .post(app.url(&format!("/console/documents/{}/review", f.document)))
        .form(&[
            ("decision", "reject"),
            ("reason", " "),
            ("loan_id", &f.loan),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("validation_failed"));
    let reviewed: i64 =
        sqlx::query_scalar("select count(*) from documents where review_decision is not null")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(reviewed, 0);
}

#[tokio::test]
async fn emptying_a_field_on_the_lead_form_clears_it() {
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let f = a1_file(&app).await;
    let owner = signed_in(&app, "agent-a1", "/console/").await;
    let csrf = csrf_token(&app, &owner).await;
    // The API's merge patch with null, as the API would be asked.
    let lead: Value = api_json(&app, &f.token, &format!("/v1/leads/{}", f.lead)).await;
    assert!(lead["email"].is_string());
    let response = owner
        .post(app.url(&format!("/console/leads/{}", f.lead)))
        .form(&[
            ("first_name", "Casey"),
            ("last_name", "Canary"),
            ("email", ""),
            ("version", &lead["version"].to_string()),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let after: Value = api_json(&app, &f.token, &format!("/v1/leads/{}", f.lead)).await;
    assert!(after["email"].is_null(), "{after}");
}

#[tokio::test]
async fn a_lead_with_a_known_ssn_is_created_with_a_duplicate_warning() {
    let app = app().spawn().await;
    let first = flows::lead(&app, "agent-a1", flows::full_lead()).await;
    let client = signed_in(&app, "agent-a1", "/console/").await;
    let csrf = csrf_token(&app, &client).await;
    let response = client
        .post(app.url("/console/leads"))
        .form(&[
            ("first_name", "Casey"),
            ("last_name", "Again"),
            ("ssn", flows::SSN),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body = response.text().await.unwrap();
    assert!(body.contains("Possible duplicate"), "{body}");
    assert!(body.contains(&format!("/console/leads/{}", first.id)));
    assert!(!body.contains(flows::SSN), "the SSN stays masked");
}

#[tokio::test]
async fn compliance_holds_a_file_from_the_loan_page_and_lifts_it_on_the_retention_page() {
    let app = app()
        .settings(|s| s.rate_limit.auth_per_ip = 1000)
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let agent = signed_in(&app, "agent-a1", "/console/").await;
    let (_, agents_page) = page(&agent, &app, &format!("/console/loans/{loan}")).await;
    assert!(
        !agents_page.contains("Place a legal hold"),
        "an agent has no hold form"
    );
    let compliance = signed_in(&app, "compliance", "/console/").await;
    let csrf = csrf_token(&app, &compliance).await;
    let (_, loan_page) = page(&compliance, &app, &format!("/console/loans/{loan}")).await;
    assert!(loan_page.contains("Place a legal hold"));
    let response = compliance
        .post(app.url("/console/holds"))
        .form(&[
            ("entity_type", "loan"),
            ("entity_id", &loan),
            ("reason", "Examination 2026-Q4"),
            ("reference", "EXAM-77"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), format!("/console/loans/{loan}"));
    let (status, retention) = page(&compliance, &app, "/console/retention").await;
    assert_eq!(status, 200);
    assert!(retention.contains("Examination 2026-Q4") && retention.contains("EXAM-77"));
    assert!(
        retention.contains("leads without loan"),
        "the report's rules are listed"
    );
    let hold_id = retention
        .split("/console/holds/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a lift form")
        .to_owned();
    let admin = signed_in(&app, "admin", "/console/").await;
    let (status, as_admin) = page(&admin, &app, "/console/retention").await;
    assert_eq!(status, 200);
    assert!(
        !as_admin.contains("Examination 2026-Q4"),
        "an admin sees the reason masked"
    );
    let (status, _) = page(&agent, &app, "/console/retention").await;
    assert_eq!(status, 403);
    let lifted = compliance
        .post(app.url(&format!("/console/holds/{hold_id}/lift")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 303);
    let (_, after) = page(&compliance, &app, "/console/retention").await;
    assert!(after.contains("No hold is in force"));
}

#[tokio::test]
async fn the_sms_form_takes_the_apis_consent_methods_only() {
    let app = app().spawn().await;
    let lead = flows::lead(&app, "agent-a1", flows::full_lead()).await;
    let owner = signed_in(&app, "agent-a1", "/console/").await;
    let csrf = csrf_token(&app, &owner).await;
    let path = format!("/console/leads/{}/sms", lead.id);
    let refused = owner
        .post(app.url(&path))
        .form(&[
            ("action", "opt_in"),
            ("method", "telepathy"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let recorded = owner
        .post(app.url(&path))
        .form(&[
            ("action", "opt_in"),
            ("method", "verbal"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(recorded.status(), 303);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'lead.sms_consent_recorded'
            and details->>'method' = 'verbal'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}
