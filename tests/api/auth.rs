//! Bearer tokens against the real test OpenID Provider: the happy path through the real
//! authorization-code + PKCE flow, and every refusal with its own code.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::oidc::{self, PrivateOidc, access_claims, sign};
use crate::helpers::{TestApp, app, spawn_app};

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn assert_refused(app: &TestApp, token: &str, status: StatusCode, code: &str) {
    let response = me(app, token).await;
    assert_eq!(response.status(), status, "{code}");
    if status == StatusCode::UNAUTHORIZED {
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test]
async fn a_valid_token_from_the_real_flow_gets_me() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let response = me(&app, &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["subject"], "agent-a1");
    assert_eq!(body["display_name"], "Avery Agent");
    assert_eq!(body["email"], "avery.agent@lender.test");
    assert_eq!(body["roles"], json!(["agent"]));
    assert_eq!(body["team"], "team-a");

    // Provisioned just in time from the claims.
    let row: (String, Option<String>, Vec<String>) =
        sqlx::query_as("select display_name, team, roles from agents where subject = $1")
            .bind("agent-a1")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(
        row,
        (
            "Avery Agent".into(),
            Some("team-a".into()),
            vec!["agent".into()]
        )
    );
}

#[tokio::test]
async fn each_role_is_read_from_keycloak_shaped_claims() {
    let app = spawn_app().await;
    for (user, role, team) in [
        ("manager-a", "manager", json!("team-a")),
        ("compliance", "compliance", Value::Null),
        ("admin", "admin", Value::Null),
    ] {
        let token = oidc::access_token(user).await;
        let body: Value = me(&app, &token).await.json().await.unwrap();
        assert_eq!(body["roles"], json!([role]), "{user}: {body}");
        assert_eq!(body["team"], team, "{user}: {body}");
    }
}

#[tokio::test]
async fn missing_or_malformed_credentials_are_401() {
    let app = spawn_app().await;
    let response = app.get("/v1/me").await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "missing_credentials");
    assert_refused(
        &app,
        "not-a-jwt",
        StatusCode::UNAUTHORIZED,
        "malformed_token",
    )
    .await;
    assert_refused(&app, "a.b.c", StatusCode::UNAUTHORIZED, "malformed_token").await;
}

/// A real token with one claim changed and the signature kept.
async fn tampered_token() -> String {
    let real = oidc::access_token("agent-a1").await;
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let mut claims = oidc::decode_part(&real, 1);
    claims["realm_access"]["roles"] = json!(["admin"]);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    parts.join(".")
}

