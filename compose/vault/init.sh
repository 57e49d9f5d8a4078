#!/bin/sh
# vault-init (one-shot, Vault image): the transit engine, the key, the two policies and the
# two tokens, on every `up` (each step is idempotent). Uses the development root token that
# vault/start.sh keeps in the vault-unseal volume.
#
#   transit/keys/loanfolio  aes256-gcm96, derived (context = borrower file id), not
#                           exportable, no plaintext backup (docs/security.md)
#   loanfolio-service       policy: datakey + decrypt on that key  -> token for the service,
#                           written to /run/loanfolio/vault-token (kms.vault.token_file)
#   loanfolio-operator      policy: rotate, rewrap, read/update the key's config -> token for
#                           `loanfolio admin keys …`, written to /run/loanfolio-operator/
set -eu

: "${VAULT_ADDR:?}"
root_token_file=/vault/unseal/root-token
service_token=/run/loanfolio/vault-token
operator_token=/run/loanfolio-operator/vault-token
# The uid the loanfolio image runs as (compose/Dockerfile).
owner=10001:10001
mount=transit
key=loanfolio

VAULT_TOKEN=$(cat "$root_token_file")
export VAULT_TOKEN

if ! vault secrets list -format=json | grep -q "\"$mount/\""; then
    vault secrets enable -path="$mount" transit
fi
if ! vault read "$mount/keys/$key" >/dev/null 2>&1; then
    vault write "$mount/keys/$key" type=aes256-gcm96 derived=true \
        exportable=false allow_plaintext_backup=false
fi

vault policy write loanfolio-service /loanfolio/vault/loanfolio-service.hcl
vault policy write loanfolio-operator /loanfolio/vault/loanfolio-operator.hcl

# A token file is kept while its token still works (a running service keeps the token it
# read at start); otherwise a new orphan token with only the named policy (plus Vault's
# `default`: look up and renew itself) replaces it.
ensure_token() { # file policy
    if [ -s "$1" ] && VAULT_TOKEN=$(cat "$1") vault token lookup >/dev/null 2>&1; then
        echo "vault-init: $1 still valid"
    else
        umask 077
        vault token create -orphan -policy="$2" -ttl=8760h -display-name="$2" \
            -field=token >"$1.new"
        mv "$1.new" "$1"
        echo "vault-init: new $2 token in $1"
    fi
    chown "$owner" "$1"
    chmod 0400 "$1"
}
ensure_token "$service_token" loanfolio-service
ensure_token "$operator_token" loanfolio-operator

echo "vault-init: transit key $mount/keys/$key ready (latest_version $(vault read -field=latest_version "$mount/keys/$key"))"
