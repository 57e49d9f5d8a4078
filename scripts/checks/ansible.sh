#!/usr/bin/env bash
# The Ansible installation, against this machine itself:
#   1. ansible-lint --offline (production profile) and ansible-playbook --syntax-check;
#   2. converge site.yml on localhost (-c local, loanfolio_manage_systemd=false: no systemd
#      here), pointed at the local stack, with secrets from ansible-vault encrypted files,
#      installing a release artefact: one build packed by scripts/release under two version
#      numbers, signed with a throw-away minisign key;
#   3. start the INSTALLED binary exactly as the rendered serve unit would (its ExecStart,
#      User/Group, UMask, its LoadCredential= files in a private credentials directory and
#      its Environment=) and wait for /readyz 200, then stop it;
#   4. converge again: the PLAY RECAP must say changed=0;
#   5. upgrade to the second version (a backup first), then roll back to the first, /readyz
#      200 from the release `current` points at after each; an archive that does not match
#      its signed checksum, and a checksum file signed by another key, are refused with
#      nothing changed;
#   6. systemd-analyze verify on the rendered units and timers, every hardening option present.
# And the sidecar roles' templates: clamd.conf through clamconf, the nginx site through
# `nginx -t` and a real nginx (Debian's package unpacked, not installed) in front of the
# process of step 3: TLS 1.2+, HSTS, the redirect, the body limit, token-free access logs.
# Run by scripts/test once the local stack is up (scripts/lib/stack.sh); it never builds
# the binary (LOANFOLIO_BIN, default target/debug/loanfolio). It installs into the real
# system paths (/usr/local/bin, /etc/loanfolio, /etc/systemd/system): CI machines only.
# Idempotent; stops what it started and removes its temporary files.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/stack.sh
source "$(dirname "$0")/../lib/stack.sh"

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "scripts/checks/ansible.sh installs into /etc and /usr/local: run it as root"
  exec sudo --preserve-env "$0" "$@"
fi

ANSIBLE_DIR="$ROOT/ansible"
VENV="$TOOLS/ansible-venv"
ANSIBLE_PINS="ansible==12.3.0 ansible-lint==26.10.1"
BIN_SRC="${LOANFOLIO_BIN:-$ROOT/target/debug/loanfolio}"
CHECK_PORT="${LOANFOLIO_ANSIBLE_CHECK_PORT:-18080}"
CHECK_ADMIN_PORT="${LOANFOLIO_ANSIBLE_CHECK_ADMIN_PORT:-18082}"
CHECK_SERVE_ADMIN_PORT="${LOANFOLIO_ANSIBLE_CHECK_SERVE_ADMIN_PORT:-18081}"
CHECK_DB=loanfolio_ansible
UNIT_DIR=/etc/systemd/system
UNITS=(loanfolio-serve loanfolio-worker)
SERVICE_USER=loanfolio

SUMMARY=()
note() { SUMMARY+=("$*"); log "$*"; }

# --- tools ---------------------------------------------------------------------------------
ensure_ansible() {
  if [ ! -x "$VENV/bin/ansible-lint" ] || [ "$(cat "$VENV/.loanfolio-pins" 2>/dev/null)" != "$ANSIBLE_PINS" ]; then
    log "installing $ANSIBLE_PINS into $VENV (once per machine)"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
    # shellcheck disable=SC2086 # the pins are separate words
    "$VENV/bin/pip" install -q $ANSIBLE_PINS
    echo "$ANSIBLE_PINS" >"$VENV/.loanfolio-pins"
  fi
  export PATH="$VENV/bin:$PATH"
  export ANSIBLE_CONFIG="$ANSIBLE_DIR/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
}

ensure_systemd_analyze() {
  command -v systemd-analyze >/dev/null || apt_install systemd
}

# Debian's nginx unpacked outside the system (installing the package would start it on
# port 80): for `nginx -t` and a short-lived test instance. Once per machine.
ensure_nginx_binary() {
  NGINX="$TOOLS/nginx/usr/sbin/nginx"
  [ -x "$NGINX" ] && "$NGINX" -v 2>/dev/null && return 0
  log "unpacking Debian's nginx package into $TOOLS/nginx (once per machine; not installed)"
  local dl
  dl=$(mktemp -d)
  chmod 0755 "$dl"
  (cd "$dl" && apt-get download -q nginx >/dev/null 2>&1) \
    || { apt-get update -qq && (cd "$dl" && apt-get download -q nginx >/dev/null 2>&1); } \
    || die "apt-get download nginx failed"
  rm -rf "$TOOLS/nginx"
  dpkg-deb -x "$dl"/nginx_*.deb "$TOOLS/nginx"
  rm -rf "$dl"
  "$NGINX" -v 2>/dev/null || die "the unpacked nginx does not run (missing libraries?)"
}

