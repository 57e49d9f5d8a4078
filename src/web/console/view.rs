//! How the console draws: the embedded templates (minijinja, auto-escaped HTML, every
//! template parsed when the environment is first built and by a unit test), the common
//! page context, the headers every page carries, and error pages.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{AutoEscape, Environment};
use serde_json::{Value, json};

use crate::auth::{Actor, Role};
use crate::error::{AppError, Problem, ProblemMarker};
use crate::http::auth::middleware::SessionContext;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("pipeline.html", include_str!("templates/pipeline.html")),
    ("team.html", include_str!("templates/team.html")),
    ("leads.html", include_str!("templates/leads.html")),
    ("lead_form.html", include_str!("templates/lead_form.html")),
    ("lead.html", include_str!("templates/lead.html")),
    ("loan.html", include_str!("templates/loan.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("admin.html", include_str!("templates/admin.html")),
    ("retention.html", include_str!("templates/retention.html")),
    ("hold_form.html", include_str!("templates/hold_form.html")),
    ("error.html", include_str!("templates/error.html")),
];

const STYLE: &str = include_str!("../assets/console.css");
const SCRIPT: &str = include_str!("../assets/console.js");

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.add_filter("path_segment", path_segment);
    env.add_filter("money", money);
    // A nonce per drawn form: a form submitted twice runs once (the session middleware).
    env.add_function("form_id", || uuid::Uuid::new_v4().simple().to_string());
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// A value made safe as one path segment (an agent's subject can hold `/` or spaces).
fn path_segment(value: String) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A decimal amount as US dollars are read: `350000.00` → `$350,000.00`; anything else as
/// it came.
fn money(value: String) -> String {
    let (whole, cents) = value.split_once('.').unwrap_or((&value, "00"));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return value;
    }
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("${grouped}.{cents}")
}

static ENV: LazyLock<Environment<'static>> =
    LazyLock::new(|| environment().expect("the console's templates parse (a unit test holds it)"));

/// The console's Content-Security-Policy: its own stylesheet and script only — no inline
/// code, no other origin — forms post only to this service, and no framing.
pub fn content_security_policy() -> &'static str {
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(content_security_policy()),
            ),
            // Every page may show borrower data: never stored by the browser or a proxy.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// What every page knows of its viewer: name, roles, and the token its forms carry.
pub fn viewer(actor: &Actor, session: Option<&SessionContext>) -> Value {
    json!({
        "name": actor.display_name,
        "subject": actor.subject,
        "team": actor.team,
        "is_agent": actor.has(Role::Agent),
        "is_manager": actor.has(Role::Manager),
        "is_compliance": actor.has(Role::Compliance),
        "is_admin": actor.has(Role::Admin),
        "can_write": actor.write_scope().is_ok(),
        "csrf": session.map(|s| s.session.csrf_token.clone()),
    })
}

/// Render `template` with `context` plus the viewer.
pub fn page(
    status: StatusCode,
    template: &str,
    actor: &Actor,
    session: &SessionContext,
    mut context: Value,
) -> Response {
    if let Value::Object(map) = &mut context {
        map.insert("me".into(), viewer(actor, Some(session)));
    }
    match ENV
        .get_template(template)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
    {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(template, error = %e, "a console template failed to render");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>The page could not be drawn.</p>".into(),
            )
        }
    }
}

/// The problem an error answers with (the API's status, code, detail and field errors).
pub fn problem_of(error: AppError) -> Problem {
    let response = error.into_response();
    match response.extensions().get::<ProblemMarker>() {
        Some(ProblemMarker(problem)) => problem.clone(),
        None => Problem::new(
            response.status(),
            crate::error::ErrorCode::InternalError,
            "the request could not be completed",
        ),
    }
}

/// An error as a page: the API's problem in words, its code shown for support. A step-up
/// becomes a redirect to `/auth/reauth` (the session middleware knows where to return).
pub fn error_page(error: AppError, viewer: Option<(&Actor, &SessionContext)>) -> Response {
    let problem = problem_of(error);
    if problem.code == "step_up_required" {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.extensions_mut().insert(super::session::StepUp);
        return response;
    }
    let context = json!({ "problem": problem, "title": problem.title });
    match viewer {
        Some((actor, session)) => page(problem.status(), "error.html", actor, session, context),
        None => match ENV
            .get_template("error.html")
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        {
            Ok(body) => html(problem.status(), body),
            Err(_) => html(problem.status(), problem.detail),
        },
    }
}

/// A page with only a title and a sentence (signed out), for a viewer without a session.
pub fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let context = json!({ "title": title, "message": text });
    match ENV
        .get_template("error.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
    {
        Ok(body) => html(status, body),
        Err(_) => html(status, text.to_owned()),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes() {
        let env = environment().expect("templates parse");
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap();
        }
        let rendered = env
            .render_str(
                "{{ x }}",
                minijinja::Value::from(minijinja::value::Serde(
                    json!({"x": "<script>alert(1)</script>"}),
                )),
            )
            .unwrap();
        assert_eq!(rendered, "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;");
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    fn render(name: &str, context: Value) -> String {
        let env = environment().unwrap();
        env.get_template(name)
            .unwrap()
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
    }

    fn me() -> Value {
        json!({"name": "Gray", "subject": "admin", "is_admin": true, "csrf": "t", "can_write": false})
    }

    #[test]
    fn amounts_read_as_dollars() {
        assert_eq!(money("350000.00".into()), "$350,000.00");
        assert_eq!(money("999.5".into()), "$999.5");
        assert_eq!(money("1000".into()), "$1,000.00");
        assert_eq!(money("n/a".into()), "n/a");
    }

    #[test]
    fn the_admin_page_renders_agents_queues_and_dependencies() {
        let page = render(
            "admin.html",
            json!({
                "me": me(),
                "agents": [{"subject": "agent a/1", "display_name": "Avery", "roles": ["agent"],
                    "team": "team-a", "last_seen_at": "2026-12-05T10:00:00Z", "disabled_at": null}],
                "queues": [{"consumer": "notifier", "depth": 0}, {"consumer": "x", "depth": null}],
                "ready": true, "schema_ready": true,
                "dependencies": [{"name": "postgres", "status": "up", "required": true}],
                "integrations": {"bureau": "closed"},
            }),
        );
        assert!(
            page.contains("/console/agents/agent%20a%2F1/disable"),
            "{page}"
        );
        assert!(page.contains("unknown"), "an unreadable depth says so");
    }
}
