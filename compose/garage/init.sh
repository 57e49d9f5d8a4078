#!/bin/sh
# garage-init (one-shot, curl image): the two buckets, and the service's key allowed to read
# and write them, through Garage's admin API (v2), on every `up` (each step is
# idempotent). The node's layout and the key itself come from `garage server --single-node
# --default-access-key` (compose.yaml). Versioning: Garage has none (compose/README.md).
#
#   loanfolio-quarantine  uploads land here (pre-signed PUT), deleted once scanned
#   loanfolio-documents   scanned, encrypted documents
set -eu

: "${GARAGE_ADMIN_URL:?}" "${GARAGE_ADMIN_TOKEN:?}" "${S3_ACCESS_KEY_ID:?}"

api() { # endpoint [json-body]
    if [ $# -eq 2 ]; then
        curl -fsS -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" -H 'Content-Type: application/json' \
            --data "$2" "$GARAGE_ADMIN_URL/v2/$1"
    else
        curl -fsS -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" "$GARAGE_ADMIN_URL/v2/$1"
    fi
}

# /health answers 200 once the layout is applied and the node can serve.
tries=0
until curl -fsS -o /dev/null "$GARAGE_ADMIN_URL/health"; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "garage-init: Garage is not healthy after 60 s" >&2; exit 1; }
    sleep 1
done

for bucket in loanfolio-quarantine loanfolio-documents; do
    info=$(api "GetBucketInfo?globalAlias=$bucket" 2>/dev/null) \
        || info=$(api CreateBucket "{\"globalAlias\":\"$bucket\"}")
    # The response starts with the bucket's id (64 hex digits).
    id=$(printf '%s' "$info" | tr -d ' \n' | sed -n 's/^{"id":"\([0-9a-f]\{64\}\)".*/\1/p')
    [ -n "$id" ] || { echo "garage-init: no bucket id for $bucket" >&2; exit 1; }
    api AllowBucketKey "{\"bucketId\":\"$id\",\"accessKeyId\":\"$S3_ACCESS_KEY_ID\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":false}}" >/dev/null
    echo "garage-init: bucket $bucket ready ($id)"
done