[ -x "$BIN_SRC" ] || die "no loanfolio binary at $BIN_SRC (scripts/test builds it before this check)"
command -v curl >/dev/null || apt_install curl
command -v setpriv >/dev/null || apt_install util-linux
command -v openssl >/dev/null || apt_install openssl
command -v clamconf >/dev/null || apt_install clamav
ensure_ansible
ensure_systemd_analyze
ensure_nginx_binary
ensure_postgres
ensure_redis
ensure_rabbitmq
ensure_master_key
ensure_database "$CHECK_DB"

# --- a private work area; everything we start is stopped on exit -------------------------
WORK=$(mktemp -d /tmp/loanfolio-ansible.XXXXXX)
chmod 0711 "$WORK" # the service user must reach its credentials directory below
SERVE_PID=
NGINX_PID=
stop_pid() { # pid: TERM, then KILL after 10 s
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  stop_pid "$NGINX_PID"
  stop_pid "$SERVE_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

# A stable copy: the binary in target/ may be rebuilt while this runs.
cp "$BIN_SRC" "$WORK/loanfolio"

# Release artefacts of that one build under two version numbers (and two more for the
# refusals), signed with a key made for this run; its public key is what the role trusts.
command -v minisign >/dev/null || apt_install minisign
mkdir -m 0700 "$WORK/release-key"
minisign -G -W -p "$WORK/release-key/pub" -s "$WORK/release-key/sec" >/dev/null
RELEASE_PUBKEY=$(tail -n1 "$WORK/release-key/pub")
# Versions of this run (a machine that ran the check keeps earlier runs' releases, which
# the role prunes beyond loanfolio_releases_keep, and whose binaries may be older builds).
run=$(date +%s)
V1=0.0.1-check.$run.1 V2=0.0.1-check.$run.2 V3=0.0.1-check.$run.3 V4=0.0.1-check.$run.4
for v in "$V1" "$V2" "$V3"; do
  "$ROOT/scripts/release" --binary "$WORK/loanfolio" --version "$v" --out "$WORK/releases/$v" \
    --sign-key "$WORK/release-key/sec" >"$WORK/release-$v.log" 2>&1 \
    || { cat "$WORK/release-$v.log"; die "scripts/release --version $v failed"; }
done
for f in SHA256SUMS SHA256SUMS.minisig "loanfolio-$V1-linux-x86_64.tar.gz" "loanfolio-$V1.cdx.json"; do
  [ -s "$WORK/releases/$V1/$f" ] || die "scripts/release did not write $f"
done
tar -tzf "$WORK/releases/$V1/loanfolio-$V1-linux-x86_64.tar.gz" >"$WORK/release-contents"
for f in bin/loanfolio config/default.toml systemd/loanfolio-serve.service sbom/loanfolio.cdx.json README.md VERSION; do
  grep -qx "loanfolio-$V1-linux-x86_64/$f" "$WORK/release-contents" || die "the archive lacks $f"
done
grep -q '"bomFormat": *"CycloneDX"' "$WORK/releases/$V1/loanfolio-$V1.cdx.json" || die "the SBOM is not CycloneDX"
# V3: its archive altered after signing. V4: V3's files re-hashed, signed by another key.
printf 'tampered' >>"$WORK/releases/$V3/loanfolio-$V3-linux-x86_64.tar.gz"
mkdir -m 0700 "$WORK/other-key"
minisign -G -W -p "$WORK/other-key/pub" -s "$WORK/other-key/sec" >/dev/null
"$ROOT/scripts/release" --binary "$WORK/loanfolio" --version "$V4" --out "$WORK/releases/$V4" \
  --sign-key "$WORK/other-key/sec" >"$WORK/release-$V4.log" 2>&1 || { cat "$WORK/release-$V4.log"; die "scripts/release $V4"; }
note "release artefacts: $V1..$V4 packed from one build (tar.gz, SHA256SUMS, minisign signature, CycloneDX SBOM)"

# --- 1. lint and syntax --------------------------------------------------------------------
cd "$ANSIBLE_DIR"
log "ansible-lint --offline (profile from ansible/.ansible-lint)"
lint_out=$(ansible-lint --offline --nocolor 2>&1) || { printf '%s\n' "$lint_out"; die "ansible-lint failed"; }
printf '%s\n' "$lint_out" | grep -v '^WARNING: PATH altered' || true
note "lint: $(printf '%s\n' "$lint_out" | grep -E 'Passed|Failed' | tail -n1 | sed 's/\x1b\[[0-9;]*m//g')"
for inventory in inventories/single-host/hosts.yml inventories/multi-host/hosts.yml; do
  ansible-playbook -i "$inventory" site.yml --syntax-check >/dev/null
done
note "syntax-check: site.yml passes with inventories/single-host and inventories/multi-host"

# --- 2. converge against this machine --------------------------------------------------------
port_open "$CHECK_PORT" && die "port $CHECK_PORT is taken (set LOANFOLIO_ANSIBLE_CHECK_PORT)"

# Secrets the way a site keeps them: an ansible-vault encrypted vars file and a
# vault-encrypted file on the control node. Development credentials of the local stack only.
mkdir -m 0700 "$WORK/secrets"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/secrets/vault-pass"
printf 'amqp://guest:guest@127.0.0.1:5672/%%2f\n' >"$WORK/secrets/rabbitmq-url"
cat >"$WORK/secrets/secrets.yml" <<YAML
loanfolio_database_url: "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$CHECK_DB"
loanfolio_database_migrate_url: "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$CHECK_DB"
loanfolio_rabbitmq_url_src: "$WORK/secrets/rabbitmq-url"
loanfolio_redis_url: "redis://127.0.0.1:6379/0"
loanfolio_s3_secret_access_key: "$S3_SECRET_KEY"
loanfolio_oidc_client_secret: loanfolio-dev-client-secret
loanfolio_kms_local_master_key_src: "$LOCAL/master.key"
loanfolio_bureau_api_key: bureau-dev-key
loanfolio_los_api_key: los-dev-key
loanfolio_los_webhook_secrets:
  - los-dev-webhook-secret
YAML
VAULT=(--vault-password-file "$WORK/secrets/vault-pass")
ansible-vault encrypt "${VAULT[@]}" "$WORK/secrets/secrets.yml" "$WORK/secrets/rabbitmq-url" >/dev/null

cat >"$WORK/inventory.yml" <<YAML
all:
  children:
    loanfolio:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: "$VENV/bin/python"
          ansible_become: false
    clamav: {}
    reverse_proxy: {}
YAML
cat >"$WORK/vars.yml" <<YAML
loanfolio_manage_systemd: false
loanfolio_release_public_key: "$RELEASE_PUBKEY"
loanfolio_listen: "127.0.0.1:$CHECK_PORT"
loanfolio_admin_listen: "127.0.0.1:$CHECK_SERVE_ADMIN_PORT"
loanfolio_public_base_url: "http://127.0.0.1:$CHECK_PORT"
loanfolio_worker_admin_listen: "127.0.0.1:$CHECK_ADMIN_PORT"
loanfolio_rabbitmq_prefix: loanfolio-ansible
loanfolio_redis_key_prefix: "loanfolio-ansible:"
loanfolio_s3_endpoint: "http://127.0.0.1:$S3_PORT"
loanfolio_s3_public_endpoint: "http://127.0.0.1:$S3_CORS_PORT"
loanfolio_s3_access_key_id: "$S3_ACCESS_KEY"
loanfolio_s3_quarantine_bucket: loanfolio-ansible-quarantine
loanfolio_s3_documents_bucket: loanfolio-ansible-documents
loanfolio_s3_allow_http: true
loanfolio_clamd_address: "127.0.0.1:$CLAMD_PORT"
loanfolio_oidc_issuer_url: "http://127.0.0.1:$OIDC_PORT"
loanfolio_auth_cookie_secure: false
loanfolio_kms_provider: local
loanfolio_bureau_base_url: "http://127.0.0.1:$BUREAU_PORT"
loanfolio_los_base_url: "http://127.0.0.1:$LOS_PORT"
loanfolio_smtp_host: 127.0.0.1
loanfolio_smtp_port: $SMTP_PORT
loanfolio_smtp_tls: none
loanfolio_config_overrides:
  readiness:
    check_timeout_ms: 2000
YAML

playbook() { # log-file version [extra ansible-playbook arguments]: the converge's exit status
  local log=$1 version=$2
  shift 2
  ansible-playbook -i "$WORK/inventory.yml" -c local site.yml \
    -e @"$WORK/vars.yml" -e @"$WORK/secrets/secrets.yml" "${VAULT[@]}" \
    -e loanfolio_version="$version" -e loanfolio_release_dir_src="$WORK/releases/$version" "$@" >"$log" 2>&1
}
converge() { # log-file version [extra arguments]
  if ! playbook "$@"; then
    cat "$1"
    die "ansible-playbook failed (output above)"
  fi
  grep -A3 '^PLAY RECAP' "$1" | sed '/^$/d' >&2
}
current_release() { readlink /opt/loanfolio/current; }
changed_of() { # log-file -> the changed= count of localhost in the PLAY RECAPs, summed
  grep -E '^localhost +: ok=' "$1" | sed -E 's/.* changed=([0-9]+).*/\1/' | awk '{ n += $1 } END { print n + 0 }'
}

# The check's own buckets, before the first converge (a site creates them with versioning:
# ansible/README.md): on a machine that ran the check, converge 1 is an upgrade from that
# run's release, whose backup reads both buckets — and a clean clone's S3 starts empty.
LOANFOLIO__S3__QUARANTINE_BUCKET=loanfolio-ansible-quarantine LOANFOLIO__S3__DOCUMENTS_BUCKET=loanfolio-ansible-documents \
  "$WORK/loanfolio" --config "$LOCAL/test.toml" admin storage create-buckets >"$WORK/buckets.log" 2>&1 \
  || { cat "$WORK/buckets.log"; die "admin storage create-buckets failed"; }

log "converge 1: site.yml on localhost (-c local, loanfolio_manage_systemd=false)"
converge "$WORK/converge1.log" "$V1"
[ "$(current_release)" = "/opt/loanfolio/releases/$V1" ] || die "current is $(current_release), not $V1"
note "converge 1: changed=$(changed_of "$WORK/converge1.log") (first run on a machine installs everything; a re-run changes only what differs)"

# What the converge must have produced, and what must never be in it.
for unit in "${UNITS[@]}"; do
  [ -f "$UNIT_DIR/$unit.service" ] || die "$UNIT_DIR/$unit.service was not installed"
done
[ "$(stat -c '%a %U %G' /etc/loanfolio)" = "750 root $SERVICE_USER" ] || die "/etc/loanfolio is not 0750 root:$SERVICE_USER"
[ "$(stat -c '%a %U' /etc/loanfolio/credentials)" = "700 root" ] || die "/etc/loanfolio/credentials is not 0700 root"
bad=$(find /etc/loanfolio/credentials -type f ! \( -user root -perm 0600 \) -printf '%p ')
[ -z "$bad" ] || die "secret files not root-only 0600: $bad"
for needle in ":$PG_PASSWORD@" "$S3_SECRET_KEY" loanfolio-dev-client-secret los-dev-webhook-secret bureau-dev-key; do
  if grep -rlF -- "$needle" /etc/loanfolio/loanfolio.toml "$UNIT_DIR"/loanfolio-*.service; then
    die "a secret is in the rendered configuration or a unit (files above)"
  fi
done
id "$SERVICE_USER" >/dev/null || die "the $SERVICE_USER user was not created"
note "installed: /usr/local/bin/loanfolio, /etc/loanfolio/loanfolio.toml, $(find /etc/loanfolio/credentials -type f | wc -l) root-only credential files, ${UNITS[*]} units; no secret in the config or the units"

# --- the sidecar roles' templates: clamconf and nginx -t -------------------------------------
free_port() { # preferred: it, or the next free one
  local p=$1
  while port_open "$p"; do p=$((p + 1)); done
  echo "$p"
}
PROXY_PORT=$(free_port "${LOANFOLIO_ANSIBLE_CHECK_PROXY_PORT:-18443}")
PROXY_HTTP_PORT=$(free_port $((PROXY_PORT + 1)))
R="$WORK/render"
mkdir -p "$R/log" "$R/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$R/key.pem" -out "$R/cert.pem" 2>/dev/null
ipv6=false
[ -s /proc/net/if_inet6 ] && ipv6=true
cat >"$R/vars.yml" <<YAML
render_dir: "$R"
ansible_python_interpreter: "$VENV/bin/python"
reverse_proxy_server_name: localhost
reverse_proxy_https_port: $PROXY_PORT
reverse_proxy_http_port: $PROXY_HTTP_PORT
reverse_proxy_listen_ipv6: $ipv6
reverse_proxy_upstreams: ["127.0.0.1:$CHECK_PORT"]
reverse_proxy_tls_cert_path: "$R/cert.pem"
reverse_proxy_tls_key_path: "$R/key.pem"
reverse_proxy_upstream_ca_file: "$R/cert.pem"
reverse_proxy_log_dir: "$R/log"
YAML
ansible-playbook -i localhost, tests/render-sidecars.yml -e @"$R/vars.yml" >"$R/render.log" 2>&1 \
  || { cat "$R/render.log"; die "rendering the sidecar templates failed"; }
clamconf_out=$(clamconf -c "$R/clamav" 2>&1) || true
if grep -E '^ERROR' <<<"$clamconf_out"; then die "clamconf refuses the rendered clamd.conf/freshclam.conf"; fi
for key in 'AlertExceedsMax = "yes"' 'TCPAddr = "127.0.0.1"' 'TCPSocket = "3310"'; do
  grep -qF "$key" <<<"$clamconf_out" || die "clamconf: the rendered clamd.conf lacks $key"
done
upload_limit=$(sed -n 's/^max_upload_bytes = //p' "$ROOT/config/default.toml")
for key in StreamMaxLength MaxFileSize MaxScanSize; do
  value=$(sed -nE "s/^$key = \"([0-9]+)\"$/\1/p" <<<"$clamconf_out" | head -n1)
  if [ -z "$value" ] || [ "$value" -lt "$upload_limit" ]; then
    die "clamd.conf $key ($value) is below the upload limit ($upload_limit)"
  fi
done
nginx_conf() { # site -> a complete nginx.conf around the rendered site, in $R
  cat >"$R/nginx-$1.conf" <<CONF
pid $R/nginx.pid;
error_log $R/log/error.log;
events {}
http {
  client_body_temp_path $R/tmp/body;
  proxy_temp_path $R/tmp/proxy;
  fastcgi_temp_path $R/tmp/fastcgi;
  uwsgi_temp_path $R/tmp/uwsgi;
  scgi_temp_path $R/tmp/scgi;
  include $R/nginx/$1.conf;
}
CONF
  echo "$R/nginx-$1.conf"
}
for site in loanfolio loanfolio-upstream-tls; do
  "$NGINX" -t -q -p "$R" -c "$(nginx_conf "$site")" 2>&1 | grep -v 'ssl_stapling' || true
  "$NGINX" -t -q -p "$R" -c "$R/nginx-$site.conf" >/dev/null 2>&1 || die "nginx -t refuses the rendered $site.conf"
done
note "sidecar templates: clamconf accepts clamd.conf (AlertExceedsMax yes; StreamMaxLength, MaxFileSize, MaxScanSize >= $upload_limit bytes), nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') -t accepts both site variants"

# --- 3. the installed binary with the rendered configuration, as its unit runs it -----------
# systemd is not PID 1 here, so do what it would: copy each LoadCredential= file into a
# private directory owned by the service user (mode 0400), set the unit's Environment= with
# %d = that directory, and run its ExecStart as its User/Group with its UMask.
unit_value() { sed -n "s/^$2=//p" "$UNIT_DIR/$1.service"; }
UNIT_ENV=()
prepare_unit() { # unit: its credentials directory and environment, as systemd would make them
  local unit=$1 creds="$WORK/credentials/$1.service" line
  rm -rf "$creds"; mkdir -p "$creds"; chmod 0711 "$WORK/credentials"
  while IFS= read -r line; do
    install -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0400 "${line#*:}" "$creds/${line%%:*}"
  done < <(unit_value "$unit" LoadCredential)
  chown "$SERVICE_USER:$SERVICE_USER" "$creds"; chmod 0500 "$creds"
  UNIT_ENV=(PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8)
  while IFS= read -r line; do UNIT_ENV+=("${line//%d/$creds}"); done < <(unit_value "$unit" Environment)
  UNIT_USER=$(unit_value "$unit" User) UNIT_GROUP=$(unit_value "$unit" Group) UNIT_UMASK=$(unit_value "$unit" UMask)
}
run_unit() { # command...: exec it as the prepared unit's user, environment and umask
  cd /
  umask "$UNIT_UMASK"
  exec env -i "${UNIT_ENV[@]}" setpriv --reuid="$UNIT_USER" --regid="$UNIT_GROUP" --init-groups \
    --no-new-privs --bounding-set=-all --inh-caps=-all -- "$@"
}
read -r -a SERVE_CMD <<<"$(unit_value loanfolio-serve ExecStart)"
[ "${SERVE_CMD[0]}" = /opt/loanfolio/current/bin/loanfolio ] || die "unexpected ExecStart: ${SERVE_CMD[*]}"
grep -qx 'RestartPreventExitStatus=2' "$UNIT_DIR/loanfolio-serve.service" || die "no RestartPreventExitStatus=2"
CONFIG_ARGS=("${SERVE_CMD[@]:1:2}") # --config /etc/loanfolio/loanfolio.toml

prepare_unit loanfolio-serve

start_serve() { # start the installed release as its unit would; wait for /readyz 200
  prepare_unit loanfolio-serve
  log "starting the installed binary as its unit would: ${SERVE_CMD[*]} (user $SERVICE_USER)"
  run_unit "${SERVE_CMD[@]}" >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  local code=000
  for _ in $(seq 600); do
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log"; die "loanfolio serve exited (log above)"; }
    code=$(curl -s -o "$WORK/readyz.json" -w '%{http_code}' "http://127.0.0.1:$CHECK_PORT/readyz" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    cat "$WORK/readyz.json" 2>/dev/null || true; echo; tail -n 40 "$WORK/serve.log"
    die "/readyz did not answer 200 within 60 s (last: $code)"
  fi
}
stop_serve() {
  kill -TERM "$SERVE_PID"
  local status=0
  wait "$SERVE_PID" || status=$?
  SERVE_PID=
  [ "$status" -eq 0 ] || { tail -n 20 "$WORK/serve.log"; die "loanfolio serve exited $status on SIGTERM"; }
}
running_release() { # the release directory the serve process runs from
  readlink "/proc/$SERVE_PID/exe" | sed 's#/bin/loanfolio$##'
}
start_serve
# Every dependency the rendered configuration and credentials reach must be up; the ones
# scripts/test starts but that are not running here are named, not silently passed.
deps=$(python3 - "$WORK/readyz.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(" ".join(f"{k}={v['status']}" for k, v in sorted(report["dependencies"].items())))
PY
)
for dep in postgres rabbitmq redis kms s3:$S3_PORT clamd:$CLAMD_PORT oidc:$OIDC_PORT; do
  name=${dep%%:*}
  if [[ " $deps " != *" $name=up "* ]]; then
    if [ "$name" != "$dep" ] && ! port_open "${dep#*:}"; then
      note "readyz: $name is down because it is not running on this machine (scripts/test starts it)"
    else
      tail -n 40 "$WORK/serve.log"; die "readyz: $name is not up ($deps)"
    fi
  fi
done
serve_user=$(ps -o user= -p "$SERVE_PID" | tr -d ' ')
[ "$serve_user" = "$SERVICE_USER" ] || die "serve runs as '$serve_user', not $SERVICE_USER"
note "readyz: 200 from the installed binary with the rendered configuration on 127.0.0.1:$CHECK_PORT, as user $serve_user ($deps)"
# The rendered nginx site in front of it (Debian's nginx, unpacked; as root, like the real one).
"$NGINX" -p "$R" -c "$R/nginx-loanfolio.conf" -g 'daemon off;' >"$R/log/nginx.out" 2>&1 &
NGINX_PID=$!
wait_port "$PROXY_PORT" "the test nginx" 10
HTTPS="https://localhost:$PROXY_PORT"
CURL=(curl -s --cacert "$R/cert.pem" --resolve "localhost:$PROXY_PORT:127.0.0.1")
headers=$("${CURL[@]}" -D - -o /dev/null "$HTTPS/v1/me" | tr -d '\r')
grep -qE '^HTTP/[0-9.]+ 401' <<<"$headers" || { echo "$headers"; die "nginx: /v1/me through the proxy is not the service's 401"; }
grep -qi '^content-type: application/problem+json' <<<"$headers" || die "nginx: /v1/me did not reach the service"
# Only the public routes pass: the operations endpoints stay on the host (the service
# itself answers them on its listener: the 404s below are the proxy's).
# (--path-as-is: curl would otherwise resolve the dot segments itself, before nginx.)
for internal in /readyz /metrics /openapi.json /healthz /status /v2/anything /%72eadyz //readyz \
  /v1/../readyz /v1/%2e%2e/metrics /u/../openapi.json /assets/..%2freadyz; do
  code=$("${CURL[@]}" --path-as-is -o /dev/null -w '%{http_code}' "$HTTPS$internal")
  [ "$code" = 404 ] || die "nginx: $internal answered $code through the public proxy, not 404"
done
direct=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CHECK_PORT/openapi.json")
[ "$direct" = 200 ] || die "the service's own /openapi.json answered $direct (the 404 check above proves nothing)"
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$HTTPS/assets/upload.js")
[ "$code" = 200 ] || die "nginx: the borrower page's /assets/upload.js answered $code through the proxy"
# The console: `/` sends a stranger to sign-in, its stylesheet is served.
home=$("${CURL[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' "$HTTPS/")
[ "$home" = "303 https://localhost:$PROXY_PORT/auth/login?return_to=%2Fconsole%2F" ] \
  || die "nginx: / answered '$home' through the proxy, not the console's redirect to sign-in"
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$HTTPS/console/assets/console.css")
[ "$code" = 200 ] || die "nginx: the console's stylesheet answered $code through the proxy"
grep -qi '^strict-transport-security: max-age=[0-9]\+; includeSubDomains' <<<"$headers" || die "nginx: no HSTS header"
grep -qi '^server: nginx$' <<<"$headers" || die "nginx: the Server header shows a version (server_tokens)"
tls12=$(openssl s_client -connect "127.0.0.1:$PROXY_PORT" -servername localhost -tls1_2 </dev/null 2>&1 | grep -c 'Protocol *: TLSv1.2' || true)
[ "$tls12" -ge 1 ] || die "nginx: TLS 1.2 handshake failed"
if openssl s_client -connect "127.0.0.1:$PROXY_PORT" -servername localhost -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1 | grep -q 'Protocol *: TLSv1.1'; then
  die "nginx: accepted TLS 1.1"
fi
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: localhost' "http://127.0.0.1:$PROXY_HTTP_PORT/v1/me")
[ "$redirect" = "301 https://localhost:$PROXY_PORT/v1/me" ] || die "nginx: plain HTTP answered '$redirect', not a redirect to HTTPS"
big=$(head -c 3000000 /dev/zero | "${CURL[@]}" -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary @- "$HTTPS/v1/leads")
[ "$big" = 413 ] || die "nginx: a 3 MB body answered $big, not 413"
token="canary$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
"${CURL[@]}" -o /dev/null "$HTTPS/u/$token?x=$token"
"${CURL[@]}" -o /dev/null "$HTTPS/v1/public/upload-links/$token/files"
stop_pid "$NGINX_PID"; NGINX_PID=
for redacted in '/u/REDACTED ' '/v1/public/upload-links/REDACTED/files '; do
  grep -qF "$redacted" "$R/log/loanfolio.access.log" \
    || { cat "$R/log/loanfolio.access.log"; die "nginx: the access log lacks $redacted"; }
done
! grep -rq "$token" "$R/log" || die "nginx: an upload-link token reached a log"
note "reverse proxy: /v1/ and the console (/ → sign-in) reach the service through nginx over TLS with HSTS; /readyz, /metrics, /openapi.json, /healthz 404 (internal); TLS 1.1 refused, 1.2 accepted; HTTP redirects; 3 MB body 413; upload-link tokens redacted from the access log"

[ "$(running_release)" = "/opt/loanfolio/releases/$V1" ] || die "serve runs $(running_release), not $V1"
stop_serve
note "serve stopped on SIGTERM (exit 0)"

# --- 4. a second converge changes nothing ------------------------------------------------------
log "converge 2: must report changed=0"
converge "$WORK/converge2.log" "$V1"
changed=$(changed_of "$WORK/converge2.log")
if [ "$changed" != 0 ]; then
  grep -E '^changed:' -B2 "$WORK/converge2.log" || true
  die "the second converge changed $changed task(s): the role is not idempotent"
fi
note "converge 2: changed=0"

# --- 5. upgrade, roll back, and refuse what is not signed ----------------------------------------
backups_before=$(find /var/backups/loanfolio -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
log "converge 3: upgrade $V1 -> $V2"
converge "$WORK/converge3.log" "$V2"
[ "$(current_release)" = "/opt/loanfolio/releases/$V2" ] || die "after the upgrade current is $(current_release)"
[ -x "/opt/loanfolio/releases/$V1/bin/loanfolio" ] || die "the upgrade removed the previous release"
backup=$(find /var/backups/loanfolio -mindepth 1 -maxdepth 1 -type d -name "before-$V2-*" | sort | tail -n1)
[ -n "$backup" ] && [ -s "$backup/manifest.json" ] && [ -s "$backup/database.dump" ] \
  || die "the upgrade took no backup before switching (backups: $backups_before before)"
start_serve
[ "$(running_release)" = "/opt/loanfolio/releases/$V2" ] || die "serve runs $(running_release) after the upgrade"
stop_serve
note "upgrade: $V1 -> $V2, a backup first ($(basename "$backup")), /readyz 200 from $V2; $V1 kept"

log "converge 4: roll back to $V1 (loanfolio_rollback_to)"
converge "$WORK/converge4.log" "$V2" -e loanfolio_rollback_to="$V1"
[ "$(current_release)" = "/opt/loanfolio/releases/$V1" ] || die "after the rollback current is $(current_release)"
start_serve
[ "$(running_release)" = "/opt/loanfolio/releases/$V1" ] || die "serve runs $(running_release) after the rollback"
stop_serve
note "rollback: loanfolio_rollback_to=$V1 -> current $V1, /readyz 200 from it"

for refused in "$V3:does not match the signed SHA256SUMS" "$V4:but the key id in the public key is"; do
  version=${refused%%:*} expected=${refused#*:}
  if playbook "$WORK/refused-$version.log" "$version"; then
    die "a converge with $version (altered or signed by another key) passed"
  fi
  grep -qF "$expected" "$WORK/refused-$version.log" || { tail -n 30 "$WORK/refused-$version.log"; die "$version: refused, but not with: $expected"; }
  [ ! -e "/opt/loanfolio/releases/$version" ] || die "$version reached the host"
  [ "$(current_release)" = "/opt/loanfolio/releases/$V1" ] || die "a refused release moved current"
done
note "refused: an archive altered after signing ($V3) and SHA256SUMS signed by another key ($V4); nothing reached the host"

# --- 6. the units: systemd-analyze verify and the hardening ------------------------------------
# The alert template verified as an instance of itself.
cp "$UNIT_DIR/loanfolio-alert@.service" "$WORK/loanfolio-alert@loanfolio-backup.service"
out=$(systemd-analyze verify "$WORK/loanfolio-alert@loanfolio-backup.service" 2>&1) \
  || { printf '%s\n' "$out"; die "systemd-analyze verify loanfolio-alert@.service failed"; }
VERIFIED=("${UNITS[@]/%/.service}" loanfolio-backup.service loanfolio-backup.timer
  loanfolio-audit-verify.service loanfolio-audit-verify.timer)
for unit in "${VERIFIED[@]}"; do
  if ! out=$(systemd-analyze verify "$UNIT_DIR/$unit" 2>&1); then
    printf '%s\n' "$out"; die "systemd-analyze verify $unit failed"
  fi
  [ -z "$out" ] || printf '%s\n' "$out" >&2
done
for unit in loanfolio-backup.service loanfolio-audit-verify.service; do
  grep -qx 'OnFailure=loanfolio-alert@%n.service' "$UNIT_DIR/$unit" || die "$unit has no OnFailure= alert"
done
note "systemd-analyze verify: ${VERIFIED[*]} pass ($(systemd-analyze --version | head -n1)); backup and audit-verify alert on failure"

HARDENING=(
  '^User=loanfolio$' '^Group=loanfolio$'
  '^NoNewPrivileges=yes$' '^ProtectSystem=strict$' '^ProtectHome=yes$' '^PrivateTmp=yes$'
  '^PrivateDevices=yes$' '^CapabilityBoundingSet=$' '^RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX$'
  '^SystemCallFilter=@system-service$' '^ReadWritePaths=/var/lib/loanfolio$' '^LoadCredential=database-url:'
  '^MemoryMax=[0-9]+[KMGT]?$' '^Restart=on-failure$' '^ProtectKernelTunables=yes$'
  '^ProtectKernelModules=yes$' '^ProtectKernelLogs=yes$' '^ProtectControlGroups=yes$'
  '^RestrictNamespaces=yes$' '^LockPersonality=yes$' '^MemoryDenyWriteExecute=yes$' '^UMask=0077$'
)
for unit in "${UNITS[@]}"; do
  for option in "${HARDENING[@]}"; do
    grep -qE "$option" "$UNIT_DIR/$unit.service" || die "$unit.service lacks ${option//[\^\$]/}"
  done
  if grep -E '^(ReadWritePaths|LoadCredential)=' "$UNIT_DIR/$unit.service" | grep -vqE '=(/var/lib/loanfolio$|[a-z0-9-]+:/etc/loanfolio/credentials/)'; then
    die "$unit.service has a writable path or credential outside /var/lib/loanfolio and /etc/loanfolio/credentials"
  fi
done
note "hardening: all ${#HARDENING[@]} options present in both units"
if exposure=$(systemd-analyze security --offline=true "$UNIT_DIR/loanfolio-serve.service" 2>/dev/null | tail -n1); then
  note "systemd-analyze security (offline): loanfolio-serve ${exposure#→ }"
fi

printf '\n\033[1mscripts/checks/ansible.sh: all passed\033[0m\n' >&2
printf '  %s\n' "${SUMMARY[@]}" >&2
