//! The setup flows many modules share: an upload link for a loan, and a file sent to a
//! pre-signed URL (an agent's or a borrower's). Typed answers keep the callers free of
//! `["document"]["id"].as_str().unwrap()` chains.

use serde::Deserialize;
use serde_json::Value;

use super::TestApp;

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

/// A borrower's whole upload through link `secret`: announce, PUT, complete; the
/// document's id.
pub async fn borrower_upload(app: &TestApp, secret: &str, body: &Value, bytes: &[u8]) -> String {
    let borrower = reqwest::Client::new();
    let response = borrower
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
    let id = announced.document.id;
    let done = borrower
        .post(app.url(&format!(
            "/v1/public/upload-links/{secret}/files/{id}/complete"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 202);
    id
}
