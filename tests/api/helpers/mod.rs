//! Test harness: `spawn_app()` and friends.

pub mod bureau;
pub mod clamd;
pub mod flows;
pub mod garage;
pub mod logs;
pub mod los;
pub mod oidc;
pub mod openbao;
pub mod proxy;
pub mod redis;
pub mod smtp;
pub mod test_routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use loanfolio::app::Application;
use loanfolio::config::Settings;
use loanfolio::state::{AppState, Role};
use secrecy::ExposeSecret;
// Database names below are ours (prefix + hex id), never user input.
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::oneshot;

pub use logs::LogCapture;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The configuration `scripts/test` (or `scripts/dev`) wrote for the tests: the local stack
/// with the `local` key provider (`.local/dev.toml` runs the `vault` one).
pub fn stack_config_path() -> PathBuf {
    let path = repo_root().join(".local/test.toml");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test (or scripts/dev) once to provision the local stack",
        path.display()
    );
    path
}

pub fn base_settings() -> Settings {
    let mut settings = Settings::load(Some(&stack_config_path())).expect("stack configuration");
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    settings.worker.admin_listen = "127.0.0.1:0".parse().unwrap();
    settings.readiness.check_timeout_ms = 1500;
    // Fault tests watch dependencies come and go; the cache has a test of its own.
    settings.readiness.cache_ms = 0;
    settings
}

