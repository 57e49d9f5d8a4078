#!/usr/bin/env bash
# Validate the Prometheus alert rules (deploy/prometheus/alerts.yml) and run their unit tests
# (alerts.test.yml) with promtool. promtool comes from Debian's `prometheus` package: it is
# used from PATH when installed, otherwise extracted from the downloaded package into
# ~/.cache/loanfolio-tools (without installing the package, which would also start a
# Prometheus server).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TOOLS="${LOANFOLIO_TOOLS:-$HOME/.cache/loanfolio-tools}"

promtool=$(command -v promtool || true)
if [ -z "$promtool" ] && [ -x "$TOOLS/promtool/usr/bin/promtool" ]; then
  promtool="$TOOLS/promtool/usr/bin/promtool"
fi
if [ -z "$promtool" ]; then
  command -v apt-get >/dev/null || { echo "alerts: promtool not found and no apt-get" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    (cd "$work" && apt-get download prometheus >/dev/null)
  fi
  mkdir -p "$TOOLS/promtool"
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  install -D -m 0755 "$work/x/usr/bin/promtool" "$TOOLS/promtool/usr/bin/promtool"
  promtool="$TOOLS/promtool/usr/bin/promtool"
fi

"$promtool" check rules "$ROOT/deploy/prometheus/alerts.yml"
"$promtool" test rules "$ROOT/deploy/prometheus/alerts.test.yml"
