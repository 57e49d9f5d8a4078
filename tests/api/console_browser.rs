//! The console in real headless Chromium (issue "Agent console", Must show 1, 3, 5): an agent
//! signs in through the OpenID provider, creates a lead and a loan, asks for two documents
//! and makes an upload link; the borrower uploads through the link in a second browser; the
//! agent accepts one file and rejects the other; the borrower sees why and replaces it; a
//! soft pull completes; the loan is submitted and the LOS's milestone arrives. A manager,
//! compliance and an admin see their pages. axe-core checks every page (no serious or
//! critical violation), a form is filled with the keyboard alone, pages are drawn at 375 px,
//! and the Spanish upload page is checked. Screenshots: target/screenshots/console-*.png.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::browser::{browser, sample_files, screenshot, wait_for_count};
use crate::helpers::bureau::PrivateBureau;
use crate::helpers::flows::{DOB, EMAIL, INCOME, PHONE, SSN};
use crate::helpers::los::PrivateLos;
use crate::helpers::oidc::PrivateOidc;
use crate::helpers::{TestApp, app, free_port, repo_root};

/// The app on a port known in advance, so the provider can send a real browser back to it.
async fn console_stack() -> (TestApp, PrivateOidc, PrivateBureau, PrivateLos) {
    let port = free_port();
    let provider = PrivateOidc::start_for(&format!("http://127.0.0.1:{port}/auth/callback")).await;
    let bureau = PrivateBureau::start().await;
    let mut los = PrivateLos::reserve();
    let issuer = provider.issuer.clone();
    let app = app()
        .workers_only(&[
            loanfolio::events::DOCUMENT_PIPELINE,
            loanfolio::events::CREDIT_WORKER,
            loanfolio::events::LOS_SUBMITTER,
        ])
        .settings(|s| {
            s.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
            s.server.public_base_url = format!("http://127.0.0.1:{port}").parse().unwrap();
            s.oidc.issuer_url = issuer.parse().unwrap();
            s.rate_limit.api_per_ip = 10_000;
            bureau.configure(s);
            los.configure(s);
        })
        .spawn()
        .await;
    los.start(&app.url("/v1/webhooks/los")).await;
    (app, provider, bureau, los)
}

async fn url_of(client: &Client) -> String {
    client.current_url().await.unwrap().to_string()
}

/// Wait until the browser's URL satisfies `done`.
async fn wait_for_url(client: &Client, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let url = url_of(client).await;
        if done(&url) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser is at {}", url_of(client).await)
}

/// Sign `user` in as a person would: `/` → sign-in → the provider's page → back.
async fn sign_in(app: &TestApp, client: &Client, user: &str) {
    client.goto(&app.url("/")).await.unwrap();
    let interaction = wait_for_url(client, |u| u.contains("/interaction/")).await;
    client
        .goto(&format!("{interaction}?user={user}"))
        .await
        .unwrap();
    wait_for_url(client, |u| u.ends_with("/console/")).await;
}

/// Retry `step` while the page is still being replaced by the one a form led to (a
/// stale or not-yet-present element), up to five seconds.
async fn settled<F, Fut>(what: &str, step: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let mut last = None;
    for _ in 0..50 {
        match step().await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {last:?}")
}

async fn fill(client: &Client, id: &str, text: &str) {
    settled(id, || async {
        let field = client.find(Locator::Id(id)).await?;
        field.clear().await?;
        field.send_keys(text).await
    })
    .await;
}

async fn choose(client: &Client, id: &str, value: &str) {
    settled(id, || async {
        client
            .find(Locator::Id(id))
            .await?
            .select_by_value(value)
            .await
    })
    .await;
}

async fn press(client: &Client, css: &str) {
    settled(css, || async {
        client.find(Locator::Css(css)).await?.click().await
    })
    .await;
}

async fn text_of(client: &Client) -> String {
    client.source().await.unwrap()
}

/// Reload until the page's source contains `needle` (workers and the bureau are async).
async fn reload_until(client: &Client, needle: &str, seconds: u64) -> String {
    for _ in 0..seconds * 2 {
        let page = text_of(client).await;
        if page.contains(needle) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.refresh().await.unwrap();
    }
    let shot = screenshot(client, "console-wait-failed").await;
    panic!("`{needle}` never appeared ({})", shot.display())
}

/// axe-core on the current page: no serious or critical violation. Injected through
/// WebDriver, which the page's CSP does not govern (the console itself runs no inline code).
async fn axe(client: &Client, page: &str) {
    let source =
        std::fs::read_to_string(repo_root().join(".local/axe/node_modules/axe-core/axe.min.js"))
            .expect("axe-core is installed by scripts/test (ensure_axe)");
    client.execute(&source, vec![]).await.unwrap();
    let found = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations
               .filter(v => v.impact === 'serious' || v.impact === 'critical')
               .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', '))));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, json!([]), "axe on {page}");
}

