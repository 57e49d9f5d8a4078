//! The borrower upload page in real headless Chromium (Debian `chromium` + `chromium-driver`,
//! installed by scripts/test), driven over WebDriver: two files uploaded through the page
//! reach 100 % and appear as received; an expired link shows the expired message. The
//! screenshots are saved under target/screenshots/.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::{TestApp, flows, free_port, oidc, port_opens, repo_root};

pub(crate) struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn browser() -> (Driver, Client) {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: scripts/test installs Debian's chromium and chromium-driver"
        );
    }
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        port,
        _profile: profile,
    };
    let up = port_opens(port, 20).await;
    assert!(up, "chromedriver did not start");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", driver._profile.path().display()),
                "--window-size=430,1000"
            ]
        }
    });
    let capabilities = match capabilities {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless Chromium");
    (driver, client)
}

pub(crate) async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, client.screenshot().await.unwrap()).unwrap();
    path
}

async fn link(app: &TestApp, token: &str, loan: &str) -> flows::Link {
    flows::link(app, token, loan, &json!({"max_files": 5})).await
}

/// Wait (up to `seconds`) until `count` elements match `css`.
pub(crate) async fn wait_for_count(client: &Client, css: &str, count: usize, seconds: u64) -> bool {
    for _ in 0..seconds * 10 {
        if client.find_all(Locator::Css(css)).await.unwrap().len() >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_borrower_uploads_two_files_through_the_page() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    borrower_uploads_two_files(app).await;
}

/// The browser PUTs straight to Garage: the preflight is answered by the quarantine
/// bucket's own CORS rule, which `admin storage create-buckets` sets for the service's
/// origin (s3s-fs has no bucket CORS: the stack puts a CORS front before it).
#[tokio::test]
async fn a_borrower_uploads_two_files_through_the_page_to_garage() {
    let app = crate::helpers::app()
        .settings(crate::helpers::garage::use_garage)
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let origin = url::Url::parse(&app.url("/"))
        .unwrap()
        .origin()
        .ascii_serialization();
    assert!(
        app.state
            .storage
            .allow_browser_uploads(&origin)
            .await
            .unwrap()
            == loanfolio::storage::CorsOutcome::Set,
        "Garage has the bucket CORS API"
    );
    borrower_uploads_two_files(app).await;
}

/// A small PDF and a one-pixel PNG, as a borrower would pick them.
pub(crate) fn sample_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let pdf = dir.join("statement.pdf");
    std::fs::write(
        &pdf,
        b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n",
    )
    .unwrap();
    let png = dir.join("id-card.png");
    std::fs::write(
        &png,
        [
            0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, 0x49, 0x48, 0x44, 0x52,
            0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
        ],
    )
    .unwrap();
    (pdf, png)
}

/// The needs list shows, both files reach 100 % and then appear as received.
async fn upload_two_files_through_the_page(
    app: &TestApp,
    client: &Client,
    secret: &str,
    [pdf, png]: [&PathBuf; 2],
) {
    // The page is served with the token in its path, as the emailed link would be.
    client
        .goto(&app.url(&format!("/u/{secret}")))
        .await
        .unwrap();
    if !wait_for_count(client, "li.request[data-state=outstanding]", 1, 10).await {
        let shot = screenshot(client, "upload-page-failed").await;
        let logs = client
            .execute("return document.getElementById('summary').textContent + ' | ' + document.getElementById('link-message').textContent", vec![])
            .await
            .unwrap();
        panic!("the needs list is not shown ({}): {logs}", shot.display());
    }
    let page = client.source().await.unwrap();
    assert!(page.contains("The last two months"));

    let input = client.find(Locator::Css("#file-input")).await.unwrap();
    input
        .send_keys(&format!("{}\n{}", pdf.display(), png.display()))
        .await
        .unwrap();
    if !wait_for_count(client, ".upload-row[data-state=done]", 2, 30).await {
        let shot = screenshot(client, "upload-page-failed").await;
        let rows = client
            .find(Locator::Id("uploads"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        panic!("the uploads did not finish ({}): {rows}", shot.display());
    }
    let bars = client
        .execute(
            "return [...document.querySelectorAll('.upload-row .upload-progress')].map(p => p.value / p.max * 100)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bars, json!([100, 100]), "both progress bars at 100 %");
    assert!(
        wait_for_count(client, ".file-item[data-state=available]", 2, 60).await,
        "both files appear as received"
    );
    let received = client
        .find(Locator::Id("files"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        received.contains("statement.pdf") && received.contains("id-card.png"),
        "{received}"
    );
    screenshot(client, "upload-page-two-files-received").await;
}

async fn assert_agent_sees_both_available(app: &TestApp, token: &str, loan: &str) {
    let docs: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/documents")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<&str> = docs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["available", "available"]);
}

async fn assert_an_expired_link_shows_its_message(
    app: &TestApp,
    client: &Client,
    token: &str,
    loan: &str,
) {
    let expired = link(app, token, loan).await;
    sqlx::query("update upload_links set expires_at = now() - interval '1 hour' where id = $1")
        .bind(uuid::Uuid::parse_str(&expired.id).unwrap())
        .execute(&app.state.db)
        .await
        .unwrap();
    client
        .goto(&app.url(&format!("/u/{}", expired.token)))
        .await
        .unwrap();
    assert!(
        wait_for_count(client, "#link-message[data-code=link_expired]", 1, 10).await,
        "the expired message is shown"
    );
    let message = client
        .find(Locator::Id("link-message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(message.contains("expired"), "{message}");
    assert!(
        !client
            .find(Locator::Id("app"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    screenshot(client, "upload-page-expired-link").await;
}

async fn borrower_uploads_two_files(app: TestApp) {
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let request = app
        .create(
            &token,
            &format!("/v1/loans/{loan}/document-requests"),
            &json!({"doc_type": "bank_statement", "note": "The last two months"}),
        )
        .await;
    assert_eq!(request.status(), 201);
    let created = link(&app, &token, &loan).await;
    let secret = created.token.as_str();

    let files = tempfile::tempdir().unwrap();
    let (pdf, png) = sample_files(files.path());

    let (_driver, client) = browser().await;
    upload_two_files_through_the_page(&app, &client, secret, [&pdf, &png]).await;

    // The files are really there: the agent sees both available.
    assert_agent_sees_both_available(&app, &token, &loan).await;

    // An expired link shows the expired message and no upload controls.
    assert_an_expired_link_shows_its_message(&app, &client, &token, &loan).await;
    client.close().await.unwrap();
    assert!(!app.logs.text().contains(secret), "token in the logs");
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let app = crate::helpers::spawn_app().await;
    let response = app.get("/u/not-a-real-token").await;
    // 404 for a link that does not exist, with the page itself explaining it.
    assert_eq!(response.status(), 404);
    let headers = response.headers().clone();
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains(" style=") && !page.contains(" onclick="),
        "no inline code under the CSP"
    );
    let script = app.get("/assets/upload.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}