/// HS256 signed with the provider's public key as the HMAC secret.
async fn hs256_with_public_key(issuer: &str) -> String {
    let public: Value = reqwest::get(format!("{issuer}/__test/public-key"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(public["kid"].as_str().unwrap().to_owned());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &access_claims(issuer, "x"),
        &jsonwebtoken::EncodingKey::from_secret(public["pem"].as_str().unwrap().as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn hostile_tokens_are_refused_each_with_its_code() {
    let app = spawn_app().await;
    let issuer = oidc::shared_issuer();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // A control: the signing helper's tokens are accepted when nothing is wrong with them.
    let good = sign(&issuer, json!({}), access_claims(&issuer, "signed-agent")).await;
    assert_eq!(
        me(&app, &good).await.status(),
        200,
        "control token accepted"
    );

    let mut expired = access_claims(&issuer, "signed-agent");
    expired["exp"] = json!(now - 600);
    expired["iat"] = json!(now - 900);
    let token = sign(&issuer, json!({}), expired).await;
    assert_refused(&app, &token, StatusCode::UNAUTHORIZED, "token_expired").await;

    let mut wrong_aud = access_claims(&issuer, "signed-agent");
    wrong_aud["aud"] = json!("urn:some-other:api");
    let token = sign(&issuer, json!({}), wrong_aud).await;
    assert_refused(&app, &token, StatusCode::UNAUTHORIZED, "invalid_audience").await;

    let mut wrong_iss = access_claims(&issuer, "signed-agent");
    wrong_iss["iss"] = json!("https://evil.example/realms/lender");
    let token = sign(&issuer, json!({}), wrong_iss).await;
    assert_refused(&app, &token, StatusCode::UNAUTHORIZED, "invalid_issuer").await;

    // Tampered: a real token with one claim changed and the signature kept.
    let token = tampered_token().await;
    assert_refused(&app, &token, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // alg none: no signature at all.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&access_claims(&issuer, "x")).unwrap());
    let token = format!("{header}.{payload}.");
    assert_refused(
        &app,
        &token,
        StatusCode::UNAUTHORIZED,
        "unsupported_algorithm",
    )
    .await;

    // HS256 with the provider's public key as the HMAC secret (the classic confusion).
    let token = hs256_with_public_key(&issuer).await;
    assert_refused(
        &app,
        &token,
        StatusCode::UNAUTHORIZED,
        "unsupported_algorithm",
    )
    .await;

    // A real signature under a kid the issuer does not publish.
    let token = sign(
        &issuer,
        json!({"kid": "no-such-key"}),
        access_claims(&issuer, "x"),
    )
    .await;
    assert_refused(&app, &token, StatusCode::UNAUTHORIZED, "unknown_key").await;

    // An ID token from the real flow, presented as an access token.
    let tokens = oidc::login(&issuer, "agent-a1").await;
    assert_refused(
        &app,
        &tokens.id_token,
        StatusCode::UNAUTHORIZED,
        "wrong_token_type",
    )
    .await;
}

#[tokio::test]
async fn no_mfa_is_403_mfa_required_and_no_role_is_403_forbidden() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-nomfa").await;
    assert_refused(&app, &token, StatusCode::FORBIDDEN, "mfa_required").await;
    let token = oidc::access_token("noroles").await;
    assert_refused(&app, &token, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_key_rotation_is_picked_up_without_a_restart() {
    let provider = PrivateOidc::start().await;
    let issuer = provider.issuer.clone();
    let app = app()
        .settings(move |s| {
            s.oidc.issuer_url = issuer.parse().unwrap();
            // Rotation is seen on the first unknown kid after this interval.
            s.auth.jwks_min_refresh_secs = 1;
        })
        .spawn()
        .await;
    let before = oidc::login(&provider.issuer, "agent-a1").await.access_token;
    assert_eq!(me(&app, &before).await.status(), 200);

    let new_kid = provider.rotate_key().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = oidc::login(&provider.issuer, "agent-a1").await.access_token;
    assert_eq!(oidc::decode_part(&after, 0)["kid"], new_kid.as_str());
    assert_eq!(me(&app, &after).await.status(), 200, "new key accepted");
    assert_eq!(
        me(&app, &before).await.status(),
        200,
        "old key still published"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_does_not_hammer_the_provider() {
    let provider = PrivateOidc::start().await;
    let issuer = provider.issuer.clone();
    let app = app()
        .settings(move |s| {
            s.oidc.issuer_url = issuer.parse().unwrap();
            s.rate_limit.api_per_ip = 100_000;
        })
        .spawn()
        .await;
    let baseline = provider.jwks_fetches().await;
    let template = sign(
        &provider.issuer,
        json!({"kid": "seed"}),
        access_claims(&provider.issuer, "x"),
    )
    .await;
    let mut parts: Vec<String> = template.split('.').map(str::to_owned).collect();
    let mut unknown = 0;
    for i in 0..1000 {
        parts[0] = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"RS256","typ":"at+jwt","kid":"bogus-{i}"}}"#
        ));
        let response = me(&app, &parts.join(".")).await;
        let body: Value = response.json().await.unwrap();
        if body["code"] == "unknown_key" {
            unknown += 1;
        }
    }
    assert_eq!(unknown, 1000);
    let fetches = provider.jwks_fetches().await - baseline;
    println!("JWKS fetches for 1,000 random kids: {fetches}");
    assert!((1..=3).contains(&fetches), "{fetches} JWKS fetches");
}

#[tokio::test]
async fn step_up_requires_a_recent_authentication() {
    use axum::Extension;
    use axum::routing::get;
    use loanfolio::auth::Actor;

    async fn sensitive(
        Extension(actor): Extension<Actor>,
    ) -> Result<&'static str, loanfolio::error::AppError> {
        actor.require_recent_auth(900)?;
        Ok("revealed")
    }
    let app = app()
        .router(|state| {
            let routes = utoipa_axum::router::OpenApiRouter::new()
                .route("/v1/test/sensitive", get(sensitive));
            let (routes, _) = loanfolio::http::authenticated(&state, routes).split_for_parts();
            loanfolio::http::finish(routes, state)
        })
        .spawn()
        .await;
    let issuer = oidc::shared_issuer();
    let fresh = oidc::access_token("agent-a1").await;
    let response = app
        .client
        .get(app.url("/v1/test/sensitive"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let mut stale = access_claims(&issuer, "agent-a1");
    stale["auth_time"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 3600);
    let token = sign(&issuer, json!({}), stale).await;
    let response = app
        .client
        .get(app.url("/v1/test/sensitive"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "step_up_required");
}