/// Screenshot and accessibility check of the page the browser is on.
async fn look(client: &Client, name: &str) {
    screenshot(client, &format!("console-{name}")).await;
    axe(client, name).await;
}

/// Every visible control of the page takes the focus by Tab alone, in turn (the page is
/// usable with the keyboard only).
async fn every_control_takes_focus(client: &Client, page: &str) {
    let count = client
        .execute(
            "const all = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary')]
               .filter(e => e.offsetParent !== null && !e.disabled);
             all.forEach((e, i) => e.setAttribute('data-kb', String(i)));
             document.activeElement && document.activeElement.blur();
             return all.length;",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..count + 5 {
        client
            .active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
        let at = client
            .execute(
                "return document.activeElement.getAttribute('data-kb')",
                vec![],
            )
            .await
            .unwrap();
        if let Some(i) = at.as_str().and_then(|i| i.parse::<u64>().ok()) {
            seen.insert(i);
        }
    }
    let missed: Vec<u64> = (0..count).filter(|i| !seen.contains(i)).collect();
    assert!(
        missed.is_empty(),
        "{page}: controls {missed:?} of {count} never took the focus"
    );
}

/// The keyboard reaches every control of the pipeline and the loan page; the pipeline's
/// filters apply without reloading the page (the script swaps the results in); an unknown
/// loan's page passes axe too.
async fn keyboard_filters_and_not_found(app: &TestApp, agent: &Client, loan: &str) {
    agent.goto(&app.url("/console/")).await.unwrap();
    every_control_takes_focus(agent, "pipeline").await;
    agent
        .goto(&app.url(&format!("/console/loans/{loan}")))
        .await
        .unwrap();
    every_control_takes_focus(agent, "loan").await;
    agent.goto(&app.url("/console/")).await.unwrap();
    agent
        .execute("window.stillThisPage = true", vec![])
        .await
        .unwrap();
    choose(agent, "f-status", "draft").await;
    let url = wait_for_url(agent, |u| u.contains("status=draft")).await;
    reload_until(agent, "No loans match", 1).await;
    let kept = agent
        .execute("return window.stillThisPage === true", vec![])
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!(true),
        "the filter applied without a reload: {url}"
    );
    agent
        .goto(&app.url("/console/loans/0190c6a2-0000-7000-8000-000000000001"))
        .await
        .unwrap();
    assert!(text_of(agent).await.contains("not_found"));
    look(agent, "not-found").await;
}

