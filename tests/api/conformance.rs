//! The API against its own OpenAPI document, as a client would see it: schemathesis
//! (PyPI, installed by scripts/test) generates requests for every operation and checks
//! that no answer is a server error, every status code, content type and body is the one
//! the document declares. Authenticated as an agent, with a live upload-link token and
//! real ids supplied as parameter overrides, rate limits raised for the run.
//!
//! Run by `scripts/test` as its own step (bounded: `--max-examples 20`); `scripts/fuzz api`
//! runs it longer (`LOANFOLIO_SCHEMATHESIS_EXAMPLES`).

use serde_json::{Value, json};

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::{TestApp, app, oidc};

fn schemathesis() -> String {
    std::env::var("LOANFOLIO_SCHEMATHESIS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/loanfolio-tools/venv/bin/schemathesis")
    })
}

/// The ids schemathesis is given for path parameters: agent-a1's loan and what hangs off it.
struct Ids {
    lead: String,
    loan: String,
    secret: String,
    link_id: String,
    request: String,
    document: String,
    pull: String,
}

async fn live_ids(app: &TestApp, token: &str) -> Ids {
    let loan = agent_a1_loan(app, token).await;
    let get = |path: String| {
        let request = app.client.get(app.url(&path)).bearer_auth(token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let lead = get(format!("/v1/loans/{loan}")).await["lead_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = |path: String, body: Value| async move {
        app.create(token, &path, &body)
            .await
            .json::<Value>()
            .await
            .unwrap()
    };
    let link = created(format!("/v1/loans/{loan}/upload-links"), json!({})).await;
    let request = created(
        format!("/v1/loans/{loan}/document-requests"),
        json!({"doc_type": "w2"}),
    )
    .await;
    let upload = created(
        format!("/v1/loans/{loan}/documents"),
        json!({"filename": "w2.pdf", "content_type": "application/pdf", "size_bytes": 10, "doc_type": "w2"}),
    )
    .await;
    let pull = created(
        format!("/v1/leads/{lead}/credit-reports"),
        json!({"pull_type": "soft", "consent": {"obtained_at": "2026-11-01T10:00:00Z", "method": "written", "text_version": "v1"}}),
    )
    .await;
    let string = |v: &Value| v.as_str().unwrap().to_owned();
    Ids {
        secret: string(&link["token"]),
        link_id: string(&link["id"]),
        request: string(&request["id"]),
        document: string(&upload["document"]["id"]),
        pull: string(&pull["id"]),
        lead,
        loan,
    }
}

/// Path ids by the resource a path names; the token of a live link; other operations'
/// parameters are generated.
fn config_toml(ids: &Ids) -> String {
    let Ids {
        lead,
        loan,
        secret,
        link_id,
        request,
        document,
        pull,
    } = ids;
    let operation = |regex: &str, id: &str| {
        format!(
            "[[operations]]\ninclude-path-regex = \"{regex}\"\nparameters = {{ \"path.id\" = \"{id}\" }}\n"
        )
    };
    [
        format!(
            "[parameters]\n\"path.token\" = \"{secret}\"\n\"path.leadId\" = \"{lead}\"\n\"path.document_id\" = \"{document}\"\n\"path.request_id\" = \"{request}\"\n\"path.subject\" = \"agent-a1\"\n"
        ),
        operation("^/v1/leads/", lead),
        operation("^/v1/loans/", loan),
        operation("^/v1/documents/", document),
        operation("^/v1/credit-reports/", pull),
        operation("^/v1/upload-links/", link_id),
    ]
    .join("\n")
}

/// Runs schemathesis against `app` as the agent holding `token`; its output and stdout.
async fn run_schemathesis(
    tool: &str,
    config: &std::path::Path,
    app: &TestApp,
    token: &str,
) -> (std::process::Output, String) {
    let examples = std::env::var("LOANFOLIO_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "20".into());
    let checks = std::env::var("LOANFOLIO_SCHEMATHESIS_CHECKS").unwrap_or_else(|_| {
        "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance".into()
    });
    let run = || {
        // Async: this test's runtime must keep serving the app while schemathesis runs.
        tokio::process::Command::new(tool)
            .arg("--config-file")
            .arg(config)
            .args(["run", &app.url("/openapi.json")])
            .args(["--checks", &checks])
            .args(["--max-examples", &examples])
            .args(["--workers", "2", "--no-color", "--seed", "20261205"])
            .args(["--request-timeout", "20"])
            // The agent's requests; operations outside /v1 ignore the header.
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .env("NO_COLOR", "1")
            .output()
    };
    let mut output = run().await.expect("run schemathesis");
    let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // CPython 3.11.7's ast.parse sometimes raises "AST constructor recursion depth
    // mismatch" inside hypothesis (python/cpython#106905, fixed in 3.11.8): a crash of the
    // tool, reported as a runtime error, not a finding about the API. Up to two more runs
    // then — only while that crash is the only thing reported.
    for _ in 0..2 {
        if output.status.success()
            || !stdout.contains("AST constructor recursion depth mismatch")
            || stdout.contains("= FAILURES =")
        {
            break;
        }
        println!(
            "{stdout}\nschemathesis crashed (CPython ast bug, not a finding); running it again"
        );
        output = run().await.expect("run schemathesis");
        stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    (output, stdout)
}

#[tokio::test]
#[ignore = "scripts/test runs it as its own step: it needs schemathesis and takes minutes"]
async fn schemathesis_finds_no_failures() {
    let tool = schemathesis();
    assert!(
        std::path::Path::new(&tool).is_file(),
        "schemathesis not found at {tool}: scripts/test installs it"
    );
    let app = app()
        .settings(|s| {
            s.rate_limit.api_per_ip = 1_000_000;
            s.rate_limit.api_per_principal = 1_000_000;
            s.rate_limit.public_per_ip = 1_000_000;
            s.rate_limit.public_per_token = 1_000_000;
            s.rate_limit.auth_per_ip = 1_000_000;
            s.readiness.public_per_ip = 1_000_000;
            s.log.level = "warn".into();
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let ids = live_ids(&app, &token).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, config_toml(&ids)).unwrap();
    let started = std::time::Instant::now();
    let (output, stdout) = run_schemathesis(&tool, &config, &app, &token).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    println!(
        "schemathesis finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "schemathesis found failures (exit {:?})",
        output.status.code()
    );
}
