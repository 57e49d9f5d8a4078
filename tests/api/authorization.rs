//! Object-level authorization on every state-changing route (the authorization matrix (docs/security.md)): each
//! writing route is called by every role combination on a borrower file of agent-a1 (team
//! a). Callers who cannot see it get 404; callers who see it without the right to change
//! it — compliance, admin, and above all users holding a reading role *and* a writing role
//! for another team — get 403, and nothing changes. The owner's manager may.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::{TestApp, oidc};

struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    if_match: bool,
}

fn call(method: Method, path: String, body: Option<Value>) -> Call {
    Call {
        method,
        path,
        body,
        if_match: false,
    }
}

async fn send(app: &TestApp, token: &str, call: &Call) -> u16 {
    let mut request = app
        .client
        .request(call.method.clone(), app.url(&call.path))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
    if call.if_match {
        request = request.header("If-Match", "\"1\"");
    }
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn json(app: &TestApp, token: &str, path: &str) -> Value {
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

/// What the writing routes act on: agent-a1's loan and what hangs off it.
struct Objects {
    loan: String,
    lead: String,
    link: String,
    document: String,
    pull: String,
}

async fn id_of(response: reqwest::Response, pointer: &str) -> String {
    let body: Value = response.json().await.unwrap();
    body.pointer(pointer).unwrap().as_str().unwrap().to_owned()
}

async fn owners_objects(app: &TestApp, owner: &str) -> Objects {
    let loan = agent_a1_loan(app, owner).await;
    let lead = json(app, owner, &format!("/v1/loans/{loan}")).await["lead_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = id_of(
        app.create(owner, &format!("/v1/loans/{loan}/upload-links"), &json!({}))
            .await,
        "/id",
    )
    .await;
    let document = id_of(
        app.create(
            owner,
            &format!("/v1/loans/{loan}/documents"),
            &json!({"filename": "w2.pdf", "content_type": "application/pdf", "size_bytes": 100, "doc_type": "w2"}),
        )
        .await,
        "/document/id",
    )
    .await;
    let pull = id_of(
        app.create(
            owner,
            &format!("/v1/leads/{lead}/credit-reports"),
            &json!({"pull_type": "soft", "consent": {"obtained_at": "2026-11-01T10:00:00Z", "method": "written", "text_version": "fcra-2026-01"}}),
        )
        .await,
        "/id",
    )
    .await;
    Objects {
        loan,
        lead,
        link,
        document,
        pull,
    }
}

fn writing_routes(objects: &Objects) -> Vec<Call> {
    let mut routes = lead_and_credit_routes(&objects.lead, &objects.pull);
    routes.extend(loan_routes(objects));
    routes
}

fn lead_and_credit_routes(lead: &str, pull: &str) -> Vec<Call> {
    vec![
        Call {
            if_match: true,
            ..call(
                Method::PATCH,
                format!("/v1/leads/{lead}"),
                Some(json!({"notes": "changed"})),
            )
        },
        call(
            Method::POST,
            format!("/v1/leads/{lead}/sms-consent"),
            Some(json!({"obtained_at": "2026-11-01T10:00:00Z", "method": "written"})),
        ),
        call(
            Method::DELETE,
            format!("/v1/leads/{lead}/sms-consent"),
            None,
        ),
        call(
            Method::POST,
            format!("/v1/leads/{lead}/credit-reports"),
            Some(
                json!({"pull_type": "soft", "consent": {"obtained_at": "2026-11-01T10:00:00Z", "method": "written", "text_version": "v"}}),
            ),
        ),
        call(
            Method::POST,
            format!("/v1/credit-reports/{pull}/reissue"),
            None,
        ),
        call(
            Method::POST,
            format!("/v1/credit-reports/{pull}/upgrade"),
            Some(
                json!({"consent": {"obtained_at": "2026-11-01T10:00:00Z", "method": "written", "text_version": "v"}}),
            ),
        ),
    ]
}

/// The loan's own routes and those of the links and documents on it.
fn loan_routes(objects: &Objects) -> Vec<Call> {
    let Objects {
        loan,
        link,
        document,
        ..
    } = objects;
    let upload_file = json!({"filename": "x.pdf", "content_type": "application/pdf", "size_bytes": 100, "doc_type": "other"});
    vec![
        Call {
            if_match: true,
            ..call(
                Method::POST,
                format!("/v1/loans/{loan}/status"),
                Some(json!({"status": "withdrawn"})),
            )
        },
        call(
            Method::POST,
            format!("/v1/loans/{loan}/document-requests"),
            Some(json!({"doc_type": "w2"})),
        ),
        call(
            Method::POST,
            format!("/v1/loans/{loan}/upload-links"),
            Some(json!({})),
        ),
        call(Method::DELETE, format!("/v1/upload-links/{link}"), None),
        call(
            Method::POST,
            format!("/v1/loans/{loan}/documents"),
            Some(upload_file),
        ),
        call(
            Method::GET,
            format!(
                "/v1/loans/{loan}/docs/upload-url?filename=a.pdf&content_type=application/pdf&size_bytes=10"
            ),
            None,
        ),
        call(
            Method::POST,
            format!("/v1/documents/{document}/complete"),
            None,
        ),
        call(
            Method::POST,
            format!("/v1/documents/{document}/review"),
            Some(json!({"decision": "accept"})),
        ),
        call(Method::DELETE, format!("/v1/documents/{document}"), None),
        call(
            Method::POST,
            format!("/v1/loans/{loan}/los-submission"),
            None,
        ),
    ]
}

/// (user, the answer every writing route must give them)
const CALLERS: [(&str, u16); 7] = [
    ("agent-b1", 404),
    ("agent-a2", 404),
    ("compliance", 403),
    ("admin", 403),
    ("agent-compliance-b", 403),
    ("agent-admin-b", 403),
    ("manager-compliance-b", 403),
];

/// Every (caller, route) pair whose answer is not the one expected of that caller.
async fn wrong_answers(app: &TestApp, calls: &[Call]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (user, expected) in CALLERS {
        let token = oidc::access_token(user).await;
        for c in calls {
            let status = send(app, &token, c).await;
            if status != expected {
                wrong.push(format!(
                    "{user} {} {} → {status}, not {expected}",
                    c.method, c.path
                ));
            }
        }
    }
    wrong
}

/// Creating a loan on someone else's lead is refused as well (the id is in the body).
async fn assert_loans_on_anothers_lead_refused(app: &TestApp, lead: &str) {
    for user in ["agent-compliance-b", "manager-compliance-b", "agent-b1"] {
        let token = oidc::access_token(user).await;
        let response = app
            .create(
                &token,
                "/v1/loans",
                &json!({"lead_id": lead, "loan_type": "fha", "amount": "1000.00",
                    "property": {"line1": "1 A St", "city": "X", "state": "IL", "postal_code": "60601"}}),
            )
            .await;
        assert!(
            matches!(response.status().as_u16(), 403 | 404 | 422),
            "{user}: {}",
            response.status()
        );
    }
}

/// Defect: `complete` checked read scope plus a role-only write scope, so an agent who is
/// also compliance (reads everything) could complete another team's pending document.
#[tokio::test]
async fn every_writing_route_checks_write_scope_on_the_object_itself() {
    let app = crate::helpers::app()
        .settings(|s| s.rate_limit.api_per_ip = 10_000)
        .spawn()
        .await;
    let owner = oidc::access_token("agent-a1").await;
    let objects = owners_objects(&app, &owner).await;
    let calls = writing_routes(&objects);
    let document = &objects.document;
    let audit_rows = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from audit_log")
            .fetch_one(&app.state.db)
            .await
            .unwrap()
    };
    let before = audit_rows().await;
    let wrong = wrong_answers(&app, &calls).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(audit_rows().await, before, "nothing was written");
    assert_loans_on_anothers_lead_refused(&app, &objects.lead).await;
    let document_state = json(&app, &owner, &format!("/v1/documents/{document}")).await;
    assert_eq!(document_state["state"], "awaiting_upload");

    // Positive control: the owner's manager may (once the file has arrived).
    use object_store::ObjectStoreExt;
    app.state
        .storage
        .quarantine
        .put(
            &object_store::path::Path::from(format!("uploads/{document}")),
            b"%PDF-1.7 1234".to_vec().into(),
        )
        .await
        .unwrap();
    let manager = oidc::access_token("manager-a").await;
    let complete = call(
        Method::POST,
        format!("/v1/documents/{document}/complete"),
        None,
    );
    assert_eq!(send(&app, &manager, &complete).await, 202);
}
