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
# Development-only credentials; production secrets come from files or Vault.
PG_USER=loanfolio
PG_PASSWORD=loanfolio
S3_ACCESS_KEY=loanfolio
S3_SECRET_KEY=loanfolio-dev-secret
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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

[kms.local]
master_key_file = "$LOCAL/master.key"
TOML
}

# The OpenAPI validator the test suite runs (a real one: openapi-spec-validator).
# The OpenAPI validator the tests run on /openapi.json and schemathesis, which tests the
# running service against it (scripts/checks/schemathesis.sh, scripts/fuzz api). Pinned to
# the newest releases; a machine with older pins gets them replaced.
OPENAPI_TOOL_PINS="openapi-spec-validator==0.9.0 schemathesis==4.32.5"
ensure_openapi_validator() {
  local venv="$TOOLS/venv"
  if [ ! -x "$venv/bin/openapi-spec-validator" ] || [ ! -x "$venv/bin/schemathesis" ] \
      || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$OPENAPI_TOOL_PINS" ]; then
    log "installing $OPENAPI_TOOL_PINS (once per machine)"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
    # shellcheck disable=SC2086 # the pins are words
    "$venv/bin/pip" install -q $OPENAPI_TOOL_PINS
    echo "$OPENAPI_TOOL_PINS" >"$venv/.pins"
  fi
  export LOANFOLIO_TEST_OPENAPI_VALIDATOR="$venv/bin/openapi-spec-validator"
  export LOANFOLIO_SCHEMATHESIS="$venv/bin/schemathesis"
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
}

ensure_stack() {
  ensure_build_tools
  ensure_postgres
  ensure_redis
  ensure_rabbitmq
  ensure_s3
  ensure_clamd
  ensure_oidc
  ensure_smtp
  ensure_master_key
  write_dev_config
}
