#!/usr/bin/env bash
# Validate the compose development stack without a Docker engine (none runs here).
#
#   scripts/checks/compose.sh [COMPOSE_FILE]     default: compose/compose.yaml
#
# 1. Shell syntax (sh -n / bash -n) and shellcheck of the stack's scripts and of this one.
# 2. `docker compose config -q` when the Compose plugin is installed; otherwise the Compose
#    Specification JSON schema kept in compose/schema/compose-spec.json (see its SOURCE.md).
# 3. The stack's own rules (scripts/checks/compose_check.py): healthchecks and depends_on
#    conditions, every mounted file present in the repository, the Keycloak realm from
#    config/, known configuration keys, clamd limits, no literal secrets, and so on.
# 4. A positive control: the same checks on a deliberately broken copy (in a temporary
#    folder) must fail, so a validator that passes everything cannot go unnoticed.
#
# Variables are interpolated from compose/.env.example (COMPOSE_CHECK_ENV_FILE to use
# another file). Python tools (PyYAML, jsonschema) are installed once per machine in a venv
# outside the clone; shellcheck from Debian when missing. Exits non-zero on any problem.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPOSE_FILE=$(realpath "${1:-$ROOT/compose/compose.yaml}")
COMPOSE_DIR=$(dirname "$COMPOSE_FILE")
ENV_FILE=$(realpath "${COMPOSE_CHECK_ENV_FILE:-$COMPOSE_DIR/.env.example}")
SCHEMA="$ROOT/compose/schema/compose-spec.json"
CHECKER="$ROOT/scripts/checks/compose_check.py"
TOOLS="${LOANFOLIO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loanfolio-tools}"
VENV="$TOOLS/compose-check-venv"
# Pinned: a new release cannot change what passes.
PY_PACKAGES=(PyYAML==6.0.3 jsonschema==4.26.0)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'compose check: %s\n' "$*" >&2; exit 1; }

[ -f "$COMPOSE_FILE" ] || die "no such file: $COMPOSE_FILE"
[ -f "$ENV_FILE" ] || die "no env file to interpolate with: $ENV_FILE"
[ -f "$SCHEMA" ] || die "the Compose Specification schema is missing: $SCHEMA"

ensure_venv() {
  local stamp="$VENV/.installed"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PY_PACKAGES[*]}" ]; then
    log "installing ${PY_PACKAGES[*]} into $VENV (once per machine)"
    mkdir -p "$TOOLS"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 needs python3-venv for this.
      if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        die "python3 -m venv failed (install python3-venv)"
      fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
    echo "${PY_PACKAGES[*]}" >"$stamp"
  fi
}

ensure_shellcheck() {
  command -v shellcheck >/dev/null && return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    log "installing shellcheck (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
  fi
  command -v shellcheck >/dev/null
}

# The stack's scripts: POSIX sh (they run in the service images) plus this bash script.
check_scripts() {
  local script shell status=0
  local scripts=()
  while IFS= read -r -d '' script; do scripts+=("$script"); done \
    < <(find "$COMPOSE_DIR" -name '*.sh' -type f -print0 | sort -z)
  scripts+=("$ROOT/scripts/checks/compose.sh")
  for script in "${scripts[@]}"; do
    shell="bash"
    head -n1 "$script" | grep -q '^#!/bin/sh' && shell="sh"
    "$shell" -n "$script" || { echo "  FAIL $shell -n $script" >&2; status=1; }
  done
  [ "$status" -eq 0 ] && echo "  ok   ${#scripts[@]} scripts parse (sh -n / bash -n)"
  if ensure_shellcheck; then
    if shellcheck "${scripts[@]}"; then
      echo "  ok   shellcheck: ${#scripts[@]} scripts clean"
    else
      echo "  FAIL shellcheck" >&2
      status=1
    fi
  else
    echo "  --   shellcheck: not installed and not installable here (skipped)"
  fi
  return "$status"
}

# The structural validation of one compose file, then the stack's rules.
validate() { # compose-file
  local file=$1 schema_args=()
  if docker compose version >/dev/null 2>&1; then
    log "docker compose config -q ($file)"
    docker compose --env-file "$ENV_FILE" -f "$file" config -q
    schema_args=(--skip-schema)
  else
    log "no docker compose plugin here: the Compose Specification schema, then the stack's rules"
  fi
  "$VENV/bin/python" "$CHECKER" --compose "$file" --env-file "$ENV_FILE" --schema "$SCHEMA" \
    "${schema_args[@]}"
}

# A copy of the stack with four deliberate faults: a misspelt key (schema), a service
# others wait for as healthy without a healthcheck, the realm taken from elsewhere, and a
# secret from an environment variable in a read_only service (which Compose >= 2.34
# refuses at create time, docker/compose#12531: the state this stack was in before).
positive_control() {
  local status=0
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp -r "$COMPOSE_DIR" "$tmp/compose"
  cp -r "$ROOT/config" "$tmp/config"
  "$VENV/bin/python" - "$tmp/compose/$(basename "$COMPOSE_FILE")" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
broken = text.replace("    restart: unless-stopped\n    environment:\n      POSTGRES_PASSWORD",
                      "    restrat: unless-stopped\n    environment:\n      POSTGRES_PASSWORD", 1)
broken = re.sub(r"(\n  postgres:\n(?:    .*\n|\n)*?)    healthcheck:\n(?:      .*\n)+", r"\1", broken, count=1)
broken = broken.replace("../config/keycloak-realm.json", "./keycloak-realm.json", 1)
broken = broken.replace('    command: ["serve", "--no-workers"]\n',
                        '    command: ["serve", "--no-workers"]\n    secrets:\n      - oidc-client-secret\n', 1)
broken += "\nsecrets:\n  oidc-client-secret:\n    environment: OIDC_CLIENT_SECRET\n"
assert broken != text, "the positive control could not break the file"
open(path, "w").write(broken)
PY
  cp "$ROOT/config/keycloak-realm.json" "$tmp/compose/keycloak-realm.json"
  cp "$ROOT/.dockerignore" "$tmp/.dockerignore"
  if validate "$tmp/compose/$(basename "$COMPOSE_FILE")" >"$tmp/out" 2>&1; then
    cat "$tmp/out" >&2
    echo "  FAIL positive control: a deliberately broken copy passed" >&2
    return 1
  fi
  # Each fault must be named, not just some failure reported.
  local expected
  for expected in "restrat" "postgres: others wait for it with service_healthy but it has no healthcheck" \
    "not config/keycloak-realm.json" \
    "serve: read_only service with secret 'oidc-client-secret' from environment"; do
    if ! grep -qF "$expected" "$tmp/out"; then
      echo "  FAIL positive control: the broken copy failed, but nothing said: $expected" >&2
      status=1
    fi
  done
  grep -E 'FAIL|error' "$tmp/out" | sed 's/^/       /' || true
  [ "$status" -eq 0 ] && echo "  ok   positive control: the broken copy was refused, each fault named"
  return "$status"
}

ensure_venv
log "shell scripts"
check_scripts
validate "$COMPOSE_FILE"
if [ "$COMPOSE_FILE" = "$ROOT/compose/compose.yaml" ]; then
  log "positive control (a broken copy must fail)"
  positive_control
fi
log "compose stack: valid"