/// The stack's PostgreSQL URL with another database name.
pub fn database_url(settings: &Settings, database: &str) -> String {
    let mut url = url::Url::parse(settings.database.url().unwrap().expose_secret()).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

pub fn admin_database_url() -> String {
    database_url(&base_settings(), "postgres")
}

/// A short unique id for names (databases, buckets, prefixes).
pub fn unique_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn migrations_fingerprint() -> String {
    // The template is rebuilt whenever the migrations change, so a machine that ran an older
    // suite never serves a stale schema.
    let mut entries: Vec<_> = loanfolio::db::MIGRATOR
        .iter()
        .map(|m| format!("{}:{:x?}", m.version, &m.checksum[..8]))
        .collect();
    entries.sort();
    let digest = ring::digest::digest(&ring::digest::SHA256, entries.join(",").as_bytes());
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// The migrated template database, created once per machine and migrations version. An
/// advisory lock keeps parallel test processes from building it twice.
async fn template_database() -> String {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("lf_tpl_{}", migrations_fingerprint());
            let mut admin = PgConnection::connect(&admin_database_url())
                .await
                .expect("connect to PostgreSQL as the test admin");
            sqlx::query("select pg_advisory_lock(727274)")
                .execute(&mut admin)
                .await
                .unwrap();
            let exists: bool =
                sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                let building = format!("{name}_building");
                sqlx::query(AssertSqlSafe(format!(
                    "drop database if exists {building} with (force)"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
                sqlx::query(AssertSqlSafe(format!("create database {building}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let settings = base_settings();
                let mut conn = PgConnection::connect(&database_url(&settings, &building))
                    .await
                    .unwrap();
                loanfolio::db::MIGRATOR
                    .run(&mut conn)
                    .await
                    .expect("migrate the template");
                conn.close().await.unwrap();
                // Renamed only when complete: a crash mid-build never leaves a half template.
                sqlx::query(AssertSqlSafe(format!(
                    "alter database {building} rename to {name}"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
            }
            sqlx::query("select pg_advisory_unlock(727274)")
                .execute(&mut admin)
                .await
                .unwrap();
            name
        })
        .await
        .clone()
}

/// A database of its own for one test; dropped when the returned guard is (unless it is
/// borrowed from another app of the same test).
pub struct TestDatabase {
    pub name: String,
    owned: bool,
}

impl TestDatabase {
    pub async fn from_template() -> Self {
        let template = template_database().await;
        Self::create(Some(&template)).await
    }

    /// Another app's database, left for that app to drop.
    pub fn shared(name: String) -> Self {
        Self { name, owned: false }
    }

    /// An empty database: no migrations at all.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let name = format!("lf_test_{}", unique_id());
        let mut admin = PgConnection::connect(&admin_database_url()).await.unwrap();
        let statement = match template {
            Some(t) => format!("create database {name} template {t}"),
            None => format!("create database {name}"),
        };
        // Two CREATE DATABASE … TEMPLATE at the same instant can collide ("source database
        // is being accessed by other users"); that is contention, not failure.
        let mut attempt = 0;
        loop {
            match sqlx::query(AssertSqlSafe(statement.clone()))
                .execute(&mut admin)
                .await
            {
                Ok(_) => break,
                Err(e)
                    if attempt < 20 && e.to_string().contains("being accessed by other users") =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => panic!("creating test database: {e}"),
            }
        }
        Self { name, owned: true }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let name = self.name.clone();
        run_cleanup(async move {
            if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "drop database if exists {name} with (force)"
                )))
                .execute(&mut admin)
                .await;
            }
        });
    }
}

/// Runs a guard's async clean-up to completion from `Drop`. Drop runs inside the test's
/// runtime; a small runtime of its own on another thread lets the clean-up finish without
/// blocking that one.
fn run_cleanup(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}

/// Isolates one test's use of the shared services.
pub fn isolate(settings: &mut Settings, database: &TestDatabase) {
    let id = unique_id();
    let url = database_url(settings, &database.name);
    settings.set_database_url(url);
    settings.rabbitmq.prefix = format!("lftest-{id}");
    settings.redis.key_prefix = format!("lftest:{id}:");
    // Bucket names: 3–63 lowercase characters.
    settings.s3.quarantine_bucket = format!("lft-{}-q", &id[..24]);
    settings.s3.documents_bucket = format!("lft-{}-d", &id[..24]);
}

pub struct TestApp {
    pub address: SocketAddr,
    /// The operations listener: `/metrics` and the detailed `/readyz` (for `worker`, the
    /// same as `address`).
    pub admin_address: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    pub logs: LogCapture,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _database: TestDatabase,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// POST a creating request as `token`, with a fresh Idempotency-Key.
    pub async fn create(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// A path on the operations listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_address)
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("request")
    }

    /// The detailed readiness report of the operations listener.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let response = self.admin_get("/readyz").await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("readyz body is JSON"))
    }

    /// Ask the server to shut down gracefully and wait until it has.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }
}

/// The suite's own consumers (tests/api/queue.rs); the production ones come from
/// `loanfolio::events::SUBSCRIPTIONS`.
const TEST_ONLY_CONSUMERS: [&str; 2] = ["test-consumer", "crashy"];

/// Delete everything this test declared on the shared broker: quorum queues are durable and
/// heavy, and a broker that keeps every test's queues slows to a crawl within a few runs.
async fn delete_broker_objects(url: String, prefix: String) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(connection) =
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let names = loanfolio::queue::topology::Names { prefix };
    let mut queues = Vec::new();
    let production = loanfolio::events::SUBSCRIPTIONS.iter().map(|(c, _)| *c);
    for consumer in TEST_ONLY_CONSUMERS.into_iter().chain(production) {
        queues.push(names.queue(consumer));
        queues.push(names.dlq(consumer));
        for delay in loanfolio::queue::topology::RETRY_TIERS {
            queues.push(names.retry(consumer, delay));
        }
    }
    for queue in queues {
        // Deleting a queue that does not exist is fine in RabbitMQ; a fresh channel each
        // time keeps one odd answer from stopping the rest.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in [names.events(), names.dlx()] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test cleanup".into()).await;
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        // The stack's broker directly: this app may have reached it through a fault proxy.
        let url = base_settings()
            .rabbitmq
            .url()
            .map(|u| u.expose_secret().to_owned());
        let prefix = self.state.settings.rabbitmq.prefix.clone();
        if let Ok(url) = url {
            run_cleanup(async move {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    delete_broker_objects(url, prefix),
                )
                .await;
            });
        }
    }
}

pub struct AppBuilder {
    settings: Settings,
    role: Role,
    database: Option<TestDatabase>,
    database_address: Option<SocketAddr>,
    workers: bool,
    router: Option<Box<dyn FnOnce(AppState) -> axum::Router>>,
    buckets: Option<(String, String)>,
    broker_prefix: Option<String>,
}

