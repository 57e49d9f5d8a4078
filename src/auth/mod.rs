//! Agent identity (docs/security.md): bearer access tokens from the OIDC issuer, MFA, roles and
//! teams from configurable claims, the per-request `Actor`, and just-in-time agents.

pub mod agents;
pub mod discovery;
pub mod jwks;
pub mod login;
pub mod middleware;
pub mod recheck;
pub mod session;
pub mod token;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Manager,
    Compliance,
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "agent" => Role::Agent,
            "manager" => Role::Manager,
            "compliance" => Role::Compliance,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Manager => "manager",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }
}

/// Whose resources a caller may read (the authorization matrix (docs/security.md)). Repositories take this and
/// put it in their SQL (`where owner = $1`, `where team = $1`), so no route can forget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadScope {
    Own(String),
    Team(String),
    All,
}

impl ReadScope {
    /// Whether a file owned by `owner` in `team` is within this scope.
    pub fn covers(&self, owner: &str, team: Option<&str>) -> bool {
        match self {
            ReadScope::All => true,
            ReadScope::Team(t) => team == Some(t.as_str()),
            ReadScope::Own(subject) => owner == subject,
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    pub subject: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<Role>,
    pub team: Option<String>,
    /// When the person last authenticated (the token's `auth_time`), for step-up checks.
    pub auth_time: Option<i64>,
    /// When the claims were issued (the token's `iat`): provisioning never writes claims
    /// older than those it already holds.
    #[serde(default)]
    pub issued_at: Option<i64>,
}

impl Actor {
    /// A borrower acting with a token (no account, no roles, no PII): `subject` names the
    /// token's kind, never the person.
    pub fn borrower(subject: String) -> Self {
        Self {
            subject,
            display_name: "Borrower".into(),
            email: None,
            roles: Vec::new(),
            team: None,
            auth_time: None,
            issued_at: None,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The scope in which the caller's roles other than admin show PII in the clear:
    /// compliance all, a manager the team, an agent their own files; none for an admin only.
    pub fn clear_scope(&self) -> Option<ReadScope> {
        if self.has(Role::Compliance) {
            Some(ReadScope::All)
        } else if self.has(Role::Manager) {
            Some(match &self.team {
                Some(team) => ReadScope::Team(team.clone()),
                None => ReadScope::Own(self.subject.clone()),
            })
        } else if self.has(Role::Agent) {
            Some(ReadScope::Own(self.subject.clone()))
        } else {
            None
        }
    }

    /// Whether a file owned by `owner` in `team` is shown to this caller with PII masked
    /// and without document or report content: the admin role reads every file that way
    /// (docs/security.md) unless another role of the caller covers that file — an admin who
    /// is also an agent sees their own files in the clear and everyone else's masked.
    pub fn masks(&self, owner: &str, team: Option<&str>) -> bool {
        self.has(Role::Admin)
            && !self
                .clear_scope()
                .is_some_and(|scope| scope.covers(owner, team))
    }

    /// The widest read scope the caller's roles give.
    pub fn read_scope(&self) -> ReadScope {
        if self.has(Role::Compliance) || self.has(Role::Admin) {
            ReadScope::All
        } else if self.has(Role::Manager) {
            match &self.team {
                Some(team) => ReadScope::Team(team.clone()),
                None => ReadScope::Own(self.subject.clone()),
            }
        } else {
            ReadScope::Own(self.subject.clone())
        }
    }

    /// Scope for creating and changing borrower files: agents their own, managers their
    /// team's; compliance and admin none (403).
    pub fn write_scope(&self) -> Result<ReadScope, AppError> {
        if self.has(Role::Manager) {
            return Ok(match &self.team {
                Some(team) => ReadScope::Team(team.clone()),
                None => ReadScope::Own(self.subject.clone()),
            });
        }
        if self.has(Role::Agent) {
            return Ok(ReadScope::Own(self.subject.clone()));
        }
        Err(AppError::forbidden())
    }

    /// Sensitive operations need a recent authentication (RFC 9470 step-up).
    pub fn require_recent_auth(&self, max_age_secs: u64) -> Result<(), AppError> {
        if max_age_secs == 0 {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match self.auth_time {
            Some(t) if now - t <= max_age_secs as i64 => Ok(()),
            _ => Err(AuthError::StepUpRequired { max_age_secs }.into()),
        }
    }
}

/// Why a request was not authenticated; each has its own code (docs/api.md).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials were presented")]
    MissingCredentials,
    #[error("the token is not a well-formed JWT")]
    MalformedToken,
    #[error("the token's signature does not verify")]
    InvalidSignature,
    #[error("the token's signing algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token was signed with a key the issuer does not publish")]
    UnknownKey,
    #[error("the token has expired or is not valid yet")]
    TokenExpired,
    #[error("the token was issued by another issuer")]
    InvalidIssuer,
    #[error("the token is not meant for this API")]
    InvalidAudience,
    #[error("the token is not an access token")]
    WrongTokenType,
    #[error("the session has expired; sign in again")]
    SessionExpired,
    #[error("this operation needs a recent sign-in")]
    StepUpRequired { max_age_secs: u64 },
    #[error("multi-factor authentication is required")]
    MfaRequired,
    #[error("cookie-authenticated changes need the session's CSRF token")]
    CsrfFailed,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("the issuer's keys cannot be fetched")]
    IssuerUnavailable(#[source] anyhow::Error),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::MalformedToken => "malformed_token",
            AuthError::InvalidSignature => "invalid_signature",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::TokenExpired => "token_expired",
            AuthError::InvalidIssuer => "invalid_issuer",
            AuthError::InvalidAudience => "invalid_audience",
            AuthError::WrongTokenType => "wrong_token_type",
            AuthError::SessionExpired => "session_expired",
            AuthError::StepUpRequired { .. } => "step_up_required",
            AuthError::MfaRequired => "mfa_required",
            AuthError::CsrfFailed => "csrf_failed",
            AuthError::AccountDisabled => "account_disabled",
            AuthError::IssuerUnavailable(_) => "dependency_unavailable",
        }
    }
}

impl From<AuthError> for AppError {
    fn from(error: AuthError) -> Self {
        AppError::Auth(error)
    }
}

impl AuthError {
    pub fn into_response_with_problem(self) -> Response {
        let (status, challenge) = match &self {
            AuthError::MfaRequired | AuthError::CsrfFailed | AuthError::AccountDisabled => {
                (StatusCode::FORBIDDEN, None)
            }
            AuthError::IssuerUnavailable(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot fetch the issuer's keys");
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
            AuthError::MissingCredentials => (StatusCode::UNAUTHORIZED, Some("Bearer".to_owned())),
            AuthError::StepUpRequired { max_age_secs } => (
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer error="insufficient_user_authentication", error_description="A more recent authentication is required", max_age={max_age_secs}"#
                )),
            ),
            other => (
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer error="invalid_token", error_description="{other}""#
                )),
            ),
        };
        let mut response = Problem::new(status, self.code(), self.to_string()).into_response();
        if let Some(challenge) = challenge
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(roles: &[Role], team: Option<&str>) -> Actor {
        Actor {
            subject: "s".into(),
            display_name: "S".into(),
            email: None,
            roles: roles.to_vec(),
            team: team.map(str::to_owned),
            auth_time: None,
            issued_at: None,
        }
    }

