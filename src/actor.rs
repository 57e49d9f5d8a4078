//! Who is acting: an agent's roles and team (or a borrower's link, or a system task), the
//! scope of files that gives them (docs/security.md, the authorization matrix), and whether
//! the request may have side effects. Below everything that checks or records it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AuthError};

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

    /// The owner a statement must match, as a nullable parameter: the stores' lookups by id
    /// say `($n::text is null or x.owner_subject = $n)` — the primary key decides their plan,
    /// so one static statement serves every scope. Lists, whose plan does depend on the
    /// scope, run one static statement per variant instead (docs/architecture.md).
    pub fn owner(&self) -> Option<&str> {
        match self {
            ReadScope::Own(subject) => Some(subject),
            _ => None,
        }
    }

    /// The team a statement must match, as a nullable parameter (see [`ReadScope::owner`]).
    pub fn team(&self) -> Option<&str> {
        match self {
            ReadScope::Team(team) => Some(team),
            _ => None,
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

    /// A task of the service acting on its own (a worker, the CLI's operator): audit rows
    /// and histories name it `system:{name}`. The admin role lets it read every file, for
    /// the work it does on any of them; `Actor::system(..).without_roles()` for one that
    /// must not.
    pub fn system(name: &str, display_name: &str) -> Self {
        Self {
            subject: format!("system:{name}"),
            display_name: display_name.into(),
            email: None,
            roles: vec![Role::Admin],
            team: None,
            auth_time: None,
            issued_at: None,
        }
    }

    /// The same actor with no role at all.
    pub fn without_roles(mut self) -> Self {
        self.roles.clear();
        self
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

/// Whether this request may have side effects though its method is safe (a GET that is
/// audited or creates something: `?reveal=ssn`, the upload-url shortcut, a download, a full
/// credit report). Bearer clients always may. A cookie is sent on a cross-site top-level
/// navigation too, so a cookie session needs the session's `X-CSRF-Token` or
/// `Sec-Fetch-Site: same-origin` (which a browser sets and a page cannot forge).
#[derive(Debug, Clone, Copy)]
pub struct SideEffects(pub bool);

impl SideEffects {
    pub fn require(self) -> Result<(), AppError> {
        if self.0 {
            Ok(())
        } else {
            Err(AuthError::CsrfFailed.into())
        }
    }
}

/// The authenticated caller, put on the request by the authentication layer
/// (`http::auth::middleware`). A handler that takes an `Actor` on a route the layer does not
/// wrap answers 401: a route cannot forget authentication and still run.
impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(|| AuthError::MissingCredentials.into())
    }
}

/// Set by the authentication layer with the `Actor`; without it, no side effects.
impl<S: Send + Sync> FromRequestParts<S> for SideEffects {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<SideEffects>()
            .copied()
            .unwrap_or(SideEffects(false)))
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
