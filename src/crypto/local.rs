//! The `local` key provider's master key file: for development, tests and very small
//! installs. One line per key version, `<version> <64 hex digits>`; the highest version
//! wraps new data keys, older ones still unwrap. The file must be 0600 (or stricter).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use zeroize::Zeroizing;

pub type MasterKey = Zeroizing<[u8; 32]>;

#[derive(Debug, Clone)]
pub struct LocalKeyFile {
    path: PathBuf,
}

impl LocalKeyFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key version in the file, oldest first.
    pub fn load(&self) -> anyhow::Result<Vec<(u32, MasterKey)>> {
        let metadata = std::fs::metadata(&self.path)
            .with_context(|| format!("master key file {}", self.path.display()))?;
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "master key file {} is readable by group or others (mode {:o}); chmod 600 it",
                self.path.display(),
                mode & 0o777
            );
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(&self.path)
                .with_context(|| format!("reading master key file {}", self.path.display()))?,
        );
        parse(&text).with_context(|| format!("master key file {}", self.path.display()))
    }

    /// Create a new file with one random key (version 1); refuses to overwrite.
    pub fn generate(&self) -> anyhow::Result<()> {
        let mut key = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), key.as_mut())
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let line = Zeroizing::new(format!("1 {}\n", hex(key.as_ref())));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("creating master key file {}", self.path.display()))?;
        file.write_all(line.as_bytes())?;
        file.sync_all()?;
        Ok(())
    }
}

const WRAP_PREFIX: &str = "local:v";

fn wrap_aad(context: &str) -> Vec<u8> {
    format!("loanfolio:data-key:{context}").into_bytes()
}

impl LocalKeyFile {
    /// Wrap a data key under the newest master key; `context` binds it to its owner (a
    /// borrower file id), so it cannot be unwrapped for another.
    pub fn wrap(&self, data_key: &[u8; 32], context: &str) -> anyhow::Result<(String, u32)> {
        let keys = self.load()?;
        let (version, master) = keys.last().context("no master key")?;
        let wrapped = crate::crypto::aead_seal(master, &wrap_aad(context), data_key);
        Ok((
            format!("{WRAP_PREFIX}{version}:{}", b64(&wrapped)),
            *version,
        ))
    }

    pub fn unwrap_key(&self, wrapped: &str, context: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
        let rest = wrapped
            .strip_prefix(WRAP_PREFIX)
            .context("not a local-provider wrapped key")?;
        let (version, body) = rest.split_once(':').context("malformed wrapped key")?;
        let version: u32 = version.parse().context("malformed wrapped key version")?;
        let keys = self.load()?;
        let (_, master) = keys
            .iter()
            .find(|(v, _)| *v == version)
            .with_context(|| format!("master key version {version} is not in the key file"))?;
        let sealed = unb64(body).context("malformed wrapped key")?;
        let plain = crate::crypto::aead_open(master, &wrap_aad(context), &sealed)
            .context("the wrapped key does not verify under its master key and context")?;
        let mut key = Zeroizing::new([0u8; 32]);
        anyhow::ensure!(plain.len() == 32, "the wrapped key is not 32 bytes");
        key.copy_from_slice(&plain);
        Ok(key)
    }