impl AppBuilder {
    pub fn settings(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.settings);
        self
    }

    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    pub fn database(mut self, database: TestDatabase) -> Self {
        self.database = Some(database);
        self
    }

    /// Run the background workers (the outbox relay) too.
    /// Workers with only these queue consumers (the relay and schedulers always run):
    /// every consumer costs the shared broker two quorum queues per test.
    pub fn workers_only(mut self, consumers: &[&str]) -> Self {
        self.settings.worker.consumers = Some(consumers.iter().map(|c| (*c).to_owned()).collect());
        self.workers()
    }

    pub fn workers(mut self) -> Self {
        self.workers = true;
        self
    }

    /// Use these (quarantine, documents) buckets instead of fresh ones: another app's, as
    /// a restore brings them back.
    pub fn buckets(mut self, quarantine: &str, documents: &str) -> Self {
        self.buckets = Some((quarantine.to_owned(), documents.to_owned()));
        self
    }

    /// Use another app's broker names (its exchange and queues), as a second process of
    /// one installation does.
    pub fn shared_broker(mut self, prefix: &str) -> Self {
        self.broker_prefix = Some(prefix.to_owned());
        self
    }

    /// Use the database of another app of this test.
    pub fn shared_database(mut self, name: String) -> Self {
        self.database = Some(TestDatabase::shared(name));
        self
    }

    /// Reach PostgreSQL at `address` (a fault proxy) instead of the stack's.
    pub fn database_via(mut self, address: SocketAddr) -> Self {
        self.database_address = Some(address);
        self
    }

    /// Serve this router (built from the app's state) instead of the role's own.
    pub fn router(mut self, f: impl FnOnce(AppState) -> axum::Router + 'static) -> Self {
        self.router = Some(Box::new(f));
        self
    }

    pub async fn spawn(self) -> TestApp {
        // Captures this test's log lines: with the current-thread runtime of #[tokio::test]
        // every task of the app runs on this thread.
        let logs = LogCapture::install(&self.settings.log);
        let database = match self.database {
            Some(db) => db,
            None => TestDatabase::from_template().await,
        };
        let mut settings = self.settings;
        isolate(&mut settings, &database);
        if let Some((quarantine, documents)) = self.buckets {
            settings.s3.quarantine_bucket = quarantine;
            settings.s3.documents_bucket = documents;
        }
        if let Some(prefix) = self.broker_prefix {
            settings.rabbitmq.prefix = prefix;
        }
        if let Some(address) = self.database_address {
            let mut url =
                url::Url::parse(settings.database.url().unwrap().expose_secret()).unwrap();
            url.set_ip_host(address.ip()).unwrap();
            url.set_port(Some(address.port())).unwrap();
            settings.set_database_url(url.to_string());
        }
        let state = AppState::new(settings, self.role).expect("app state");
        state
            .storage
            .ensure_buckets()
            .await
            .expect("create test buckets");
        let address = match self.role {
            Role::Serve => state.settings.server.listen,
            Role::Worker => state.settings.worker.admin_listen,
        };
        let app = match self.router {
            Some(f) => {
                let router = f(state.clone());
                Application::with_router(state.clone(), address, router).await
            }
            None => Application::with_state(state.clone(), address).await,
        }
        .expect("build application")
        .with_workers(self.workers);
        let address = SocketAddr::from(([127, 0, 0, 1], app.port()));
        let admin_address = SocketAddr::from(([127, 0, 0, 1], app.admin_port()));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stop_rx.await;
        }));
        TestApp {
            address,
            admin_address,
            state,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            logs,
            stop: Some(stop_tx),
            server: Some(server),
            _database: database,
        }
    }
}

pub fn app() -> AppBuilder {
    AppBuilder {
        settings: base_settings(),
        role: Role::Serve,
        database: None,
        database_address: None,
        workers: false,
        router: None,
        buckets: None,
        broker_prefix: None,
    }
}

pub async fn spawn_app() -> TestApp {
    app().spawn().await
}

/// Polls `f` until it returns true or `seconds` pass.
pub async fn eventually<F, Fut>(seconds: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls the async condition until it holds, and panics with the message (`format!`
/// arguments allowed) when `seconds` pass first.
macro_rules! eventually_or_panic {
    ($seconds:expr, $condition:expr $(,)?) => {
        $crate::helpers::eventually!($seconds, $condition, "not within {} s", $seconds)
    };
    ($seconds:expr, $condition:expr, $($message:tt)+) => {
        if !$crate::helpers::eventually($seconds, $condition).await {
            panic!($($message)+);
        }
    };
}
// Under the function's name: `use crate::helpers::eventually` brings both.
pub(crate) use eventually_or_panic as eventually;

/// Asserts that `response` is a problem document (RFC 9457) with this status and `code`;
/// its body.
pub async fn assert_problem(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(
        response.status(),
        status,
        "expected a {status} {code} problem"
    );
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "the content type of a {status} {code} problem"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["code"], code,
        "expected code {code}, got {}: {body}",
        body["code"]
    );
    body
}

/// Whether something listens on 127.0.0.1:`port` within `seconds` (a child server started).
pub async fn port_opens(port: u16, seconds: u64) -> bool {
    eventually(seconds, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

pub fn free_port() -> u16 {
    static LOCK: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(Default::default).lock().unwrap();
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
