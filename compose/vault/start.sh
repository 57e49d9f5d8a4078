#!/bin/sh
# The vault / openbao container's entrypoint: DEVELOPMENT-ONLY automatic initialization and
# unseal (HashiCorp Vault and OpenBao have the same CLI; OpenBao's is `bao`).
#
# Starts the server as the image would, then on the very first start initializes Vault with
# a single unseal key and keeps that key and the root token in the vault-unseal volume, and
# on every start unseals with it. Anyone who can read that volume owns this Vault: that is
# fine for a developer's throw-away stack and never acceptable anywhere else.
set -eu

export VAULT_ADDR=http://127.0.0.1:8200 BAO_ADDR=http://127.0.0.1:8200
if command -v bao >/dev/null 2>&1; then cli=bao; else cli=vault; fi
keys=/vault/unseal

docker-entrypoint.sh server &
server=$!
# `docker stop` sends TERM to this script (PID 1): pass it on and wait for a clean exit.
stop() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" || true
    exit 0
}
trap stop TERM INT

# `status` exits 0 (unsealed), 2 (sealed or not initialized) or 1 (no answer).
while :; do
    rc=0
    $cli status >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 1 ] && break
    if ! kill -0 "$server" 2>/dev/null; then
        echo "vault-start: the Vault server exited" >&2
        wait "$server" || exit $?
        exit 1
    fi
    sleep 1
done

# `operator init -status` exits 0 when initialized, 2 when not.
rc=0
$cli operator init -status >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 2 ]; then
    echo "vault-start: first start, initializing (1 key share; DEVELOPMENT ONLY)"
    umask 077
    $cli operator init -key-shares=1 -key-threshold=1 >"$keys/init.txt"
    sed -n 's/^Unseal Key 1: //p' "$keys/init.txt" >"$keys/unseal-key"
    sed -n 's/^Initial Root Token: //p' "$keys/init.txt" >"$keys/root-token"
    rm -f "$keys/init.txt"
    if [ ! -s "$keys/unseal-key" ] || [ ! -s "$keys/root-token" ]; then
        echo "vault-start: could not read the unseal key or root token from 'vault operator init'" >&2
        exit 1
    fi
elif [ "$rc" -ne 0 ]; then
    echo "vault-start: 'vault operator init -status' failed" >&2
    exit 1
fi

if [ ! -s "$keys/unseal-key" ]; then
    echo "vault-start: Vault is initialized but $keys/unseal-key is missing;" \
        "the vault-data and vault-unseal volumes are out of step (docker compose down -v resets both)" >&2
    exit 1
fi
$cli operator unseal "$(cat "$keys/unseal-key")" >/dev/null
echo "vault-start: unsealed"

# Stay in the foreground with the server.
wait "$server"
