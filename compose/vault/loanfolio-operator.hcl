# The operator's Vault policy (docs/security.md): the token given to
# `loanfolio admin keys rotate|rewrap --operator-token-file …`, never to the service.
# Rotation: rotate, then rewrap every stored data key; a key epoch ends with `admin keys
# retire`, which raises the minimum versions and trims the older ones (docs/security.md).

# A new key version.
path "transit/keys/loanfolio/rotate" {
  capabilities = ["update"]
}

# Re-encrypt a wrapped data key under the newest version (the plaintext never leaves Vault).
path "transit/rewrap/loanfolio" {
  capabilities = ["update"]
}

# Read the key's versions (latest_version for `admin keys rewrap --newest-version`) and
# raise min_decryption_version once every data key is rewrapped.
path "transit/keys/loanfolio" {
  capabilities = ["read"]
}

path "transit/keys/loanfolio/config" {
  capabilities = ["update"]
}

# The end of a key epoch: versions below the minimum are deleted from the keyring, so
# backups whose data keys they wrapped no longer open (docs/operations/retention.md).
path "transit/keys/loanfolio/trim" {
  capabilities = ["update"]
}
