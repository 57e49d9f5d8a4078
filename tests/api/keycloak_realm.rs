//! The Keycloak realm export cannot be imported here (no Keycloak on these machines); this
//! keeps it consistent with what the service expects of the tokens Keycloak will issue.

use serde_json::Value;

use crate::helpers::{base_settings, repo_root};

fn realm() -> Value {
    let text = std::fs::read_to_string(repo_root().join("config/keycloak-realm.json")).unwrap();
    serde_json::from_str(&text).expect("the realm export is JSON")
}

fn mapper<'a>(client: &'a Value, kind: &str) -> &'a Value {
    client["protocolMappers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["protocolMapper"] == kind)
        .unwrap_or_else(|| panic!("no {kind} mapper"))
}

#[test]
fn the_realm_emits_the_claims_the_service_reads() {
    let realm = realm();
    let settings = base_settings();
    let mut roles: Vec<&str> = realm["roles"]["realm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["admin", "agent", "compliance", "manager"]);
    for role in &roles {
        assert!(loanfolio::auth::Role::parse(role).is_some(), "{role}");
    }

    let client = realm["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clientId"] == settings.oidc.client_id.as_str())
        .expect("the service's client_id is in the realm");
    assert_eq!(client["publicClient"], false);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(client["implicitFlowEnabled"], false);
    assert_eq!(client["directAccessGrantsEnabled"], false);
    // Keycloak ends the service's sessions of a user it logs out or disables.
    let backchannel = client["attributes"]["backchannel.logout.url"]
        .as_str()
        .expect("a back-channel logout URL");
    assert!(
        backchannel.ends_with("/auth/backchannel-logout"),
        "{backchannel}"
    );
    assert_eq!(
        client["attributes"]["backchannel.logout.session.required"],
        "true"
    );

    let audience = mapper(client, "oidc-audience-mapper");
    assert_eq!(
        audience["config"]["included.custom.audience"],
        settings.oidc.audience.as_str()
    );
    assert_eq!(audience["config"]["access.token.claim"], "true");
    let team = mapper(client, "oidc-usermodel-attribute-mapper");
    assert_eq!(
        team["config"]["claim.name"],
        settings.auth.team_claim.as_str()
    );
    let roles_mapper = mapper(client, "oidc-usermodel-realm-role-mapper");
    assert_eq!(
        roles_mapper["config"]["claim.name"],
        settings.auth.roles_claim.as_str()
    );
    assert_eq!(
        mapper(client, "oidc-amr-mapper")["config"]["access.token.claim"],
        "true"
    );

    let otp = realm["requiredActions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alias"] == "CONFIGURE_TOTP")
        .expect("OTP enrolment");
    assert_eq!(otp["enabled"], true);
    assert_eq!(otp["defaultAction"], true);
    assert!(settings.auth.mfa_amr.iter().any(|v| v == "otp"));
}
