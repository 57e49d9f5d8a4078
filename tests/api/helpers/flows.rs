//! The setup flows many modules share: an agent's client and a canary borrower, a loan,
//! an upload link for a loan, and a file sent to a pre-signed URL (an agent's or a
//! borrower's). Typed answers keep the callers free of
//! `["document"]["id"].as_str().unwrap()` chains.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{TestApp, oidc};

/// A created upload link: `token` is shown only in this answer.
#[derive(Debug, Deserialize)]
pub struct Link {
    pub id: String,
    pub token: String,
}

/// Create an upload link on `loan` with `body`, asserting the 201.
pub async fn link(app: &TestApp, token: &str, loan: &str, body: &Value) -> Link {
    let response = app
        .create(token, &format!("/v1/loans/{loan}/upload-links"), body)
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[derive(Debug, Deserialize)]
pub struct DocumentId {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct PutHeaders {
    #[serde(rename = "Content-Type")]
    pub content_type: String,
}

#[derive(Debug, Deserialize)]
pub struct PresignedPut {
    pub url: String,
    pub headers: PutHeaders,
}

/// An announced upload: the document and where to PUT its bytes.
#[derive(Debug, Deserialize)]
pub struct Announced {
    pub document: DocumentId,
    pub upload: PresignedPut,
}

/// PUT `bytes` straight to storage with the content type signed into the URL.
pub async fn put(upload: &PresignedPut, bytes: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .put(&upload.url)
        .header("content-type", &upload.headers.content_type)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// A borrower's upload through link `secret` announced and PUT, not yet completed (the
/// object waits in quarantine): the document's id.
pub async fn borrower_put(app: &TestApp, secret: &str, body: &Value, bytes: &[u8]) -> String {
    let response = reqwest::Client::new()
        .post(app.url(&format!("/v1/public/upload-links/{secret}/files")))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let announced: Announced = response.json().await.unwrap();
    assert!(
        put(&announced.upload, bytes.to_vec())
            .await
            .status()
            .is_success()
    );
    announced.document.id
}

/// A borrower's whole upload through link `secret`: announce, PUT, complete; the
/// document's id.
pub async fn borrower_upload(app: &TestApp, secret: &str, body: &Value, bytes: &[u8]) -> String {
    let id = borrower_put(app, secret, body, bytes).await;
    let done = reqwest::Client::new()
        .post(app.url(&format!(
            "/v1/public/upload-links/{secret}/files/{id}/complete"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 202);
    id
}

/// An agent's API client (a bearer token for `user`).
pub struct Client<'a> {
    app: &'a TestApp,
    token: String,
}

impl<'a> Client<'a> {
    pub async fn new(app: &'a TestApp, user: &str) -> Self {
        Self {
            app,
            token: oidc::access_token(user).await,
        }
    }

    pub async fn create(&self, body: Value) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url("/v1/leads"))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.app
            .client
            .get(self.app.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, path: &str, etag: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .patch(self.app.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        if let Some(etag) = etag {
            request = request.header("If-Match", etag);
        }
        request.send().await.unwrap()
    }
}

/// Canary borrower data: distinctive values a scan can look for in every form.
pub const SSN: &str = "219-09-9999";
pub const SSN_DIGITS: &str = "219099999";
pub const DOB: &str = "1971-03-14";
pub const INCOME: &str = "87654.32";
pub const EMAIL: &str = "canary.borrower@example.org";
pub const PHONE: &str = "+12025550187";

pub fn full_lead() -> Value {
    json!({
        "first_name": "Casey", "last_name": "Canary", "email": EMAIL, "phone": PHONE,
        "ssn": SSN, "date_of_birth": DOB, "annual_income": INCOME,
        "address": {"line1": "12 Birdcage Walk", "city": "Springfield", "state": "IL", "postal_code": "62701"},
        "loan_purpose": "purchase", "source": "referral", "notes": "prefers email"
    })
}

/// A loan (on a new lead of agent-a1) for tests of what hangs off loans.
pub async fn agent_a1_loan(app: &TestApp, token: &str) -> String {
    let lead = lead(app, "agent-a1", full_lead()).await;
    let response = app.create(token, "/v1/loans", &new_loan(&lead.id)).await;
    assert_eq!(response.status(), 201);
    let loan: Created = response.json().await.unwrap();
    loan.id
}

/// Something the API created, by its id.
#[derive(Debug, Deserialize)]
pub struct Created {
    pub id: String,
}

/// A lead created by `user` from `body`, asserting the 201.
pub async fn lead(app: &TestApp, user: &str, body: Value) -> Created {
    let response = Client::new(app, user).await.create(body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// A loan request for `lead_id` (a conventional loan on a made-up property).
pub fn new_loan(lead_id: &str) -> Value {
    json!({
        "lead_id": lead_id, "loan_type": "conventional", "amount": "425000.10",
        "property": {"line1": "9 Elm St", "city": "Springfield", "state": "IL", "postal_code": "62704"}
    })
}
