//! A private clamd on a free port, for tests that stop and restart it. It uses the
//! signature database `scripts/test` generated (.local/clamav/db).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{eventually, free_port, repo_root};

pub struct PrivateClamd {
    pub port: u16,
    /// StreamMaxLength and MaxFileSize, in MB.
    limit_mb: u32,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateClamd {
    pub async fn start() -> Self {
        Self::start_with_limit(64).await
    }

    /// With clamd's stream and file limits at `limit_mb` (the benchmark's 200 MB file).
    pub async fn start_with_limit(limit_mb: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut clamd = Self {
            port: free_port(),
            limit_mb,
            dir,
            child: None,
        };
        clamd.restart().await;
        clamd
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn database() -> PathBuf {
        let db = repo_root().join(".local/clamav/db");
        assert!(
            db.is_dir(),
            "{} is missing: run scripts/test once",
            db.display()
        );
        db
    }

    /// Start (again) on the same port.
    pub async fn restart(&mut self) {
        let conf = self.dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "TCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {db}\nLogFile {log}\nForeground yes\n\
                 StreamMaxLength {limit}M\nMaxFileSize {limit}M\nMaxScanSize {scan}M\nAlertExceedsMax yes\nMaxThreads 2\n",
                limit = self.limit_mb,
                scan = (self.limit_mb * 2).max(256),
                port = self.port,
                db = Self::database().display(),
                log = self.dir.path().join("clamd.log").display(),
            ),
        )
        .unwrap();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clamd (Debian clamav-daemon)");
        self.child = Some(child);
        let address = self.address();
        let up = eventually(60, || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(&address).await.is_ok() }
        })
        .await;
        assert!(up, "private clamd did not start on {}", self.address());
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateClamd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
