//! TLS in transit (docs/security.md): the process's one rustls crypto provider, and the CA
//! bundles each client verifies its server against (`<section>.ca_file`).

use std::path::Path;

/// Both ring and aws-lc-rs are linked (through different crates); rustls then needs the
/// process-wide provider named, or a client built with the default builder panics.
pub fn install_crypto_provider() {
    // Err only when one is installed already: that one stays.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The PEM bundle at `path`, for the setting `key`.
pub fn read_ca(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    install_crypto_provider();
    let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{key} {}: {e}", path.display()))?;
    anyhow::ensure!(
        pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
        "{key} {}: no PEM certificate in it",
        path.display()
    );
    Ok(pem)
}

/// A reqwest client that trusts only the bundle at `path` (when given) — not the system's
/// roots besides: a public CA must not be able to vouch for the site's internal servers.
pub fn pin_roots(
    builder: reqwest::ClientBuilder,
    key: &str,
    path: Option<&Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    Ok(match path {
        Some(path) => {
            builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&read_ca(key, path)?)?)
        }
        None => builder,
    })
}
