#!/usr/bin/env bash
# Build Arbiter's image (operator and router, entrypoint `arbiter`) with podman, cached by content hash.
#
#   hack/image.sh              build if needed; the image reference is the last line on stdout
#   hack/image.sh --tag        print the reference the current sources would get, build nothing
#
# The tag is a hash of everything that goes into the image (operator/Dockerfile, .dockerignore,
# pyproject.toml, the files under operator/, the base image), so a second run with the same
# sources is a no-op. No image registry is reachable on the development machines: the default base is
# built here from Debian packages with mmdebstrap (Debian bookworm, python3 3.11) and imported into
# podman. Where a registry exists, BASE_IMAGE=python:3.11-slim builds the same file on the usual base.
# The podman flags are those that work on these machines (shared/notes/containers.md): runc as runtime,
# cgroupfs, lowered ulimits, chroot isolation for builds.
#
# Environment:
#   IMAGE_REPO   repository of the built image (default localhost/arbiter)
#   BASE_IMAGE   base of both stages (default localhost/arbiter-base:bookworm, built here when missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE_REPO=${IMAGE_REPO:-localhost/arbiter}
LOCAL_BASE=localhost/arbiter-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
CONTAINERFILE=operator/Dockerfile
# What the base needs: python3 (3.11 in bookworm) and venv (ensurepip) for the build stage;
# ca-certificates for HTTPS to a Prometheus behind a public CA.
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Podman's global flags and the run flags that work here (see the header).
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)

say() { printf '>> %s\n' "$*" >&2; }

ensure_tools() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
  if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2
}

# The base: a minimal Debian bookworm root filesystem with python3, imported as an image. It is labelled
# with a hash of this recipe and rebuilt when the recipe changes.
MMDEBSTRAP_ARGS=(
  --variant=minbase --include="$BASE_PACKAGES"
  --aptopt='APT::Install-Recommends "false"'
  # Merge /usr with mmdebstrap's hook instead of the usrmerge package, which pulls in perl (~50 MB).
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  # Documentation, man pages and translations are left out (copyright files stay).
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  bookworm
)
BASE_RECIPE=$(printf '%s\n' "${MMDEBSTRAP_ARGS[@]}" | sha256sum | cut -c1-16)

ensure_base() {
  [ "$BASE_IMAGE" = "$LOCAL_BASE" ] || return 0
  if "${PODMAN[@]}" image exists "$LOCAL_BASE" \
    && [ "$("${PODMAN[@]}" image inspect --format '{{index .Labels "dev.arbiter.base-recipe"}}' "$LOCAL_BASE")" = "$BASE_RECIPE" ]; then
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the trap must remove this directory
  trap "rm -rf '$tmp'" EXIT
  say "building the base $LOCAL_BASE with mmdebstrap (Debian bookworm minbase + $BASE_PACKAGES; about a minute)"
  mmdebstrap "${MMDEBSTRAP_ARGS[@]}" "$tmp/base.tar" >&2
  say "importing $tmp/base.tar ($(du -m "$tmp/base.tar" | cut -f1) MB) as $LOCAL_BASE"
  "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL dev.arbiter.base-recipe=$BASE_RECIPE" \
    "$tmp/base.tar" "$LOCAL_BASE" >/dev/null
  rm -rf "$tmp"
}

# A hash of every input of the image: the files of the build context that the Containerfile copies
# (what .dockerignore lets through) and the base image (its ID when it is local, else its name).
content_hash() {
  local base_id="$BASE_IMAGE"
  if [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && "${PODMAN[@]}" image exists "$LOCAL_BASE"; then
    base_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$LOCAL_BASE")
  fi
  {
    echo "base $base_id"
    find "$CONTAINERFILE" .dockerignore pyproject.toml operator -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

image_size_mb() {
  "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f", $1 / 1000000}'
}

main() {
  if [ "${1:-}" = "--tag" ]; then
    echo "$IMAGE_REPO:$(content_hash)"
    return 0
  fi
  ensure_tools
  # One build at a time on this machine (two test sessions may ask together).
  mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/arbiter"
  exec 9>"${XDG_CACHE_HOME:-$HOME/.cache}/arbiter/image.lock"
  flock 9
  ensure_base
  local image
  image="$IMAGE_REPO:$(content_hash)"
  if "${PODMAN[@]}" image exists "$image"; then
    say "image $image is up to date ($(image_size_mb "$image") MB); nothing to build"
    echo "$image"
    return 0
  fi
  say "building $image from $CONTAINERFILE on $BASE_IMAGE (first build: a few minutes, most of it pip)"
  local started=$SECONDS
  # pip inside the build trusts what pip trusts here ($PIP_CERT or /etc/pip.conf's cert, e.g. a proxy's CA),
  # passed as a build secret so it never lands in a layer; an empty file when there is none.
  local pip_cert=${PIP_CERT:-$(sed -n 's/^cert *= *//p' /etc/pip.conf 2>/dev/null | head -n1)}
  [ -n "$pip_cert" ] && [ -s "$pip_cert" ] || pip_cert=/dev/null
  "${PODMAN[@]}" build --isolation chroot "${ULIMITS[@]}" \
    --secret "id=pip-cert,src=$pip_cert" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "dev.arbiter.content-hash=${image##*:}" \
    -f "$CONTAINERFILE" -t "$image" . >&2
  say "built $image in $((SECONDS - started)) s; checking that it starts read-only as a non-root user"
  "${PODMAN[@]}" run --rm --network none --read-only --user 10001:10001 "${ULIMITS[@]}" \
    "$image" --help >/dev/null
  say "image $image: $(image_size_mb "$image") MB"
  echo "$image"
}

main "$@"
