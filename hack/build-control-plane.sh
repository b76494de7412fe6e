#!/usr/bin/env bash
# Build (once, cached) every binary of the local control plane from Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok, helm.
# Usage: hack/build-control-plane.sh            -> prints the bin dir on the last line
# Env:   ARBITER_CACHE (default ~/.cache/arbiter)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${ARBITER_CACHE:-$HOME/.cache/arbiter}"
bindir="$cache/k8s/$KUBE_VERSION/bin"
mkdir -p "$bindir"
# Concurrent callers (two test sessions, make -j) wait for one build instead of racing it.
exec 9>"$cache/k8s/$KUBE_VERSION/.build.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start_all=$(date +%s)

log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - start_all ))" "$*" >&2; }

# stamp <var>=<value> into both version packages, so kubectl/helm/kwok version checks work.
kube_ldflags() {
  local v="$KUBE_VERSION" minor
  minor="$(echo "$v" | cut -d. -f2)"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local f="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f="$f -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    f="$f -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  echo "$f"
}

build_kube() {
  local need=()
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$bindir/$b" ] || need+=("$b")
  done
  [ ${#need[@]} -eq 0 ] && { log "kubernetes $KUBE_VERSION: cached"; return; }
  local mod="$cache/k8s/$KUBE_VERSION/wrapper"
  mkdir -p "$mod"
  log "kubernetes $KUBE_VERSION: resolving the staging modules"
  local gomod
  gomod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local staging_minor="v0.${KUBE_VERSION#v1.}"
  {
    echo "module arbiter.dev/controlplane"
    echo
    grep -E '^go [0-9]' "$gomod" | head -1
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # every `k8s.io/X => ./staging/src/k8s.io/X` line of upstream's go.mod becomes a published version
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$staging_minor" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
  log "kubernetes $KUBE_VERSION: go mod tidy (downloads ~1 GB on a cold cache)"
  (cd "$mod" && go mod tidy -e >/dev/null 2>"$mod/tidy.log" || { cat "$mod/tidy.log" >&2; exit 1; })
  local ld; ld="$(kube_ldflags)"
  for b in "${need[@]}"; do
    local t0; t0=$(date +%s)
    log "building $b (a cold build takes several minutes on 2 cores)"
    (cd "$mod" && go build -tags "selinux,notest,tools" -ldflags "$ld" -o "$bindir/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$bindir/$b.tmp" "$bindir/$b"
    log "built $b in $(( $(date +%s) - t0 ))s"
  done
}

# build_simple <binary> <version> <package> <ldflags>: modules without replace directives.
build_simple() {
  local name="$1" version="$2" pkg="$3"
  [ -x "$bindir/$name" ] && { log "$name: cached"; return; }
  local mod="$cache/k8s/$KUBE_VERSION/wrap-$name"
  mkdir -p "$mod"
  local t0; t0=$(date +%s)
  log "building $name ($pkg@$version)"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init "arbiter.dev/wrap/$name" >/dev/null 2>&1
    go get "$pkg@$version" >/dev/null 2>"$mod/get.log" || { cat "$mod/get.log" >&2; exit 1; }
    go build -ldflags "-s -w $4" -o "$bindir/$name.tmp" "$pkg"
  )
  mv "$bindir/$name.tmp" "$bindir/$name"
  log "built $name in $(( $(date +%s) - t0 ))s"
}

build_simple etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 ""
build_simple kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ""
build_simple helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build_kube

# kwok ships its stage configs inside the module zip; copy the ones hack/localcluster loads
# (node initialize + lease heartbeat, pod ready/complete/delete).
stages="$cache/k8s/$KUBE_VERSION/kwok-stages"
stage_files=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)
missing_stage=0
for f in "${stage_files[@]}"; do [ -f "$stages/$(basename "$f")" ] || missing_stage=1; done
if [ "$missing_stage" -eq 1 ]; then
  mod="$cache/k8s/$KUBE_VERSION/wrap-kwok"
  mkdir -p "$mod"
  kwokdir="$(cd "$mod" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  mkdir -p "$stages"
  for f in "${stage_files[@]}"; do cp "$kwokdir/kustomize/stage/$f" "$stages/"; done
  chmod u+w "$stages"/*.yaml
  log "kwok stage configs copied to $stages"
fi
log "all binaries ready in $(( $(date +%s) - start_all ))s"
echo "$bindir"
