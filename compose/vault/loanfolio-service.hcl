# The service's Vault policy (docs/security.md): new data keys, and unwrapping them, on the
# `loanfolio` transit key only. The service's token can neither rotate nor rewrap nor read
# or change the key's configuration, and no other key or secret engine is reachable.
# (src/crypto/vault.rs calls exactly these two; its readiness probe is a datakey.)

# A fresh 256-bit data key, returned in plaintext and wrapped (context = the borrower
# file's id, the key being derived).
path "transit/datakey/plaintext/loanfolio" {
  capabilities = ["update"]
}

# Unwrap a stored data key (same context).
path "transit/decrypt/loanfolio" {
  capabilities = ["update"]
}
