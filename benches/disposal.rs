//! Disposal at scale (docs/operations/retention.md): 10,000 borrower files past their rule
//! — each a lead, a withdrawn loan and a stored document object — are disposed by one
//! round of a worker process (its own pool, as deployed), while the dashboard
//! (`GET /v1/loans?limit=50` of agent-a1, whose 100 loans stay) of a serving process on the
//! same database is measured at a fixed arrival rate. Printed: files/s, and the dashboard's
//! p99 while the round runs against its idle p99 measured in the same run (goal: ≤ 2×).
//!
//! `scripts/bench disposal` (release build). `BENCH_FILES=1000` for a tenth of it.

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use loanfolio::crypto::field::{self, Location};
use object_store::ObjectStoreExt;
use uuid::Uuid;

const RATE_PER_SEC: u64 = 100;
const WINDOW_SECONDS: u64 = 5;
/// The due files belong to agents of 100 loans each, as the brief's scale has them (one agent
/// with all of them would skew the planner's statistics for every dashboard).
const FILES_PER_AGENT: usize = 100;

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// COPY `data` into the table and columns `sql` names.
async fn copy(db: &sqlx::PgPool, sql: &str, data: &str) {
    let mut conn = db.acquire().await.unwrap();
    let mut copy = conn.copy_in_raw(sql).await.unwrap();
    copy.send(data.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
}

/// `files` borrower files owned by `owner`, each with a loan in `status` last changed
/// `days_ago`, sealed as the API would write them; with `objects`, each loan also gets a
/// document whose (small) encrypted object is in the documents bucket.
async fn seed(
    state: &loanfolio::state::AppState,
    owner: &str,
    files: usize,
    status: &str,
    days_ago: i64,
    objects: bool,
) {
    let (mut keys, mut leads, mut loans, mut documents) =
        (String::new(), String::new(), String::new(), String::new());
    let mut puts = Vec::new();
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for i in 0..files {
        let (lead, loan, document) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (key, wrapped, version) = state.keys.kms.generate(&lead.to_string()).await.unwrap();
        keys.push_str(&format!("{lead}\t{wrapped}\t{version}\n"));
        let seal = |table, column, row, text: &[u8]| {
            hex(&field::encrypt(&key, Location { table, column, row }, text))
        };
        let email = seal(
            "leads",
            "email_enc",
            lead,
            format!("d{i}@example.com").as_bytes(),
        );
        leads.push_str(&format!(
            "{lead}\t{owner}\tteam-a\tDispose{i}\tBench\t\\\\x{email}\tlost\t{at}\n"
        ));
        let property = seal(
            "loans",
            "property_enc",
            loan,
            br#"{"line1":"1 Old St","city":"Springfield","state":"IL","postal_code":"62701"}"#,
        );
        loans.push_str(&format!(
            "{loan}\t{lead}\t{owner}\tteam-a\tconventional\t{}.00\t\\\\x{property}\t{status}\t{at}\n",
            200_000 + i
        ));
        if objects {
            let name = seal("documents", "filename_enc", document, b"w2.pdf");
            let object = format!("documents/{document}");
            documents.push_str(&format!(
                "{document}\t{loan}\t{lead}\t\\\\x{name}\tapplication/pdf\t2048\tw2\tavailable\tagent\tuploads/{document}\t{object}\t{at}\n"
            ));
            let sealed = loanfolio::crypto::stream::encrypt_all(&key, 1, document, &[7u8; 2048]);
            puts.push((object, sealed));
        }
    }
    load(state, [keys, leads, loans, documents], puts).await;
}

/// COPY the rows in and PUT the objects (16 at a time).
async fn load(
    state: &loanfolio::state::AppState,
    [keys, leads, loans, documents]: [String; 4],
    puts: Vec<(String, Vec<u8>)>,
) {
    let db = &state.db;
    copy(
        db,
        "copy borrower_files (id, wrapped_dek, kek_version) from stdin",
        &keys,
    )
    .await;
    copy(
        db,
        "copy leads (id, owner_subject, team, first_name, last_name, email_enc, status, updated_at) from stdin",
        &leads,
    )
    .await;
    copy(
        db,
        "copy loans (id, lead_id, owner_subject, team, loan_type, amount, property_enc, status, updated_at) from stdin",
        &loans,
    )
    .await;
    if !puts.is_empty() {
        copy(
            db,
            "copy documents (id, loan_id, lead_id, filename_enc, content_type, size_bytes, doc_type, state, uploaded_by, quarantine_key, object_key, upload_expires_at) from stdin",
            &documents,
        )
        .await;
        let store = state.storage.documents.clone();
        futures::stream::iter(puts)
            .for_each_concurrent(16, |(key, bytes)| {
                let store = store.clone();
                async move {
                    store
                        .put(&object_store::path::Path::from(key), bytes.into())
                        .await
                        .unwrap();
                }
            })
            .await;
    }
    sqlx::query("analyze").execute(db).await.unwrap();
}

/// The dashboard at `RATE_PER_SEC` for `WINDOW_SECONDS` (open loop): its latencies.
async fn dashboard_window(
    client: reqwest::Client,
    url: Arc<String>,
    token: Arc<String>,
) -> Vec<Duration> {
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    let mut tasks = Vec::new();
    for _ in 0..RATE_PER_SEC * WINDOW_SECONDS {
        interval.tick().await;
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .get(url.as_str())
                .bearer_auth(token.as_str())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let _ = response.bytes().await.unwrap();
            started.elapsed()
        }));
    }
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// A worker process on `app`'s database and buckets, disposal on: where production runs
/// the round, with its own pool.
async fn worker_on(app: &helpers::TestApp) -> helpers::TestApp {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    helpers::app()
        .role(loanfolio::state::Role::Worker)
        .shared_database(db)
        .buckets(
            &app.state.settings.s3.quarantine_bucket,
            &app.state.settings.s3.documents_bucket,
        )
        .settings({
            let ledger_path = app.state.settings.retention.ledger_path.clone();
            move |s| {
                s.log.level = "warn".into();
                s.retention.enabled = true;
                s.retention.ledger_path = ledger_path;
            }
        })
        .spawn()
        .await
}

