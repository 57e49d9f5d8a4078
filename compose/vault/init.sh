#!/bin/sh
# vault-init / openbao-init (one-shot, in the key service's own image): the transit engine,
# the key, the two policies, the service's AppRole identity and the operator's token, on
# every `up` (each step is idempotent). Uses the development root token that start.sh keeps
# in the vault-unseal volume. The same script serves HashiCorp Vault and OpenBao (same API).
#
#   transit/keys/loanfolio  aes256-gcm96, derived (context = borrower file id), not
#                           exportable, no plaintext backup (docs/security.md)
#   loanfolio-service       policy: datakey + decrypt on that key. The service logs in by
#                           AppRole: role id and secret id in /run/loanfolio/vault-role-id
#                           and vault-secret-id (kms.vault.role_id_file, secret_id_file); it
#                           renews its token itself and logs in again when renewal fails
#   loanfolio-operator      policy: rotate, rewrap, read/update the key's config -> token for
#                           `loanfolio admin keys …`, written to /run/loanfolio-operator/
set -eu

: "${VAULT_ADDR:?}"
if command -v bao >/dev/null 2>&1; then cli=bao; else cli=vault; fi
export BAO_ADDR="$VAULT_ADDR"
root_token_file=/vault/unseal/root-token
secrets=/run/loanfolio
operator_token=/run/loanfolio-operator/vault-token
# The uid the loanfolio image runs as (compose/Dockerfile).
owner=10001:10001
mount=transit
key=loanfolio
role=loanfolio-service

VAULT_TOKEN=$(cat "$root_token_file")
BAO_TOKEN=$VAULT_TOKEN
export VAULT_TOKEN BAO_TOKEN

# Listings are read whole before grep: no early pipe close.
engines=$($cli secrets list -format=json)
if ! printf '%s' "$engines" | grep -q "\"$mount/\""; then
    $cli secrets enable -path="$mount" transit
fi
if ! $cli read "$mount/keys/$key" >/dev/null 2>&1; then
    $cli write "$mount/keys/$key" type=aes256-gcm96 derived=true \
        exportable=false allow_plaintext_backup=false
fi

$cli policy write loanfolio-service /loanfolio/vault/loanfolio-service.hcl
$cli policy write loanfolio-operator /loanfolio/vault/loanfolio-operator.hcl

methods=$($cli auth list -format=json)
if ! printf '%s' "$methods" | grep -q '"approle/"'; then
    $cli auth enable approle
fi
# Tokens live an hour and are renewed by the service up to a day; then it logs in again.
$cli write "auth/approle/role/$role" token_policies=loanfolio-service \
    token_ttl=1h token_max_ttl=24h secret_id_ttl=0

install_file() { # file (from $1.new)
    chown "$owner" "$1.new"
    chmod 0400 "$1.new"
    mv "$1.new" "$1"
}
umask 077
$cli read -field=role_id "auth/approle/role/$role/role-id" >"$secrets/vault-role-id.new"
install_file "$secrets/vault-role-id"
# A secret id is kept across `up`s while the key service still knows it (a running service
# keeps logging in with it); a missing or unknown one (a reset key service) is replaced.
# Rotating it: delete the file and run `up` again.
known=""
if [ -s "$secrets/vault-secret-id" ]; then
    known=$($cli write -format=json "auth/approle/role/$role/secret-id/lookup" \
        secret_id=@"$secrets/vault-secret-id" 2>/dev/null || true)
fi
if ! printf '%s' "$known" | grep -q '"secret_id_accessor"'; then
    $cli write -f -field=secret_id "auth/approle/role/$role/secret-id" >"$secrets/vault-secret-id.new"
    install_file "$secrets/vault-secret-id"
    echo "vault-init: new AppRole secret id in $secrets/vault-secret-id"
fi

# The operator's token is kept while it still works; otherwise a new orphan token with only
# the operator policy (plus `default`: look up and renew itself) replaces it.
if [ -s "$operator_token" ] && VAULT_TOKEN=$(cat "$operator_token") BAO_TOKEN=$(cat "$operator_token") \
    $cli token lookup >/dev/null 2>&1; then
    echo "vault-init: $operator_token still valid"
else
    $cli token create -orphan -policy=loanfolio-operator -ttl=8760h -display-name=loanfolio-operator \
        -field=token >"$operator_token.new"
    install_file "$operator_token"
    echo "vault-init: new loanfolio-operator token in $operator_token"
fi

echo "vault-init: transit key $mount/keys/$key ready (latest_version $($cli read -field=latest_version "$mount/keys/$key"))"