    #[test]
    fn scopes_follow_the_matrix() {
        assert_eq!(
            actor(&[Role::Agent], Some("t")).read_scope(),
            ReadScope::Own("s".into())
        );
        assert_eq!(
            actor(&[Role::Manager], Some("t")).read_scope(),
            ReadScope::Team("t".into())
        );
        assert_eq!(
            actor(&[Role::Compliance], None).read_scope(),
            ReadScope::All
        );
        assert_eq!(actor(&[Role::Admin], None).read_scope(), ReadScope::All);
        assert!(actor(&[Role::Compliance], None).write_scope().is_err());
        assert!(actor(&[Role::Admin], None).write_scope().is_err());
        assert_eq!(
            actor(&[Role::Manager], Some("t")).write_scope().unwrap(),
            ReadScope::Team("t".into())
        );
        // A manager without a team claim is confined to their own files.
        assert_eq!(
            actor(&[Role::Manager], None).read_scope(),
            ReadScope::Own("s".into())
        );
    }

    #[test]
    fn admins_see_masked_pii_except_where_another_role_covers_the_file() {
        let admin = actor(&[Role::Admin], None);
        assert!(admin.masks("s", Some("t")) && admin.masks("x", None));
        let two_hats = actor(&[Role::Admin, Role::Agent], Some("b"));
        assert!(!two_hats.masks("s", Some("b")), "their own file");
        assert!(two_hats.masks("other", Some("b")), "a colleague's file");
        let manager_admin = actor(&[Role::Admin, Role::Manager], Some("b"));
        assert!(!manager_admin.masks("other", Some("b")));
        assert!(manager_admin.masks("other", Some("a")));
        assert!(!actor(&[Role::Admin, Role::Compliance], None).masks("x", Some("a")));
        assert!(
            !actor(&[Role::Agent], Some("b")).masks("x", Some("a")),
            "no admin role"
        );
        assert!(!Actor::borrower("borrower:link:1".into()).masks("x", None));
    }

    #[test]
    fn step_up_needs_a_recent_auth_time() {
        let mut a = actor(&[Role::Agent], None);
        assert!(a.require_recent_auth(0).is_ok(), "0 disables");
        assert!(a.require_recent_auth(900).is_err(), "unknown auth_time");
        a.auth_time = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 60);
        assert!(a.require_recent_auth(900).is_ok());
        a.auth_time = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 3600);
        assert!(a.require_recent_auth(900).is_err());
    }
}
