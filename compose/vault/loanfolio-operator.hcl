# The operator's Vault policy (docs/security.md): the token given to
# `loanfolio admin keys rotate|rewrap --operator-token-file …`, never to the service.
# Rotation: rotate, then rewrap every stored data key, then raise min_decryption_version.

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
