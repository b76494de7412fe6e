#!/usr/bin/env bash
# Fetch the third-party CRDs Arbiter's routing providers manage and its chart renders, from the Go modules that ship them,
# at the versions pinned in hack/versions.env. Never hand-written, never committed: cached only.
#   Gateway API:  sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION  config/crd/standard/*.yaml
#   Istio:        istio.io/api@$ISTIO_API_VERSION               kubernetes/customresourcedefinitions.gen.yaml
#   prometheus-operator (ServiceMonitor, PodMonitor, rendered by the chart):
#                 github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION
#                 example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors}.yaml
# Usage: hack/thirdparty-crds.sh   -> prints one CRD file path per line (apply them with kubectl).
# Env:   ARBITER_CACHE (default ~/.cache/arbiter)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${ARBITER_CACHE:-$HOME/.cache/arbiter}/thirdparty"

# module_dir <module@version>: download (or reuse the module cache) and print the module's directory.
module_dir() {
  local json
  # Outside any go.mod, so the project's (or the caller's) module never changes.
  json="$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$1")"
  python3 -c '
import json, sys
info = json.loads(sys.argv[1])
if info.get("Error"):
    sys.exit("go mod download " + sys.argv[2] + ": " + info["Error"])
print(info["Dir"])
' "$json" "$1"
}

# fetch <dest dir> <module@version> <file>...: copy the files into dest once; print their paths.
fetch() {
  local dest="$1" module="$2"; shift 2
  if [ ! -f "$dest/.complete" ]; then
    local src tmp
    src="$(module_dir "$module")"
    mkdir -p "$(dirname "$dest")"
    tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
    for f in "$@"; do
      for path in "$src"/$f; do
        [ -f "$path" ] || { echo "thirdparty-crds: $module has no $f" >&2; exit 1; }
        cp "$path" "$tmp/"
      done
    done
    chmod u+w "$tmp"/*
    touch "$tmp/.complete"
    # Publish complete directories only, so a concurrent or interrupted run never sees half a set.
    rm -rf "$dest"
    mv "$tmp" "$dest"
  fi
  find "$dest" -maxdepth 1 -name '*.yaml' | sort
}

fetch "$cache/gateway-api/$GATEWAY_API_VERSION" "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
  'config/crd/standard/*.yaml'
fetch "$cache/istio/$ISTIO_API_VERSION" "istio.io/api@$ISTIO_API_VERSION" \
  'kubernetes/customresourcedefinitions.gen.yaml'
fetch "$cache/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION" \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
  'example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml'
