//! The borrower upload page (docs/api.md `GET /u/{token}`): one HTML page, a stylesheet and
//! a script, embedded in the binary — many sites are air-gapped, so nothing comes from a
//! CDN. The page talks to the public API with the token from its own path. An unknown
//! token answers 404 and an expired or revoked link 410 — with the same page, which shows
//! the API's answer in words a borrower understands, in English or Spanish (the strings
//! are in `assets/i18n/`; nothing is translated at run time).

pub mod console;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

const PAGE: &str = include_str!("assets/upload.html");
const STYLE: &str = include_str!("assets/upload.css");
const SCRIPT: &str = include_str!("assets/upload.js");

/// The page's languages and their catalogs.
pub const LANGUAGES: [(&str, &str, &str); 2] = [
    ("en", "English", include_str!("assets/i18n/en.json")),
    ("es", "Español", include_str!("assets/i18n/es.json")),
];

type Catalog = BTreeMap<String, String>;

/// Each language's catalog, and the page's template.
static PAGES: LazyLock<(
    Vec<(&'static str, Catalog)>,
    minijinja::Environment<'static>,
)> = LazyLock::new(|| {
    let catalogs = LANGUAGES
        .iter()
        .map(|(code, _, json)| {
            let catalog: Catalog = serde_json::from_str(json)
                .expect("the page's catalogs are JSON objects of strings (a unit test holds it)");
            (*code, catalog)
        })
        .collect();
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("upload.html", PAGE)
        .expect("the upload page's template parses (a unit test holds it)");
    (catalogs, env)
});

/// The page's language: the borrower's own switch (`?lang=`), else the link's language,
/// else the browser's `Accept-Language` (highest quality first), else English.
pub fn choose_language(
    switch: Option<&str>,
    link: Option<&str>,
    accept_language: Option<&str>,
) -> &'static str {
    let known = |tag: &str| {
        let primary = tag.split(['-', '_']).next().unwrap_or_default().trim();
        LANGUAGES
            .iter()
            .map(|(code, _, _)| *code)
            .find(|code| primary.eq_ignore_ascii_case(code))
    };
    if let Some(code) = switch.and_then(known).or_else(|| link.and_then(known)) {
        return code;
    }
    let mut offered: Vec<(f32, &'static str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .take(20)
        .filter_map(|item| {
            let mut parts = item.split(';');
            let code = known(parts.next()?)?;
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (quality > 0.0).then_some((quality, code))
        })
        .collect();
    // Stable: among equal qualities the browser's order stands.
    offered.sort_by(|a, b| b.0.total_cmp(&a.0));
    offered.first().map_or("en", |(_, code)| code)
}

/// The upload page in `lang`.
fn render_page(lang: &str) -> String {
    let (catalogs, env) = &*PAGES;
    let catalog = catalogs
        .iter()
        .find(|(code, _)| *code == lang)
        .or_else(|| catalogs.first())
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    let (other, other_name) = LANGUAGES
        .iter()
        .find(|(code, _, _)| *code != lang)
        .map_or(("en", "English"), |(code, name, _)| (*code, *name));
    // Inside <script type="application/json">: no `<` may close the element early.
    let strings_json = serde_json::to_string(&catalog)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    env.get_template("upload.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                lang => lang,
                t => catalog,
                strings_json => strings_json,
                other_lang => other,
                other_lang_name => other_name,
            })
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the upload page failed to render");
            String::new()
        })
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .route("/assets/upload.css", get(style))
        .route("/assets/upload.js", get(script))
}

/// The page's Content-Security-Policy: its own script and style only, no inline code, and
/// network access to this service and the object storage the browser PUTs files to.
pub fn content_security_policy(state: &AppState) -> String {
    let s3 = &state.settings.s3;
    let storage = s3.public_endpoint.as_ref().unwrap_or(&s3.endpoint);
    let storage_origin = storage.origin().ascii_serialization();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {storage_origin}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The borrower's upload page (HTML).
#[utoipa::path(get, path = "/u/{token}", tag = "borrowers", params(("token" = String, Path)),
    responses(
        (status = 200, description = "The upload page", content_type = "text/html"),
        (status = 404, description = "No such link: the page, saying so", content_type = "text/html"),
        (status = 410, description = "The link expired or was revoked: the page, saying so", content_type = "text/html"),
    ))]
async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (status, link_language) = match state.db.acquire().await {
        Ok(mut conn) => {
            match crate::links::ops::active_link(&mut conn, &token, false).await {
                Ok(link) => (StatusCode::OK, link.language),
                Err(crate::error::AppError::Client { status, .. }) => (status, None),
                // The page asks the API itself; a database hiccup here must not hide it.
                Err(_) => (StatusCode::OK, None),
            }
        }
        Err(_) => (StatusCode::OK, None),
    };
    let switch = query.ok().and_then(|Query(q)| q.lang);
    let lang = choose_language(
        switch.as_deref(),
        link_language.as_deref(),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let csp = HeaderValue::from_str(&content_security_policy(&state))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
            // The token is in the URL: never send it on as a referrer, never cache the page.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                HeaderName::from_static("x-robots-tag"),
                HeaderValue::from_static("noindex, nofollow"),
            ),
            (
                header::CONTENT_LANGUAGE,
                HeaderValue::from_static(if lang == "es" { "es" } else { "en" }),
            ),
            (header::VARY, HeaderValue::from_static("Accept-Language")),
        ],
        render_page(lang),
    )
        .into_response()
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

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogs_have_the_same_keys_and_the_page_renders_in_each_language() {
        let (catalogs, _) = &*PAGES;
        let keys = |c: &Catalog| c.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&catalogs[0].1), keys(&catalogs[1].1));
        for (code, _, _) in LANGUAGES {
            let page = render_page(code);
            assert!(page.contains(&format!("<html lang=\"{code}\"")), "{code}");
            assert!(!page.contains("{{"), "{code}: nothing left unrendered");
        }
        assert!(render_page("es").contains("Español") || render_page("en").contains("Español"));
    }

    #[test]
    fn the_language_is_the_switch_then_the_link_then_the_browser_then_english() {
        assert_eq!(choose_language(Some("es"), Some("en"), Some("en")), "es");
        assert_eq!(choose_language(Some("fr"), Some("es"), None), "es");
        assert_eq!(
            choose_language(None, None, Some("fr-FR, es-MX;q=0.8, en;q=0.5")),
            "es"
        );
        assert_eq!(
            choose_language(None, None, Some("en-US,en;q=0.9,es;q=0.8")),
            "en"
        );
        assert_eq!(choose_language(None, None, Some("es;q=0, en;q=0.1")), "en");
        assert_eq!(choose_language(None, None, Some("de")), "en");
        assert_eq!(choose_language(None, None, None), "en");
    }
}
