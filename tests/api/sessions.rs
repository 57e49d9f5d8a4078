//! Browser login against the real provider: /auth/login → provider → /auth/callback →
//! cookie → /v1/me; CSRF on cookie writes; logout; sessions through a Redis outage.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::oidc::{REDIRECT_URI, shared_issuer};
use crate::helpers::redis::PrivateRedis;
use crate::helpers::{TestApp, app, assert_problem};

/// A browser: cookies, no automatic redirects (each hop is followed by hand so the
/// provider's redirect to the registered callback can be delivered to this test's app).
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) fn location(response: &reqwest::Response) -> String {
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
    sign_in_at(
        app,
        browser,
        &shared_issuer(),
        user,
        "/auth/login?return_to=/dashboard",
    )
    .await
}

/// The provider's answer to a login started at `start` by `browser`: the query string it
/// sends to the registered callback (not yet delivered).
async fn provider_answer(
    app: &TestApp,
    browser: &reqwest::Client,
    issuer: &str,
    user: &str,
    start: &str,
) -> String {
    let response = browser.get(app.url(start)).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let mut next = location(&response);
    assert!(next.starts_with(issuer), "{next}");
    loop {
        let url = if next.contains("/interaction/") {
            format!("{next}?user={user}")
        } else {
            next.clone()
        };
        let response = browser.get(&url).send().await.unwrap();
        let to = location(&response);
        if let Some(query) = to.strip_prefix(REDIRECT_URI) {
            return query.to_owned();
        }
        next = if to.starts_with("http") {
            to
        } else {
            format!("{issuer}{to}")
        };
    }
}

