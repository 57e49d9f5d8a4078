#!/bin/sh
# minio-init (one-shot, minio/mc image): the buckets and the service's MinIO user, on every
# `up` (each step is idempotent). The service never creates buckets in this stack.
#
#   loanfolio-quarantine  uploads land here (pre-signed PUT), deleted once scanned
#   loanfolio-documents   scanned, encrypted documents; versioning ON, so an overwrite or a
#                         delete keeps the previous version (no loss of financial documents)
#   user $S3_ACCESS_KEY_ID s3.access_key_id; may read/write/delete objects in those two
#                         buckets only (loanfolio-policy.json), not create or drop buckets
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"

quarantine=loanfolio-quarantine
documents=loanfolio-documents

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing "local/$quarantine"
mc mb --ignore-existing "local/$documents"
mc version enable "local/$documents"
# Nothing is public: every read and write is signed.
mc anonymous set none "local/$quarantine"
mc anonymous set none "local/$documents"

mc admin policy create local loanfolio-service /loanfolio/minio/loanfolio-policy.json
# `user add` on an existing user sets its secret (picks up a changed .env).
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
if ! mc admin user info local "$S3_ACCESS_KEY_ID" | grep -q 'loanfolio-service'; then
    mc admin policy attach local loanfolio-service --user "$S3_ACCESS_KEY_ID"
fi

mc version info "local/$documents"
echo "minio-init: buckets $quarantine and $documents ready; the service's user has loanfolio-service"
