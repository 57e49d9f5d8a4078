#!/bin/sh
# secrets-init (one-shot, busybox): the service's secrets from compose/.env as files in the
# loanfolio-secrets volume, on every `up` (a changed .env is picked up). The loanfolio
# containers are read-only and mount that volume read-only at /run/loanfolio; the service
# reads each file through its `*_file` key (compose/loanfolio.toml), as in production.
#
# Why not compose `secrets:` sourced from `environment:`: Compose >= 2.34 refuses them in a
# read_only service (docker/compose#12531) and older versions fail in the engine.
set -eu

dir=/run/loanfolio
# The uid the loanfolio image runs as (compose/Dockerfile).
owner=10001:10001

write() { # name value
    umask 077
    printf '%s' "$2" >"$dir/.$1.new"
    chown "$owner" "$dir/.$1.new"
    chmod 0400 "$dir/.$1.new"
    mv "$dir/.$1.new" "$dir/$1"
}

write s3-secret-access-key "${S3_SECRET_ACCESS_KEY:?}"
write oidc-client-secret "${OIDC_CLIENT_SECRET:?}"
write bureau-api-key "${BUREAU_API_KEY:?}"
write los-api-key "${LOS_API_KEY:?}"
write los-webhook-secret "${LOS_WEBHOOK_SECRET:?}"
echo "secrets-init: 5 secrets written to $dir (owner $owner, mode 0400)"