/// Sign in at `issuer` through the login started at `start`; the callback's response.
pub(crate) async fn sign_in_at(
    app: &TestApp,
    browser: &reqwest::Client,
    issuer: &str,
    user: &str,
    start: &str,
) -> reqwest::Response {
    let query = provider_answer(app, browser, issuer, user, start).await;
    browser
        .get(app.url(&format!("/auth/callback{query}")))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn csrf_token(app: &TestApp, browser: &reqwest::Client) -> String {
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
    assert_problem(response, StatusCode::FORBIDDEN, "csrf_failed").await;
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
    assert_problem(response, StatusCode::UNAUTHORIZED, "session_expired").await;
}

#[tokio::test]
async fn an_agent_without_mfa_gets_no_session() {
    let app = app().spawn().await;
    let browser = browser();
    let callback = sign_in(&app, &browser, "agent-nomfa").await;
    assert_eq!(callback.status(), 403);
    assert!(callback.headers().get("set-cookie").is_none());
    assert_problem(callback, StatusCode::FORBIDDEN, "mfa_required").await;
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
    use loanfolio::http::auth::login::safe_return_to;
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
    let removed = loanfolio::admin::housekeeping::sweep(&app.state)
        .await
        .unwrap();
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
    let loan = crate::helpers::flows::agent_a1_loan(&app, &token).await;
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
            assert_problem(response, StatusCode::FORBIDDEN, "csrf_failed").await;
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

async fn audit_actions(app: &TestApp, prefix: &str) -> Vec<(String, Value)> {
    sqlx::query_as::<_, (String, Value)>(
        "select action, details from audit_log where action like $1 order by seq",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(&app.state.db)
    .await
    .unwrap()
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Defect (login CSRF): the state was stored server-side only, so a callback URL completed
/// by an attacker and opened in a victim's browser signed the victim into the attacker's
/// account. Now the login is bound to the browser that started it.
#[tokio::test]
async fn a_callback_replayed_in_another_browser_signs_nobody_in() {
    let app = app()
        .settings(|s| s.rate_limit.auth_per_ip = 1000)
        .spawn()
        .await;
    let attacker = browser();
    let query = provider_answer(
        &app,
        &attacker,
        &shared_issuer(),
        "agent-b1",
        "/auth/login?return_to=/",
    )
    .await;
    let callback = app.url(&format!("/auth/callback{query}"));
    // The victim's browser: no pre-login cookie, or one of its own login.
    let victim = browser();
    let response = victim.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        set_cookies(&response)
            .iter()
            .all(|c| !c.starts_with("lf_session")),
        "no session for the victim"
    );
    let _ = victim
        .get(app.url("/auth/login?return_to=/"))
        .send()
        .await
        .unwrap();
    let response = victim.get(&callback).send().await.unwrap();
    assert_eq!(
        response.status(),
        401,
        "another login's cookie does not match"
    );
    assert_eq!(
        victim.get(app.url("/v1/me")).send().await.unwrap().status(),
        401
    );
    // One audit row for the login that was replayed (which can no longer be finished by
    // anyone); a callback for no login of ours is counted, never audited — a made-up
    // callback must not be able to write the append-only audit log.
    let failed = audit_actions(&app, "session.login_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].1["reason"], "not_this_browser");
    let response = attacker.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), 401, "the replayed login is void");
    for _ in 0..5 {
        let made_up = app
            .get(&format!(
                "/auth/callback?code=x&state={}",
                uuid::Uuid::new_v4()
            ))
            .await;
        assert_eq!(made_up.status(), 401);
        let errored = app
            .get(&format!(
                "/auth/callback?error=access_denied&state={}",
                uuid::Uuid::new_v4()
            ))
            .await;
        assert_eq!(errored.status(), 401);
    }
    assert_eq!(audit_actions(&app, "session.login_failed").await.len(), 1);
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    for counted in [
        r#"loanfolio_login_failures_total{outcome="not_this_browser"} 7"#,
        r#"loanfolio_login_failures_total{outcome="provider_error"} 5"#,
    ] {
        assert!(metrics.contains(counted), "{counted}:\n{metrics}");
    }
    // A login started and finished in one browser works.
    assert_eq!(sign_in(&app, &attacker, "agent-b1").await.status(), 303);
    let me: Value = attacker
        .get(app.url("/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "agent-b1");
    assert_eq!(audit_actions(&app, "session.signed_in").await.len(), 1);
}

/// Secure cookies carry the `__Host-` prefix: only this host, path `/`, HTTPS.
#[tokio::test]
async fn secure_cookies_are_host_prefixed() {
    let app = app()
        .settings(|s| s.auth.cookie_secure = true)
        .spawn()
        .await;
    // The cookie store would not send Secure cookies over plain HTTP: carry them by hand.
    let client = browser();
    let response = client
        .get(app.url("/auth/login?return_to=/"))
        .send()
        .await
        .unwrap();
    let login = set_cookies(&response).remove(0);
    assert!(login.starts_with("__Host-lf_login="), "{login}");
    assert!(login.contains("Secure") && login.contains("Path=/") && !login.contains("Domain"));
    let binding = login.split(';').next().unwrap().to_owned();
    let mut next = location(&response);
    let issuer = shared_issuer();
    let query = loop {
        let url = if next.contains("/interaction/") {
            format!("{next}?user=agent-a2")
        } else {
            next.clone()
        };
        let to = location(&client.get(&url).send().await.unwrap());
        if let Some(query) = to.strip_prefix(REDIRECT_URI) {
            break query.to_owned();
        }
        next = if to.starts_with("http") {
            to
        } else {
            format!("{issuer}{to}")
        };
    };
    let response = app
        .client
        .get(app.url(&format!("/auth/callback{query}")))
        .header("cookie", &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let session = set_cookies(&response)
        .into_iter()
        .find(|c| c.starts_with("__Host-lf_session="))
        .expect("a __Host- session cookie");
    assert!(
        session.contains("Secure") && session.contains("HttpOnly") && session.contains("Path=/")
    );
    let me = app
        .client
        .get(app.url("/v1/me"))
        .header("cookie", session.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

async fn provider_user(issuer: &str, body: Value) {
    let response = reqwest::Client::new()
        .post(format!("{issuer}/__test/users"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

async fn me(app: &TestApp, browser: &reqwest::Client) -> (u16, Value) {
    let response = browser.get(app.url("/v1/me")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Defect: a session kept the roles and team of its sign-in for 8 hours; a moved, demoted
/// or disabled agent kept the old scope. Now it follows the provider (refresh grant) and
/// the agent's own `disabled_at`, re-checked at most every `auth.session_recheck_secs`.
#[tokio::test]
async fn sessions_follow_the_agents_rights() {
    let app = app()
        .settings(|s| s.auth.session_recheck_secs = 1)
        .spawn()
        .await;
    let issuer = shared_issuer();
    let mover = format!("mover-{}", crate::helpers::unique_id());
    provider_user(
        &issuer,
        json!({"id": mover, "roles": ["agent"], "team": "team-a"}),
    )
    .await;
    let browser = browser();
    let start = "/auth/login?return_to=/";
    assert_eq!(
        sign_in_at(&app, &browser, &issuer, &mover, start)
            .await
            .status(),
        303
    );
    assert_eq!(me(&app, &browser).await.1["team"], "team-a");
    // Ten requests at once when a re-check is due: one refresh (a rotated refresh token
    // works once), and every request goes through.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let answers = futures::future::join_all((0..10).map(|_| me(&app, &browser))).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        me(&app, &browser).await.0,
        200,
        "the session survived its re-checks"
    );

    // Moved and promoted at the provider: the next re-check takes the new rights.
    provider_user(
        &issuer,
        json!({"id": mover, "roles": ["manager"], "team": "team-b"}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, now) = me(&app, &browser).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(
        (now["team"].as_str(), now["roles"].clone()),
        (Some("team-b"), json!(["manager"]))
    );
    let stored: Option<String> = sqlx::query_scalar("select team from agents where subject = $1")
        .bind(&mover)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("team-b"));

    // Disabled at the provider: the refresh is refused and the session ends.
    provider_user(&issuer, json!({"id": mover, "disabled": true})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, problem) = me(&app, &browser).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("session_expired"))
    );
    let ended = audit_actions(&app, "session.ended").await;
    assert_eq!(
        ended.last().unwrap().1["reason"],
        "provider_refused",
        "{ended:?}"
    );
}

async fn assert_the_admin_lists_the_agent(app: &TestApp, admin: &str, leaver: &str) {
    let agents: Value = app
        .client
        .get(app.url("/v1/agents?limit=200"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["subject"] == leaver)
    );
}

/// An agent may not, and the admin may not disable themselves.
async fn assert_only_an_admin_disables_others(app: &TestApp, admin: &str, path: &str) {
    let agent = crate::helpers::oidc::access_token("agent-a1").await;
    let denied = app
        .client
        .post(app.url(path))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let own = app
        .client
        .post(app.url("/v1/agents/admin/disable"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 409);
}

async fn me_by_token(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Once disabled: every session ended, the token refused, no new session, audited.
async fn assert_the_disabled_agent_is_locked_out(
    app: &TestApp,
    issuer: &str,
    leaver: &str,
    token: &str,
    browsers: [&reqwest::Client; 2],
) {
    for b in browsers {
        assert_eq!(me(app, b).await.0, 401, "every session ended at once");
    }
    let response = me_by_token(app, token).await;
    assert_problem(response, StatusCode::FORBIDDEN, "account_disabled").await;
    let relogin = browser();
    let callback = sign_in_at(app, &relogin, issuer, leaver, "/auth/login").await;
    assert_eq!(callback.status(), 403, "no new session either");
    assert_eq!(audit_actions(app, "agent.disabled").await.len(), 1);
    assert_eq!(audit_actions(app, "session.ended").await.len(), 2);
}

#[tokio::test]
async fn an_admin_disables_an_agent_ending_sessions_and_refusing_tokens() {
    let app = app().spawn().await;
    let issuer = shared_issuer();
    let leaver = format!("leaver-{}", crate::helpers::unique_id());
    provider_user(&issuer, json!({"id": leaver})).await;
    let first = browser();
    let second = browser();
    for b in [&first, &second] {
        assert_eq!(
            sign_in_at(&app, b, &issuer, &leaver, "/auth/login")
                .await
                .status(),
            303
        );
    }
    let token = crate::helpers::oidc::login(&issuer, &leaver)
        .await
        .access_token;
    let admin = crate::helpers::oidc::access_token("admin").await;
    assert_the_admin_lists_the_agent(&app, &admin, &leaver).await;
    let path = format!("/v1/agents/{leaver}/disable");
    assert_only_an_admin_disables_others(&app, &admin, &path).await;

    let disabled = app
        .client
        .post(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 204);
    assert_the_disabled_agent_is_locked_out(&app, &issuer, &leaver, &token, [&first, &second])
        .await;

    let enabled = app
        .client
        .post(app.url(&format!("/v1/agents/{leaver}/enable")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 204);
    let response = me_by_token(&app, &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(audit_actions(&app, "agent.enabled").await.len(), 1);
}

/// A token issued before a team move never writes the old team back.
#[tokio::test]
async fn provisioning_never_writes_older_claims_over_newer_ones() {
    let app = app().spawn().await;
    let issuer = shared_issuer();
    let subject = format!("jit-{}", crate::helpers::unique_id());
    provider_user(&issuer, json!({"id": subject, "team": "team-a"})).await;
    let old = crate::helpers::oidc::login(&issuer, &subject)
        .await
        .access_token;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    provider_user(&issuer, json!({"id": subject, "team": "team-b"})).await;
    let new = crate::helpers::oidc::login(&issuer, &subject)
        .await
        .access_token;
    let team = || async {
        sqlx::query_scalar::<_, Option<String>>("select team from agents where subject = $1")
            .bind(&subject)
            .fetch_one(&app.state.db)
            .await
            .unwrap()
    };
    let call = |token: String| {
        let request = app.client.get(app.url("/v1/me")).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(call(new.clone()).await, 200);
    assert_eq!(team().await.as_deref(), Some("team-b"));
    assert_eq!(call(old).await, 200);
    assert_eq!(
        team().await.as_deref(),
        Some("team-b"),
        "the older token wrote nothing"
    );
}

/// An unreachable provider: the session lives on for the grace period, then ends.
#[tokio::test]
async fn an_unreachable_provider_ends_sessions_after_the_grace_period() {
    let provider = crate::helpers::oidc::PrivateOidc::start().await;
    let issuer = provider.issuer.clone();
    let configured = issuer.clone();
    let app = app()
        .settings(move |s| {
            s.oidc.issuer_url = configured.parse().unwrap();
            s.auth.session_recheck_secs = 1;
            s.auth.recheck_grace_secs = 3;
        })
        .spawn()
        .await;
    let browser = browser();
    assert_eq!(
        sign_in_at(&app, &browser, &issuer, "agent-a1", "/auth/login")
            .await
            .status(),
        303
    );
    drop(provider);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(me(&app, &browser).await.0, 200, "within the grace period");
    // Whole seconds are compared: more than grace + 1 s must pass to be sure.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let (status, problem) = me(&app, &browser).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("session_expired"))
    );
    let ended = audit_actions(&app, "session.ended").await;
    assert_eq!(ended.last().unwrap().1["reason"], "provider_unreachable");
}

/// Logout tokens about `subject`'s sessions, as the provider would sign them.
struct LogoutTokens<'a> {
    issuer: &'a str,
    subject: &'a str,
    now: i64,
}

impl LogoutTokens<'_> {
    /// A valid logout token's claims (a fresh `jti` each), with `extra` set over them (a
    /// null removes the claim).
    fn claims(&self, extra: Value) -> Value {
        let now = self.now;
        let mut c = json!({"iss": self.issuer, "aud": crate::helpers::oidc::CLIENT_ID, "iat": now,
            "exp": now + 120, "jti": uuid::Uuid::new_v4().to_string(), "sub": self.subject,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    async fn signed(&self, claims: Value) -> String {
        crate::helpers::oidc::sign(self.issuer, json!({"typ": "logout+jwt"}), claims).await
    }
}

async fn post_logout(app: &TestApp, token: String) -> u16 {
    app.client
        .post(app.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Forged or malformed logout tokens end nothing.
async fn assert_bad_logout_tokens_end_nothing(
    app: &TestApp,
    tokens: &LogoutTokens<'_>,
    browsers: &[reqwest::Client],
) {
    let now = tokens.now;
    for bad in [
        tokens.claims(json!({"aud": "someone-else"})),
        tokens.claims(json!({"events": null})),
        tokens.claims(json!({"nonce": "n"})),
        tokens.claims(json!({"iat": now - 3600})),
        tokens.claims(json!({"iss": "http://127.0.0.1:1"})),
        tokens.claims(json!({"sub": null})),
    ] {
        let token = tokens.signed(bad).await;
        assert_eq!(post_logout(app, token).await, 400);
    }
    assert_eq!(post_logout(app, "not-a-jwt".into()).await, 400);
    for b in browsers {
        assert_eq!(me(app, b).await.0, 200);
    }
}

/// Another provider session of the user (its `sid`): these sessions stay.
async fn assert_another_sid_ends_none_of_these(
    app: &TestApp,
    tokens: &LogoutTokens<'_>,
    browsers: &[reqwest::Client],
) {
    let token = tokens
        .signed(tokens.claims(json!({"sid": "another-session"})))
        .await;
    assert_eq!(post_logout(app, token).await, 200);
    for b in browsers {
        assert_eq!(
            me(app, b).await.0,
            200,
            "a different sid ends other sessions only"
        );
    }
}

/// OpenID Connect Back-Channel Logout 1.0: the provider ends a user's sessions.
#[tokio::test]
async fn the_provider_ends_sessions_by_back_channel_logout() {
    let app = app()
        .settings(|s| s.rate_limit.auth_per_ip = 1000)
        .spawn()
        .await;
    let issuer = shared_issuer();
    let subject = format!("bcl-{}", crate::helpers::unique_id());
    provider_user(&issuer, json!({"id": subject})).await;
    let browsers = [browser(), browser()];
    for b in &browsers {
        assert_eq!(
            sign_in_at(&app, b, &issuer, &subject, "/auth/login")
                .await
                .status(),
            303
        );
    }
    let bystander = browser();
    assert_eq!(sign_in(&app, &bystander, "agent-a2").await.status(), 303);
    let tokens = LogoutTokens {
        issuer: &issuer,
        subject: &subject,
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    assert_bad_logout_tokens_end_nothing(&app, &tokens, &browsers).await;
    assert_another_sid_ends_none_of_these(&app, &tokens, &browsers).await;

    let token = tokens.signed(tokens.claims(json!({}))).await;
    assert_eq!(post_logout(&app, token.clone()).await, 200);
    assert_eq!(
        post_logout(&app, token).await,
        400,
        "a logout token is used once (its jti)"
    );
    for b in &browsers {
        assert_eq!(me(&app, b).await.0, 401);
    }
    assert_eq!(
        me(&app, &bystander).await.0,
        200,
        "another user's session stays"
    );
    let ended = audit_actions(&app, "session.ended").await;
    assert_eq!(ended.len(), 2);
    assert!(
        ended
            .iter()
            .all(|(_, d)| d["reason"] == "backchannel_logout")
    );
}

/// Defect: `/auth/login` never asked for a fresh authentication, so a cookie user stuck on
/// `step_up_required` could not clear it while the provider's session lived.
#[tokio::test]
async fn a_browser_clears_step_up_at_auth_reauth() {
    let app = app()
        .settings(|s| s.auth.step_up_max_age_secs = 2)
        .spawn()
        .await;
    let token = crate::helpers::oidc::access_token("agent-a1").await;
    let loan = crate::helpers::flows::agent_a1_loan(&app, &token).await;
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
    let reveal = format!("/v1/leads/{}?reveal=ssn", lead["lead_id"].as_str().unwrap());
    let browser = browser();
    assert_eq!(sign_in(&app, &browser, "agent-a1").await.status(), 303);
    // auth_time has whole seconds: more than max_age + 1 s must pass to be sure.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let response = browser
        .get(app.url(&reveal))
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["code"], "step_up_required");
    let reauth = problem["reauth_url"].as_str().unwrap().to_owned();
    assert!(
        reauth.starts_with("/auth/reauth?return_to=%2Fv1%2Fleads%2F"),
        "{reauth}"
    );

    // The provider is asked for a fresh authentication, whatever its own session.
    let to_provider = browser.get(app.url(&reauth)).send().await.unwrap();
    assert_eq!(to_provider.status(), 303);
    let url = url::Url::parse(&location(&to_provider)).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("prompt").map(String::as_str), Some("login"));
    assert_eq!(query.get("max_age").map(String::as_str), Some("0"));
    let callback = sign_in_at(&app, &browser, &shared_issuer(), "agent-a1", &reauth).await;
    assert_eq!(callback.status(), 303);
    assert_eq!(location(&callback), reveal, "back to the page that asked");
    let response = browser
        .get(app.url(&reveal))
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(audit_actions(&app, "session.stepped_up").await.len(), 1);
    // Sign-out is audited too.
    let csrf = csrf_token(&app, &browser).await;
    let out = browser
        .post(app.url("/auth/logout"))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(audit_actions(&app, "session.signed_out").await.len(), 1);
}

/// Review finding: a request that read a session from PostgreSQL just before the session
/// ended could write it back to Redis, where it lived on for a minute. An ended session now
/// leaves a tombstone that refuses such a write.
#[tokio::test]
async fn an_ended_session_cannot_be_cached_back() {
    use loanfolio::auth::session;
    let app = app().spawn().await;
    let state = &app.state;
    let actor = loanfolio::auth::Actor::borrower("agent-a1".into());
    let (id, _) = session::create(
        &state.db,
        &state.cache,
        &actor,
        std::time::Duration::from_secs(600),
        session::Origin::default(),
    )
    .await
    .unwrap();
    // A reader holds the session as it was read from PostgreSQL…
    let stale = session::load(&state.db, &state.cache, &id)
        .await
        .unwrap()
        .unwrap();
    // …the session ends…
    session::revoke(&state.db, &state.cache, &id).await.unwrap();
    // …and the reader writes its copy afterwards.
    session::cache_put(&state.cache, &session::hash_id(&id), &stale).await;
    assert!(
        session::load(&state.db, &state.cache, &id)
            .await
            .unwrap()
            .is_none(),
        "the ended session came back from Redis"
    );
}