    /// Append a new master key version; new data keys are wrapped with it from now on.
    pub fn rotate(&self) -> anyhow::Result<u32> {
        let keys = self.load()?;
        let next = keys.last().map(|(v, _)| v + 1).unwrap_or(1);
        let mut key = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), key.as_mut())
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let line = Zeroizing::new(format!("{next} {}\n", hex(key.as_ref())));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening master key file {}", self.path.display()))?;
        file.write_all(line.as_bytes())?;
        file.sync_all()?;
        Ok(next)
    }

    pub fn newest_version(&self) -> anyhow::Result<u32> {
        Ok(self.load()?.last().map(|(v, _)| *v).unwrap_or(0))
    }

    /// Operator, the end of a key epoch: delete every version below `below` from the file
    /// (written to a new file, synced, then renamed over the old one). The newest version
    /// always stays. Returns the versions removed.
    pub fn retire_below(&self, below: u32) -> anyhow::Result<Vec<u32>> {
        let keys = self.load()?;
        let newest = keys.last().map(|(v, _)| *v).unwrap_or(0);
        anyhow::ensure!(
            below <= newest,
            "version {below} is newer than the newest master key version {newest}"
        );
        let removed: Vec<u32> = keys
            .iter()
            .map(|(v, _)| *v)
            .filter(|v| *v < below)
            .collect();
        if removed.is_empty() {
            return Ok(removed);
        }
        let mut text = Zeroizing::new(String::new());
        for (version, key) in keys.iter().filter(|(v, _)| *v >= below) {
            text.push_str(&format!("{version} {}\n", hex(key.as_ref())));
        }
        let staged = self.path.with_extension("retiring");
        let _ = std::fs::remove_file(&staged);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
            .with_context(|| format!("writing {}", staged.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staged, &self.path)
            .with_context(|| format!("replacing master key file {}", self.path.display()))?;
        Ok(removed)
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(text)
}

/// Lower-case hexadecimal (key files, checksums).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(text: &str) -> anyhow::Result<Vec<(u32, MasterKey)>> {
    let mut keys: Vec<(u32, MasterKey)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (version, hex_key) = line
            .split_once(' ')
            .with_context(|| format!("line {}: expected `<version> <64 hex digits>`", n + 1))?;
        let version: u32 =
            version.parse().ok().filter(|v| *v > 0).with_context(|| {
                format!("line {}: the version must be a positive integer", n + 1)
            })?;
        let hex_key = hex_key.trim();
        if hex_key.len() != 64 {
            bail!("line {}: the key must be 64 hex digits (32 bytes)", n + 1);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, chunk) in hex_key.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).unwrap_or("zz");
            key[i] = u8::from_str_radix(pair, 16)
                .ok()
                .with_context(|| format!("line {}: the key is not hexadecimal", n + 1))?;
        }
        if keys.iter().any(|(v, _)| *v == version) {
            bail!("line {}: version {version} appears twice", n + 1);
        }
        keys.push((version, key));
    }
    if keys.is_empty() {
        bail!("no key in the file");
    }
    keys.sort_by_key(|(v, _)| *v);
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_versions_no_longer_unwrap_and_the_newest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let file = LocalKeyFile::new(&dir.path().join("master.key"));
        file.generate().unwrap();
        let dek = [7u8; 32];
        let (old, _) = file.wrap(&dek, "file-a").unwrap();
        file.rotate().unwrap();
        let (new, version) = file.wrap(&dek, "file-a").unwrap();
        assert_eq!(version, 2);
        assert!(file.retire_below(3).is_err(), "the newest version stays");
        assert_eq!(file.retire_below(2).unwrap(), vec![1]);
        assert!(
            file.unwrap_key(&old, "file-a").is_err(),
            "version 1 is gone"
        );
        assert_eq!(*file.unwrap_key(&new, "file-a").unwrap(), dek);
        assert_eq!(file.retire_below(2).unwrap(), Vec::<u32>::new());
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = LocalKeyFile::new(&dir.path().join("master.key"));
        file.generate().unwrap();
        let keys = file.load().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, 1);
        assert!(file.generate().is_err(), "must not overwrite");
    }

    #[test]
    fn wrap_rotate_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let file = LocalKeyFile::new(&dir.path().join("master.key"));
        file.generate().unwrap();
        let dek = [9u8; 32];
        let (wrapped, v1) = file.wrap(&dek, "file-a").unwrap();
        assert_eq!(v1, 1);
        assert!(
            file.unwrap_key(&wrapped, "file-b").is_err(),
            "bound to its context"
        );
        assert_eq!(file.rotate().unwrap(), 2);
        assert_eq!(
            *file.unwrap_key(&wrapped, "file-a").unwrap(),
            dek,
            "old versions still unwrap"
        );
        let (rewrapped, v2) = file.wrap(&dek, "file-a").unwrap();
        assert_eq!(v2, 2);
        assert!(rewrapped.starts_with("local:v2:"));
        assert_eq!(*file.unwrap_key(&rewrapped, "file-a").unwrap(), dek);
    }

    #[test]
    fn refuses_group_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = LocalKeyFile::new(&dir.path().join("master.key"));
        file.generate().unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn parse_rejects_bad_lines_without_echoing_key_material() {
        let err = format!("{:#}", parse("1 abcd\n").unwrap_err());
        assert!(
            err.contains("64 hex digits") && !err.contains("abcd"),
            "{err}"
        );
        let two = format!("1 {}\n2 {}\n", "00".repeat(32), "11".repeat(32));
        let keys = parse(&two).unwrap();
        assert_eq!(keys.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(keys[1].1[0], 0x11);
    }
}
