#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks use, only those missing.
set -euo pipefail
want=(prometheus nginx-light wrk openssl tmux chromium prometheus-alertmanager)
declare -A probe=([prometheus]=prometheus [nginx-light]=nginx [wrk]=wrk [openssl]=openssl [tmux]=tmux [chromium]=chromium
  [prometheus-alertmanager]=prometheus-alertmanager)
missing=()
for pkg in "${want[@]}"; do
  command -v "${probe[$pkg]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${probe[$pkg]}" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo ">> apt-get install ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts the packaged services; ours run on free ports, so stop theirs.
for svc in prometheus nginx prometheus-alertmanager; do
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done
