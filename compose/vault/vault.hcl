# Vault for the compose stack: DEVELOPMENT ONLY.
#
# File storage in the vault-data volume, so the transit key (and with it every wrapped data
# key in PostgreSQL) survives restarts. Unlike `vault server -dev`, whose in-memory key
# would vanish and leave every stored document undecryptable. The unseal key and root token
# sit in the vault-unseal volume so start.sh can unseal by itself: acceptable on a
# developer's machine only. Production Vault is installed and unsealed by lender IT (auto-
# unseal or key holders), with TLS; see compose/README.md.

storage "file" {
  path = "/vault/file"
}

listener "tcp" {
  address = "0.0.0.0:8200"
  # Plain HTTP inside the compose network (development only).
  tls_disable = true
}

api_addr      = "http://vault:8200"
ui            = true
# Containers cannot mlock without IPC_LOCK; the image's setcap step is skipped too
# (SKIP_SETCAP in compose.yaml).
disable_mlock = true

# vault-init creates the service's and the operator's tokens with a one-year TTL, so a
# development stack does not lose its tokens after Vault's default 32 days.
max_lease_ttl = "8760h"