fn main() {
    let files: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let ledger = tempfile::tempdir().unwrap();
        let ledger_path = ledger.path().join("disposals.jsonl");
        let app = helpers::app()
            .settings(move |s| {
                s.rate_limit.api_per_ip = 1_000_000;
                s.rate_limit.api_per_principal = 1_000_000;
                s.log.level = "warn".into();
                s.database.max_connections = 16;
                s.retention.enabled = true;
                s.retention.ledger_path = Some(ledger_path);
            })
            .spawn()
            .await;
        let token = Arc::new(helpers::oidc::access_token("agent-a1").await);
        let client = reqwest::Client::new();
        let url = Arc::new(app.url("/v1/loans?limit=50"));
        // agent-a1 exists once it has called; its 100 live loans are the dashboard's.
        assert_eq!(client.get(app.url("/v1/me")).bearer_auth(token.as_str()).send().await.unwrap().status(), 200);
        let seeding = Instant::now();
        seed(&app.state, "agent-a1", 100, "draft", 0, false).await;
        for a in 0..files.div_ceil(FILES_PER_AGENT) {
            let owner = format!("bench-disposal-{a}");
            sqlx::query("insert into agents (subject, display_name, team, roles) values ($1, 'Disposal Bench', $2, '{agent}')")
                .bind(&owner)
                .bind(format!("team-d{}", a / 10))
                .execute(&app.state.db)
                .await
                .unwrap();
            let n = FILES_PER_AGENT.min(files - a * FILES_PER_AGENT);
            seed(&app.state, &owner, n, "withdrawn", 1200, true).await;
        }
        println!("seed: {files} due files (lead, withdrawn loan, document object) in {:.0} s", seeding.elapsed().as_secs_f64());
        for _ in 0..200 {
            assert_eq!(client.get(url.as_str()).bearer_auth(token.as_str()).send().await.unwrap().status(), 200);
        }

        let mut idle = dashboard_window(client.clone(), url.clone(), token.clone()).await;
        let started = Instant::now();
        let worker = worker_on(&app).await;
        let state = worker.state.clone();
        let round = tokio::spawn(async move {
            loanfolio::retention::disposal::run_round(&state, time::OffsetDateTime::now_utc()).await
        });
        let mut during = Vec::new();
        while !round.is_finished() {
            // A fresh token each window: a long round outlives one (five minutes).
            let token = Arc::new(helpers::oidc::access_token("agent-a1").await);
            during.extend(dashboard_window(client.clone(), url.clone(), token).await);
        }
        let summary = round.await.unwrap().unwrap().unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(summary.disposed as usize, files, "{summary:?}");
        let left: i64 = sqlx::query_scalar("select count(*) from borrower_files where wrapped_dek is not null and id in (select id from leads where owner_subject like 'bench-disposal-%')")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        assert_eq!(left, 0);

        let (idle50, idle99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99));
        let (run50, run99) = (percentile(&mut during, 0.5), percentile(&mut during, 0.99));
        println!();
        println!("disposal: {files} borrower files (lead, loan, document object in the documents bucket), one round, key provider {}:", app.state.keys.kms.provider_name());
        println!("  {elapsed:.1} s   {:.0} files/s (each: its transaction, ledger line, object deleted)", files as f64 / elapsed);
        println!("dashboard GET /v1/loans?limit=50 (agent-a1, 100 loans), {RATE_PER_SEC} req/s:");
        println!("  idle            p50 {idle50:.2} ms  p99 {idle99:.2} ms   ({} requests, same run)", idle.len());
        println!("  during disposal p50 {run50:.2} ms  p99 {run99:.2} ms   ({} requests)", during.len());
        println!("  ratio           p99 {:.2}x   (goal <= 2x)", run99 / idle99);
    });
}
