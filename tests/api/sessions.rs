//! Browser login against the real provider: /auth/login → provider → /auth/callback →
//! cookie → /v1/me; CSRF on cookie writes; logout; sessions through a Redis outage.

use serde_json::Value;

use crate::helpers::oidc::{REDIRECT_URI, shared_issuer};
use crate::helpers::redis::PrivateRedis;
use crate::helpers::{TestApp, app};

/// A browser: cookies, no automatic redirects (each hop is followed by hand so the
/// provider's redirect to the registered callback can be delivered to this test's app).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("expected a redirect, got {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Sign `user` in through the app's real login flow; returns the response of the callback.
async fn sign_in(app: &TestApp, browser: &reqwest::Client, user: &str) -> reqwest::Response {
    let issuer = shared_issuer();
    let response = browser
        .get(app.url("/auth/login?return_to=/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let mut next = location(&response);
    assert!(next.starts_with(&issuer), "{next}");
    loop {
        let url = if next.contains("/interaction/") {
            format!("{next}?user={user}")
        } else {
            next.clone()
        };
        let response = browser.get(&url).send().await.unwrap();
        let to = location(&response);
        if let Some(query) = to.strip_prefix(REDIRECT_URI) {
            // The provider sends the browser to the registered callback; deliver it here.
            return browser
                .get(app.url(&format!("/auth/callback{query}")))
                .send()
                .await
                .unwrap();
        }
        next = if to.starts_with("http") {
            to
        } else {
            format!("{issuer}{to}")
        };
    }
}

async fn csrf_token(app: &TestApp, browser: &reqwest::Client) -> String {
    let body: Value = browser
        .get(app.url("/auth/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["csrf_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn login_session_csrf_and_logout() {
    let app = app().spawn().await;
    let browser = browser();
    let callback = sign_in(&app, &browser, "agent-a1").await;
    assert_eq!(callback.status(), 303);
    assert_eq!(location(&callback), "/dashboard");
    let cookie = callback.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("lf_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    let me: Value = browser
        .get(app.url("/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "agent-a1");
    assert_eq!(me["roles"], serde_json::json!(["agent"]));

    // A cookie-authenticated write without the CSRF token is refused…
    let response = browser.post(app.url("/auth/logout")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "csrf_failed");
    let response = browser
        .post(app.url("/auth/logout"))
        .header("X-CSRF-Token", "not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // …and with it, logout works and the cookie stops working.
    let token = csrf_token(&app, &browser).await;
    let stolen_cookie = cookie.split(';').next().unwrap().to_owned();
    let response = browser
        .post(app.url("/auth/logout"))
        .header("X-CSRF-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .client
        .get(app.url("/v1/me"))
        .header("cookie", stolen_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "session_expired");
}

#[tokio::test]
async fn an_agent_without_mfa_gets_no_session() {
    let app = app().spawn().await;
    let browser = browser();
    let callback = sign_in(&app, &browser, "agent-nomfa").await;
    assert_eq!(callback.status(), 403);
    assert!(callback.headers().get("set-cookie").is_none());
    let body: Value = callback.json().await.unwrap();
    assert_eq!(body["code"], "mfa_required");
}

#[tokio::test]
async fn a_replayed_or_forged_callback_is_refused() {
    let app = app().spawn().await;
    let response = app.get("/auth/callback?code=abc&state=never-issued").await;
    assert_eq!(response.status(), 401);
    let response = app.get("/auth/callback").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn sessions_survive_a_redis_outage_and_new_logins_work_without_it() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = app().settings(move |s| s.set_redis_url(url)).spawn().await;
    let before = browser();
    assert_eq!(sign_in(&app, &before, "agent-a1").await.status(), 303);
    assert_eq!(
        before.get(app.url("/v1/me")).send().await.unwrap().status(),
        200
    );

    redis.stop();
    assert_eq!(
        before.get(app.url("/v1/me")).send().await.unwrap().status(),
        200,
        "an existing session works through the PostgreSQL copy"
    );
    let during = browser();
    assert_eq!(sign_in(&app, &during, "agent-a2").await.status(), 303);
    let me: Value = during
        .get(app.url("/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "agent-a2", "a new login works without Redis");
}

#[tokio::test]
async fn return_to_never_leaves_the_site() {
    use loanfolio::auth::login::safe_return_to;
    assert_eq!(safe_return_to(Some("/loans/1")), "/loans/1");
    for hostile in [
        "//evil.example/x",
        "https://evil.example",
        "/\\evil.example",
        "evil",
        "/a\nb",
    ] {
        assert_eq!(safe_return_to(Some(hostile)), "/", "{hostile:?}");
    }
    assert_eq!(safe_return_to(None), "/");
}

#[tokio::test]
async fn housekeeping_removes_only_what_expired() {
    let app = app().spawn().await;
    let db = &app.state.db;
    for (hash, expires) in [
        (vec![1u8], "now() - interval '1 minute'"),
        (vec![2u8], "now() + interval '1 hour'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into sessions (id_hash, subject, actor, csrf_token, expires_at)
             values ($1, 'agent-a1', '{{}}', 'csrf', {expires})"
        )))
        .bind(hash)
        .execute(db)
        .await
        .unwrap();
    }
    // Outbox: published long ago (goes), published recently (stays), never published
    // however old (stays: the relay still owes it). Inbox: 31 days (goes), 1 day (stays).
    for (id, created, published) in [
        (
            1u128,
            "now() - interval '9 days'",
            "now() - interval '8 days'",
        ),
        (2, "now() - interval '1 day'", "now() - interval '1 day'"),
        (3, "now() - interval '30 days'", "null"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into outbox (id, topic, payload, created_at, published_at)
             values ($1, 'test.event', '{{}}', {created}, {published})"
        )))
        .bind(uuid::Uuid::from_u128(id))
        .execute(db)
        .await
        .unwrap();
    }
    for (id, processed) in [
        (1u128, "now() - interval '31 days'"),
        (2, "now() - interval '1 day'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into inbox (consumer, message_id, processed_at) values ('test', $1, {processed})"
        )))
        .bind(uuid::Uuid::from_u128(id))
        .execute(db)
        .await
        .unwrap();
    }
    let removed = loanfolio::housekeeping::sweep(&app.state).await.unwrap();
    assert_eq!(removed, 3);
    let left: Vec<Vec<u8>> = sqlx::query_scalar("select id_hash from sessions")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(left, vec![vec![2u8]]);
    let outbox: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from outbox where topic = 'test.event' order by id")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(
        outbox,
        vec![uuid::Uuid::from_u128(2), uuid::Uuid::from_u128(3)]
    );
    let inbox: Vec<uuid::Uuid> =
        sqlx::query_scalar("select message_id from inbox where consumer = 'test'")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(inbox, vec![uuid::Uuid::from_u128(2)]);
}

/// Defect: with a cookie session, `?reveal=ssn` (audited) and the upload-url shortcut
/// (creates a document) ran on a cross-site top-level navigation — a link on another site
/// was enough. Now such GETs need the CSRF header or `Sec-Fetch-Site: same-origin`.
#[tokio::test]
async fn side_effecting_gets_need_csrf_proof_with_a_cookie_but_not_with_a_bearer_token() {
    let app = app().spawn().await;
    let token = crate::helpers::oidc::access_token("agent-a1").await;
    let loan = crate::loans::agent_a1_loan(&app, &token).await;
    let lead: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lead = lead["lead_id"].as_str().unwrap().to_owned();
    let browser = browser();
    assert_eq!(sign_in(&app, &browser, "agent-a1").await.status(), 303);
    let csrf = csrf_token(&app, &browser).await;
    let reveal = app.url(&format!("/v1/leads/{lead}?reveal=ssn"));
    let upload_url = app.url(&format!(
        "/v1/loans/{loan}/docs/upload-url?filename=a.pdf&content_type=application/pdf&size_bytes=10"
    ));
    let audit = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from audit_log where action in ('lead.ssn_revealed', 'document.upload_started')",
        )
        .fetch_one(&app.state.db)
        .await
        .unwrap()
    };

    // A cross-site navigation: the cookie comes along, nothing else does.
    for url in [&reveal, &upload_url] {
        for fetch_site in [None, Some("cross-site"), Some("same-site"), Some("none")] {
            let mut request = browser.get(url);
            if let Some(site) = fetch_site {
                request = request.header("Sec-Fetch-Site", site);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 403, "{url} {fetch_site:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "csrf_failed");
        }
    }
    assert_eq!(audit().await, 0, "nothing revealed or created");
    // The same GET without side effects still works from a link.
    let plain = browser
        .get(app.url(&format!("/v1/leads/{lead}")))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);

    // The page's own requests: same-origin, or carrying the token.
    let same_origin = browser
        .get(&reveal)
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 200);
    let with_token = browser
        .get(&upload_url)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 201);
    assert_eq!(audit().await, 2);

    // Bearer clients are unaffected.
    let bearer = app
        .client
        .get(&reveal)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
}
