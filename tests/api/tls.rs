//! TLS in transit (issue 8, docs/security.md) against private servers this test starts with a
//! test CA: a PostgreSQL that accepts TLS connections only (run as the `postgres` user:
//! initdb refuses root) and a TLS-only Redis. The service's own connection code reaches
//! them when its CA bundle matches and refuses them when it does not. The HTTP listener
//! serves HTTPS with `server.tls_cert_file` / `tls_key_file`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::helpers::{base_settings, free_port, port_opens};

/// A CA and a server certificate for 127.0.0.1 / localhost, written as PEM files; the CA
/// can issue client certificates too.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("Loanfolio {name} test CA"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Self { dir, issuer }
    }

    /// A client certificate (and key) for mutual TLS, issued by this CA.
    fn client_identity(&self) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "loanfolio lender client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join("client.crt"),
            self.dir.path().join("client.key"),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").unwrap();
    let newest = versions
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("PostgreSQL server binaries under /usr/lib/postgresql");
    newest.join("bin").join(name)
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

/// A private PostgreSQL on its own port that accepts only TLS connections (hostssl).
async fn private_postgres(pki: &Pki) -> (Server, u16) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::copy(pki.cert(), tls.join("server.crt")).unwrap();
    std::fs::copy(pki.key(), tls.join("server.key")).unwrap();
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(
        tls.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let initdb = as_postgres(&pg_bin("initdb"))
        .args(["-D"])
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        initdb.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let port = free_port();
    let child = as_postgres(&pg_bin("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.path().display()))
        .args(["-c", "ssl=on"])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            tls.join("server.crt").display()
        ))
        .arg("-c")
        .arg(format!("ssl_key_file={}", tls.join("server.key").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = port_opens(port, 30).await;
    assert!(up, "the private PostgreSQL did not start");
    (Server { child, _dir: dir }, port)
}

async fn private_redis(pki: &Pki) -> (Server, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--tls-cert-file")
        .arg(pki.cert())
        .arg("--tls-key-file")
        .arg(pki.key())
        .arg("--tls-ca-cert-file")
        .arg(pki.ca())
        .args(["--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = port_opens(port, 30).await;
    assert!(up, "the private Redis did not start");
    (Server { child, _dir: dir }, port)
}

/// Through the service's own pool: whether it connects, and whether the session is TLS.
async fn postgres_session(port: u16, ca: &Path) -> Result<bool, String> {
    let mut settings = base_settings();
    settings.set_database_url(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    settings.database.ssl_mode = Some("verify-full".into());
    settings.database.ca_file = Some(ca.to_owned());
    settings.database.acquire_timeout_secs = 5;
    let pool = loanfolio::db::lazy_pool(&settings.database).map_err(|e| format!("{e:#}"))?;
    let ssl: Result<bool, _> =
        sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await;
    pool.close().await;
    ssl.map_err(|e| e.to_string())
}

#[tokio::test]
async fn postgres_over_tls_is_verified_against_the_configured_ca() {
    let pki = Pki::new("postgres");
    let other = Pki::new("unrelated");
    let (_server, port) = private_postgres(&pki).await;
    assert_eq!(
        postgres_session(port, &pki.ca()).await,
        Ok(true),
        "connected, over TLS"
    );
    let refused = postgres_session(port, &other.ca()).await;
    assert!(
        refused.is_err(),
        "a server whose certificate does not chain to the configured CA is refused: {refused:?}"
    );
    // And the server takes no plaintext connection at all (hostssl only).
    let mut settings = base_settings();
    settings.set_database_url(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ));
    settings.database.acquire_timeout_secs = 5;
    let pool = loanfolio::db::lazy_pool(&settings.database).unwrap();
    assert!(sqlx::query("select 1").execute(&pool).await.is_err());
}

async fn redis_check(port: u16, ca: &Path) -> anyhow::Result<()> {
    let mut settings = base_settings();
    settings.set_redis_url(format!("rediss://127.0.0.1:{port}/0"));
    settings.redis.ca_file = Some(ca.to_owned());
    let cache = loanfolio::cache::Cache::new(&settings.redis)?;
    tokio::time::timeout(Duration::from_secs(10), cache.check()).await?
}

#[tokio::test]
async fn redis_over_tls_is_verified_against_the_configured_ca() {
    let pki = Pki::new("redis");
    let other = Pki::new("unrelated");
    let (_server, port) = private_redis(&pki).await;
    redis_check(port, &pki.ca())
        .await
        .expect("connected over TLS");
    assert!(
        redis_check(port, &other.ca()).await.is_err(),
        "a server whose certificate does not chain to the configured CA is refused"
    );
}

#[tokio::test]
async fn the_http_listener_serves_https_with_the_configured_certificate() {
    let pki = Pki::new("listener");
    let (cert, key) = (pki.cert(), pki.key());
    let app = crate::helpers::app()
        .settings(|s| {
            s.server.tls_cert_file = Some(cert);
            s.server.tls_key_file = Some(key);
        })
        .spawn()
        .await;
    let port = app.address.port();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let response = trusting
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );
    // A client that does not trust the CA refuses the listener.
    assert!(
        reqwest::get(format!("https://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );
}

/// The bureau over mutual TLS (docs/integrations/bureau.md): the simulator serves HTTPS with
/// the site's test CA and requires a client certificate from it. The service's bureau
/// client pulls with its configured identity, and fails without one or with another CA's.
#[tokio::test]
async fn the_bureau_is_reached_over_mutual_tls_with_the_configured_identity() {
    use loanfolio::integrations::bureau::{BureauClient, Kind, Subject};
    let pki = Pki::new("bureau");
    let stranger = Pki::new("stranger");
    let (ca, cert, key) = (pki.ca(), pki.cert(), pki.key());
    let bureau = crate::helpers::bureau::PrivateBureau::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--client-ca",
        ca.to_str().unwrap(),
    ])
    .await;
    let subject = Subject {
        first_name: "Casey".into(),
        last_name: "Canary".into(),
        ssn: "219-09-9999".into(),
        date_of_birth: "1971-03-14".into(),
        address: serde_json::json!({"line1": "1 Main St", "city": "Springfield", "state": "IL", "postal_code": "62701"}),
    };
    let pull = |identity: Option<(PathBuf, PathBuf)>| {
        let mut settings = base_settings();
        bureau.configure(&mut settings);
        settings.bureau.base_url = format!("https://127.0.0.1:{}", bureau.port)
            .parse()
            .unwrap();
        settings.bureau.ca_file = Some(pki.ca());
        settings.bureau.client_cert_file = identity.as_ref().map(|i| i.0.clone());
        settings.bureau.client_key_file = identity.map(|i| i.1);
        let subject = &subject;
        async move {
            let client = BureauClient::new(&settings.bureau).unwrap();
            client
                .pull(Kind::New, uuid::Uuid::now_v7(), "soft", subject)
                .await
        }
    };
    let report = pull(Some(pki.client_identity()))
        .await
        .expect("pulled over mTLS");
    assert!(report.score.is_some(), "{report:?}");
    assert!(pull(None).await.is_err(), "no client certificate: refused");
    assert!(
        pull(Some(stranger.client_identity())).await.is_err(),
        "a client certificate from another CA: refused"
    );
}