/// The id at the end of the browser's URL (`/console/leads/{id}`, `/console/loans/{id}`).
async fn id_in_url(client: &Client, kind: &str) -> String {
    let url = wait_for_url(client, |u| {
        u.contains(&format!("/console/{kind}/")) && !u.ends_with("/new")
    })
    .await;
    url.rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

async fn agent_creates_lead_and_loan(app: &TestApp, agent: &Client) -> (String, String) {
    look(agent, "pipeline").await;
    agent.goto(&app.url("/console/leads/new")).await.unwrap();
    look(agent, "lead-new").await;
    for (id, text) in [
        ("i-first_name", "Marisol"),
        ("i-last_name", "Reyes"),
        ("i-email", EMAIL),
        ("i-phone", PHONE),
        ("i-ssn", SSN),
        ("i-annual_income", INCOME),
        ("i-address_line1", "12 Birdcage Walk"),
        ("i-address_city", "Springfield"),
        ("i-address_state", "IL"),
        ("i-address_postal_code", "62701"),
    ] {
        fill(agent, id, text).await;
    }
    // A date input takes keystrokes in the browser's locale order; set it as the page would.
    agent
        .execute(
            "document.getElementById('i-date_of_birth').value = arguments[0]",
            vec![json!(DOB)],
        )
        .await
        .unwrap();
    press(agent, "form.stack button[type=submit]").await;
    let lead = id_in_url(agent, "leads").await;
    look(agent, "lead").await;
    for (id, text) in [
        ("n-amount", "350000"),
        ("n-line1", "48 Orchard Lane"),
        ("n-city", "Springfield"),
        ("n-state", "IL"),
        ("n-zip", "62704"),
    ] {
        fill(agent, id, text).await;
    }
    press(agent, "form[action$='/loans'] button[type=submit]").await;
    let loan = id_in_url(agent, "loans").await;
    assert!(
        text_of(agent).await.contains("Marisol Reyes"),
        "the loan page names the borrower"
    );
    let _ = app;
    (lead, loan)
}

async fn agent_asks_for_documents_and_makes_a_link(agent: &Client) -> String {
    choose(agent, "q-type", "bank_statement").await;
    fill(agent, "q-note", "The last two months, every page").await;
    press(agent, "form[action$='/requests'] button[type=submit]").await;
    reload_until(agent, "The last two months", 5).await;
    // The second request with the keyboard alone: Tab to the note, type, Enter submits.
    let mut reached = false;
    for _ in 0..200 {
        agent
            .active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
        let id = agent
            .execute("return document.activeElement.id", vec![])
            .await
            .unwrap();
        if id == json!("q-note") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the request form is reachable with Tab");
    agent
        .active_element()
        .await
        .unwrap()
        .send_keys("Your two most recent pay stubs\u{E007}")
        .await
        .unwrap();
    reload_until(agent, "Your two most recent pay stubs", 5).await;
    press(agent, "form[action$='/links'] button[type=submit]").await;
    // The answer to the POST shows the link; reloading it would send the form again, which
    // the console refuses to run twice — so wait, never reload.
    assert!(
        wait_for_count(agent, "#new-link", 1, 10).await,
        "the new link is shown"
    );
    assert!(text_of(agent).await.contains("It is shown only once"));
    look(agent, "loan-new-link").await;
    let url = agent
        .find(Locator::Id("new-link"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains("/u/"), "{url}");
    url
}

/// The borrower answers the first request in `state` with `file` (its "Upload for this").
async fn upload_for_request(borrower: &Client, state: &str, file: &std::path::Path, done: usize) {
    let picked = borrower
        .execute(
            "const b = document.querySelector('li.request[data-state=' + arguments[0] + '] .request-actions button');
             if (b) { b.click(); } return !!b;",
            vec![json!(state)],
        )
        .await
        .unwrap();
    assert_eq!(
        picked,
        json!(true),
        "a request in state {state} offers an upload"
    );
    let input = borrower
        .find(Locator::Id("request-file-input"))
        .await
        .unwrap();
    input.send_keys(&file.display().to_string()).await.unwrap();
    assert!(
        wait_for_count(borrower, ".upload-row[data-state=done]", done, 30).await,
        "the upload finished"
    );
}

async fn borrower_uploads_two_files(
    borrower: &Client,
    link: &str,
    files: (&std::path::Path, &std::path::Path),
) {
    borrower.goto(link).await.unwrap();
    assert!(
        wait_for_count(borrower, "li.request[data-state=outstanding]", 2, 10).await,
        "the borrower sees both requests"
    );
    look(borrower, "borrower-page").await;
    upload_for_request(borrower, "outstanding", files.0, 1).await;
    assert!(wait_for_count(borrower, "li.request[data-state=received]", 1, 10).await);
    upload_for_request(borrower, "outstanding", files.1, 2).await;
    assert!(
        wait_for_count(borrower, ".file-item[data-state=available]", 2, 60).await,
        "both files are received"
    );
    screenshot(borrower, "console-borrower-two-files").await;
}

/// The documents table's rows, newest first.
async fn document_ids(agent: &Client) -> Vec<String> {
    let ids = agent
        .execute(
            "return [...document.querySelectorAll('tr[id^=document-]')].map(r => r.id.slice(9))",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(ids).unwrap()
}

async fn agent_accepts_one_and_rejects_one(
    app: &TestApp,
    agent: &Client,
    loan: &str,
) -> (String, String) {
    // The agent is on the page that showed the new link (a POST's answer): open the loan.
    agent
        .goto(&app.url(&format!("/console/loans/{loan}")))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..60 {
        let page = text_of(agent).await;
        ids = document_ids(agent).await;
        if ids.len() == 2 && page.matches("d-available").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        agent.refresh().await.unwrap();
    }
    assert_eq!(ids.len(), 2, "both files arrived on the loan page");
    look(agent, "loan-two-files").await;
    let (accepted, rejected) = (ids[1].clone(), ids[0].clone());
    press(agent, &format!("#document-{accepted} button[value=accept]")).await;
    reload_until(agent, "accept", 2).await;
    fill(agent, &format!("why-{rejected}"), "Page 2 is missing").await;
    press(agent, &format!("#document-{rejected} button[value=reject]")).await;
    reload_until(agent, "reject: Page 2 is missing", 2).await;
    (accepted, rejected)
}

async fn borrower_sees_why_and_replaces(borrower: &Client, link: &str, file: &std::path::Path) {
    borrower.goto(link).await.unwrap();
    assert!(
        wait_for_count(borrower, "li.request[data-state=rejected]", 1, 10).await,
        "the rejected request asks again"
    );
    let page = text_of(borrower).await;
    assert!(
        page.contains("Page 2 is missing"),
        "the borrower sees the reason"
    );
    screenshot(borrower, "console-borrower-rejection").await;
    upload_for_request(borrower, "rejected", file, 1).await;
    // Three files: the accepted one, the rejected one (shown with its reason) and the
    // replacement, received.
    assert!(
        wait_for_count(borrower, ".file-item", 3, 30).await
            && wait_for_count(borrower, ".file-item[data-state=available]", 2, 60).await,
        "the replacement is received"
    );
    assert!(
        wait_for_count(borrower, "li.request[data-state=received]", 1, 10).await
            && wait_for_count(borrower, "li.request[data-state=accepted]", 1, 10).await,
        "one request accepted, the other answered again"
    );
}

async fn agent_pulls_credit_and_submits(
    app: &TestApp,
    agent: &Client,
    los: &PrivateLos,
    loan: &str,
) {
    agent.refresh().await.unwrap();
    choose(agent, "c-type", "soft").await;
    choose(agent, "c-method", "written").await;
    press(agent, "form[action$='/credit'] button[type=submit]").await;
    reload_until(agent, "p-completed", 30).await;
    look(agent, "loan-credit").await;
    press(agent, "button[name=status][value=submitted]").await;
    reload_until(agent, "s-submitted", 5).await;
    let loan_id = uuid::Uuid::parse_str(loan).unwrap();
    let mut los_id: Option<String> = None;
    for _ in 0..100 {
        los_id = sqlx::query_scalar("select los_loan_id from loans where id = $1")
            .bind(loan_id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        if los_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let los_id = los_id.expect("the LOS took the loan");
    let sent = los.milestone(&los_id, "underwriting", true).await;
    assert_eq!(sent["delivered"], 204, "{sent}");
    let page = reload_until(agent, "s-underwriting", 5).await;
    assert!(page.contains(&los_id), "the LOS id is shown");
    look(agent, "loan-at-the-los").await;
}

async fn agent_reveals_the_ssn(app: &TestApp, agent: &Client, lead: &str) {
    agent
        .goto(&app.url(&format!("/console/leads/{lead}")))
        .await
        .unwrap();
    let masked = text_of(agent).await;
    assert!(!masked.contains(SSN), "masked until asked");
    // Followed from the page (same-origin), as the API requires for an audited GET.
    press(agent, "a[href$='?reveal=ssn']").await;
    let page = reload_until(agent, SSN, 1).await;
    assert!(page.contains(SSN));
}

async fn at_375_pixels(app: &TestApp, agent: &Client, loan: &str) {
    agent.set_window_size(375, 900).await.unwrap();
    for (name, path) in [
        ("pipeline-375", "/console/".to_owned()),
        ("loan-375", format!("/console/loans/{loan}")),
    ] {
        agent.goto(&app.url(&path)).await.unwrap();
        let overflow = agent
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{name}: the page scrolls sideways by {overflow}px"
        );
        screenshot(agent, &format!("console-{name}")).await;
    }
    agent.set_window_size(1280, 1000).await.unwrap();
}

async fn others_see_their_pages(app: &TestApp, lead: &str, loan: &str) {
    let (_manager_driver, manager) = browser().await;
    manager.set_window_size(1280, 1000).await.unwrap();
    sign_in(app, &manager, "manager-a").await;
    manager.goto(&app.url("/console/team")).await.unwrap();
    let team = text_of(&manager).await;
    assert!(
        team.contains("agent-a1"),
        "the team pipeline lists the agent"
    );
    look(&manager, "team").await;
    manager.close().await.unwrap();

    let (_compliance_driver, compliance) = browser().await;
    compliance.set_window_size(1280, 1000).await.unwrap();
    sign_in(app, &compliance, "compliance").await;
    compliance
        .goto(&app.url("/console/audit?action=lead.ssn_revealed"))
        .await
        .unwrap();
    let audit = text_of(&compliance).await;
    assert!(audit.contains(lead), "compliance finds the reveal");
    look(&compliance, "audit").await;
    compliance
        .goto(&app.url("/console/retention"))
        .await
        .unwrap();
    look(&compliance, "retention").await;
    compliance.close().await.unwrap();

    let (_admin_driver, admin) = browser().await;
    admin.set_window_size(1280, 1000).await.unwrap();
    sign_in(app, &admin, "admin").await;
    admin
        .goto(&app.url(&format!("/console/loans/{loan}")))
        .await
        .unwrap();
    let page = text_of(&admin).await;
    assert!(page.contains("Marisol Reyes"));
    for pii in [EMAIL, PHONE, SSN, "12 Birdcage Walk", "48 Orchard Lane"] {
        assert!(!page.contains(pii), "an admin sees {pii} masked");
    }
    assert!(!page.contains("/content\""), "no download for an admin");
    look(&admin, "loan-as-admin").await;
    admin.goto(&app.url("/console/admin")).await.unwrap();
    let page = text_of(&admin).await;
    assert!(
        page.contains("Dead-letter queues") && page.contains("agent-a1"),
        "{page}"
    );
    look(&admin, "admin").await;
    admin.close().await.unwrap();
}

#[tokio::test]
async fn an_agent_and_a_borrower_work_a_loan_through_the_console_in_chromium() {
    let (app, _provider, _bureau, los) = console_stack().await;
    let files = tempfile::tempdir().unwrap();
    let (pdf, png) = sample_files(files.path());
    let replacement = files.path().join("statement-all-pages.pdf");
    std::fs::write(
        &replacement,
        b"%PDF-1.7\n% every page\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n",
    )
    .unwrap();

    let (_agent_driver, agent) = browser().await;
    agent.set_window_size(1280, 1000).await.unwrap();
    sign_in(&app, &agent, "agent-a1").await;
    let (lead, loan) = agent_creates_lead_and_loan(&app, &agent).await;
    let link = agent_asks_for_documents_and_makes_a_link(&agent).await;

    let (_borrower_driver, borrower) = browser().await;
    borrower_uploads_two_files(&borrower, &link, (&pdf, &png)).await;
    agent_accepts_one_and_rejects_one(&app, &agent, &loan).await;
    borrower_sees_why_and_replaces(&borrower, &link, &replacement).await;
    borrower.close().await.unwrap();

    agent_pulls_credit_and_submits(&app, &agent, &los, &loan).await;
    agent_reveals_the_ssn(&app, &agent, &lead).await;
    agent.goto(&app.url("/console/")).await.unwrap();
    assert!(
        text_of(&agent)
            .await
            .contains(&format!("/console/loans/{loan}"))
    );
    look(&agent, "pipeline-with-a-loan").await;
    keyboard_filters_and_not_found(&app, &agent, &loan).await;
    agent.goto(&app.url("/console/leads")).await.unwrap();
    look(&agent, "leads").await;
    at_375_pixels(&app, &agent, &loan).await;
    agent.close().await.unwrap();
    others_see_their_pages(&app, &lead, &loan).await;
    assert!(!app.logs.text().contains(SSN), "no SSN in the logs");
}

#[tokio::test]
async fn the_upload_page_and_the_invitation_speak_spanish() {
    let app = app().spawn().await;
    let token = crate::helpers::oidc::access_token("agent-a1").await;
    let loan = crate::helpers::flows::agent_a1_loan(&app, &token).await;
    let link = crate::helpers::flows::link(&app, &token, &loan, &json!({"language": "es"})).await;

    // The link's language, without any browser preference.
    let page = app.get(&format!("/u/{}", link.token)).await;
    assert_eq!(page.headers()["content-language"], "es");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"es\""),
        "declared in <html lang>"
    );
    assert!(
        html.contains("Suba sus documentos") || html.contains("suba sus documentos"),
        "{html}"
    );
    assert!(!html.contains("Upload your documents"));
    // The borrower's own switch wins over the link's language.
    let english = app
        .get(&format!("/u/{}?lang=en", link.token))
        .await
        .text()
        .await
        .unwrap();
    assert!(english.contains("<html lang=\"en\"") && english.contains("Upload your documents"));
    // Without a link language the browser's Accept-Language decides.
    let plain = crate::helpers::flows::link(&app, &token, &loan, &json!({})).await;
    let by_browser = app
        .client
        .get(app.url(&format!("/u/{}", plain.token)))
        .header("accept-language", "es-MX,es;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(by_browser.contains("<html lang=\"es\""));
    let _: Value = json!(null);
}
