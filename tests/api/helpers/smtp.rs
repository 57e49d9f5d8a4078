//! A private SMTP server for one test: Debian's aiosmtpd delivering into a Maildir the test
//! reads, stoppable without touching the shared one. Recipients whose address starts with
//! `bounce` are refused with a permanent `550` (a mailbox that does not exist).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{free_port, port_opens};

/// The decoded text of a raw message (quoted-printable soft breaks and `=3D` undone).
pub fn decoded(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

const PICKY_HANDLER: &str = r#"
from aiosmtpd.handlers import Mailbox


class PickyMailbox(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("bounce"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"
"#;

pub struct PrivateSmtp {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateSmtp {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("picky_mailbox.py"), PICKY_HANDLER).unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.path().join("mail").join(sub)).unwrap();
        }
        let mut smtp = Self {
            port: free_port(),
            dir,
            child: None,
        };
        smtp.restart().await;
        smtp
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    pub async fn restart(&mut self) {
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(["-c", "picky_mailbox.PickyMailbox"])
            .arg(self.maildir())
            .env("PYTHONPATH", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (Debian python3-aiosmtpd)");
        self.child = Some(child);
        let port = self.port;
        let up = port_opens(port, 20).await;
        assert!(up, "aiosmtpd did not start");
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn configure(&self, settings: &mut loanfolio::config::Settings) {
        settings.notifications.smtp.host = "127.0.0.1".into();
        settings.notifications.smtp.port = self.port;
        settings.notifications.smtp.tls = loanfolio::config::SmtpTls::None;
    }

    /// Every message to `address` received so far, decoded.
    pub fn messages_to(&self, address: &str) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| {
                m.lines()
                    .any(|l| l.starts_with("To:") && l.contains(address))
            })
            .map(|m| decoded(m))
            .collect()
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) {
                for entry in entries.flatten() {
                    out.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for PrivateSmtp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
